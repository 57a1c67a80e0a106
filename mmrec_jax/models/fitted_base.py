"""Base class of models fitted from the train split by solves, not by SGD, and their kernels.

MostPop, ItemKNN, EASE and iALS have no gradient step: EASE is one closed-form solve, ItemKNN
one similarity computation, MostPop one count, iALS alternates exact least-squares sweeps.
The registry declares them ``regime="closed_form"`` and the step (``step/closed_form.py``)
calls :meth:`FittedRecommender.fit_step` once per step, one step per epoch, so validation,
early stopping, checkpoints and resume work as for every other model. Their fitted state
(similarity matrix, factors) lives in ``Table`` variables, row-sharded over every device like
any embedding table, and is what checkpoints hold.

Contract (arrays padded: ``U`` = padded users, ``I`` = padded items):
  * ``fit_data(model_cfg, info, mesh, num_users=U, num_items=I)`` -> pytree of device arrays
    built once from the TRAIN split (classmethod); checks memory up front;
  * ``fit_step(data, step) -> metrics`` -- one sweep; writes the model's ``Table`` values and
    returns at least ``"loss"`` (0 for the one-shot fits, which minimise nothing iteratively);
  * ``towers(data) -> (users [U, D], items [I, D])`` with ``score = users @ items.T``;
  * ``one_shot``: True when the fit is complete after one sweep (the loop then stops).

Shared kernels (all on a row-sharded layout; ``ALL`` = every device of the mesh):
  * :func:`interaction_matrix` -- binary ``X [U, I]`` row-sharded over users (each device
    builds only its rows from the train pairs);
  * :func:`gram` -- ``X^T X [I, I]`` row-sharded over items, computed in ``n`` column chunks
    each reduce-scattered, so a device never holds more than ``2 I^2 / n`` of it;
  * :func:`spd_inverse` -- in-place block Gauss-Jordan inversion of a row-sharded SPD matrix:
    per pivot block the owner's rows are broadcast, every device updates its own rows. Flops
    ``I^3 / n`` per device, memory ``~3 I^2 / n`` per device, no pivoting (SPD: every pivot
    block is a Schur complement, itself SPD).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax import lax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from mmrec_jax import sharding
from mmrec_jax.errors import ConfigError, DataError
from mmrec_jax.models.base import Recommender

ALL = sharding.ALL_DEVICES
HIGHEST = lax.Precision.HIGHEST
# Largest pivot block of the distributed inversion (rows). Measured on ML-100K (1 CPU
# device): blocks of 128-448 rows invert 1.8k items in ~0.9 s, 896 rows take 2 s (the
# per-block Cholesky dominates); smaller blocks mean more (cheap) broadcast steps.
MAX_PIVOT_BLOCK = 256


class FittedRecommender(Recommender):
  """A recommender fitted by sweeps over the train split (see module doc)."""

  one_shot = True
  mesh: Mesh | None = None  # set by the regime (static)

  @classmethod
  def fit_data(
    cls,
    model_cfg: ml_collections.ConfigDict,
    info: Any,
    mesh: Mesh,
    *,
    num_users: int,
    num_items: int,
  ) -> dict[str, Any]:
    raise NotImplementedError

  def fit_step(self, data: Mapping[str, Any], step: jax.Array) -> dict[str, jax.Array]:
    raise NotImplementedError

  def towers(self, data: Mapping[str, Any]) -> tuple[jax.Array, jax.Array]:
    raise NotImplementedError

  # Fitted models are scored through towers(); the per-batch towers do not exist.
  def user_repr(self, ids, *, rng=None):
    raise NotImplementedError("fitted models are scored through towers(); see fitted_base.py")

  def item_repr(self, ids, feats, masks, *, rng=None):
    raise NotImplementedError("fitted models are scored through towers(); see fitted_base.py")


# ------------------------------------------------------------------ host-side data
def train_pairs(info: Any, num_users: int, num_items: int) -> tuple[np.ndarray, ...]:
  """Distinct train (user, item) pairs and their multiplicity, ids checked."""
  users = getattr(info, "train_users", None)
  items = getattr(info, "train_items", None)
  if users is None or items is None:
    raise DataError(
      "DataInfo.train_users/train_items",
      "fitted models need the train-split interactions (build_data_info fills them)",
    )
  users, items = np.asarray(users, np.int64), np.asarray(items, np.int64)
  if users.shape != items.shape or users.ndim != 1:
    raise DataError("DataInfo.train_users/train_items", f"shapes {users.shape} and {items.shape}")
  if users.size and (
    users.min() < 0 or users.max() >= num_users or items.min() < 0 or items.max() >= num_items
  ):
    raise DataError(
      "DataInfo.train_users/train_items",
      f"ids out of range for {num_users} users x {num_items} items",
    )
  keys, counts = np.unique(users * num_items + items, return_counts=True)
  return keys // num_items, keys % num_items, counts.astype(np.float32)


def interaction_matrix(
  mesh: Mesh,
  users: np.ndarray,
  items: np.ndarray,
  num_users: int,
  num_items: int,
  values: np.ndarray | None = None,
) -> jax.Array:
  """``X [num_users, num_items]`` float32 (1 at the pairs, or ``values``), row-sharded.

  ``users`` must be sorted (as :func:`train_pairs` returns them); each device fills only
  its own rows (over users, on every device).
  """
  shape = (num_users, num_items)
  spec = sharding.named_sharding(mesh, "users", None)

  def rows(index):
    start, stop, _ = index[0].indices(num_users)
    lo, hi = np.searchsorted(users, [start, stop])
    out = np.zeros((stop - start, num_items), np.float32)
    out[users[lo:hi] - start, items[lo:hi]] = 1.0 if values is None else values[lo:hi]
    return out[(slice(None),) + tuple(index[1:])]

  return jax.make_array_from_callback(shape, spec, rows)


def item_item_fit_data(
  model_cfg: Any, info: Any, mesh: Mesh, num_users: int, num_items: int, num_matrices: int = 3
) -> dict[str, jax.Array]:
  """``{"x": X}`` for the item-item models (EASE, ItemKNN, CEASE), memory checked first.

  They hold X [U, I] and ``num_matrices`` I x I matrices at the peak (the Gram, its
  inverse or similarities, the result; CEASE one more Gram), checked before anything is
  placed.
  """
  check_memory(
    model_cfg.name,
    item_item_memory(mesh, num_users, num_items, num_matrices),
    f"X [{num_users}, {num_items}] and {num_matrices} {num_items} x {num_items} matrices",
  )
  users, items, _ = train_pairs(info, info.num_users, info.num_items)
  return {"x": interaction_matrix(mesh, users, items, num_users, num_items)}


def device_bytes() -> int:
  """Memory of one local device (host RAM shared by the devices on CPU)."""
  dev = jax.local_devices()[0]
  stats = dev.memory_stats() if hasattr(dev, "memory_stats") else None
  if stats and stats.get("bytes_limit"):
    return int(stats["bytes_limit"])
  ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
  return int(ram // max(1, jax.local_device_count()))


def check_memory(name: str, need_per_device: float, what: str, *, have: int | None = None) -> None:
  """ConfigError (one line) when a fit needs more than a device has."""
  have = device_bytes() if have is None else have
  if need_per_device > 0.9 * have:
    raise ConfigError(
      f"model.name={name!r} needs about {need_per_device / 2**30:.1f} GiB per device "
      f"({what}) but a device has {have / 2**30:.1f} GiB: use more devices or raise "
      "mesh.model (the evaluator splits the item matrix over it), or use model.name='ials'"
    )


def item_item_memory(mesh: Mesh, num_users: int, num_items: int, num_matrices: int) -> float:
  """Bytes per device of an item-item model: X, ``num_matrices`` I x I work arrays, eval."""
  n = mesh.size
  m = int(mesh.shape[sharding.MODEL])
  fit = 4.0 * (num_users * num_items + num_matrices * num_items * num_items) / n
  # Evaluation: the user tower is X again; the item matrix is split over 'model' only.
  evaluation = 4.0 * (2 * num_users * num_items / n + num_items * num_items / m)
  return max(fit, evaluation)


# ------------------------------------------------------------------ device kernels
def _row_map(fn, mesh: Mesh):
  """``fn`` under shard_map on a matrix row-sharded over every device (rows in, rows out).

  The varying-axis check is off: the kernels mix replicated pivots (psum/all_gather) with
  per-device rows in loop carries, which jax's check cannot type.
  """
  return jax.shard_map(
    fn, mesh=mesh, in_specs=P(ALL, None), out_specs=P(ALL, None), check_vma=False
  )


def _local_rows(num_rows: int) -> tuple[jax.Array, jax.Array]:
  """(local row positions, their global ids) of this device's block (inside shard_map)."""
  me = lax.axis_index(ALL)
  local = jnp.arange(num_rows)
  return local, me * num_rows + local


def gram(x: jax.Array, mesh: Mesh) -> jax.Array:
  """``X^T X`` [I, I] float32, row-sharded over items; ``x`` [U, I] row-sharded over users."""
  n = mesh.size
  num_items = x.shape[1]
  width = num_items // n

  def local(xl):
    out = jnp.zeros((width, num_items), jnp.float32)

    def body(c, out):
      cols = lax.dynamic_slice_in_dim(xl, c * width, width, axis=1)
      part = jnp.dot(xl.T, cols, precision=HIGHEST, preferred_element_type=jnp.float32)
      mine = lax.psum_scatter(part, ALL, scatter_dimension=0, tiled=True)
      return lax.dynamic_update_slice_in_dim(out, mine, c * width, axis=1)

    return lax.fori_loop(0, n, body, out)

  return _row_map(local, mesh)(x)


def _pivot_block(rows_per_device: int) -> int:
  """The largest divisor of ``rows_per_device`` that is at most MAX_PIVOT_BLOCK."""
  for m in range(1, rows_per_device + 1):
    if rows_per_device % m == 0 and rows_per_device // m <= MAX_PIVOT_BLOCK:
      return rows_per_device // m
  return 1


def spd_inverse(a: jax.Array, mesh: Mesh, block: int | None = None) -> jax.Array:
  """Inverse of a symmetric positive definite ``a`` [I, I], row-sharded over every device.

  Block Gauss-Jordan, in place (module doc). ``block`` (rows per pivot step) must divide
  the rows each device holds; default: the largest divisor <= MAX_PIVOT_BLOCK.
  """
  n = mesh.size
  size = a.shape[0]
  r = size // n
  blk = _pivot_block(r) if block is None else int(block)
  if r % blk:
    raise ValueError(f"pivot block {blk} does not divide the {r} rows per device")
  per_dev = r // blk
  eye = jnp.eye(blk, dtype=jnp.float32)
  mm = functools.partial(jnp.dot, precision=HIGHEST, preferred_element_type=jnp.float32)

  def local(al):
    me = lax.axis_index(ALL)

    def body(k, al):
      owner, off, col = k // per_dev, (k % per_dev) * blk, k * blk
      mine = me == owner
      piv = lax.dynamic_slice_in_dim(al, off, blk, axis=0)
      piv = lax.psum(jnp.where(mine, piv, 0.0), ALL)  # [blk, I]: the pivot rows
      akk = lax.dynamic_slice_in_dim(piv, col, blk, axis=1)
      akk = 0.5 * (akk + akk.T)
      chol = jnp.linalg.cholesky(akk)
      kinv = jax.scipy.linalg.cho_solve((chol, True), eye)
      kinv = 0.5 * (kinv + kinv.T)
      new_piv = lax.dynamic_update_slice_in_dim(mm(kinv, piv), kinv, col, axis=1)
      c = lax.dynamic_slice_in_dim(al, col, blk, axis=1)  # A_ik [r, blk]
      out = al - mm(c, new_piv)
      out = lax.dynamic_update_slice_in_dim(out, -mm(c, kinv), col, axis=1)
      pivoted = lax.dynamic_update_slice_in_dim(out, new_piv, off, axis=0)
      return jnp.where(mine, pivoted, out)

    return lax.fori_loop(0, n * per_dev, body, al)

  return _row_map(local, mesh)(a)


def add_diagonal(a: jax.Array, value: float, mesh: Mesh) -> jax.Array:
  """``a + value * I`` for a row-sharded square ``a`` (local, no communication)."""

  def local(al):
    rows, gid = _local_rows(al.shape[0])
    return al.at[rows, gid].add(value)

  return _row_map(local, mesh)(a)


def row_scaled_zero_diagonal(p: jax.Array, mesh: Mesh) -> jax.Array:
  """``-p[j, :] / p[j, j]`` with the diagonal zeroed (EASE's ``B^T`` from ``P`` = inverse)."""

  def local(pl):
    rows, gid = _local_rows(pl.shape[0])
    d = pl[rows, gid]
    return (-pl / d[:, None]).at[rows, gid].set(0.0)

  return _row_map(local, mesh)(p)


def mixed_rows_sharding(mesh: Mesh) -> NamedSharding:
  """Where :func:`replace_rows`' mixing matrix lives: its columns split like the rows."""
  return NamedSharding(mesh, P(None, ALL))


def replace_rows(a: jax.Array, ids: jax.Array, mix: jax.Array, mesh: Mesh) -> jax.Array:
  """``a`` with rows ``ids`` [C] replaced by ``mix @ a`` ([C, I] x [I, I]), diagonal zeroed.

  ``a`` is row-sharded over every device and ``mix`` column-sharded the same way
  (:func:`mixed_rows_sharding`): each device multiplies its columns of ``mix`` by its rows
  of ``a``, one psum sums the [C, I] partials, and each device keeps the new rows it owns.
  ``ids`` must be distinct and ``mix`` must not read the rows it replaces (CEASE's cold
  items read only trained ones). The replaced rows' own diagonal entry is set to 0.
  """
  num_items = a.shape[0]
  where = (
    jnp.full((num_items,), -1, jnp.int32).at[ids].set(jnp.arange(ids.shape[0], dtype=jnp.int32))
  )

  def local(al, ml, where):
    rows, gid = _local_rows(al.shape[0])
    new = lax.psum(jnp.dot(ml, al, precision=HIGHEST, preferred_element_type=jnp.float32), ALL)
    pos = where[gid]
    out = jnp.where((pos >= 0)[:, None], new[jnp.maximum(pos, 0)], al)
    return out.at[rows, gid].set(jnp.where(pos >= 0, 0.0, out[rows, gid]))

  return jax.shard_map(
    local,
    mesh=mesh,
    in_specs=(P(ALL, None), P(None, ALL), P()),
    out_specs=P(ALL, None),
    check_vma=False,
  )(a, mix, where)


def cosine_topk(g: jax.Array, k: int, shrink: float, mesh: Mesh) -> jax.Array:
  """Row-wise top-``k`` of the shrunk cosine similarity from the Gram ``g`` (row-sharded).

  ``S_ij = G_ij / (|x_i| |x_j| + shrink + 1e-6)``, ``S_jj = 0``; each row keeps its ``k``
  largest entries (ties: the lower column first), the rest set to 0 (RecBole's ItemKNN).
  """
  k = min(int(k), g.shape[1])

  def local(gl):
    rows, gid = _local_rows(gl.shape[0])
    norm_local = jnp.sqrt(gl[rows, gid])
    norm = lax.all_gather(norm_local, ALL, tiled=True)
    s = gl / (norm_local[:, None] * norm[None, :] + shrink + 1e-6)
    s = s.at[rows, gid].set(0.0)
    vals, idx = lax.top_k(s, k)
    return jnp.zeros_like(s).at[rows[:, None], idx].set(vals)

  return _row_map(local, mesh)(g)
