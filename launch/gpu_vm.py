#!/usr/bin/env python3
r"""Runs mmrec_jax on one Compute Engine VM with several GPUs, with gcloud.

  python launch/gpu_vm.py --name=mmrec-a100 --zone=us-central1-a \
      --machine_type=a2-highgpu-4g --dry-run -- --config=experiments/ml25m.py \
      --workdir=runs/ml25m

Stages (``--stages``, default all, in this order):
  create   gcloud compute instances create NAME (Deep Learning VM image with the NVIDIA
           driver; A2/A3/G2 machine types come with their GPUs, N1 takes --accelerator)
  copy     tar the local repository (no .venv/.git/runs) and scp it to the VM
  install  python3.11 venv + ``pip install -e '.[cuda]'`` (the README's set-up)
  run      python -m mmrec_jax.main ARGS -- one process that drives every GPU of the VM
  fetch    copy the workdir back (``--fetch_to``)
  delete   gcloud compute instances delete NAME --quiet

One process per VM sees all of its GPUs, so no jax.distributed set-up is needed. For
several GPU VMs use launch/slurm.py or launch/k8s.py.
"""

from __future__ import annotations

import argparse
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import common

STAGES = ("create", "copy", "install", "run", "fetch", "delete")


def parse(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
  own, main_args = common.split_main_args(argv)
  p = argparse.ArgumentParser(
    description=__doc__.split("\n")[0], usage="%(prog)s [flags] -- --config=... --workdir=..."
  )
  p.add_argument("--name", required=True, help="VM name")
  p.add_argument("--zone", required=True)
  p.add_argument("--project", default=None)
  p.add_argument(
    "--machine_type",
    default="a2-highgpu-4g",
    help="a2-highgpu-4g = 4 x A100 40GB; g2-standard-48 = 4 x L4; a3-highgpu-8g = 8 x H100",
  )
  p.add_argument(
    "--accelerator",
    default=None,
    help="only for N1 machine types, e.g. type=nvidia-tesla-t4,count=4",
  )
  p.add_argument(
    "--image_family",
    default="common-cu129-ubuntu-2204-nvidia-580",
    help="Deep Learning VM image family; its NVIDIA driver must be new enough "
    "for the jax CUDA wheels (jax[cuda13]: driver >= 580)",
  )
  p.add_argument("--image_project", default="deeplearning-platform-release")
  p.add_argument("--boot_disk_size", default="200GB")
  p.add_argument("--spot", action="store_true", help="create a spot (preemptible) VM")
  p.add_argument(
    "--stages", default=",".join(STAGES), help=f"comma-separated subset of {','.join(STAGES)}"
  )
  p.add_argument("--python", default="python3.11", help="interpreter for the venv")
  p.add_argument("--fetch_to", default="results", help="local directory for the workdir")
  common.add_common_flags(p)
  args = p.parse_args(own)
  stages = [s for s in args.stages.split(",") if s]
  unknown = sorted(set(stages) - set(STAGES))
  if unknown:
    p.error(f"unknown stage(s) {unknown}; valid: {list(STAGES)}")
  args.stages = [s for s in STAGES if s in stages]
  if "run" in args.stages or "fetch" in args.stages:
    common.main_command(main_args)
  return args, main_args


def _where(args: argparse.Namespace) -> list[str]:
  out = [f"--zone={args.zone}"]
  if args.project:
    out.append(f"--project={args.project}")
  return out


def commands(args: argparse.Namespace, main_args: list[str]) -> list[list[str]]:
  cmds: list[list[str]] = []
  tarball = "/tmp/mmrec_jax_src.tgz"
  if "create" in args.stages:
    cmd = [
      "gcloud",
      "compute",
      "instances",
      "create",
      args.name,
      *_where(args),
      f"--machine-type={args.machine_type}",
      f"--image-family={args.image_family}",
      f"--image-project={args.image_project}",
      f"--boot-disk-size={args.boot_disk_size}",
      "--maintenance-policy=TERMINATE",
      "--metadata=install-nvidia-driver=True",
    ]
    if args.accelerator:
      cmd.append(f"--accelerator={args.accelerator}")
    if args.spot:
      cmd += ["--provisioning-model=SPOT", "--instance-termination-action=STOP"]
    cmds.append(cmd)
  if "copy" in args.stages:
    cmds.append(common.source_tarball_command(tarball))
    cmds.append(
      ["gcloud", "compute", "scp", tarball, f"{args.name}:mmrec_jax_src.tgz", *_where(args)]
    )
  ssh = ["gcloud", "compute", "ssh", args.name, *_where(args)]
  if "install" in args.stages:
    lines = common.remote_install_lines("cuda", args.python)
    cmds.append(ssh + [f"--command={common.remote_shell(lines)}"])
  if "run" in args.stages:
    lines = [f"cd ~/{common.REMOTE_DIR}", common.quote(common.main_command(main_args))]
    cmds.append(ssh + [f"--command={common.remote_shell(lines)}"])
  if "fetch" in args.stages:
    workdir = common.flag_value(main_args, "workdir") or "runs"
    remote = workdir if workdir.startswith("/") else f"{common.REMOTE_DIR}/{workdir}"
    cmds.append(["mkdir", "-p", args.fetch_to])
    cmds.append(
      [
        "gcloud",
        "compute",
        "scp",
        "--recurse",
        f"{args.name}:{remote}",
        args.fetch_to,
        *_where(args),
      ]
    )
  if "delete" in args.stages:
    cmds.append(["gcloud", "compute", "instances", "delete", args.name, *_where(args), "--quiet"])
  return cmds


def main(argv: list[str] | None = None) -> int:
  args, main_args = parse(sys.argv[1:] if argv is None else argv)
  runner = common.Runner(args.dry_run)
  for cmd in commands(args, main_args):
    runner.run(cmd)
  return 0


if __name__ == "__main__":
  sys.exit(main())
