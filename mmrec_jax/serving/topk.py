"""Jitted, sharded exact top-k over a catalogue held on the local devices.

Why its own kernel and not the evaluator's: serving ranks small batches of arbitrary query
vectors (known users, folded-in users, item vectors for similar items) with per-request
exclusions and no ground truth, many times a second. It follows the evaluator's design so
the two rank identically:

  * the catalogue ``[I_pad, D]`` is row-sharded over every device of a 1-D ``('shard',)``
    mesh; the query batch ``[B, D]`` is replicated;
  * each device scores its rows (float32, HIGHEST precision, as ``evaluation.ranking``),
    sets padding rows and excluded ``(row, item)`` pairs to ``-inf``, takes ``lax.top_k``;
  * the shards ``all_gather`` their k candidates in item-id order and take ``top_k`` again,
    so ties stay lower-item-id-first exactly as in the evaluator (``lax.top_k`` is stable).

Exclusions travel as a padded pair list (``rows, items [L]``), never as a ``[B, I]`` mask,
so a request for a user with a long history over a 1M-item catalogue costs O(history).
Shapes are bucketed (batch and pair list to powers of two) so few programs compile.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

AXIS = "shard"
NEG_INF = float("-inf")


def local_mesh(devices: list[jax.Device] | None = None) -> Mesh:
  """A 1-D mesh over this process's devices (serving never needs other hosts)."""
  devices = list(jax.local_devices() if devices is None else devices)
  return Mesh(np.asarray(devices), (AXIS,))


def bucket(n: int, minimum: int = 8) -> int:
  """Next power of two >= n (>= minimum)."""
  return max(minimum, 1 << max(0, int(n - 1).bit_length()))


def padded_catalogue(n: int, mesh: Mesh) -> int:
  """Rows to allocate for ``n`` items: a multiple of the device count, at least one each."""
  d = mesh.size
  return max(d, -(-n // d) * d)


def put_rows(mesh: Mesh, matrix: np.ndarray, rows: int) -> jax.Array:
  """``matrix`` zero-padded to ``rows`` rows, row-sharded over the mesh."""
  full = np.zeros((rows, matrix.shape[1]), np.float32)
  full[: matrix.shape[0]] = matrix
  return jax.device_put(full, NamedSharding(mesh, P(AXIS, None)))


def replicate(mesh: Mesh, x: np.ndarray) -> jax.Array:
  return jax.device_put(x, NamedSharding(mesh, P()))


@functools.lru_cache(maxsize=128)
def topk_fn(mesh: Mesh, num_items: int, k: int):
  """Jitted ``(queries [B, D], items [I_pad, D], ex_rows [L], ex_items [L]) -> (ids, scores)``.

  ``ids``/``scores`` are ``[B, k]``, best first; a position with nothing rankable left has
  score ``-inf``. Pairs with ``ex_rows == B`` are padding.
  """

  def local(q, items, ex_rows, ex_items):
    q = q.astype(jnp.float32)
    b = q.shape[0]
    n_local = items.shape[0]
    off = lax.axis_index(AXIS) * n_local
    s = lax.dot_general(
      q,
      items.astype(jnp.float32),
      (((1,), (1,)), ((), ())),
      precision=lax.Precision.HIGHEST,
      preferred_element_type=jnp.float32,
    )
    gid = off + jnp.arange(n_local, dtype=jnp.int32)
    s = jnp.where((gid < num_items)[None, :], s, NEG_INF)
    li = ex_items - off
    ok = (li >= 0) & (li < n_local)
    s = s.at[jnp.where(ok, ex_rows, b), jnp.where(ok, li, n_local)].set(NEG_INF, mode="drop")
    v, idx = lax.top_k(s, min(k, n_local))
    g = idx + off
    if mesh.size > 1:
      v = lax.all_gather(v, AXIS, axis=1, tiled=True)
      g = lax.all_gather(g, AXIS, axis=1, tiled=True)
      v, j = lax.top_k(v, k)
      g = jnp.take_along_axis(g, j, axis=1)
    return g, v

  sharded = jax.shard_map(
    local, mesh=mesh, in_specs=(P(), P(AXIS, None), P(), P()), out_specs=(P(), P()), check_vma=False
  )
  return jax.jit(sharded)


@functools.lru_cache(maxsize=128)
def candidates_fn(mesh: Mesh, k: int):
  """Jitted top-k over per-row candidate lists.

  ``(queries [B, D], items [I_pad, D], cand [B, C] int32, ok [B, C] bool) -> ids, scores``
  where ``ids`` are positions into ``cand`` rows; ``ok`` False (padding, excluded) -> -inf.
  """
  del mesh

  def run(q, items, cand, ok):
    vecs = jnp.take(items, jnp.clip(cand, 0, items.shape[0] - 1), axis=0)  # [B, C, D]
    s = jnp.einsum(
      "bd,bcd->bc",
      q.astype(jnp.float32),
      vecs.astype(jnp.float32),
      precision=lax.Precision.HIGHEST,
      preferred_element_type=jnp.float32,
    )
    s = jnp.where(ok, s, NEG_INF)
    v, j = lax.top_k(s, k)
    return j, v

  return jax.jit(run)


@functools.lru_cache(maxsize=16)
def pair_score_fn(mesh: Mesh):
  """Jitted ``(users [U_pad, D], items [I_pad, D], u [n], i [n]) -> scores [n]``."""
  del mesh

  def run(users, items, u, i):
    a = jnp.take(users, u, axis=0).astype(jnp.float32)
    b = jnp.take(items, i, axis=0).astype(jnp.float32)
    return jnp.einsum("nd,nd->n", a, b, precision=lax.Precision.HIGHEST)

  return jax.jit(run)


def exclusion_pairs(lists: list[np.ndarray], batch: int) -> tuple[np.ndarray, np.ndarray]:
  """``(rows, items)`` int32 of per-row item lists, padded to a power of two with row=batch."""
  lens = np.array([len(x) for x in lists], np.int64)
  total = int(lens.sum())
  size = bucket(total, 64)
  rows = np.full(size, batch, np.int32)
  items = np.zeros(size, np.int32)
  if total:
    rows[:total] = np.repeat(np.arange(len(lists), dtype=np.int32), lens)
    items[:total] = np.concatenate([np.asarray(x, np.int32) for x in lists])
  return rows, items
