#!/usr/bin/env python3
r"""Runs mmrec_jax on a Cloud TPU VM (one host or a multi-host pod slice) with gcloud.

  python launch/tpu_vm.py --name=mmrec-v4 --zone=us-central2-b --accelerator_type=v4-32 \
      --dry-run -- --config=experiments/ml25m.py --workdir=runs/ml25m

Stages (``--stages``, default all, in this order):
  create   gcloud compute tpus tpu-vm create NAME (``--spot`` for a cheaper, preemptible VM)
  copy     tar the local repository (no .venv/.git/runs) and scp it to every worker
  install  on every worker: python3.11 venv + ``pip install -e '.[tpu]'`` (the README's)
  run      on every worker at once (``--worker=all``): python -m mmrec_jax.main ARGS
  fetch    copy the workdir back from worker 0 (``--fetch_to``) or to a bucket (``--bucket``)
  delete   gcloud compute tpus tpu-vm delete NAME --quiet

Every worker runs the same command; ``MMREC_DISTRIBUTED=auto`` makes ``mmrec_jax.main``
call ``jax.distributed.initialize()``, which finds the other workers from the TPU
metadata. A multi-host slice needs a workdir that all workers share (Orbax writes each
host's shards into the same checkpoint directory, and ``fetch`` without a bucket copies
worker 0's disk only): ``--bucket=gs://B/prefix`` mounts the bucket with gcsfuse at
``~/mmrec_jax/gcs`` on every worker and puts the workdir there. It is required for a
multi-host accelerator type (a size above 8, e.g. v4-16, v5litepod-16) whenever install,
run or fetch is among the stages.
A SIGTERM (preemption of a spot VM) saves a checkpoint; rerun ``--stages=run`` to resume.
"""

from __future__ import annotations

import argparse
import pathlib
import posixpath
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import common

STAGES = ("create", "copy", "install", "run", "fetch", "delete")
# Relative to the repository directory on the workers (a quoted "~" would not expand).
BUCKET_MOUNT = "gcs"
# Default TPU software version per TPU generation (accelerator type prefix).
VERSIONS = {
  "v2": "tpu-ubuntu2204-base",
  "v3": "tpu-ubuntu2204-base",
  "v4": "tpu-ubuntu2204-base",
  "v5litepod": "v2-alpha-tpuv5-lite",
  "v5p": "v2-alpha-tpuv5",
  "v6e": "v2-alpha-tpuv6e",
}
# The size in an accelerator type counts TensorCores (v2-v4, v5p) or chips (v5litepod,
# v6e). The largest single-host type of every generation has size 8 (v4-8 = 4 chips x 2
# cores, v5litepod-8 = 8 chips); a larger size is a slice of several hosts (how many
# depends on the generation's host shape, which the check does not need).
MAX_SINGLE_HOST_SIZE = 8
# Stages whose commands depend on where the workdir lives.
WORKDIR_STAGES = ("install", "run", "fetch")


def is_multi_host(accelerator_type: str) -> bool:
  """True for a slice of several hosts (v4-16, v5litepod-16, v6e-32, ...)."""
  size = accelerator_type.rsplit("-", 1)[-1]
  return size.isdigit() and int(size) > MAX_SINGLE_HOST_SIZE


def parse(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
  own, main_args = common.split_main_args(argv)
  p = argparse.ArgumentParser(
    description=__doc__.split("\n")[0], usage="%(prog)s [flags] -- --config=... --workdir=..."
  )
  p.add_argument("--name", required=True, help="TPU VM name")
  p.add_argument("--zone", required=True)
  p.add_argument("--project", default=None)
  p.add_argument("--accelerator_type", default="v4-8", help="e.g. v4-8, v4-32, v5litepod-16")
  p.add_argument(
    "--version",
    default=None,
    help="TPU software version (default: by generation, e.g. v4 -> "
    "tpu-ubuntu2204-base, v5litepod -> v2-alpha-tpuv5-lite)",
  )
  p.add_argument("--spot", action="store_true", help="create a spot (preemptible) VM")
  p.add_argument(
    "--stages", default=",".join(STAGES), help=f"comma-separated subset of {','.join(STAGES)}"
  )
  p.add_argument("--python", default="python3.11", help="interpreter for the venv")
  p.add_argument(
    "--bucket",
    default=None,
    help="gs://bucket[/prefix]: shared workdir via gcsfuse (required for a "
    "multi-host accelerator type)",
  )
  p.add_argument("--fetch_to", default="results", help="local directory for the workdir")
  common.add_common_flags(p)
  args = p.parse_args(own)
  stages = [s for s in args.stages.split(",") if s]
  unknown = sorted(set(stages) - set(STAGES))
  if unknown:
    p.error(f"unknown stage(s) {unknown}; valid: {list(STAGES)}")
  args.stages = [s for s in STAGES if s in stages]
  if "run" in args.stages or "fetch" in args.stages:
    common.main_command(main_args)  # validates --config/--workdir early
  if args.version is None:
    gen = args.accelerator_type.rsplit("-", 1)[0]
    if gen not in VERSIONS:
      p.error(
        f"no default --version for --accelerator_type={args.accelerator_type}; "
        f"known generations: {sorted(VERSIONS)} (or pass --version)"
      )
    args.version = VERSIONS[gen]
  if args.bucket and not args.bucket.startswith("gs://"):
    p.error(f"--bucket={args.bucket!r} must start with gs://")
  workdir_stages = [s for s in args.stages if s in WORKDIR_STAGES]
  if is_multi_host(args.accelerator_type) and workdir_stages and not args.bucket:
    # Each worker's local workdir would hold only its own checkpoint shards, and fetch
    # would bring back worker 0's part: an unrestorable run. Refuse before creating a VM.
    p.error(
      f"--accelerator_type={args.accelerator_type} is a multi-host slice: its workdir "
      f"must be shared storage, pass --bucket=gs://BUCKET[/prefix] (stages "
      f"{','.join(workdir_stages)} use it)"
    )
  return args, main_args


def _gcloud(args: argparse.Namespace, *words: str) -> list[str]:
  cmd = ["gcloud", "compute", "tpus", "tpu-vm", *words, f"--zone={args.zone}"]
  if args.project:
    cmd.append(f"--project={args.project}")
  return cmd


def _ssh(args: argparse.Namespace, worker: str, lines: list[str]) -> list[str]:
  return _gcloud(args, "ssh", args.name) + [
    f"--worker={worker}",
    f"--command={common.remote_shell(lines)}",
  ]


def _bucket_parts(bucket: str) -> tuple[str, str]:
  rest = bucket[len("gs://") :].strip("/")
  name, _, prefix = rest.partition("/")
  return name, prefix


def _gcsfuse_lines(bucket: str) -> list[str]:
  name, prefix = _bucket_parts(bucket)
  only_dir = [f"--only-dir={prefix}"] if prefix else []
  return [
    'command -v gcsfuse >/dev/null || (echo "deb [signed-by=/usr/share/keyrings/'
    "cloud.google.asc] https://packages.cloud.google.com/apt gcsfuse-$(lsb_release -cs) "
    'main" | sudo tee /etc/apt/sources.list.d/gcsfuse.list && curl -fsSL '
    "https://packages.cloud.google.com/apt/doc/apt-key.gpg | sudo tee "
    "/usr/share/keyrings/cloud.google.asc >/dev/null && sudo apt-get update -q && "
    "sudo apt-get install -y -q gcsfuse)",
    f"mkdir -p {BUCKET_MOUNT}",
    f"mountpoint -q {BUCKET_MOUNT} || "
    + common.quote(["gcsfuse", "--implicit-dirs", *only_dir, name])
    + f" {BUCKET_MOUNT}",
  ]


def remote_workdir(args: argparse.Namespace, main_args: list[str]) -> str:
  """The workdir as seen on the workers (inside the bucket mount with --bucket)."""
  workdir = common.flag_value(main_args, "workdir") or "runs/default"
  if args.bucket:
    return posixpath.join(BUCKET_MOUNT, posixpath.basename(workdir.rstrip("/")))
  return workdir


def commands(args: argparse.Namespace, main_args: list[str]) -> list[list[str]]:
  """Every command of the requested stages, in order."""
  cmds: list[list[str]] = []
  tarball = "/tmp/mmrec_jax_src.tgz"
  if "create" in args.stages:
    cmd = _gcloud(args, "create", args.name) + [
      f"--accelerator-type={args.accelerator_type}",
      f"--version={args.version}",
    ]
    if args.spot:
      cmd.append("--spot")
    cmds.append(cmd)
  if "copy" in args.stages:
    cmds.append(common.source_tarball_command(tarball))
    cmds.append(_gcloud(args, "scp", tarball, f"{args.name}:mmrec_jax_src.tgz") + ["--worker=all"])
  if "install" in args.stages:
    lines = common.remote_install_lines("tpu", args.python)
    if args.bucket:
      lines += _gcsfuse_lines(args.bucket)
    cmds.append(_ssh(args, "all", lines))
  workdir = remote_workdir(args, main_args) if main_args else None
  if "run" in args.stages:
    run_args = common.replace_flag(main_args, "workdir", workdir)
    env = {"MMREC_DISTRIBUTED": "auto"}
    main = common.main_command(run_args)
    lines = [f"cd ~/{common.REMOTE_DIR}"]
    if args.bucket:
      lines += _gcsfuse_lines(args.bucket)[1:]  # remount after a VM restart
    lines.append(common.quote(common.env_prefix(env) + main))
    cmds.append(_ssh(args, "all", lines))
  if "fetch" in args.stages:
    if args.bucket:
      name, prefix = _bucket_parts(args.bucket)
      src = posixpath.join(f"gs://{name}", prefix, posixpath.basename(workdir.rstrip("/")))
      cmds.append(["gcloud", "storage", "cp", "-r", src, args.fetch_to])
    else:
      # scp resolves a relative remote path from the home directory.
      remote = workdir if workdir.startswith("/") else f"{common.REMOTE_DIR}/{workdir}"
      cmds.append(["mkdir", "-p", args.fetch_to])
      cmds.append(
        _gcloud(args, "scp", "--recurse", f"{args.name}:{remote}", args.fetch_to) + ["--worker=0"]
      )
  if "delete" in args.stages:
    cmds.append(_gcloud(args, "delete", args.name) + ["--quiet"])
  return cmds


def main(argv: list[str] | None = None) -> int:
  args, main_args = parse(sys.argv[1:] if argv is None else argv)
  runner = common.Runner(args.dry_run)
  for cmd in commands(args, main_args):
    runner.run(cmd)
  return 0


if __name__ == "__main__":
  sys.exit(main())
