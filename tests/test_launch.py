"""The launch/ scripts' --dry-run output: the exact commands they would run.

Each launcher runs as a subprocess (as a user would run it) with ``--dry-run``; every
printed line is parsed back with shlex, so the tests also check that the lines are
valid, correctly quoted shell commands. Nothing is created, submitted or contacted.
"""

from __future__ import annotations

import pathlib
import shlex
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent
MAIN = ["--config=experiments/ml25m.py", "--workdir=runs/ml25m"]


def dry_run(script: str, *args: str) -> list[list[str]]:
  """Runs ``launch/<script> ARGS`` and returns the printed commands as argv lists."""
  out = subprocess.run([sys.executable, str(REPO / "launch" / script), *args],
                       capture_output=True, text=True, timeout=60, check=False, cwd=REPO)
  assert out.returncode == 0, out.stderr
  return [shlex.split(line) for line in out.stdout.splitlines() if line.strip()]


def remote_command(cmd: list[str]) -> list[list[str]]:
  """The shell lines inside an ssh ``--command=...`` argument."""
  (arg,) = [a for a in cmd if a.startswith("--command=")]
  body = arg.split("=", 1)[1]
  assert body.startswith("set -euo pipefail; ")
  return [shlex.split(part) for part in body.split("; ")[1:]]


def test_tpu_vm_all_stages():
  cmds = dry_run("tpu_vm.py", "--name=mmrec-pod", "--zone=us-central2-b",
                 "--accelerator_type=v4-32", "--project=proj", "--spot", "--dry-run",
                 "--", *MAIN)
  create, tar, scp, install, run, mkdir, fetch, delete = cmds
  assert create[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "create", "mmrec-pod"]
  assert {"--zone=us-central2-b", "--project=proj", "--accelerator-type=v4-32",
          "--version=tpu-ubuntu2204-base", "--spot"} <= set(create)
  assert tar[0] == "tar" and "--exclude=.venv" in tar and "--exclude=.git" in tar
  assert scp[:5] == ["gcloud", "compute", "tpus", "tpu-vm", "scp"]
  assert "--worker=all" in scp
  assert install[4:6] == ["ssh", "mmrec-pod"] and "--worker=all" in install
  lines = remote_command(install)
  assert ["python3.11", "-m", "venv", ".venv"] in lines
  assert [".venv/bin/pip", "install", "-q", "-e", ".[tpu]"] in lines
  assert "--worker=all" in run and "--zone=us-central2-b" in run
  main = remote_command(run)[-1]
  assert main[:2] == ["env", "MMREC_DISTRIBUTED=auto"]
  assert main[2:] == [".venv/bin/python", "-m", "mmrec_jax.main", *MAIN]
  assert mkdir == ["mkdir", "-p", "results"]
  assert fetch[4] == "scp" and "--recurse" in fetch and "--worker=0" in fetch
  assert "mmrec-pod:mmrec_jax/runs/ml25m" in fetch
  assert delete[4:6] == ["delete", "mmrec-pod"] and "--quiet" in delete


def test_tpu_vm_bucket_workdir_and_stage_subset():
  cmds = dry_run("tpu_vm.py", "--name=t", "--zone=z", "--accelerator_type=v5litepod-16",
                 "--bucket=gs://bkt/exp", "--stages=run,fetch", "--dry-run", "--", *MAIN)
  assert len(cmds) == 2
  run, fetch = cmds
  lines = remote_command(run)
  assert ["mountpoint", "-q", "gcs", "||", "gcsfuse", "--implicit-dirs", "--only-dir=exp",
          "bkt", "gcs"] in lines
  assert lines[-1][-1] == "--workdir=gcs/ml25m"  # the shared (bucket) workdir
  assert fetch == ["gcloud", "storage", "cp", "-r", "gs://bkt/exp/ml25m", "results"]


def test_tpu_vm_default_version_by_generation():
  (create,) = dry_run("tpu_vm.py", "--name=t", "--zone=z", "--accelerator_type=v6e-8",
                      "--stages=create", "--dry-run")
  assert "--version=v2-alpha-tpuv6e" in create


def test_gpu_vm_all_stages():
  cmds = dry_run("gpu_vm.py", "--name=g", "--zone=us-central1-a",
                 "--machine_type=a2-highgpu-4g", "--dry-run", "--", *MAIN)
  create, _, scp, install, run, _, fetch, delete = cmds
  assert create[:5] == ["gcloud", "compute", "instances", "create", "g"]
  assert {"--zone=us-central1-a", "--machine-type=a2-highgpu-4g",
          "--maintenance-policy=TERMINATE"} <= set(create)
  assert scp[:3] == ["gcloud", "compute", "scp"]
  assert [".venv/bin/pip", "install", "-q", "-e", ".[cuda]"] in remote_command(install)
  assert remote_command(run)[-1] == [".venv/bin/python", "-m", "mmrec_jax.main", *MAIN]
  assert "g:mmrec_jax/runs/ml25m" in fetch
  assert delete[:5] == ["gcloud", "compute", "instances", "delete", "g"]


@pytest.mark.parametrize("per,tasks,per_node,local_ids", [
    ("gpu", 8, 4, None), ("node", 2, 1, "0,1,2,3")])
def test_slurm_script(tmp_path, per, tasks, per_node, local_ids):
  out = tmp_path / "job.sbatch"
  (cmd,) = dry_run("slurm.py", "--nodes=2", "--gpus_per_node=4", f"--per={per}",
                   "--partition=gpu", f"--out={out}", "--repo_dir=/shared/mmrec_jax",
                   "--dry-run", "--", "--config=experiments/ml25m.py",
                   "--workdir=/shared/runs/ml25m")
  assert cmd == ["sbatch", str(out)]
  script = out.read_text()
  assert script.startswith("#!/bin/bash\n")
  for directive in ("--nodes=2", f"--ntasks-per-node={per_node}", "--gpus-per-node=4",
                    "--partition=gpu"):
    assert f"#SBATCH {directive}\n" in script
  (srun,) = [shlex.split(l) for l in script.splitlines() if l.startswith("srun ")]
  assert f"--ntasks={tasks}" in srun
  i = srun.index(".venv/bin/python")
  assert srun[i:] == [".venv/bin/python", "-m", "mmrec_jax.main",
                      "--config=experiments/ml25m.py", "--workdir=/shared/runs/ml25m"]
  assert "cd /shared/mmrec_jax\n" in script
  assert ("export MMREC_LOCAL_DEVICE_IDS=0,1,2,3\n" in script) == (local_ids is not None)
  # The script is valid bash.
  assert subprocess.run(["bash", "-n", str(out)], check=False).returncode == 0


def test_k8s_manifest(tmp_path):
  yaml = pytest.importorskip("yaml")
  out = tmp_path / "job.yaml"
  (cmd,) = dry_run("k8s.py", "--name=mm", "--num_processes=4", "--gpus_per_process=8",
                   "--image=reg/mmrec:1", "--pvc=runs", "--namespace=ml", f"--out={out}",
                   "--dry-run", "--", "--config=experiments/ml25m.py",
                   "--workdir=/runs/ml25m")
  assert cmd == ["kubectl", "apply", "-f", str(out), "--namespace=ml"]
  service, job = yaml.safe_load_all(out.read_text())
  assert service["kind"] == "Service" and service["spec"]["clusterIP"] == "None"
  assert service["metadata"]["name"] == "mm-svc"
  assert service["spec"]["selector"] == {"job-name": "mm"}
  spec = job["spec"]
  assert job["kind"] == "Job" and spec["completionMode"] == "Indexed"
  assert spec["completions"] == spec["parallelism"] == 4
  pod = spec["template"]["spec"]
  assert pod["subdomain"] == "mm-svc"
  (c,) = pod["containers"]
  assert c["command"] == ["python", "-m", "mmrec_jax.main", "--config=experiments/ml25m.py",
                          "--workdir=/runs/ml25m"]
  env = {e["name"]: e for e in c["env"]}
  assert env["MMREC_COORDINATOR"]["value"] == "mm-0.mm-svc:1234"
  assert env["MMREC_NUM_PROCESSES"]["value"] == "4"
  assert env["MMREC_PROCESS_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == (
      "metadata.annotations['batch.kubernetes.io/job-completion-index']")
  assert c["resources"]["limits"]["nvidia.com/gpu"] == 8
  assert pod["volumes"][0]["persistentVolumeClaim"]["claimName"] == "runs"


def test_local_commands():
  cmds = dry_run("local.py", "--num_processes=3", "--devices_per_process=2", "--port=4321",
                 "--dry-run", "--", "--config=experiments/synthetic.py:smoke",
                 "--workdir=/tmp/w")
  assert len(cmds) == 3
  for i, cmd in enumerate(cmds):
    assert cmd[0] == "env"
    j = cmd.index(sys.executable)
    env = dict(a.split("=", 1) for a in cmd[1:j])
    assert env["MMREC_COORDINATOR"] == "127.0.0.1:4321"
    assert env["MMREC_NUM_PROCESSES"] == "3" and env["MMREC_PROCESS_ID"] == str(i)
    assert env["XLA_FLAGS"].split()[-1] == "--xla_force_host_platform_device_count=2"
    assert "count=8" not in env["XLA_FLAGS"]  # the test session's 8 devices are replaced
    assert env["JAX_PLATFORMS"] == "cpu"
    assert env["JAX_CPU_COLLECTIVES_IMPLEMENTATION"] == "gloo"
    assert cmd[j:] == [sys.executable, "-m", "mmrec_jax.main",
                       "--config=experiments/synthetic.py:smoke", "--workdir=/tmp/w"]


@pytest.mark.parametrize("script,extra", [
    ("tpu_vm.py", ["--name=t", "--zone=z"]), ("gpu_vm.py", ["--name=g", "--zone=z"]),
    ("slurm.py", ["--nodes=1", "--gpus_per_node=1"]),
    ("k8s.py", ["--num_processes=2", "--image=i"]), ("local.py", [])])
def test_missing_config_fails_loudly(script, extra):
  out = subprocess.run([sys.executable, str(REPO / "launch" / script), *extra, "--dry-run",
                        "--", "--workdir=w"], capture_output=True, text=True, timeout=60,
                       check=False)
  assert out.returncode != 0 and "--config" in out.stderr
  assert out.stdout == ""


def test_unknown_stage_lists_valid_ones():
  out = subprocess.run([sys.executable, str(REPO / "launch" / "tpu_vm.py"), "--name=t",
                        "--zone=z", "--stages=create,boot", "--dry-run"],
                       capture_output=True, text=True, timeout=60, check=False)
  assert out.returncode != 0 and "boot" in out.stderr and "install" in out.stderr


def test_distributed_auto_kind(monkeypatch):
  from mmrec_jax import distributed  # pylint: disable=g-import-not-at-top
  for var in ("MMREC_COORDINATOR", "SLURM_NTASKS", "TPU_WORKER_HOSTNAMES"):
    monkeypatch.delenv(var, raising=False)
  monkeypatch.setenv("MMREC_DISTRIBUTED", "auto")
  assert distributed.cluster_kind() == "auto"
  monkeypatch.delenv("MMREC_DISTRIBUTED")
  assert distributed.cluster_kind() == "single"
