"""Multi-process start-up: jax.distributed when the program runs as several processes.

Detection order (first match wins):
  1. explicit flags ``--coordinator_address --num_processes --process_id`` (or the
     environment variables MMREC_COORDINATOR, MMREC_NUM_PROCESSES, MMREC_PROCESS_ID, which
     the launch/ scripts set);
  2. MMREC_DISTRIBUTED=auto (set by launch/tpu_vm.py): ``jax.distributed.initialize()``
     with jax's own cluster detection (GCE TPU VM metadata, SLURM, ...);
  3. a SLURM job with several tasks (SLURM_JOB_ID, SLURM_NTASKS > 1);
  4. a Cloud TPU slice with several workers: on GKE TPU_WORKER_HOSTNAMES (or
     TPU_PROCESS_ADDRESSES) lists them; on a bare Cloud TPU VM (``python -m mmrec_jax.main``
     started by hand on every worker) only the GCE metadata server does, so it is asked,
     through jax's own Cloud TPU helpers, for the slice's worker endpoints;
  5. otherwise a single process: nothing to do.
In cases 2-4 ``jax.distributed.initialize()`` auto-detects the cluster itself.

The metadata server is only asked on a machine that jax itself recognised as a Cloud TPU VM
at import (libtpu installed and TPU chips on the PCI bus): on a CPU or GPU host the check
costs nothing and sends no network request, so single-host runs are unaffected.

After initialisation every process but process 0 logs at WARNING and above (see
``quiet_non_main_process``): N hosts printing the same step lines would bury the one log
a user reads, while warnings and errors of any host still show.

``--local_device_ids`` / MMREC_LOCAL_DEVICE_IDS optionally pins GPUs per process.
"""

from __future__ import annotations

import os

import jax
from absl import flags, logging

from mmrec_jax.errors import ConfigError

_COORD = flags.DEFINE_string(
  "coordinator_address", None, "host:port of process 0 for jax.distributed (multi-process)."
)
_NUM = flags.DEFINE_integer("num_processes", None, "Number of processes (multi-process).")
_PID = flags.DEFINE_integer("process_id", None, "This process's index (multi-process).")
_LOCAL = flags.DEFINE_string(
  "local_device_ids", None, "Comma-separated local device ids of this process."
)

_initialized = False


def _env_int(name: str) -> int | None:
  value = os.environ.get(name)
  return int(value) if value not in (None, "") else None


def cloud_tpu_worker_count() -> int:
  """Workers (hosts) of the Cloud TPU slice this process runs on; 1 elsewhere.

  Uses jax's own Cloud TPU detection: ``cloud_tpu_init.running_in_cloud_tpu_vm`` (set when
  ``import jax`` found libtpu and TPU chips) gates the query, and
  ``GceTpuCluster._get_worker_list_in_slice`` reads the ``worker-network-endpoints``
  metadata attribute exactly as ``jax.distributed.initialize()`` will. These are private
  jax modules, so a jax that moved them degrades to the environment check (GKE) instead of
  failing; a metadata server that does not answer logs a warning and counts as one host
  (set MMREC_DISTRIBUTED=auto to force initialisation).
  """
  hosts = os.environ.get("TPU_PROCESS_ADDRESSES") or os.environ.get("TPU_WORKER_HOSTNAMES")
  if hosts:  # GKE (and multislice set-ups) name the workers in the environment
    return len([h for h in hosts.split(",") if h.strip()])
  try:
    # Private jax modules, imported only when asked: they may move between jax versions.
    from jax._src import cloud_tpu_init  # noqa: PLC0415
    from jax._src.clusters import cloud_tpu_cluster  # noqa: PLC0415

    on_tpu_vm = bool(cloud_tpu_init.running_in_cloud_tpu_vm)
    gce = cloud_tpu_cluster.GceTpuCluster
  except (ImportError, AttributeError):
    return 1
  if not on_tpu_vm or os.environ.get("TPU_SKIP_MDS_QUERY") is not None:
    return 1  # not a Cloud TPU VM: no metadata query
  try:
    return len(gce._get_worker_list_in_slice()) * gce._get_num_slices()
  except Exception as e:
    logging.warning(
      "Cloud TPU VM, but the metadata server did not list the slice's "
      "workers (%s: %s); running as a single process. Set "
      "MMREC_DISTRIBUTED=auto on every worker of a multi-host slice.",
      type(e).__name__,
      e,
    )
    return 1


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
  if cloud_tpu_worker_count() > 1:
    return "tpu"
  return "single"


def quiet_non_main_process() -> bool:
  """Lowers absl logging to WARNING on every process but process 0; True if it did.

  Every process runs the same loop and would print the same INFO lines N times. An
  explicit ``--verbosity``/``-v`` is the user asking for a host's detail, so it is kept.
  """
  if jax.process_index() == 0:
    return False
  if "verbosity" in flags.FLAGS and flags.FLAGS["verbosity"].present:
    return False
  logging.set_verbosity(logging.WARNING)
  return True


def initialize(
  coordinator_address: str | None = None,
  num_processes: int | None = None,
  process_id: int | None = None,
  local_device_ids: list[int] | None = None,
) -> None:
  """Initialises jax.distributed once; a no-op for a single process."""
  global _initialized
  if _initialized:
    return
  kind = "explicit" if coordinator_address else cluster_kind()
  if kind == "single":
    return
  if kind == "explicit":
    jax.distributed.initialize(
      coordinator_address=coordinator_address,
      num_processes=num_processes,
      process_id=process_id,
      local_device_ids=local_device_ids,
    )
  else:
    jax.distributed.initialize(local_device_ids=local_device_ids)
  _initialized = True
  # Every process logs that it joined (one line per host: the way to see which hosts got
  # this far when a start-up hangs); after that only process 0 speaks at INFO.
  logging.info(
    "jax.distributed (%s): process %d of %d, %d local / %d global devices",
    kind,
    jax.process_index(),
    jax.process_count(),
    jax.local_device_count(),
    jax.device_count(),
  )
  quiet_non_main_process()


def initialize_from_flags() -> None:
  """Reads the flags (or MMREC_* environment variables) and initialises."""
  coord = _COORD.value or os.environ.get("MMREC_COORDINATOR")
  num = _NUM.value if _NUM.value is not None else _env_int("MMREC_NUM_PROCESSES")
  pid = _PID.value if _PID.value is not None else _env_int("MMREC_PROCESS_ID")
  local = _LOCAL.value or os.environ.get("MMREC_LOCAL_DEVICE_IDS")
  local_ids = [int(x) for x in local.split(",")] if local else None
  if coord and (num is None or pid is None):
    raise ConfigError(
      "--coordinator_address needs --num_processes and --process_id "
      "(or MMREC_NUM_PROCESSES / MMREC_PROCESS_ID)"
    )
  initialize(coord, num, pid, local_ids)
