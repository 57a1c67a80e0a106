r"""kill -9 at random moments of a run, then the same command again: identical results?

  python benchmarks/random_kill.py --trials=20 --seed=0 --out=/tmp/random_kill.json

Why: the fault suite (tests/test_faults.py) kills runs at named points; this draws the
moments at random, as a preempted VM or an OOM killer would. One uninterrupted reference
run is timed first; each trial starts the same command in a fresh workdir, sends SIGKILL
at a moment drawn uniformly from the reference's active window (the time from taking
the workdir lock, i.e. after the imports, to the end of the run; counted from the
trial's own lock, and re-measured by every rerun that starts from scratch, so a busier
machine does not push the kills into the first seconds), then reruns the command once
and compares ``results.json`` (timing fields excluded) and every array of the latest
checkpoint with the reference. A draw that lands after the run already finished is
drawn again, so every trial really kills a run. The default config is the fault
suite's (synthetic data, bpr_mf, 12 steps, validation at 4/8/12, checkpoints every 2);
``--config``/``--args`` choose another.

Runs on CPU with 8 fake devices (as the tests), sharing a JAX compilation cache and the
prepared data between runs. Prints one line per trial and a summary; exits 1 unless
every trial ends identical.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time

# This process reads the checkpoints back with the device count the runs used.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = "experiments/synthetic.py:smoke,bpr_mf"
DEFAULT_ARGS = (
  "--config.data.num_interactions=1500 --config.input.batch_size=256 "
  "--config.train.num_epochs=3 --config.train.max_steps=-1 "
  "--config.train.checkpoint_every_steps=2"
)
TIMING = ("train_seconds", "epoch_seconds")


def _env(base: pathlib.Path) -> dict[str, str]:
  env = dict(os.environ)
  env.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
  env.setdefault("JAX_PLATFORMS", "cpu")
  env.update(
    JAX_COMPILATION_CACHE_DIR=str(base / "jax_cache"),
    JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
    JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="-1",
  )
  for key in list(env):
    if key.startswith("MMREC_FAULT_"):
      del env[key]
  return env


def _cmd(config: str, args: list[str], workdir: pathlib.Path, cache: pathlib.Path) -> list[str]:
  return [
    sys.executable,
    "-m",
    "mmrec_jax.main",
    f"--config={config}",
    f"--workdir={workdir}",
    f"--config.data.cache_dir={cache}",
    "--config.train.progress_bar=false",
    *args,
  ]


def _locked(workdir: pathlib.Path) -> bool:
  lock = workdir / ".lock"
  try:
    return bool(lock.read_text().strip())
  except OSError:
    return False


def _timed_run(cmd, env, workdir, timeout) -> tuple[int, float, float, str]:
  """Runs to the end; returns (code, seconds to the lock, seconds to the end, stderr)."""
  t0 = time.time()
  with tempfile.TemporaryFile("w+") as err:
    p = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=err, text=True)
    t_lock = None
    while p.poll() is None:
      if t_lock is None and _locked(workdir):
        t_lock = time.time() - t0
      if time.time() - t0 > timeout:
        p.kill()
      time.sleep(0.01)
    err.seek(0)
    return p.returncode, t_lock or 0.0, time.time() - t0, err.read()


def _results(workdir: pathlib.Path) -> dict:
  data = json.loads((workdir / "results.json").read_text())
  return {k: v for k, v in data.items() if k not in TIMING}


def _latest_arrays(workdir: pathlib.Path) -> dict[str, np.ndarray]:
  import orbax.checkpoint as ocp

  ckpt = workdir / "checkpoints"
  step = max(int(p.name) for p in ckpt.iterdir() if p.name.isdigit())
  tree = ocp.StandardCheckpointer().restore(ckpt / str(step) / "state")
  import jax

  return {
    jax.tree_util.keystr(k): np.asarray(v)
    for k, v in jax.tree_util.tree_leaves_with_path(tree)
    if v is not None and np.asarray(v).dtype != object
  }


def _identical(a: pathlib.Path, b: pathlib.Path) -> str:
  """'' when the two finished workdirs agree, else what differs."""
  ra, rb = _results(a), _results(b)
  if ra != rb:
    keys = sorted(k for k in set(ra) | set(rb) if ra.get(k) != rb.get(k))
    return f"results.json differs in {keys}"
  xa, xb = _latest_arrays(a), _latest_arrays(b)
  if xa.keys() != xb.keys():
    return "checkpoint trees differ"
  for k in xa:
    if not np.array_equal(xa[k], xb[k]):
      return f"array {k} differs"
  return ""


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[1])
  parser.add_argument("--trials", type=int, default=20)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--config", default=DEFAULT_CONFIG)
  parser.add_argument("--args", default=DEFAULT_ARGS, help="extra flags, space-separated")
  parser.add_argument("--base", default="", help="scratch directory (default: a temp dir)")
  parser.add_argument("--out", default="", help="write the trials as JSON here")
  parser.add_argument("--timeout", type=float, default=600)
  opts = parser.parse_args()

  base = pathlib.Path(opts.base or tempfile.mkdtemp(prefix="random_kill-"))
  base.mkdir(parents=True, exist_ok=True)
  env, cache, args = _env(base), base / "data", opts.args.split()
  rng = random.Random(opts.seed)

  ref = base / "reference"
  shutil.rmtree(ref, ignore_errors=True)
  _timed_run(_cmd(opts.config, args, ref, cache), env, ref, opts.timeout)  # warms caches
  shutil.rmtree(ref, ignore_errors=True)
  code, t_lock, t_end, err = _timed_run(_cmd(opts.config, args, ref, cache), env, ref, opts.timeout)
  if code != 0:
    print(err[-3000:], file=sys.stderr)
    return 1
  print(
    f"reference: {t_end:.1f} s, locked after {t_lock:.1f} s; kills drawn in "
    f"[0, {t_end - t_lock:.1f}] s after each run's lock"
  )

  trials = []
  active = t_end - t_lock
  for trial in range(opts.trials):
    workdir = base / f"trial-{trial:02d}"
    kills = []
    while not kills:
      shutil.rmtree(workdir, ignore_errors=True)
      # The moment counts from this run's own lock (its imports done), so that a busy
      # machine's slower start-up does not push every kill into the first seconds.
      at = rng.uniform(0.0, active)
      cmd = _cmd(opts.config, args, workdir, cache)
      p = subprocess.Popen(
        cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
      )
      while p.poll() is None and not _locked(workdir):
        time.sleep(0.005)
      t0 = time.time()
      while p.poll() is None and time.time() - t0 < at:
        time.sleep(0.005)
      if p.poll() is None:
        p.send_signal(signal.SIGKILL)
        p.wait()
        ckpt_dir = workdir / "checkpoints"
        step_dirs = (
          sorted(int(d.name) for d in ckpt_dir.iterdir() if d.name.isdigit())
          if ckpt_dir.is_dir()
          else []
        )
        kills.append(
          {"at_s": round(at, 2), "window_s": round(active, 2), "checkpoints_left": step_dirs}
        )
      # else: the run finished before the drawn moment; draw again.
    code, r_lock, r_end, err = _timed_run(
      _cmd(opts.config, args, workdir, cache), env, workdir, opts.timeout
    )
    if code == 0 and not kills[0]["checkpoints_left"]:
      # A rerun from scratch is a whole run under the machine's current load: the window
      # follows it, so kills keep spreading over the run when the machine gets busier.
      active = r_end - r_lock
    if code == 0:
      try:
        diff = _identical(workdir, ref)
      except Exception as e:  # (recorded, not fatal)
        diff = f"comparison failed: {type(e).__name__}: {e}"
    else:
      diff = f"rerun exit {code}: " + (err.strip().splitlines() or ["?"])[-1]
    trials.append(
      {"trial": trial, **kills[0], "rerun_exit": code, "identical": not diff, "difference": diff}
    )
    print(
      f"trial {trial:2d}: killed {kills[0]['at_s']:6.2f} s after the lock (checkpoints "
      f"on disk {kills[0]['checkpoints_left']}) -> rerun exit {code}: "
      f"{'identical' if not diff else diff}",
      flush=True,
    )
    shutil.rmtree(workdir, ignore_errors=True)

  ok = sum(t["identical"] for t in trials)
  print(f"{ok} of {len(trials)} kill -9 at random moments ended identical to the uninterrupted run")
  if opts.out:
    pathlib.Path(opts.out).write_text(
      json.dumps(
        {
          "config": opts.config,
          "args": args,
          "seed": opts.seed,
          "reference_seconds": round(t_end, 2),
          "lock_seconds": round(t_lock, 2),
          "trials": trials,
          "identical": ok,
        },
        indent=1,
      )
      + "\n"
    )
  return 0 if ok == len(trials) else 1


if __name__ == "__main__":
  sys.exit(main())
