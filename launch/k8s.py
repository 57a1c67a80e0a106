#!/usr/bin/env python3
r"""Writes a Kubernetes indexed Job (+ headless Service) for N processes, and applies it.

  python launch/k8s.py --name=mmrec --num_processes=4 --gpus_per_process=8 \
      --image=REGISTRY/mmrec_jax:latest --pvc=mmrec-runs --dry-run \
      -- --config=experiments/ml25m.py --workdir=/runs/ml25m

The manifest holds
  * a headless Service ``<name>-svc`` (``clusterIP: None``) selecting the Job's pods, so
    pod ``<name>-0`` is reachable as ``<name>-0.<name>-svc`` (the coordinator);
  * an indexed Job with ``completions = parallelism = N``; every pod runs
    ``python -m mmrec_jax.main ARGS`` with MMREC_COORDINATOR=<name>-0.<name>-svc:PORT,
    MMREC_NUM_PROCESSES=N and MMREC_PROCESS_ID = the pod's completion index (the
    ``batch.kubernetes.io/job-completion-index`` annotation, which is also what
    JOB_COMPLETION_INDEX holds), read by ``mmrec_jax.distributed``.
The workdir must be on storage every pod mounts (``--pvc``: a ReadWriteMany claim, e.g.
Filestore or a GCS FUSE volume), since Orbax writes each process's shards into one
checkpoint directory. ``launch/Dockerfile`` builds the image.

With ``--dry-run`` the manifest is still written (``--out``) so it can be read; the
``kubectl`` command is printed, not run.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
from typing import Any

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import common

INDEX_ANNOTATION = "metadata.annotations['batch.kubernetes.io/job-completion-index']"


def parse(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
  own, main_args = common.split_main_args(argv)
  p = argparse.ArgumentParser(
    description=__doc__.split("\n")[0], usage="%(prog)s [flags] -- --config=... --workdir=..."
  )
  p.add_argument("--name", default="mmrec", help="Job name (pods are NAME-0 .. NAME-N-1)")
  p.add_argument("--num_processes", type=int, required=True, help="N pods, one process each")
  p.add_argument(
    "--gpus_per_process", type=int, default=0, help="nvidia.com/gpu per pod (0: CPU pods)"
  )
  p.add_argument("--image", required=True, help="container image with mmrec_jax installed")
  p.add_argument("--namespace", default=None)
  p.add_argument("--port", type=int, default=1234, help="coordinator port")
  p.add_argument("--pvc", default=None, help="PersistentVolumeClaim holding the workdir")
  p.add_argument("--mount_path", default="/runs", help="where the claim is mounted")
  p.add_argument("--python", default="python", help="interpreter inside the image")
  p.add_argument("--cpu", default="8", help="CPU request per pod")
  p.add_argument("--memory", default="64Gi", help="memory request per pod")
  p.add_argument(
    "--out", default=None, help="where to write the manifest (default launch/out/NAME.yaml)"
  )
  common.add_common_flags(p)
  args = p.parse_args(own)
  if args.num_processes < 1:
    p.error("--num_processes must be >= 1")
  common.main_command(main_args)
  if args.out is None:
    args.out = str(common.REPO_ROOT / "launch" / "out" / f"{args.name}.yaml")
  return args, main_args


def service_name(args: argparse.Namespace) -> str:
  return f"{args.name}-svc"


def manifests(args: argparse.Namespace, main_args: list[str]) -> list[dict[str, Any]]:
  """The Service and the Job, as plain dicts (what ``kubectl apply`` receives)."""
  svc = service_name(args)
  meta = {"name": svc}
  if args.namespace:
    meta["namespace"] = args.namespace
  service = {
    "apiVersion": "v1",
    "kind": "Service",
    "metadata": meta,
    "spec": {
      "clusterIP": "None",
      "publishNotReadyAddresses": True,
      "selector": {"job-name": args.name},
      "ports": [{"name": "coordinator", "port": args.port}],
    },
  }
  env = [
    {"name": "MMREC_COORDINATOR", "value": f"{args.name}-0.{svc}:{args.port}"},
    {"name": "MMREC_NUM_PROCESSES", "value": str(args.num_processes)},
    {"name": "MMREC_PROCESS_ID", "valueFrom": {"fieldRef": {"fieldPath": INDEX_ANNOTATION}}},
  ]
  resources: dict[str, Any] = {"requests": {"cpu": args.cpu, "memory": args.memory}}
  if args.gpus_per_process:
    resources["limits"] = {"nvidia.com/gpu": args.gpus_per_process}
  container: dict[str, Any] = {
    "name": "mmrec",
    "image": args.image,
    "command": common.main_command(main_args, python=args.python),
    "env": env,
    "resources": resources,
    "ports": [{"containerPort": args.port, "name": "coordinator"}],
  }
  pod_spec: dict[str, Any] = {"subdomain": svc, "restartPolicy": "Never", "containers": [container]}
  if args.pvc:
    container["volumeMounts"] = [{"name": "runs", "mountPath": args.mount_path}]
    pod_spec["volumes"] = [{"name": "runs", "persistentVolumeClaim": {"claimName": args.pvc}}]
  job_meta = {"name": args.name}
  if args.namespace:
    job_meta["namespace"] = args.namespace
  job = {
    "apiVersion": "batch/v1",
    "kind": "Job",
    "metadata": job_meta,
    "spec": {
      "completionMode": "Indexed",
      "completions": args.num_processes,
      "parallelism": args.num_processes,
      "backoffLimit": 0,
      "template": {"metadata": {"labels": {"job-name": args.name}}, "spec": pod_spec},
    },
  }
  return [service, job]


def _yaml(value: Any, indent: int = 0) -> list[str]:
  """Block-style YAML for dicts/lists of scalars (scalars JSON-quoted: valid YAML)."""
  pad = "  " * indent
  lines: list[str] = []
  if isinstance(value, dict):
    for k, v in value.items():
      if isinstance(v, (dict, list)) and v:
        lines.append(f"{pad}{k}:")
        lines += _yaml(v, indent + 1)
      else:
        lines.append(f"{pad}{k}: {json.dumps(v)}")
  elif isinstance(value, list):
    for v in value:
      sub = (
        _yaml(v, indent + 1)
        if isinstance(v, (dict, list)) and v
        else [f"{'  ' * (indent + 1)}{json.dumps(v)}"]
      )
      first = sub[0].lstrip()
      lines.append(f"{pad}- {first}")
      lines += sub[1:]
  else:
    lines.append(f"{pad}{json.dumps(value)}")
  return lines


def to_yaml(docs: list[dict[str, Any]]) -> str:
  return "---\n".join("\n".join(_yaml(d)) + "\n" for d in docs)


def main(argv: list[str] | None = None) -> int:
  args, main_args = parse(sys.argv[1:] if argv is None else argv)
  path = common.write_atomic(args.out, to_yaml(manifests(args, main_args)))
  print(f"# wrote {path}", file=sys.stderr)
  cmd = ["kubectl", "apply", "-f", str(path)]
  if args.namespace:
    cmd.append(f"--namespace={args.namespace}")
  common.Runner(args.dry_run).run(cmd)
  return 0


if __name__ == "__main__":
  sys.exit(main())
