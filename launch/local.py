#!/usr/bin/env python3
r"""Runs N processes of mmrec_jax on this machine: the multi-host code path, locally.

  python launch/local.py --num_processes=2 --devices_per_process=2 \
      -- --config=experiments/synthetic.py:smoke --workdir=runs/mp

Each process gets what a host of a cluster gets: MMREC_COORDINATOR=127.0.0.1:<free port>,
MMREC_NUM_PROCESSES=N, MMREC_PROCESS_ID=i, so ``mmrec_jax.distributed`` calls
``jax.distributed.initialize`` exactly as on a TPU slice or GPU cluster. On CPU
(``--platform=cpu``, the default) every process has ``--devices_per_process`` fake
devices (XLA_FLAGS=--xla_force_host_platform_device_count=K, JAX_PLATFORMS=cpu) and
cross-process collectives go through gloo (JAX_CPU_COLLECTIVES_IMPLEMENTATION=gloo;
jax 0.10's default, set explicitly so an environment override cannot turn it off). With
``--platform=gpu`` process i drives GPUs [i*K, (i+1)*K) (MMREC_LOCAL_DEVICE_IDS).

Output lines are prefixed with ``[pI]``. When one process fails, the others (which would
wait forever in a collective) are killed; ``--timeout`` bounds the whole run. Ctrl-C /
SIGTERM is forwarded as SIGTERM, which makes mmrec_jax save a checkpoint and stop.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import signal
import socket
import subprocess
import sys
import threading
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import common

DEVICE_COUNT_FLAG = "--xla_force_host_platform_device_count"


def parse(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
  own, main_args = common.split_main_args(argv)
  p = argparse.ArgumentParser(
    description=__doc__.split("\n")[0], usage="%(prog)s [flags] -- --config=... --workdir=..."
  )
  p.add_argument("--num_processes", type=int, default=2)
  p.add_argument("--devices_per_process", type=int, default=1)
  p.add_argument("--platform", choices=("cpu", "gpu"), default="cpu")
  p.add_argument("--port", type=int, default=0, help="coordinator port (0: a free one)")
  p.add_argument("--python", default=sys.executable)
  p.add_argument(
    "--timeout", type=float, default=0, help="seconds before every process is killed (0: no limit)"
  )
  p.add_argument(
    "--module",
    default="mmrec_jax.main",
    help="python module each process runs (tests run small probes)",
  )
  common.add_common_flags(p)
  args = p.parse_args(own)
  if args.num_processes < 1 or args.devices_per_process < 1:
    p.error("--num_processes and --devices_per_process must be >= 1")
  if args.module == "mmrec_jax.main":
    common.main_command(main_args)
  return args, main_args


def free_port() -> int:
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def process_env(args: argparse.Namespace, index: int, port: int) -> dict[str, str]:
  """The variables that differ from this shell's environment for process ``index``."""
  env = {
    "MMREC_COORDINATOR": f"127.0.0.1:{port}",
    "MMREC_NUM_PROCESSES": str(args.num_processes),
    "MMREC_PROCESS_ID": str(index),
  }
  if args.platform == "cpu":
    kept = [
      f for f in os.environ.get("XLA_FLAGS", "").split() if not f.startswith(DEVICE_COUNT_FLAG)
    ]
    env["XLA_FLAGS"] = " ".join(kept + [f"{DEVICE_COUNT_FLAG}={args.devices_per_process}"])
    env["JAX_PLATFORMS"] = "cpu"
    env["JAX_CPU_COLLECTIVES_IMPLEMENTATION"] = "gloo"
  else:
    k = args.devices_per_process
    env["MMREC_LOCAL_DEVICE_IDS"] = ",".join(str(i) for i in range(index * k, (index + 1) * k))
  return env


def commands(
  args: argparse.Namespace, main_args: list[str], port: int
) -> list[tuple[dict[str, str], list[str]]]:
  cmd = [args.python, "-m", args.module, *main_args]
  return [(process_env(args, i, port), cmd) for i in range(args.num_processes)]


def _pump(stream, prefix: str) -> None:
  for line in iter(stream.readline, b""):
    sys.stdout.write(f"{prefix}{line.decode(errors='replace')}")
    sys.stdout.flush()
  stream.close()


def _kill(procs: list[subprocess.Popen], sig: int) -> None:
  for p in procs:
    if p.poll() is None:
      try:
        os.killpg(p.pid, sig)  # the process group we created for this child only
      except ProcessLookupError:
        pass


def run_all(specs: list[tuple[dict[str, str], list[str]]], timeout: float) -> int:
  """Starts every process, streams output, returns the first non-zero status (or 0)."""
  procs, pumps = [], []
  for i, (env, cmd) in enumerate(specs):
    p = subprocess.Popen(
      cmd,
      env={**os.environ, **env},
      stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT,
      start_new_session=True,
    )
    t = threading.Thread(target=_pump, args=(p.stdout, f"[p{i}] "), daemon=True)
    t.start()
    procs.append(p)
    pumps.append(t)

  def forward(signum, frame):
    _kill(procs, signal.SIGTERM)

  previous = signal.signal(signal.SIGTERM, forward)
  deadline = time.monotonic() + timeout if timeout > 0 else None
  status = 0
  try:
    while any(p.poll() is None for p in procs):
      failed = [p.returncode for p in procs if p.returncode not in (None, 0)]
      if failed:
        status = failed[0]
        time.sleep(5)  # let the others report their own error, then stop them
        _kill(procs, signal.SIGKILL)
        break
      if deadline is not None and time.monotonic() > deadline:
        print(f"local.py: timeout after {timeout:.0f} s; killing all processes", file=sys.stderr)
        _kill(procs, signal.SIGKILL)
        status = 124
        break
      time.sleep(0.2)
  except KeyboardInterrupt:
    _kill(procs, signal.SIGTERM)
  finally:
    signal.signal(signal.SIGTERM, previous)
    for p in procs:
      try:
        p.wait(timeout=60)
      except subprocess.TimeoutExpired:
        _kill([p], signal.SIGKILL)
        p.wait()
    for t in pumps:
      t.join(timeout=5)
  if status == 0:
    status = next((p.returncode for p in procs if p.returncode != 0), 0)
  return status


def main(argv: list[str] | None = None) -> int:
  args, main_args = parse(sys.argv[1:] if argv is None else argv)
  port = args.port or free_port()
  specs = commands(args, main_args, port)
  if args.dry_run:
    for env, cmd in specs:
      print(common.quote(common.env_prefix(env) + cmd))
    return 0
  rc = run_all(specs, args.timeout)
  if rc:
    print(f"local.py: a process exited with status {rc}", file=sys.stderr)
  return rc


if __name__ == "__main__":
  sys.exit(main())
