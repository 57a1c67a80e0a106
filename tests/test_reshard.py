"""A checkpoint written on one device count restores onto another and training continues.

Device counts are fixed per process, so each phase runs in its own subprocess
(``python tests/test_reshard.py PHASE WORKDIR`` with XLA_FLAGS set to its device count):

  * ``save`` (8 devices): init the synthetic ``:smoke`` task, 2 train steps, save a
    checkpoint with ``RunCheckpointer`` (as the loop does), then 2 more steps without
    saving: the uninterrupted reference for step 4;
  * ``resume`` (2 devices, then 1): restore the step-2 checkpoint onto the smaller mesh via
    ``Task.abstract_state()`` (target shardings), check every restored array equals the
    saved one bit for bit and now lives on the new devices, run steps 3 and 4 on the same
    batches, and compare with the 8-device reference.

Tolerance of the step-4 comparison: rtol 1e-4 / atol 1e-4 (0.1 x the dense learning rate).
The math is identical; only the order of floating-point reductions differs between 8, 2
and 1 shards, and Adam's first updates (about lr * g / |g|) turn last-bit differences of
gradient entries near zero into differences of up to ~lr (measured: 2e-5).
``test_resume_through_main`` does the same through ``python -m mmrec_jax.main`` (the
training loop's own resume path, ``train.max_steps`` 2 then 4).
"""

from __future__ import annotations

import importlib.util
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent
SMOKE = REPO / "experiments" / "synthetic.py"
NUM_USERS, NUM_ITEMS = 200, 150
RTOL, ATOL = 1e-4, 1e-4


def _config():
  spec = importlib.util.spec_from_file_location("synthetic", SMOKE)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config("smoke")


def _task():
  from mmrec_jax import sharding
  from mmrec_jax.step import DataInfo, Task

  config = _config()
  rng = np.random.default_rng(0)
  feats = {
    "text": rng.normal(size=(NUM_ITEMS, config.data.text_dim)).astype(np.float32),
    "image": rng.normal(size=(NUM_ITEMS, config.data.image_dim)).astype(np.float32),
  }
  masks = {m: rng.random(NUM_ITEMS) < 0.8 for m in feats}
  info = DataInfo(
    num_users=NUM_USERS,
    num_items=NUM_ITEMS,
    features=feats,
    feature_masks=masks,
    item_counts=np.ones(NUM_ITEMS, np.int64),
  )
  mesh = sharding.make_mesh(config.mesh.data, config.mesh.model)
  return config, Task(config, info, mesh), mesh


def _batch(config, step: int) -> dict[str, np.ndarray]:
  rng = np.random.default_rng(1000 + step)
  b, n = config.input.batch_size, config.input.num_negatives
  return {
    "user": rng.integers(0, NUM_USERS, b, dtype=np.int32),
    "pos": rng.integers(0, NUM_ITEMS, b, dtype=np.int32),
    "neg": rng.integers(0, NUM_ITEMS, (b, n), dtype=np.int32),
    "pos_logq": np.full(b, -np.log(NUM_ITEMS), np.float32),
  }


def _train(task, mesh, config, state, steps):
  from mmrec_jax import sharding

  for s in steps:
    state, _ = task.train_step(state, sharding.global_batch_from_local(mesh, _batch(config, s)))
  return state


def _to_numpy(state) -> dict[str, np.ndarray]:
  import jax

  return {
    jax.tree_util.keystr(p): np.asarray(jax.device_get(x))
    for p, x in jax.tree_util.tree_leaves_with_path(state)
  }


def phase_save(workdir: pathlib.Path) -> dict:
  from mmrec_jax.checkpointing import RunCheckpointer

  config, task, mesh = _task()
  state = _train(task, mesh, config, task.init(config.seed), [0, 1])
  ckpt = RunCheckpointer(workdir)
  ckpt.save(2, state, {"epoch": 0}, {"best_step": -1})
  ckpt.close()
  np.savez(workdir / "step2.npz", **_to_numpy(state))
  state = _train(task, mesh, config, state, [2, 3])
  np.savez(workdir / "step4.npz", **_to_numpy(state))
  return {"devices": mesh.size}


def phase_resume(workdir: pathlib.Path) -> dict:
  import jax

  from mmrec_jax.checkpointing import RunCheckpointer

  config, task, mesh = _task()
  ckpt = RunCheckpointer(workdir)
  state, data_state, loop = ckpt.restore_latest(task.abstract_state())
  ckpt.close()
  saved = np.load(workdir / "step2.npz")
  restored = _to_numpy(state)
  assert sorted(restored) == sorted(saved.files)
  mismatched = [k for k in saved.files if not np.array_equal(saved[k], restored[k])]
  devices = {d.id for x in jax.tree.leaves(state) for d in x.sharding.device_set}
  state = _train(task, mesh, config, state, [2, 3])
  final, ref = _to_numpy(state), np.load(workdir / "step4.npz")
  max_err = {k: float(np.max(np.abs(final[k] - ref[k]), initial=0)) for k in ref.files}
  close = all(np.allclose(final[k], ref[k], rtol=RTOL, atol=ATOL) for k in ref.files)
  return {
    "devices": mesh.size,
    "restored_step": int(saved["['step']"]),
    "data_state": data_state,
    "loop": loop,
    "mismatched": mismatched,
    "state_devices": len(devices),
    "final_step": int(final["['step']"]),
    "close_to_reference": close,
    "max_abs_err": max(max_err.values()),
    "worst_leaf": max(max_err, key=max_err.get),
  }


def _start(phase: str, workdir: pathlib.Path, devices: int) -> subprocess.Popen:
  env = {
    **os.environ,
    "JAX_PLATFORMS": "cpu",
    "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
  }
  return subprocess.Popen(
    ["timeout", "-s", "KILL", "300", sys.executable, __file__, phase, str(workdir)],
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    text=True,
    env=env,
    cwd=REPO,
  )


def _result(proc: subprocess.Popen) -> dict:
  out, err = proc.communicate()
  assert proc.returncode == 0, err[-4000:]
  return json.loads(out.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def resumed(tmp_path_factory):
  """Saves on 8 devices, then resumes on 2 and on 1 (the two resumes run in parallel)."""
  workdir = tmp_path_factory.mktemp("reshard")
  assert _result(_start("save", workdir, 8))["devices"] == 8
  procs = {n: _start("resume", workdir, n) for n in (2, 1)}
  return {n: _result(p) for n, p in procs.items()}


@pytest.mark.parametrize("devices", [2, 1])
def test_restore_onto_fewer_devices_and_continue(resumed, devices):
  r = resumed[devices]
  assert r["devices"] == devices and r["state_devices"] == devices
  assert r["restored_step"] == 2 and r["loop"] == {"best_step": -1}
  assert r["data_state"] == {"epoch": 0}
  assert r["mismatched"] == []  # bit-identical restore, no re-init
  assert r["final_step"] == 4
  assert r["close_to_reference"], (r["worst_leaf"], r["max_abs_err"])


def _main(workdir: pathlib.Path, devices: int, max_steps: int) -> subprocess.CompletedProcess:
  env = {
    **os.environ,
    "JAX_PLATFORMS": "cpu",
    "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
  }
  return subprocess.run(
    [
      "timeout",
      "-s",
      "KILL",
      "300",
      sys.executable,
      "-m",
      "mmrec_jax.main",
      f"--config={SMOKE}:smoke",
      f"--workdir={workdir / 'run'}",
      f"--config.data.cache_dir={workdir / 'cache'}",
      f"--config.train.max_steps={max_steps}",
      "--config.train.checkpoint_every_steps=2",
    ],
    capture_output=True,
    text=True,
    env=env,
    check=False,
    cwd=REPO,
  )


def test_resume_through_main(tmp_path):
  """The loop's own path: 2 steps on 8 devices, then resume to step 4 on 2 devices."""
  first = _main(tmp_path, 8, 2)
  assert first.returncode == 0, first.stderr[-4000:]
  assert json.loads((tmp_path / "run" / "results.json").read_text())["steps"] == 2
  second = _main(tmp_path, 2, 4)
  assert second.returncode == 0, second.stderr[-4000:]
  assert "resumed from step 2" in second.stderr  # restored, not re-initialised
  assert "over 2 devices (1 processes)" in second.stderr
  assert json.loads((tmp_path / "run" / "results.json").read_text())["steps"] == 4


if __name__ == "__main__":
  phase, wd = sys.argv[1], pathlib.Path(sys.argv[2])
  result = phase_save(wd) if phase == "save" else phase_resume(wd)
  print(json.dumps(result))
