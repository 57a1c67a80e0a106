"""End-to-end tests of the training loop on 8 fake CPU devices.

Covers: a one-step run of every experiment's ``:smoke`` (on small files the tests write,
except ml100k, which uses the real data), kill -9 and resume giving exactly the parameters
and metrics of an uninterrupted run, SIGTERM leaving a resumable checkpoint, and NaN
handling that keeps the last good checkpoint.
"""

import importlib.util
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import orbax.checkpoint as ocp
import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]


def load_config(name: str, arg: str = "smoke", **overrides):
  spec = importlib.util.spec_from_file_location(name, REPO / "experiments" / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config(arg)
  for key, value in overrides.items():
    node = config
    *parents, leaf = key.split(".")
    for p in parents:
      node = node[p]
    node[leaf] = value
  return config


def run_main(workdir, config_arg, *overrides, env=None, timeout=300):
  cmd = [sys.executable, "-m", "mmrec_jax.main", f"--config={config_arg}",
         f"--workdir={workdir}", *overrides]
  full_env = dict(os.environ, **(env or {}))
  return subprocess.run(cmd, cwd=REPO, env=full_env, capture_output=True, text=True,
                        timeout=timeout)


def latest_params(workdir: pathlib.Path) -> dict:
  ckpt_dir = workdir / "checkpoints"
  step = max(int(p.name) for p in ckpt_dir.iterdir() if p.name.isdigit())
  restored = ocp.StandardCheckpointer().restore(ckpt_dir / str(step) / "state")
  # Empty optax states (e.g. the dense part of a tables-only model) restore as None leaves.
  return {k: np.asarray(v) for k, v in _flatten(restored).items()
          if v is not None and np.asarray(v).dtype != object}


def _flatten(tree, prefix=""):
  out = {}
  if isinstance(tree, dict):
    for k, v in tree.items():
      out.update(_flatten(v, f"{prefix}/{k}"))
  elif isinstance(tree, (list, tuple)):
    for i, v in enumerate(tree):
      out.update(_flatten(v, f"{prefix}/{i}"))
  else:
    out[prefix] = tree
  return out


def test_synthetic_smoke_end_to_end(tmp_path):
  from mmrec_jax.train import train_and_evaluate
  config = load_config("synthetic", **{"data.cache_dir": str(tmp_path / "cache")})
  results = train_and_evaluate(config, tmp_path / "run")
  assert results["status"] == "finished"
  saved = json.loads((tmp_path / "run" / "results.json").read_text())
  for split in ("valid", "test"):
    assert {"recall@10", "ndcg@10"} <= set(saved[split])
    assert all(0.0 <= v <= 1.0 for v in saved[split].values())
  rows = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
  assert any(r["kind"] == "train" and np.isfinite(r["loss"]) for r in rows)
  assert (tmp_path / "run" / "learning_curve.png").stat().st_size > 1000


@pytest.mark.parametrize("model", ["bpr_mf", "vbpr", "two_tower"])
def test_every_model_trains_one_step(tmp_path, model):
  from mmrec_jax.train import train_and_evaluate
  config = load_config("synthetic", f"smoke,{model}",
                       **{"data.cache_dir": str(tmp_path / "cache"), "train.max_steps": 1})
  results = train_and_evaluate(config, tmp_path / "run")
  assert results["steps"] == 1 and results["model"] == model


def test_kill_and_resume_equals_uninterrupted(tmp_path):
  cache = f"--config.data.cache_dir={tmp_path / 'cache'}"
  common = ("--config.train.max_steps=6", "--config.train.checkpoint_every_steps=2",
            "--config.train.num_epochs=3", cache)
  full = run_main(tmp_path / "full", "experiments/synthetic.py:smoke", *common)
  assert full.returncode == 0, full.stderr[-3000:]
  killed = run_main(tmp_path / "resumed", "experiments/synthetic.py:smoke", *common,
                    env={"MMREC_FAULT_KILL_AFTER_STEP": "3"})
  assert killed.returncode == -9, killed.stderr[-3000:]
  assert not (tmp_path / "resumed" / "results.json").exists()
  resumed = run_main(tmp_path / "resumed", "experiments/synthetic.py:smoke", *common)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert "resumed from step 2" in resumed.stderr
  a = json.loads((tmp_path / "full" / "results.json").read_text())
  b = json.loads((tmp_path / "resumed" / "results.json").read_text())
  assert a["valid"] == b["valid"] and a["test"] == b["test"]
  pa, pb = latest_params(tmp_path / "full"), latest_params(tmp_path / "resumed")
  assert pa.keys() == pb.keys()
  for k in pa:
    np.testing.assert_array_equal(pa[k], pb[k], err_msg=k)


def test_sigterm_leaves_resumable_checkpoint(tmp_path):
  cache = f"--config.data.cache_dir={tmp_path / 'cache'}"
  common = ("--config.train.max_steps=6", "--config.train.num_epochs=3", cache)
  first = run_main(tmp_path / "run", "experiments/synthetic.py:smoke,bpr_mf", *common,
                   env={"MMREC_FAULT_SIGTERM_AT_STEP": "3"})
  assert first.returncode == 0, first.stderr[-3000:]
  assert "preempted at step 3" in first.stdout
  assert (tmp_path / "run" / "checkpoints" / "3").is_dir()
  second = run_main(tmp_path / "run", "experiments/synthetic.py:smoke,bpr_mf", *common)
  assert second.returncode == 0, second.stderr[-3000:]
  assert "resumed from step 3" in second.stderr
  assert json.loads((tmp_path / "run" / "results.json").read_text())["steps"] == 6


def test_nan_loss_stops_with_clear_message_and_keeps_checkpoint(tmp_path):
  cache = f"--config.data.cache_dir={tmp_path / 'cache'}"
  ok = run_main(tmp_path / "run", "experiments/synthetic.py:smoke,bpr_mf", cache,
                "--config.train.max_steps=2", "--config.train.checkpoint_every_steps=2")
  assert ok.returncode == 0, ok.stderr[-3000:]
  before = latest_params(tmp_path / "run")
  # Continue the same run with an absurd learning rate: the loss overflows.
  bad = run_main(tmp_path / "run", "experiments/synthetic.py:smoke,bpr_mf", cache,
                 "--config.train.max_steps=40", "--config.train.checkpoint_every_steps=2",
                 "--config.optimizer.learning_rate=1e30",
                 "--config.optimizer.sparse_learning_rate=1e30")
  assert bad.returncode == 2
  assert "training loss became" in bad.stderr
  assert "Traceback" not in bad.stderr
  after = latest_params(tmp_path / "run")
  assert after.keys() == before.keys()
  for k, v in after.items():
    assert np.all(np.isfinite(v)), k


def test_unknown_config_key_fails_in_one_line(tmp_path):
  out = run_main(tmp_path / "run", "experiments/synthetic.py:smoke", "--config.model.nmae=x")
  assert out.returncode != 0
  assert "nmae" in out.stderr
