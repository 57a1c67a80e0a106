"""Several processes on this machine: the multi-host code path (jax.distributed + gloo).

``launch/local.py`` starts the processes exactly as a cluster would (MMREC_COORDINATOR,
MMREC_NUM_PROCESSES, MMREC_PROCESS_ID; JAX_PLATFORMS=cpu; K fake CPU devices each;
gloo collectives), so these tests run the launcher and ``mmrec_jax.distributed`` as users
do. Every subprocess is bounded (``local.py --timeout`` kills with SIGKILL: jax.distributed
catches SIGTERM).

  * ``test_two_processes_form_one_mesh``: 2 processes x 2 devices initialise through
    ``distributed.initialize_from_flags``, see 4 global devices, and a global batch built
    from per-process slices (``sharding.global_batch_from_local``) sums to the
    single-process value.
  * ``test_training_matches_single_process``: ``synthetic.py:smoke`` trained and evaluated
    by 2 processes x 2 devices gives the valid/test metrics of 1 process x 4 devices (same
    global batch and mesh shape) within METRIC_ATOL; both processes wrote their shards of
    every checkpoint, only process 0 wrote metrics.jsonl and TensorBoard events, and only
    process 0 logged INFO lines past start-up.

Run directly (``python tests/test_multiprocess.py``) this file is the probe that each
process of the first test executes.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parent.parent
LOCAL = REPO / "launch" / "local.py"
SMOKE = f"{REPO / 'experiments' / 'synthetic.py'}:smoke"
# Metrics are means over ~200 users; the two runs do the same math on the same batches,
# with cross-process instead of in-process reductions: only float rounding may differ.
METRIC_ATOL = 1e-4
TIMEOUT_S = 300


def probe() -> None:
  """One process of the mesh test: prints one JSON line."""
  from absl import flags

  flags.FLAGS(["probe"])  # distributed's flags must be parsed before they are read
  import jax
  import jax.numpy as jnp
  import numpy as np

  from mmrec_jax import distributed, sharding

  distributed.initialize_from_flags()
  mesh = sharding.make_mesh()
  pid, n = jax.process_index(), jax.process_count()
  global_users = np.arange(16, dtype=np.int32)  # global batch of 16
  local = global_users.reshape(n, -1)[pid]  # this process's slice
  batch = sharding.global_batch_from_local(mesh, {"user": local})
  total = int(jax.jit(jnp.sum, out_shardings=sharding.replicated(mesh))(batch["user"]))
  print(
    json.dumps(
      {
        "process": pid,
        "processes": n,
        "devices": jax.device_count(),
        "local_devices": jax.local_device_count(),
        "batch_shape": list(batch["user"].shape),
        "sum": total,
        "expected": int(global_users.sum()),
      }
    ),
    flush=True,
  )
  jax.distributed.shutdown()


def _local(
  *args: str, cwd: pathlib.Path = REPO, extra_env: dict | None = None
) -> subprocess.CompletedProcess:
  env = {**os.environ, **(extra_env or {})}
  return subprocess.run(
    [sys.executable, str(LOCAL), f"--timeout={TIMEOUT_S}", *args],
    capture_output=True,
    text=True,
    cwd=cwd,
    env=env,
    timeout=TIMEOUT_S + 60,
    check=False,
  )


def test_two_processes_form_one_mesh():
  out = _local(
    "--num_processes=2",
    "--devices_per_process=2",
    "--module=test_multiprocess",
    extra_env={"PYTHONPATH": str(REPO / "tests")},
  )
  assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
  rows = {}
  for line in out.stdout.splitlines():
    tag, _, rest = line.partition(" ")
    if rest.startswith("{"):
      rows[tag] = json.loads(rest)
  assert set(rows) == {"[p0]", "[p1]"}, out.stdout[-4000:]
  for i in range(2):
    r = rows[f"[p{i}]"]
    assert (r["process"], r["processes"], r["devices"], r["local_devices"]) == (i, 2, 4, 2)
    assert r["batch_shape"] == [16]
    assert r["sum"] == r["expected"] == 120


def _metrics(workdir: pathlib.Path) -> dict:
  results = json.loads((workdir / "results.json").read_text())
  return {"steps": results["steps"], "valid": results["valid"], "test": results["test"]}


def test_training_matches_single_process(tmp_path):
  cache = tmp_path / "cache"  # both runs prepare the same synthetic dataset here
  main_args = [f"--config={SMOKE}", f"--config.data.cache_dir={cache}"]
  single = subprocess.run(
    [
      "timeout",
      "-s",
      "KILL",
      str(TIMEOUT_S),
      sys.executable,
      "-m",
      "mmrec_jax.main",
      *main_args,
      f"--workdir={tmp_path / 'single'}",
    ],
    capture_output=True,
    text=True,
    cwd=REPO,
    check=False,
    env={
      **os.environ,
      "JAX_PLATFORMS": "cpu",
      "XLA_FLAGS": "--xla_force_host_platform_device_count=4",
    },
  )
  assert single.returncode == 0, single.stderr[-4000:]
  multi = _local(
    "--num_processes=2",
    "--devices_per_process=2",
    "--",
    *main_args,
    f"--workdir={tmp_path / 'multi'}",
  )
  assert multi.returncode == 0, multi.stdout[-6000:] + multi.stderr[-2000:]
  _check_one_writer_all_shards(tmp_path / "single", tmp_path / "multi")
  _check_only_process_0_logs_info(multi.stdout)
  a, b = _metrics(tmp_path / "single"), _metrics(tmp_path / "multi")
  assert a["steps"] == b["steps"] > 0
  assert a["valid"]["ndcg@10"] > 0  # a trained model, not an all-zero comparison
  for split in ("valid", "test"):
    assert sorted(a[split]) == sorted(b[split])
    for k in a[split]:
      assert abs(a[split][k] - b[split][k]) <= METRIC_ATOL, (split, k, a[split][k], b[split][k])


def _check_one_writer_all_shards(single: pathlib.Path, multi: pathlib.Path) -> None:
  """Checkpoints hold both processes' shards; summaries were written by one process."""
  for manager in ("checkpoints", "best"):  # the latest and the best-so-far managers
    assert list((multi / manager).glob("*/state")), sorted(p.name for p in multi.iterdir())
  for state in sorted(multi.glob("*/*/state")):
    shards = sorted(p.name for p in state.glob("ocdbt.process_*"))
    assert shards == ["ocdbt.process_0", "ocdbt.process_1"], (state, shards)
  # One TensorBoard writer: a second process would add its own events file.
  events = list((multi / "tensorboard").glob("events.out.tfevents.*"))
  assert len(events) == 1, events

  # One metrics.jsonl writer: every (step, kind) row once, and the evaluation rows of the
  # single-process run (train rows differ: several processes sync, so log, every step).
  def keys(workdir, evals_only=False):
    rows = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines() if l]
    return [(r["step"], r["kind"]) for r in rows if not evals_only or r["kind"] != "train"]

  assert len(keys(multi)) == len(set(keys(multi))), keys(multi)
  assert keys(multi, evals_only=True) == keys(single, evals_only=True) != []


def _check_only_process_0_logs_info(stdout: str) -> None:
  """Process 1 logs at INFO only that it joined; the loop's INFO lines are process 0's."""
  info = {i: re.findall(rf"^\[p{i}\] I\d{{4}} .*$", stdout, re.M) for i in range(2)}
  assert any("over 4 devices (2 processes)" in l for l in info[0]), stdout[-4000:]
  assert any(" valid " in l for l in info[0]), stdout[-4000:]  # eval lines of the loop
  assert [l for l in info[1] if "jax.distributed (explicit): process 1 of 2" not in l] == [], info[
    1
  ]
  assert len(info[1]) == 1, stdout[-4000:]  # process 1 did start and join


if __name__ == "__main__":
  probe()
