"""Multi-process start-up: jax.distributed when the program runs as several processes.

Detection order (first match wins):
  1. explicit flags ``--coordinator_address --num_processes --process_id`` (or the
     environment variables MMREC_COORDINATOR, MMREC_NUM_PROCESSES, MMREC_PROCESS_ID, which
     the launch/ scripts set);
  2. MMREC_DISTRIBUTED=auto (set by launch/tpu_vm.py): ``jax.distributed.initialize()``
     with jax's own cluster detection (GCE TPU VM metadata, SLURM, ...);
  3. a Cloud TPU VM slice with several workers, or a SLURM job with several tasks:
     ``jax.distributed.initialize()`` auto-detects the cluster;
  4. otherwise a single process: nothing to do.
``--local_device_ids`` / MMREC_LOCAL_DEVICE_IDS optionally pins GPUs per process.
"""

from __future__ import annotations

import os

import jax
from absl import flags
from absl import logging

_COORD = flags.DEFINE_string("coordinator_address", None,
                             "host:port of process 0 for jax.distributed (multi-process).")
_NUM = flags.DEFINE_integer("num_processes", None, "Number of processes (multi-process).")
_PID = flags.DEFINE_integer("process_id", None, "This process's index (multi-process).")
_LOCAL = flags.DEFINE_string("local_device_ids", None,
                             "Comma-separated local device ids of this process.")

_initialized = False


def _env_int(name: str) -> int | None:
  value = os.environ.get(name)
  return int(value) if value not in (None, "") else None


def cluster_kind() -> str:
  """'explicit', 'auto', 'slurm', 'tpu' or 'single': how this process was started."""
  if (_COORD.present and _COORD.value) or os.environ.get("MMREC_COORDINATOR"):
    return "explicit"
  if os.environ.get("MMREC_DISTRIBUTED", "").lower() == "auto":
    # Set by launch/tpu_vm.py: a GCE TPU VM slice announces its workers only through the
    # metadata server, which jax.distributed.initialize() queries itself.
    return "auto"
  if int(os.environ.get("SLURM_NTASKS", "1")) > 1 and "SLURM_JOB_ID" in os.environ:
    return "slurm"
  if os.environ.get("TPU_WORKER_HOSTNAMES", "").count(",") >= 1:
    return "tpu"
  return "single"


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, local_device_ids: list[int] | None = None) -> None:
  """Initialises jax.distributed once; a no-op for a single process."""
  global _initialized
  if _initialized:
    return
  kind = "explicit" if coordinator_address else cluster_kind()
  if kind == "single":
    return
  if kind == "explicit":
    jax.distributed.initialize(coordinator_address=coordinator_address,
                               num_processes=num_processes, process_id=process_id,
                               local_device_ids=local_device_ids)
  else:
    jax.distributed.initialize(local_device_ids=local_device_ids)
  _initialized = True
  logging.info("jax.distributed (%s): process %d of %d, %d local / %d global devices", kind,
               jax.process_index(), jax.process_count(), jax.local_device_count(),
               jax.device_count())


def initialize_from_flags() -> None:
  """Reads the flags (or MMREC_* environment variables) and initialises."""
  coord = _COORD.value or os.environ.get("MMREC_COORDINATOR")
  num = _NUM.value if _NUM.value is not None else _env_int("MMREC_NUM_PROCESSES")
  pid = _PID.value if _PID.value is not None else _env_int("MMREC_PROCESS_ID")
  local = _LOCAL.value or os.environ.get("MMREC_LOCAL_DEVICE_IDS")
  local_ids = [int(x) for x in local.split(",")] if local else None
  if coord and (num is None or pid is None):
    from mmrec_jax.errors import ConfigError  # pylint: disable=g-import-not-at-top
    raise ConfigError("--coordinator_address needs --num_processes and --process_id "
                      "(or MMREC_NUM_PROCESSES / MMREC_PROCESS_ID)")
  initialize(coord, num, pid, local_ids)
