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
import re
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
  cmd = [
    sys.executable,
    "-m",
    "mmrec_jax.main",
    f"--config={config_arg}",
    f"--workdir={workdir}",
    *overrides,
  ]
  full_env = dict(os.environ, **(env or {}))
  return subprocess.run(
    cmd, cwd=REPO, env=full_env, capture_output=True, text=True, timeout=timeout
  )


def latest_params(workdir: pathlib.Path) -> dict:
  ckpt_dir = workdir / "checkpoints"
  step = max(int(p.name) for p in ckpt_dir.iterdir() if p.name.isdigit())
  restored = ocp.StandardCheckpointer().restore(ckpt_dir / str(step) / "state")
  # Empty optax states (e.g. the dense part of a tables-only model) restore as None leaves.
  return {
    k: np.asarray(v)
    for k, v in _flatten(restored).items()
    if v is not None and np.asarray(v).dtype != object
  }


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


def test_eval_every_steps_validates_at_those_steps(tmp_path):
  """``--config.train.eval_every_steps=3`` (through the flag parser): 3, 6, and the end."""
  r = run_main(
    tmp_path / "run",
    "experiments/synthetic.py:smoke",
    f"--config.data.cache_dir={tmp_path / 'cache'}",
    "--config.train.max_steps=7",
    "--config.train.num_epochs=5",
    "--config.train.eval_every_steps=3",
    "--config.train.early_stopping_patience=0",
  )
  assert r.returncode == 0, r.stderr[-2000:]
  rows = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
  assert [r["step"] for r in rows if r["kind"] == "valid"] == [3, 6, 7]
  bad = run_main(
    tmp_path / "bad", "experiments/synthetic.py:smoke", "--config.train.eval_every_steps=-2"
  )
  assert bad.returncode != 0 and "train.eval_every_steps" in bad.stderr


@pytest.mark.parametrize("model", ["bpr_mf", "vbpr", "two_tower"])
def test_every_model_trains_one_step(tmp_path, model):
  from mmrec_jax.train import train_and_evaluate

  config = load_config(
    "synthetic",
    f"smoke,{model}",
    **{"data.cache_dir": str(tmp_path / "cache"), "train.max_steps": 1},
  )
  results = train_and_evaluate(config, tmp_path / "run")
  assert results["steps"] == 1 and results["model"] == model


def test_kill_and_resume_equals_uninterrupted(tmp_path):
  cache = f"--config.data.cache_dir={tmp_path / 'cache'}"
  common = (
    "--config.train.max_steps=6",
    "--config.train.checkpoint_every_steps=2",
    "--config.train.num_epochs=3",
    cache,
  )
  full = run_main(tmp_path / "full", "experiments/synthetic.py:smoke", *common)
  assert full.returncode == 0, full.stderr[-3000:]
  killed = run_main(
    tmp_path / "resumed",
    "experiments/synthetic.py:smoke",
    *common,
    env={"MMREC_FAULT_KILL_AFTER_STEP": "3"},
  )
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
  first = run_main(
    tmp_path / "run",
    "experiments/synthetic.py:smoke,bpr_mf",
    *common,
    env={"MMREC_FAULT_SIGTERM_AT_STEP": "3"},
  )
  assert first.returncode == 0, first.stderr[-3000:]
  assert "preempted at step 3" in first.stdout
  assert (tmp_path / "run" / "checkpoints" / "3").is_dir()
  second = run_main(tmp_path / "run", "experiments/synthetic.py:smoke,bpr_mf", *common)
  assert second.returncode == 0, second.stderr[-3000:]
  assert "resumed from step 3" in second.stderr
  assert json.loads((tmp_path / "run" / "results.json").read_text())["steps"] == 6


def test_nan_loss_stops_with_clear_message_and_keeps_checkpoint(tmp_path):
  cache = f"--config.data.cache_dir={tmp_path / 'cache'}"
  ok = run_main(
    tmp_path / "run",
    "experiments/synthetic.py:smoke,bpr_mf",
    cache,
    "--config.train.max_steps=2",
    "--config.train.checkpoint_every_steps=2",
  )
  assert ok.returncode == 0, ok.stderr[-3000:]
  before = latest_params(tmp_path / "run")
  # Continue the same run with an absurd learning rate: the loss overflows.
  bad = run_main(
    tmp_path / "run",
    "experiments/synthetic.py:smoke,bpr_mf",
    cache,
    "--config.train.max_steps=40",
    "--config.train.checkpoint_every_steps=2",
    "--config.optimizer.learning_rate=1e30",
    "--config.optimizer.sparse_learning_rate=1e30",
  )
  assert bad.returncode == 2
  assert "training loss became" in bad.stderr
  assert "Traceback" not in bad.stderr
  after = latest_params(tmp_path / "run")
  assert after.keys() == before.keys()
  for k, v in after.items():
    assert np.all(np.isfinite(v)), k


def _error_lines(stderr: str) -> list[str]:
  return [line for line in stderr.splitlines() if line.strip()]


def test_unknown_config_key_fails_in_one_line(tmp_path):
  out = run_main(tmp_path / "run", "experiments/synthetic.py:smoke", "--config.model.nmae=x")
  assert out.returncode == 2
  assert "Traceback" not in out.stderr
  lines = _error_lines(out.stderr)
  assert len(lines) == 1, out.stderr
  assert lines[0].startswith(
    "error: --config.model.nmae: unknown config key 'nmae' in config.model (did you mean 'name'?"
  ), lines[0]
  assert not (tmp_path / "run").exists()  # failed before anything ran


@pytest.mark.parametrize(
  "args,pattern",
  [
    (
      ("experiments/synthetic.py:smoke", "--config.nope.x=1"),
      r"error: --config\.nope\.x: unknown config key 'nope' in config \(valid: data, eval",
    ),
    (
      ("experiments/synthetic.py:smoke", "--config.input.batch_size=many"),
      r"error: flag --config\.input\.batch_size=many: invalid literal for int\(\)",
    ),
    (
      ("experiments/synthetic.py:smok",),
      r"error: flag --config=experiments/synthetic\.py:smok: ValueError: unknown config "
      r"variant\(s\) \['smok'\]",
    ),
    (
      ("experiments/missing.py",),
      r"error: --config=experiments/missing\.py: cannot load the config file \(.*No such file",
    ),
  ],
)
def test_bad_config_arguments_fail_in_one_line(tmp_path, args, pattern):
  out = run_main(tmp_path / "run", *args)
  assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
  lines = _error_lines(out.stderr)
  assert len(lines) == 1 and re.match(pattern, lines[0]), out.stderr


def test_mode_prepare_prints_the_statistics(tmp_path):
  """--mode=prepare: no training, no workdir; the dataset's counts on stdout."""
  out = run_main(
    tmp_path / "run",
    "experiments/synthetic.py:smoke",
    "--mode=prepare",
    f"--config.data.cache_dir={tmp_path / 'cache'}",
    timeout=120,
  )
  assert out.returncode == 0, out.stderr[-3000:]
  assert not (tmp_path / "run").exists()
  text = out.stdout
  # experiments/synthetic.py:smoke: 200 users, 150 items, 4000 interactions.
  assert re.search(r"users 200\s+items 150\s+interactions 4,000\b", text), text
  split_rows = dict(re.findall(r"^\s+(train|valid|test)\s+([\d,]+)\s", text, re.M))
  assert set(split_rows) == {"train", "valid", "test"}, text
  counts = {k: int(v.replace(",", "")) for k, v in split_rows.items()}
  assert sum(counts.values()) == 4000 and counts["train"] > counts["valid"] > 0
  assert re.search(r"modality text\s+dim 16\b", text) and re.search(
    r"modality image\s+dim "
    r"32\b",
    text,
  ), text
  # The numbers are those of the prepared dataset it names.
  from mmrec_jax.data.dataset import PreparedDataset

  path = re.search(r"^dataset synthetic at (\S+) ", text, re.M).group(1)
  ds = PreparedDataset.open(path)
  assert {k: ds.manifest["splits"][k]["interactions"] for k in counts} == counts


# ---------------------------------------------------------------- checks before training
class _Stop(Exception):
  """Raised by stand-ins to show how far train_and_evaluate got."""


def test_batch_not_dividing_the_data_axis_fails_before_any_data_is_read(tmp_path, monkeypatch):
  from mmrec_jax import train
  from mmrec_jax.errors import ConfigError

  def must_not_run(*args, **kwargs):
    raise AssertionError("reached data preparation / the pipeline")

  monkeypatch.setattr(train.prepare_lib, "prepare", must_not_run)
  monkeypatch.setattr(train.pipeline_lib, "make_train_pipeline", must_not_run)
  config = load_config(
    "synthetic", **{"input.batch_size": 60, "data.cache_dir": str(tmp_path / "cache")}
  )
  with pytest.raises(ConfigError) as info:  # 8 fake devices: 'data' axis of 8
    train.train_and_evaluate(config, tmp_path / "run")
  assert str(info.value) == (
    "input.batch_size=60 does not divide over the mesh's 'data' "
    "axis of size 8 (8 devices, mesh.model=1): use a multiple of "
    "8, e.g. 56 or 64"
  )
  # mesh 4 x 2: the 'data' axis has 4 rows, so 60 fits and 62 does not.
  config = load_config("synthetic", **{"input.batch_size": 62, "mesh.data": 4, "mesh.model": 2})
  with pytest.raises(
    ConfigError,
    match=r"input\.batch_size=62 does not divide over the "
    r"mesh's 'data' axis of size 4 .* e\.g\. 60 or 64",
  ):
    train.train_and_evaluate(config, tmp_path / "run")
  monkeypatch.setattr(train.prepare_lib, "prepare", lambda *a, **k: (_ for _ in ()).throw(_Stop()))
  with pytest.raises(_Stop):
    train.train_and_evaluate(
      load_config("synthetic", **{"input.batch_size": 60, "mesh.data": 4, "mesh.model": 2}),
      tmp_path / "run",
    )
  with pytest.raises(
    ConfigError,
    match=r"config\.mesh: mesh\.data=3 x mesh\.model=1 != 8 "
    r"devices",
  ):
    train.train_and_evaluate(load_config("synthetic", **{"mesh.data": 3}), tmp_path / "run")


class _FakeDevice:
  def __init__(self, process_index):
    self.process_index = process_index


def _fake_mesh(rows):
  """A stand-in mesh: ``rows`` lists the process of each device, one list per 'data' row."""
  import types

  devices = np.array([[_FakeDevice(p) for p in row] for row in rows], dtype=object)
  return types.SimpleNamespace(
    shape={"data": devices.shape[0], "model": devices.shape[1]}, devices=devices
  )


def test_batch_check_per_process():
  """2 processes x 4 devices: each must hold whole 'data' rows (its own examples)."""
  from mmrec_jax.errors import ConfigError
  from mmrec_jax.train import check_batch_fits_mesh

  per_host = _fake_mesh([[0, 0], [0, 0], [1, 1], [1, 1]])  # data 4 x model 2
  for pid in (0, 1):
    check_batch_fits_mesh(64, per_host, process_index=pid, process_count=2)
  with pytest.raises(ConfigError, match=r"input\.batch_size=66 does not divide .* size 4"):
    check_batch_fits_mesh(66, per_host, process_index=1, process_count=2)
  across = _fake_mesh([[0, 0, 1, 1], [0, 0, 1, 1]])  # model axis spans processes
  with pytest.raises(ConfigError) as info:
    check_batch_fits_mesh(64, across, process_index=0, process_count=2)
  assert str(info.value) == (
    "mesh.model=4: process 0 of 2 holds 2 of the 2 rows of the "
    "mesh's 'data' axis, but each process feeds its own "
    "input.batch_size/2 examples, which needs 1 rows; keep the "
    "'model' axis within a process (lower mesh.model)"
  )


def test_batch_error_from_main_is_one_clear_line(tmp_path):
  out = run_main(
    tmp_path / "run",
    "experiments/synthetic.py:smoke",
    "--config.input.batch_size=60",
    f"--config.data.cache_dir={tmp_path / 'c'}",
  )
  assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
  assert (
    "error: input.batch_size=60 does not divide over the mesh's 'data' axis of size 8"
    in out.stderr.splitlines()[-1]
  ), out.stderr
  assert not (tmp_path / "c").exists()  # nothing was prepared


def _streaming_config(tmp_path, **overrides):
  return load_config(
    "synthetic",
    "smoke,two_tower",
    **{
      "data.cache_dir": str(tmp_path / "cache"),
      "input.stream_features": True,
      "data.modalities": ("text",),
      "train.max_steps": 1,
      **overrides,
    },
  )


def test_pipeline_streams_the_models_modalities_with_their_dims(tmp_path, monkeypatch):
  """train passes the dims the model was built with; the pipeline streams just those."""
  from mmrec_jax import train

  seen = {}
  real = train.pipeline_lib.make_train_pipeline

  def spy(*args, **kwargs):
    seen.update(kwargs)
    pipe = real(*args, **kwargs)
    seen["spec"] = dict(pipe.element_spec)
    return pipe

  monkeypatch.setattr(train.pipeline_lib, "make_train_pipeline", spy)
  results = train.train_and_evaluate(_streaming_config(tmp_path), tmp_path / "run")
  assert results["status"] == "finished" and results["modalities"] == ["text"]
  assert seen["expected_dims"] == {"text": 16}  # synthetic smoke: text_dim 16
  assert sorted(seen["features"]) == ["text"]  # the dataset also has 'image'
  assert seen["spec"]["feat_pos/text"][0] == (64, 16)
  assert not any("image" in k for k in seen["spec"])
  # Streaming changes where feature rows come from, not the result: the same step with
  # the features as device tables gives the same metrics (on the same grain batches:
  # epochs made on device would draw another, equally valid, batch stream).
  frozen = train.train_and_evaluate(
    _streaming_config(tmp_path, **{"input.stream_features": False, "input.device_epochs": "off"}),
    tmp_path / "frozen",
  )
  assert seen["expected_dims"] is None  # nothing streamed: nothing to check
  for split in ("valid", "test"):
    assert frozen[split].keys() == results[split].keys()
    for k, v in results[split].items():
      assert v == pytest.approx(frozen[split][k], abs=1e-5), (split, k)


def test_feature_dim_the_model_disagrees_with_fails_when_the_pipeline_is_built(
  tmp_path, monkeypatch
):
  """A model built for 17-dim text against 16-dim shards: DataError before any step."""
  import dataclasses

  from mmrec_jax import train
  from mmrec_jax.errors import DataError
  from mmrec_jax.loop import setup

  real = setup.build_data_info

  def wider(ds, config, modalities):
    info = real(ds, config, modalities)
    feats = {
      m: np.zeros((f.shape[0], f.shape[1] + 1), np.float32) for m, f in info.features.items()
    }
    return dataclasses.replace(info, features=feats)

  monkeypatch.setattr(setup, "build_data_info", wider)
  monkeypatch.setattr(
    train.Task, "train_step", lambda *a, **k: pytest.fail("trained with mismatched features")
  )
  with pytest.raises(DataError) as info:
    train.train_and_evaluate(_streaming_config(tmp_path), tmp_path / "run")
  assert str(info.value) == "features/text: has dim=16 but 17 was expected"
  assert not (tmp_path / "run" / "checkpoints").exists() or not any(
    (tmp_path / "run" / "checkpoints").iterdir()
  )
