"""Mesh construction and the one logical-axis rules table.

Decision (written down because jax 0.10 offers two styles): every mesh in mmrec_jax is
built with ``AxisType.Auto`` axes. Shardings are stated explicitly at ``jax.jit``
boundaries (``in_shardings``/``out_shardings``) and with
``jax.lax.with_sharding_constraint`` inside; XLA's partitioner (GSPMD/Shardy) propagates
the rest. This keeps gathers from row-sharded tables (``table[ids]``) plain jnp code that
runs unchanged on 1 CPU, 8 fake devices, a GPU node or a TPU pod slice.

Mesh axes:
  * ``data``  -- the batch is split over it (users in evaluation too);
  * ``model`` -- the item catalogue is split over it in evaluation.
Big embedding tables are row-sharded over *both* axes, i.e. across all devices.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

DATA = "data"
MODEL = "model"
ALL_DEVICES = (DATA, MODEL)

# Logical axis name -> mesh axes. The single source of truth for layouts.
LOGICAL_AXIS_RULES: dict[str, Any] = {
  "users": ALL_DEVICES,  # rows of user tables: across all devices
  "items": ALL_DEVICES,  # rows of item tables (IDs and frozen features)
  "rows": ALL_DEVICES,  # any other big row-sharded table
  "embed": None,  # embedding/feature width: never split
  "batch": DATA,  # examples of a training batch
  "eval_users": DATA,  # users of an evaluation chunk
  "catalog": MODEL,  # items of the catalogue during scoring
  "hidden": None,  # dense layer widths (small, replicated)
}


def make_mesh(data: int = -1, model: int = 1, devices: Sequence[jax.Device] | None = None) -> Mesh:
  """Builds the ('data', 'model') mesh over all devices of all processes.

  Args:
    data: size of the data axis; -1 takes all devices left after ``model``.
    model: size of the model axis.
    devices: defaults to ``jax.devices()`` (global, all processes).
  """
  devices = list(jax.devices() if devices is None else devices)
  n = len(devices)
  if model < 1 or n % model:
    raise ValueError(f"mesh.model={model} must be >= 1 and divide the {n} devices")
  if data == -1:
    data = n // model
  if data * model != n:
    raise ValueError(f"mesh.data={data} x mesh.model={model} != {n} devices")
  dev = np.asarray(devices).reshape(data, model)
  return Mesh(dev, (DATA, MODEL), axis_types=(AxisType.Auto, AxisType.Auto))


def logical_to_spec(
  logical_axes: Sequence[str | None], rules: Mapping[str, Any] | None = None
) -> P:
  """Maps logical axis names to a PartitionSpec; unknown names raise."""
  rules = LOGICAL_AXIS_RULES if rules is None else rules
  out = []
  for name in logical_axes:
    if name is None:
      out.append(None)
      continue
    if name not in rules:
      raise KeyError(f"unknown logical axis {name!r}; known: {sorted(rules)}")
    out.append(rules[name])
  return P(*out)


def named_sharding(mesh: Mesh, *logical_axes: str | None) -> NamedSharding:
  """NamedSharding on ``mesh`` for an array with the given logical axes."""
  return NamedSharding(mesh, logical_to_spec(logical_axes))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def num_shards(mesh: Mesh, spec: P) -> int:
  """How many pieces an array with ``spec`` is cut into on ``mesh``."""
  total = 1
  for entry in spec:
    if entry is None:
      continue
    for axis in entry if isinstance(entry, tuple) else (entry,):
      total *= mesh.shape[axis]
  return total


# Subtrees of the train state that are replicated by design (step/state.py): the dense
# layers and their optax state. Decision (issue 15): under data parallelism a dense kernel
# is read by every example, so each device keeps a copy, as DLRM/TorchRec do for their
# MLPs; row-sharding it would trade its memory for an all-gather on every step. The rows
# that grow with the data -- ID and categorical tables, their row-wise optimizer state,
# frozen feature tables -- are what must be sharded, and what this guard judges. A
# 2048 x 128 float32 image tower (exactly 1 MiB) or a DCN-v2 cross kernel is therefore no
# longer an error; its memory per device shows in the compiled step's memory analysis
# (benchmarks/bench_ranking.py).
REPLICATED_BY_DESIGN = ("dense",)


def _replicated_by_design(path) -> bool:
  return any(getattr(k, "key", None) in REPLICATED_BY_DESIGN for k in path)


def assert_tables_sharded(tree: Any, min_bytes: int = 1 << 20) -> None:
  """Fails loudly when a big table is (nearly) replicated on every device.

  Guards against silent replication of embedding tables (maxtext's
  ``assert_params_sufficiently_sharded``): every array of at least ``min_bytes``
  must keep at most ``ceil(bytes / n_devices) * 1.01`` bytes per device. Arrays under a
  ``'dense'`` key (dense layers and their optimizer state, :data:`REPLICATED_BY_DESIGN`)
  are replicated on purpose and not judged.
  """
  bad = []
  for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
    if not hasattr(leaf, "sharding") or not hasattr(leaf, "nbytes"):
      continue
    if _replicated_by_design(path):
      continue
    nbytes = leaf.nbytes
    if nbytes < min_bytes:
      continue
    n_dev = len(leaf.sharding.device_set)
    shard_shape = leaf.sharding.shard_shape(leaf.shape)
    per_dev = int(np.prod(shard_shape)) * leaf.dtype.itemsize
    if n_dev > 1 and per_dev > 1.01 * nbytes / n_dev + 1:
      bad.append(
        f"{jax.tree_util.keystr(path)} {leaf.shape} holds {per_dev} of "
        f"{nbytes} bytes per device on {n_dev} devices"
      )
  if bad:
    raise AssertionError("large arrays are not sharded across devices: " + "; ".join(bad))


def global_batch_from_local(mesh: Mesh, local: Mapping[str, np.ndarray]) -> dict[str, jax.Array]:
  """Assembles per-process numpy batches into global arrays sharded on 'data'.

  The global batch size is the config's; each process passes its own slice.
  """
  out = {}
  for k, v in local.items():
    spec = P(DATA, *([None] * (np.ndim(v) - 1)))
    out[k] = jax.make_array_from_process_local_data(NamedSharding(mesh, spec), np.asarray(v))
  return out
