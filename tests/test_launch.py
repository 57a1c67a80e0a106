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
  out = subprocess.run(
    [sys.executable, str(REPO / "launch" / script), *args],
    capture_output=True,
    text=True,
    timeout=60,
    check=False,
    cwd=REPO,
  )
  assert out.returncode == 0, out.stderr
  return [shlex.split(line) for line in out.stdout.splitlines() if line.strip()]


def remote_command(cmd: list[str]) -> list[list[str]]:
  """The shell lines inside an ssh ``--command=...`` argument."""
  (arg,) = [a for a in cmd if a.startswith("--command=")]
  body = arg.split("=", 1)[1]
  assert body.startswith("set -euo pipefail; ")
  return [shlex.split(part) for part in body.split("; ")[1:]]


def test_tpu_vm_pod_all_stages():
  """A multi-host slice: every stage on every worker, the workdir in the shared bucket."""
  cmds = dry_run(
    "tpu_vm.py",
    "--name=mmrec-pod",
    "--zone=us-central2-b",
    "--accelerator_type=v4-32",
    "--project=proj",
    "--spot",
    "--bucket=gs://bkt/exp",
    "--dry-run",
    "--",
    *MAIN,
  )
  create, tar, scp, install, run, fetch, delete = cmds
  assert create[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "create", "mmrec-pod"]
  assert {
    "--zone=us-central2-b",
    "--project=proj",
    "--accelerator-type=v4-32",
    "--version=tpu-ubuntu2204-base",
    "--spot",
  } <= set(create)
  assert tar[0] == "tar" and "--exclude=.venv" in tar and "--exclude=.git" in tar
  assert scp[:5] == ["gcloud", "compute", "tpus", "tpu-vm", "scp"]
  assert "--worker=all" in scp
  assert install[4:6] == ["ssh", "mmrec-pod"] and "--worker=all" in install
  lines = remote_command(install)
  assert ["python3.11", "-m", "venv", ".venv"] in lines
  assert [".venv/bin/pip", "install", "-q", "-e", ".[tpu]"] in lines
  mount = [
    "mountpoint",
    "-q",
    "gcs",
    "||",
    "gcsfuse",
    "--implicit-dirs",
    "--only-dir=exp",
    "bkt",
    "gcs",
  ]
  assert mount in lines  # every worker mounts the bucket at install time
  assert "--worker=all" in run and "--zone=us-central2-b" in run
  run_lines = remote_command(run)
  assert mount in run_lines  # and again before the run (a restarted VM lost the mount)
  main = run_lines[-1]
  assert main[:2] == ["env", "MMREC_DISTRIBUTED=auto"]
  assert main[2:] == [
    ".venv/bin/python",
    "-m",
    "mmrec_jax.main",
    "--config=experiments/ml25m.py",
    "--workdir=gcs/ml25m",
  ]
  # Results come from the bucket (every host's shards), not from worker 0's disk.
  assert fetch == ["gcloud", "storage", "cp", "-r", "gs://bkt/exp/ml25m", "results"]
  assert delete[4:6] == ["delete", "mmrec-pod"] and "--quiet" in delete


def test_tpu_vm_single_host_fetches_from_worker_0():
  cmds = dry_run(
    "tpu_vm.py",
    "--name=mmrec-v4",
    "--zone=us-central2-b",
    "--accelerator_type=v4-8",
    "--dry-run",
    "--",
    *MAIN,
  )
  _, _, _, install, run, mkdir, fetch, _ = cmds
  assert not any("gcsfuse" in line for line in remote_command(install))
  main = remote_command(run)[-1]
  assert main == [
    "env",
    "MMREC_DISTRIBUTED=auto",
    ".venv/bin/python",
    "-m",
    "mmrec_jax.main",
    *MAIN,
  ]
  assert mkdir == ["mkdir", "-p", "results"]
  assert fetch[4] == "scp" and "--recurse" in fetch and "--worker=0" in fetch
  assert "mmrec-v4:mmrec_jax/runs/ml25m" in fetch


@pytest.mark.parametrize(
  "accelerator,stages",
  [
    ("v4-32", "create,copy,install,run,fetch,delete"),
    ("v4-16", "run"),
    ("v5litepod-16", "fetch"),
    ("v6e-32", "install"),
    ("v2-32", "run,fetch"),
  ],
)
def test_tpu_vm_multi_host_without_bucket_fails(accelerator, stages):
  out = subprocess.run(
    [
      sys.executable,
      str(REPO / "launch" / "tpu_vm.py"),
      "--name=t",
      "--zone=z",
      f"--accelerator_type={accelerator}",
      f"--stages={stages}",
      "--dry-run",
      "--",
      *MAIN,
    ],
    capture_output=True,
    text=True,
    timeout=60,
    check=False,
  )
  assert out.returncode == 2 and out.stdout == ""  # nothing would have been run
  (error,) = [l for l in out.stderr.splitlines() if "error:" in l]
  assert f"--accelerator_type={accelerator} is a multi-host slice" in error
  assert "--bucket=gs://" in error


@pytest.mark.parametrize(
  "accelerator,stages",
  [
    ("v4-8", "run,fetch"),
    ("v5litepod-8", "run"),
    ("v5p-8", "install"),
    ("v6e-4", "fetch"),
    ("v4-32", "create,copy,delete"),
  ],
)  # no stage that touches the workdir
def test_tpu_vm_no_bucket_needed(accelerator, stages):
  assert dry_run(
    "tpu_vm.py",
    "--name=t",
    "--zone=z",
    f"--accelerator_type={accelerator}",
    f"--stages={stages}",
    "--dry-run",
    "--",
    *MAIN,
  )


def test_tpu_vm_bucket_workdir_and_stage_subset():
  cmds = dry_run(
    "tpu_vm.py",
    "--name=t",
    "--zone=z",
    "--accelerator_type=v5litepod-16",
    "--bucket=gs://bkt/exp",
    "--stages=run,fetch",
    "--dry-run",
    "--",
    *MAIN,
  )
  assert len(cmds) == 2
  run, fetch = cmds
  lines = remote_command(run)
  assert [
    "mountpoint",
    "-q",
    "gcs",
    "||",
    "gcsfuse",
    "--implicit-dirs",
    "--only-dir=exp",
    "bkt",
    "gcs",
  ] in lines
  assert lines[-1][-1] == "--workdir=gcs/ml25m"  # the shared (bucket) workdir
  assert fetch == ["gcloud", "storage", "cp", "-r", "gs://bkt/exp/ml25m", "results"]


def test_tpu_vm_default_version_by_generation():
  (create,) = dry_run(
    "tpu_vm.py", "--name=t", "--zone=z", "--accelerator_type=v6e-8", "--stages=create", "--dry-run"
  )
  assert "--version=v2-alpha-tpuv6e" in create


def test_gpu_vm_all_stages():
  cmds = dry_run(
    "gpu_vm.py",
    "--name=g",
    "--zone=us-central1-a",
    "--machine_type=a2-highgpu-4g",
    "--dry-run",
    "--",
    *MAIN,
  )
  create, _, scp, install, run, _, fetch, delete = cmds
  assert create[:5] == ["gcloud", "compute", "instances", "create", "g"]
  assert {
    "--zone=us-central1-a",
    "--machine-type=a2-highgpu-4g",
    "--maintenance-policy=TERMINATE",
  } <= set(create)
  assert scp[:3] == ["gcloud", "compute", "scp"]
  assert [".venv/bin/pip", "install", "-q", "-e", ".[cuda]"] in remote_command(install)
  assert remote_command(run)[-1] == [".venv/bin/python", "-m", "mmrec_jax.main", *MAIN]
  assert "g:mmrec_jax/runs/ml25m" in fetch
  assert delete[:5] == ["gcloud", "compute", "instances", "delete", "g"]


@pytest.mark.parametrize(
  "per,tasks,per_node,local_ids", [("gpu", 8, 4, None), ("node", 2, 1, "0,1,2,3")]
)
def test_slurm_script(tmp_path, per, tasks, per_node, local_ids):
  out = tmp_path / "job.sbatch"
  (cmd,) = dry_run(
    "slurm.py",
    "--nodes=2",
    "--gpus_per_node=4",
    f"--per={per}",
    "--partition=gpu",
    f"--out={out}",
    "--repo_dir=/shared/mmrec_jax",
    "--dry-run",
    "--",
    "--config=experiments/ml25m.py",
    "--workdir=/shared/runs/ml25m",
  )
  assert cmd == ["sbatch", str(out)]
  script = out.read_text()
  assert script.startswith("#!/bin/bash\n")
  for directive in (
    "--nodes=2",
    f"--ntasks-per-node={per_node}",
    "--gpus-per-node=4",
    "--partition=gpu",
  ):
    assert f"#SBATCH {directive}\n" in script
  (srun,) = [shlex.split(l) for l in script.splitlines() if l.startswith("srun ")]
  assert f"--ntasks={tasks}" in srun
  i = srun.index(".venv/bin/python")
  assert srun[i:] == [
    ".venv/bin/python",
    "-m",
    "mmrec_jax.main",
    "--config=experiments/ml25m.py",
    "--workdir=/shared/runs/ml25m",
  ]
  assert "cd /shared/mmrec_jax\n" in script
  assert ("export MMREC_LOCAL_DEVICE_IDS=0,1,2,3\n" in script) == (local_ids is not None)
  # The script is valid bash.
  assert subprocess.run(["bash", "-n", str(out)], check=False).returncode == 0


def test_k8s_manifest(tmp_path):
  # A hard import: PyYAML is a test dependency, so a missing one fails instead of skipping.
  import yaml

  out = tmp_path / "job.yaml"
  (cmd,) = dry_run(
    "k8s.py",
    "--name=mm",
    "--num_processes=4",
    "--gpus_per_process=8",
    "--image=reg/mmrec:1",
    "--pvc=runs",
    "--namespace=ml",
    f"--out={out}",
    "--dry-run",
    "--",
    "--config=experiments/ml25m.py",
    "--workdir=/runs/ml25m",
  )
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
  assert c["command"] == [
    "python",
    "-m",
    "mmrec_jax.main",
    "--config=experiments/ml25m.py",
    "--workdir=/runs/ml25m",
  ]
  env = {e["name"]: e for e in c["env"]}
  assert env["MMREC_COORDINATOR"]["value"] == "mm-0.mm-svc:1234"
  assert env["MMREC_NUM_PROCESSES"]["value"] == "4"
  assert env["MMREC_PROCESS_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == (
    "metadata.annotations['batch.kubernetes.io/job-completion-index']"
  )
  assert c["resources"]["limits"]["nvidia.com/gpu"] == 8
  assert pod["volumes"][0]["persistentVolumeClaim"]["claimName"] == "runs"


def test_local_commands():
  cmds = dry_run(
    "local.py",
    "--num_processes=3",
    "--devices_per_process=2",
    "--port=4321",
    "--dry-run",
    "--",
    "--config=experiments/synthetic.py:smoke",
    "--workdir=/tmp/w",
  )
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
    assert cmd[j:] == [
      sys.executable,
      "-m",
      "mmrec_jax.main",
      "--config=experiments/synthetic.py:smoke",
      "--workdir=/tmp/w",
    ]


@pytest.mark.parametrize(
  "script,extra",
  [
    ("tpu_vm.py", ["--name=t", "--zone=z"]),
    ("gpu_vm.py", ["--name=g", "--zone=z"]),
    ("slurm.py", ["--nodes=1", "--gpus_per_node=1"]),
    ("k8s.py", ["--num_processes=2", "--image=i"]),
    ("local.py", []),
  ],
)
def test_missing_config_fails_loudly(script, extra):
  out = subprocess.run(
    [sys.executable, str(REPO / "launch" / script), *extra, "--dry-run", "--", "--workdir=w"],
    capture_output=True,
    text=True,
    timeout=60,
    check=False,
  )
  assert out.returncode != 0 and "--config" in out.stderr
  assert out.stdout == ""


def test_unknown_stage_lists_valid_ones():
  out = subprocess.run(
    [
      sys.executable,
      str(REPO / "launch" / "tpu_vm.py"),
      "--name=t",
      "--zone=z",
      "--stages=create,boot",
      "--dry-run",
    ],
    capture_output=True,
    text=True,
    timeout=60,
    check=False,
  )
  assert out.returncode != 0 and "boot" in out.stderr and "install" in out.stderr


_CLUSTER_VARS = (
  "MMREC_COORDINATOR",
  "MMREC_DISTRIBUTED",
  "SLURM_JOB_ID",
  "SLURM_NTASKS",
  "TPU_WORKER_HOSTNAMES",
  "TPU_PROCESS_ADDRESSES",
  "TPU_SKIP_MDS_QUERY",
  "MEGASCALE_NUM_SLICES",
)


@pytest.fixture
def bare_env(monkeypatch):
  """No cluster variables, not on a Cloud TPU VM, metadata server unreachable."""
  from jax._src import cloud_tpu_init
  from jax._src.clusters import cloud_tpu_cluster

  from mmrec_jax import distributed

  for var in _CLUSTER_VARS:
    monkeypatch.delenv(var, raising=False)
  monkeypatch.setattr(cloud_tpu_init, "running_in_cloud_tpu_vm", False)

  def no_metadata(key):
    raise AssertionError(f"metadata server queried for {key!r}")

  monkeypatch.setattr(cloud_tpu_cluster, "get_metadata", no_metadata)
  return distributed


def test_distributed_auto_kind(bare_env, monkeypatch):
  monkeypatch.setenv("MMREC_DISTRIBUTED", "auto")
  assert bare_env.cluster_kind() == "auto"
  monkeypatch.delenv("MMREC_DISTRIBUTED")
  assert bare_env.cluster_kind() == "single"  # and no metadata query off a TPU VM


def test_distributed_slurm_kind(bare_env, monkeypatch):
  monkeypatch.setenv("SLURM_JOB_ID", "42")
  monkeypatch.setenv("SLURM_NTASKS", "8")
  assert bare_env.cluster_kind() == "slurm"
  monkeypatch.setenv("SLURM_NTASKS", "1")  # a one-task job (or an salloc shell)
  assert bare_env.cluster_kind() == "single"
  monkeypatch.setenv("SLURM_NTASKS", "8")
  monkeypatch.delenv("SLURM_JOB_ID")  # not inside a job
  assert bare_env.cluster_kind() == "single"


def test_distributed_gke_tpu_kind(bare_env, monkeypatch):
  monkeypatch.setenv("TPU_WORKER_HOSTNAMES", "w-0,w-1,w-2,w-3")
  assert bare_env.cluster_kind() == "tpu"
  monkeypatch.setenv("TPU_WORKER_HOSTNAMES", "localhost")
  assert bare_env.cluster_kind() == "single"


def _fake_tpu_vm(monkeypatch, endpoints: str, tpu_env: str = "") -> list[str]:
  """Turns this process into a Cloud TPU VM whose metadata server lists ``endpoints``."""
  from jax._src import cloud_tpu_init
  from jax._src.clusters import cloud_tpu_cluster

  asked = []

  def metadata(key):
    asked.append(key)
    values = {"worker-network-endpoints": endpoints, "tpu-env": tpu_env, "agent-worker-number": "0"}
    return values[key], 200

  monkeypatch.setattr(cloud_tpu_init, "running_in_cloud_tpu_vm", True)
  monkeypatch.setattr(cloud_tpu_cluster, "get_metadata", metadata)
  return asked


def test_distributed_bare_cloud_tpu_vm_kind(bare_env, monkeypatch):
  # The old name:id:ip format and the new hostname format of worker-network-endpoints.
  asked = _fake_tpu_vm(monkeypatch, "w0:0:10.0.0.2,w1:1:10.0.0.3,w2:2:10.0.0.4")
  assert bare_env.cloud_tpu_worker_count() == 3
  assert bare_env.cluster_kind() == "tpu"
  assert "worker-network-endpoints" in asked
  _fake_tpu_vm(monkeypatch, "t1v-n-0")  # a single-host TPU VM (v4-8)
  assert bare_env.cluster_kind() == "single"
  _fake_tpu_vm(monkeypatch, "t1v-n-0", "MEGASCALE_NUM_SLICES: '2'\n")  # 2 slices x 1 host
  assert bare_env.cluster_kind() == "tpu"
  _fake_tpu_vm(monkeypatch, "a,b")
  monkeypatch.setenv("TPU_SKIP_MDS_QUERY", "1")  # jax's own "do not ask" switch
  assert bare_env.cluster_kind() == "single"


def test_distributed_unreachable_metadata_is_single(bare_env, monkeypatch):
  from jax._src import cloud_tpu_init
  from jax._src.clusters import cloud_tpu_cluster

  def down(key):
    raise OSError(f"connection refused ({key})")

  monkeypatch.setattr(cloud_tpu_init, "running_in_cloud_tpu_vm", True)
  monkeypatch.setattr(cloud_tpu_cluster, "get_metadata", down)
  assert bare_env.cluster_kind() == "single"


def test_quiet_non_main_process(monkeypatch):
  import jax
  from absl import logging

  from mmrec_jax import distributed

  before = logging.get_verbosity()
  try:
    logging.set_verbosity(logging.INFO)
    monkeypatch.setattr(jax, "process_index", lambda: 0)
    assert not distributed.quiet_non_main_process()
    assert logging.get_verbosity() == logging.INFO  # process 0 keeps INFO
    monkeypatch.setattr(jax, "process_index", lambda: 1)
    assert distributed.quiet_non_main_process()
    assert logging.get_verbosity() == logging.WARNING
    assert not logging.level_info()
  finally:
    logging.set_verbosity(before)
