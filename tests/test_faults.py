"""Fault injection: kill -9 and SIGTERM at named points, damaged checkpoints, two runs.

Why: "rerun the same command" is the whole recovery story of a run, so it must end with
exactly the results of an uninterrupted run whatever the crash point -- or fail with one
line that says what to do. Each test here interrupts or damages a run of one small
config (synthetic data, bpr_mf, 12 steps: validation at 4, 8, 12, checkpoints every 2)
and compares the final ``results.json`` (timing fields excluded) and the latest
parameters with those of one uninterrupted reference run.

The named points are the ``MMREC_FAULT_KILL_AT`` / ``MMREC_FAULT_SIGTERM_AT`` test hooks
of ``mmrec_jax/loop/signals.py``. Subprocesses share a JAX compilation cache and the
prepared dataset, so a run takes a few seconds of CPU; every one is bounded by a timeout.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import orbax.checkpoint as ocp
import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
CONFIG = "experiments/synthetic.py:smoke,bpr_mf"
ARGS = (
  "--config.data.num_interactions=1500",
  "--config.input.batch_size=256",
  "--config.train.num_epochs=3",
  "--config.train.max_steps=-1",
  "--config.train.checkpoint_every_steps=2",
)
TOTAL_STEPS = 12  # 4 steps per epoch; validation at 4, 8, 12
TIMING = ("train_seconds", "epoch_seconds")
TIMEOUT = 240


@pytest.fixture(scope="session")
def shared(tmp_path_factory) -> pathlib.Path:
  """A directory shared by every xdist worker of this session (caches, reference runs)."""
  root = tmp_path_factory.getbasetemp()
  if os.environ.get("PYTEST_XDIST_WORKER"):
    root = root.parent
  path = root / "faults_shared"
  path.mkdir(exist_ok=True)
  return path


def command(
  shared: pathlib.Path, workdir: pathlib.Path, *extra: str, cache: pathlib.Path | None = None
) -> list[str]:
  cache = shared / "data" if cache is None else cache
  return [
    sys.executable,
    "-m",
    "mmrec_jax.main",
    f"--config={CONFIG}",
    f"--workdir={workdir}",
    f"--config.data.cache_dir={cache}",
    *ARGS,
    *extra,
  ]


def run_main(
  shared: pathlib.Path,
  workdir: pathlib.Path,
  *extra: str,
  env: dict | None = None,
  timeout: float = TIMEOUT,
  cache: pathlib.Path | None = None,
) -> subprocess.CompletedProcess:
  cmd = command(shared, workdir, *extra, cache=cache)
  full_env = dict(
    os.environ,
    JAX_COMPILATION_CACHE_DIR=str(shared / "jax_cache"),
    JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
    JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="-1",
    **(env or {}),
  )
  for key in (
    "MMREC_FAULT_KILL_AT",
    "MMREC_FAULT_SIGTERM_AT",
    "MMREC_FAULT_KILL_AFTER_STEP",
    "MMREC_FAULT_SIGTERM_AT_STEP",
  ):
    if key not in (env or {}):
      full_env.pop(key, None)
  return subprocess.run(
    cmd, check=False, cwd=REPO, env=full_env, capture_output=True, text=True, timeout=timeout
  )


@contextlib.contextmanager
def _exclusive(path: pathlib.Path):
  with open(path, "w") as f:
    fcntl.flock(f, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)


def _once(shared: pathlib.Path, name: str, build) -> pathlib.Path:
  """``shared/name`` built once per session by whichever worker gets there first."""
  target = shared / name
  with _exclusive(shared / f".{name}.lock"):
    if not (target / ".done").exists():
      shutil.rmtree(target, ignore_errors=True)
      build(target)
      (target / ".done").touch()
  return target


@pytest.fixture(scope="session")
def reference(shared) -> pathlib.Path:
  """One uninterrupted run of the config (shared by every test and worker)."""

  def build(target):
    out = run_main(shared, target)
    assert out.returncode == 0, out.stderr[-3000:]

  return _once(shared, "reference", build)


@pytest.fixture(scope="session")
def stopped_at_10(shared) -> pathlib.Path:
  """A run killed after step 10's checkpoint: checkpoints 8 and 10, best 4 and 8."""

  def build(target):
    out = run_main(shared, target, env={"MMREC_FAULT_KILL_AFTER_STEP": "10"})
    assert out.returncode == -signal.SIGKILL, out.stderr[-3000:]

  return _once(shared, "stopped_at_10", build)


def results(workdir: pathlib.Path) -> dict:
  data = json.loads((workdir / "results.json").read_text())
  return {k: v for k, v in data.items() if k not in TIMING}


def latest_params(workdir: pathlib.Path) -> dict[str, np.ndarray]:
  ckpt_dir = workdir / "checkpoints"
  step = max(int(p.name) for p in ckpt_dir.iterdir() if p.name.isdigit())
  restored = ocp.StandardCheckpointer().restore(ckpt_dir / str(step) / "state")
  flat = {}

  def walk(tree, prefix):
    if isinstance(tree, dict):
      for k, v in tree.items():
        walk(v, f"{prefix}/{k}")
    elif isinstance(tree, (list, tuple)):
      for i, v in enumerate(tree):
        walk(v, f"{prefix}/{i}")
    elif tree is not None and np.asarray(tree).dtype != object:
      flat[prefix] = np.asarray(tree)

  walk(restored, "")
  return flat


def assert_same_as_reference(workdir: pathlib.Path, reference: pathlib.Path) -> None:
  assert results(workdir) == results(reference)
  got, want = latest_params(workdir), latest_params(reference)
  assert got.keys() == want.keys()
  for k in want:
    np.testing.assert_array_equal(got[k], want[k], err_msg=k)
  steps = [
    json.loads(l)["step"]
    for l in (workdir / "metrics.jsonl").read_text().splitlines()
    if json.loads(l)["kind"] in ("train", "valid")
  ]
  assert steps == sorted(steps), "metrics.jsonl steps go backwards"


def error_line(stderr: str) -> str:
  """The one ``error:`` line main prints last; fails on a traceback or several errors."""
  assert "Traceback" not in stderr, stderr[-3000:]
  errors = [l for l in stderr.splitlines() if l.startswith("error:")]
  assert len(errors) == 1 and stderr.rstrip().splitlines()[-1] == errors[0], stderr[-3000:]
  return errors[0]


# ------------------------------------------------------------------ kill -9 / SIGTERM

# best_save:8 has its own test below (with the extra checks of issue 14.1).
KILL_POINTS = [
  "prepare",
  "prepare_build",
  "step:3",
  "save:6",
  "validation:8",
  "final_eval",
  "export",
]


def _cache_for(point: str, shared: pathlib.Path, tmp_path: pathlib.Path) -> pathlib.Path:
  """A fresh data cache for the 'prepare' point, so the rerun really prepares again."""
  return tmp_path / "data" if point.startswith("prepare") else shared / "data"


@pytest.mark.parametrize("point", KILL_POINTS)
def test_kill_at_named_point_then_rerun_equals_uninterrupted(shared, reference, tmp_path, point):
  cache = _cache_for(point, shared, tmp_path)
  killed = run_main(shared, tmp_path / "run", env={"MMREC_FAULT_KILL_AT": point}, cache=cache)
  assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
  assert not (tmp_path / "run" / "results.json").exists()
  rerun = run_main(shared, tmp_path / "run", cache=cache)
  assert rerun.returncode == 0, rerun.stderr[-3000:]
  assert_same_as_reference(tmp_path / "run", reference)


def test_kill_during_best_save_never_pairs_loop_state_with_older_best(shared, reference, tmp_path):
  """Issue 14.1: best/8 complete, checkpoints/8 not: the rerun must not report best/4."""
  killed = run_main(shared, tmp_path / "run", env={"MMREC_FAULT_KILL_AT": "best_save:8"})
  assert killed.returncode == -signal.SIGKILL
  assert (tmp_path / "run" / "best" / "8").is_dir()
  assert not (tmp_path / "run" / "checkpoints" / "8").exists()
  rerun = run_main(shared, tmp_path / "run")
  assert rerun.returncode == 0, rerun.stderr[-3000:]
  assert "resumed from step 6" in rerun.stderr
  assert results(tmp_path / "run")["best_step"] == results(reference)["best_step"]
  assert_same_as_reference(tmp_path / "run", reference)


# SIGTERM: inside the loop it saves and exits 0 ("preempted"); outside (preparation, the
# final report) the default action ends the process. Both times the rerun finishes.
SIGTERM_POINTS = [
  ("prepare", -signal.SIGTERM),
  ("prepare_build", -signal.SIGTERM),
  ("step:3", 0),
  ("save:6", 0),
  ("best_save:8", 0),
  ("validation:8", 0),
  ("final_eval", -signal.SIGTERM),
  ("export", -signal.SIGTERM),
]


@pytest.mark.parametrize("point,code", SIGTERM_POINTS)
def test_sigterm_at_named_point_then_rerun_equals_uninterrupted(
  shared, reference, tmp_path, point, code
):
  cache = _cache_for(point, shared, tmp_path)
  first = run_main(shared, tmp_path / "run", env={"MMREC_FAULT_SIGTERM_AT": point}, cache=cache)
  assert first.returncode == code, first.stderr[-3000:]
  assert "Traceback" not in first.stderr, first.stderr[-3000:]
  if code == 0:
    assert "preempted at step" in first.stdout
  rerun = run_main(shared, tmp_path / "run", cache=cache)
  assert rerun.returncode == 0, rerun.stderr[-3000:]
  assert_same_as_reference(tmp_path / "run", reference)


# ------------------------------------------------------------------ damaged checkpoints


def _largest_array_file(step_dir: pathlib.Path) -> pathlib.Path:
  files = [p for p in (step_dir / "state").rglob("*") if p.is_file() and p.parent.name == "d"]
  return max(files, key=lambda p: p.stat().st_size)


def _truncate(step_dir):
  f = _largest_array_file(step_dir)
  f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])


def _delete_array_file(step_dir):
  _largest_array_file(step_dir).unlink()


def _flip_bytes(step_dir):
  """Silent corruption: same size, some bytes changed (only the checksum can tell)."""
  f = _largest_array_file(step_dir)
  data = bytearray(f.read_bytes())
  for i in range(len(data) // 3, len(data) // 3 + 64):
    data[i] ^= 0xFF
  f.write_bytes(bytes(data))


def _garbage_loop(step_dir):
  (step_dir / "loop" / "metadata").write_text("{not json")


def _delete_loop(step_dir):
  (step_dir / "loop" / "metadata").unlink()


def _delete_state_dir(step_dir):
  shutil.rmtree(step_dir / "state")


CORRUPTIONS = [
  _truncate,
  _delete_array_file,
  _flip_bytes,
  _garbage_loop,
  _delete_loop,
  _delete_state_dir,
]


@pytest.mark.parametrize("corrupt", CORRUPTIONS, ids=lambda f: f.__name__.strip("_"))
def test_damaged_latest_checkpoint_falls_back_and_finishes_identical(
  shared, reference, stopped_at_10, tmp_path, corrupt
):
  run = tmp_path / "run"
  shutil.copytree(stopped_at_10, run)
  corrupt(run / "checkpoints" / "10")
  rerun = run_main(shared, run)
  assert rerun.returncode == 0, rerun.stderr[-3000:]
  assert "checkpoints/10 is damaged" in rerun.stderr, rerun.stderr[-3000:]
  assert "resumed from step 8" in rerun.stderr
  assert any(p.name.startswith("checkpoints-10-") for p in (run / "damaged").iterdir())
  assert_same_as_reference(run, reference)


def test_garbage_orbax_step_metadata_is_not_damage(shared, reference, stopped_at_10, tmp_path):
  """Orbax's _CHECKPOINT_METADATA (timestamps) is informational: step 10 stays usable."""
  run = tmp_path / "run"
  shutil.copytree(stopped_at_10, run)
  (run / "checkpoints" / "10" / "_CHECKPOINT_METADATA").write_bytes(b"\x00garbage")
  rerun = run_main(shared, run)
  assert rerun.returncode == 0, rerun.stderr[-3000:]
  assert "resumed from step 10" in rerun.stderr
  assert_same_as_reference(run, reference)


def test_every_checkpoint_damaged_is_one_line_exit_1(shared, stopped_at_10, tmp_path):
  run = tmp_path / "run"
  shutil.copytree(stopped_at_10, run)
  for step in ("8", "10"):
    _garbage_loop(run / "checkpoints" / step)
  out = run_main(shared, run)
  assert out.returncode == 1, out.stderr[-3000:]
  line = error_line(out.stderr)
  assert "no intact checkpoint" in line and "checkpoints" in line, line
  # The damaged ones were set aside, so the same command now starts afresh.
  assert not [p for p in (run / "checkpoints").iterdir() if p.name.isdigit()]


def test_damaged_best_checkpoint_uses_the_latest_copy_of_that_step(shared, reference, tmp_path):
  """best/12 unreadable at the end: checkpoints/12 holds the same model."""
  run = tmp_path / "run"
  shutil.copytree(reference, run)
  (run / "results.json").unlink()
  _garbage_loop(run / "best" / "12")
  rerun = run_main(shared, run)
  assert rerun.returncode == 0, rerun.stderr[-3000:]
  assert "best/12 is damaged" in rerun.stderr
  assert results(run) == results(reference)


# ------------------------------------------------------------------ resume guards


def test_resume_on_changed_data_fails_in_one_line_and_keeps_checkpoints(
  shared, stopped_at_10, tmp_path
):
  run = tmp_path / "run"
  shutil.copytree(stopped_at_10, run)
  before = sorted(p.name for p in (run / "checkpoints").iterdir())
  out = run_main(shared, run, "--config.data.num_interactions=1501")
  assert out.returncode == 2, out.stderr[-3000:]
  line = error_line(out.stderr)
  assert "cannot resume" in line and "changed: the dataset" in line, line
  assert "another --workdir" in line
  assert sorted(p.name for p in (run / "checkpoints").iterdir()) == before


def test_resume_with_changed_embed_dim_fails_in_one_line(shared, stopped_at_10, tmp_path):
  run = tmp_path / "run"
  shutil.copytree(stopped_at_10, run)
  out = run_main(shared, run, "--config.model.embed_dim=8")
  assert out.returncode == 2, out.stderr[-3000:]
  assert "changed: model.embed_dim 16 -> 8" in error_line(out.stderr)


def test_second_run_on_a_busy_workdir_fails_at_once(shared, tmp_path):
  from mmrec_jax.workdir_lock import WorkdirLock

  run = tmp_path / "run"
  run.mkdir()
  with WorkdirLock(run):  # a live run holds the workdir
    t0 = time.time()
    second = run_main(shared, run)
  assert second.returncode == 1, second.stderr[-3000:]
  line = error_line(second.stderr)
  assert "another run is using this workdir" in line and f"pid {os.getpid()}" in line, line
  assert time.time() - t0 < 60
  assert not (run / "checkpoints").exists() and not (run / "metrics.jsonl").exists()


def test_two_concurrent_runs_never_interleave(shared, reference, tmp_path):
  """Started together: one trains, the other fails with one line (or runs after it)."""
  run = tmp_path / "run"
  env = dict(
    os.environ,
    JAX_COMPILATION_CACHE_DIR=str(shared / "jax_cache"),
    JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
  )
  procs = [
    subprocess.Popen(
      command(shared, run),
      cwd=REPO,
      env=env,
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      text=True,
    )
    for _ in range(2)
  ]
  outs = []
  try:
    for p in procs:
      _, err = p.communicate(timeout=TIMEOUT)
      outs.append((p.returncode, err))
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  codes = sorted(code for code, _ in outs)
  assert codes in ([0, 0], [0, 1]), [err[-2000:] for _, err in outs]
  for code, err in outs:
    if code == 1:
      assert "another run is using this workdir" in error_line(err)
  assert_same_as_reference(run, reference)


def test_lock_of_a_killed_run_is_not_in_the_way(shared, tmp_path):
  from mmrec_jax.workdir_lock import WorkdirLock

  run = tmp_path / "run"
  run.mkdir()
  code = (
    "import os, sys; from mmrec_jax.workdir_lock import WorkdirLock; "
    f"WorkdirLock({str(run)!r}).acquire(); os.kill(os.getpid(), 9)"
  )
  out = subprocess.run([sys.executable, "-c", code], check=False, cwd=REPO, timeout=60)
  assert out.returncode == -signal.SIGKILL
  assert '"pid"' in (run / ".lock").read_text()  # the file stays behind ...
  with WorkdirLock(run):  # ... but the lock does not
    pass


def test_run_outputs_get_the_usual_permissions(reference):
  """Issue 14.10: results.json/config.json are readable as the umask allows, not 0600."""
  umask = os.umask(0)
  os.umask(umask)
  for name in ("results.json", "config.json", "metrics.jsonl", "per_user_test.npz"):
    assert (reference / name).stat().st_mode & 0o777 == 0o666 & ~umask, name


def test_metrics_rewrite_on_resume_drops_lost_rows_and_a_torn_line(tmp_path):
  """A kill mid-append leaves half a JSON line; the resumed run must not choke on it."""
  from mmrec_jax.reporting import MetricsWriter

  rows = [
    {"step": 2, "kind": "train", "loss": 1.0},
    {"step": 4, "kind": "valid", "x": 0.1},
    {"step": 6, "kind": "train", "loss": 0.5},
    {"step": 4, "kind": "final_test", "x": 1},
  ]
  (tmp_path / "metrics.jsonl").write_text(
    "".join(json.dumps(r) + "\n" for r in rows) + '{"step": 8, "ki'
  )
  writer = MetricsWriter(tmp_path, resume_step=4)
  writer.write(5, "train", {"loss": 0.7})
  writer.close()
  got = MetricsWriter.read(tmp_path / "metrics.jsonl")
  assert got == [rows[0], rows[1], {"step": 5, "kind": "train", "loss": 0.7}]
