"""Placing frozen data (feature tables, masks) on device, row-sharded like item tables.

Frozen item features are data, not state: they are never trained and would bloat
checkpoints, so they are placed once and passed to the jitted functions beside the state.
Each device receives only its own rows (``make_array_from_callback``), so no host builds
a padded full copy.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import numpy as np
from jax.sharding import Mesh

from mmrec_jax import sharding
from mmrec_jax.models.base import TRAINED_ITEMS


def host_rows(
  arr: np.ndarray, index: tuple[slice, ...], padded_shape: tuple[int, ...]
) -> np.ndarray:
  """Rows ``index`` of ``arr`` zero-padded to ``padded_shape`` (no full host copy)."""
  rows = index[0]
  start, stop, _ = rows.indices(padded_shape[0])
  out = np.zeros((stop - start, *padded_shape[1:]), arr.dtype)
  hi = min(stop, arr.shape[0])
  if hi > start:
    out[: hi - start] = arr[start:hi]
  return out[(slice(None),) + tuple(index[1:])]


def put_rows(mesh: Mesh, arr: np.ndarray, rows: int, axis: str) -> jax.Array:
  """Global device array of ``arr`` padded to ``rows``, row-sharded on ``axis``."""
  shape = (rows, *arr.shape[1:])
  spec = sharding.named_sharding(mesh, axis, *([None] * (arr.ndim - 1)))
  return jax.make_array_from_callback(shape, spec, lambda idx: host_rows(arr, idx, shape))


def put_rows_replicated(mesh: Mesh, arr: np.ndarray, start: int, rows: int, dtype) -> jax.Array:
  """Rows [start, start + rows) of ``arr`` (zero-padded past its end), replicated."""
  shape = (rows, *arr.shape[1:])
  host = host_rows(arr[start:], (slice(0, rows),), shape).astype(dtype)
  return jax.make_array_from_callback(shape, sharding.replicated(mesh), lambda idx: host[idx])


def place_features(
  mesh: Mesh,
  features: Mapping[str, np.ndarray],
  masks: Mapping[str, np.ndarray],
  modalities: tuple[str, ...],
  padded_items: int,
  *,
  stream: bool,
  item_counts: np.ndarray | None = None,
) -> dict[str, dict[str, jax.Array]]:
  """``{'feat': {m: [I, d]}, 'mask': {m: [I]}}`` on device (empty when streamed).

  With ``item_counts`` (train interactions per item) the masks also hold
  ``models.base.TRAINED_ITEMS`` (``item_counts > 0``), read by cold-start aware models.
  """
  if stream:
    return {"feat": {}, "mask": {}}
  feat = {
    m: put_rows(mesh, np.asarray(features[m], np.float32), padded_items, "items")
    for m in modalities
  }
  mask = {m: put_rows(mesh, np.asarray(masks[m], bool), padded_items, "items") for m in modalities}
  if item_counts is not None:
    trained = np.asarray(item_counts) > 0
    mask[TRAINED_ITEMS] = put_rows(mesh, trained, padded_items, "items")
  return {"feat": feat, "mask": mask}
