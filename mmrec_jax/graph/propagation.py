"""Message passing over edge lists with segment sums: user-item and item-item graphs.

Why edge lists: a users x items adjacency (dense, or even a dense mask) grows with the
product of the catalogue sizes; an edge list grows with the number of interactions. One
propagation step is a gather of neighbour rows, a multiply by the edge weight and a
``jax.ops.segment_sum`` into the destination rows: O(edges x dim) work and memory.

Sharding: edge arrays are sharded on the mesh 'data' axis (padded with weight-0 edges to a
multiple of its size). :func:`segment_propagate` runs under ``jax.shard_map``: every
device sums the messages of *its* edges into a partial [num_dst, dim] result and a
``psum`` over 'data' combines the partial sums. The node embeddings enter replicated
(the gathers need any row), which is the same all-gather XLA would do for row-sharded
tables; for node counts whose [N, dim] does not fit on one device a ``psum_scatter``
variant would keep outputs row-sharded (not needed up to ML-25M sizes: 220k x 64 floats).

Normalisation is the symmetric one of GCN/LightGCN: ``w_ui = 1 / sqrt(deg_u deg_i)``,
degrees counted in the training graph (isolated nodes get no edges, so no division by 0).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from mmrec_jax import sharding
from mmrec_jax.errors import DataError


class EdgeList(NamedTuple):
  """Directed weighted edges ``src -> dst``; padding edges have weight 0.

  For the user-item graph ``src`` holds users and ``dst`` items; propagation runs both
  ways over the same list (``to_items`` / ``to_users``), so no edge is stored twice.
  """

  src: jax.Array  # int32 [E]
  dst: jax.Array  # int32 [E]
  weight: jax.Array  # float32 [E]


def dedup_edges(src: np.ndarray, dst: np.ndarray, num_dst: int) -> tuple[np.ndarray, np.ndarray]:
  """Distinct (src, dst) pairs (repeat interactions count once in a graph)."""
  key = np.unique(np.asarray(src, np.int64) * num_dst + np.asarray(dst, np.int64))
  return (key // num_dst).astype(np.int32), (key % num_dst).astype(np.int32)


def sym_norm_weights(src: np.ndarray, dst: np.ndarray, num_src: int, num_dst: int) -> np.ndarray:
  """``1 / sqrt(deg_src deg_dst)`` per edge (the D^-1/2 A D^-1/2 of LightGCN)."""
  deg_s = np.bincount(src, minlength=num_src).astype(np.float64)
  deg_d = np.bincount(dst, minlength=num_dst).astype(np.float64)
  return (1.0 / np.sqrt(deg_s[src] * deg_d[dst])).astype(np.float32)


def pad_edges(
  src: np.ndarray, dst: np.ndarray, weight: np.ndarray, multiple: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Pads to a multiple of ``multiple`` (and >= 1 edge) with weight-0 edges 0 -> 0."""
  e = len(src)
  total = max(multiple, -(-e // multiple) * multiple)
  pad = total - e
  return (
    np.concatenate([src, np.zeros(pad, np.int32)]).astype(np.int32),
    np.concatenate([dst, np.zeros(pad, np.int32)]).astype(np.int32),
    np.concatenate([weight, np.zeros(pad, np.float32)]).astype(np.float32),
  )


def edge_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(sharding.DATA))


def place_edges(mesh: Mesh, src: np.ndarray, dst: np.ndarray, weight: np.ndarray) -> EdgeList:
  """Pads and puts an edge list on device, sharded on 'data'."""
  src, dst, weight = pad_edges(src, dst, weight, mesh.shape[sharding.DATA])
  sh = edge_sharding(mesh)
  put = lambda a: jax.make_array_from_callback(a.shape, sh, lambda idx: a[idx])
  return EdgeList(put(src), put(dst), put(weight))


def user_item_graph(
  users: np.ndarray, items: np.ndarray, num_users: int, num_items: int, mesh: Mesh | None = None
) -> EdgeList:
  """The normalised bipartite training graph (users -> items), deduplicated.

  ``users``/``items`` are the TRAIN interactions only (valid/test must not leak into
  the graph). Ids are checked against the (real) counts.
  """
  users, items = np.asarray(users), np.asarray(items)
  if users.shape != items.shape or users.ndim != 1:
    raise DataError(
      "DataInfo.train_users/train_items",
      f"shapes {users.shape} and {items.shape}; expected equal 1-D arrays",
    )
  if users.size and (
    users.min() < 0 or users.max() >= num_users or items.min() < 0 or items.max() >= num_items
  ):
    raise DataError(
      "DataInfo.train_users/train_items",
      f"ids out of range for {num_users} users x {num_items} items",
    )
  src, dst = dedup_edges(users, items, num_items)
  w = sym_norm_weights(src, dst, num_users, num_items)
  if mesh is None:
    return EdgeList(jnp.asarray(src), jnp.asarray(dst), jnp.asarray(w))
  return place_edges(mesh, src, dst, w)


def _segment_sum_local(
  x: jax.Array, gather_idx: jax.Array, scatter_idx: jax.Array, weight: jax.Array, num_out: int
) -> jax.Array:
  msg = jnp.take(x, gather_idx, axis=0) * weight[:, None].astype(x.dtype)
  return jax.ops.segment_sum(msg, scatter_idx, num_segments=num_out)


def segment_propagate(
  x: jax.Array,
  gather_idx: jax.Array,
  scatter_idx: jax.Array,
  weight: jax.Array,
  num_out: int,
  mesh: Mesh | None = None,
) -> jax.Array:
  """``out[n] = sum_{e: scatter_idx[e] = n} weight[e] * x[gather_idx[e]]``.

  With a mesh, edges are split over 'data' and the per-device partial sums are
  combined with a ``psum`` (the output is replicated).
  """
  if mesh is None or mesh.shape[sharding.DATA] == 1:
    return _segment_sum_local(x, gather_idx, scatter_idx, weight, num_out)
  e = P(sharding.DATA)

  def body(x, g, s, w):
    return jax.lax.psum(_segment_sum_local(x, g, s, w, num_out), sharding.DATA)

  return jax.shard_map(body, mesh=mesh, in_specs=(P(), e, e, e), out_specs=P())(
    x, gather_idx, scatter_idx, weight
  )


def to_items(
  user_x: jax.Array, graph: EdgeList, num_items: int, mesh: Mesh | None = None
) -> jax.Array:
  """Items aggregate their users: ``A^T x`` over the bipartite graph."""
  return segment_propagate(user_x, graph.src, graph.dst, graph.weight, num_items, mesh)


def to_users(
  item_x: jax.Array, graph: EdgeList, num_users: int, mesh: Mesh | None = None
) -> jax.Array:
  """Users aggregate their items: ``A x``."""
  return segment_propagate(item_x, graph.dst, graph.src, graph.weight, num_users, mesh)


def lightgcn_propagate(
  users0: jax.Array, items0: jax.Array, graph: EdgeList, num_layers: int, mesh: Mesh | None = None
) -> tuple[jax.Array, jax.Array]:
  """LightGCN (He et al., SIGIR 2020): mean of layers 0..L of ``E_{l+1} = A_hat E_l``.

  ``A_hat`` is the symmetric-normalised joint adjacency ``[[0, R], [R^T, 0]]``, applied
  as two segment sums over the one user->item edge list.
  """
  u, i = users0, items0
  sum_u, sum_i = users0, items0
  for _ in range(num_layers):
    u, i = (to_users(i, graph, users0.shape[0], mesh), to_items(u, graph, items0.shape[0], mesh))
    sum_u, sum_i = sum_u + u, sum_i + i
  scale = 1.0 / (num_layers + 1)
  return sum_u * scale, sum_i * scale


def item_propagate(x: jax.Array, graph: EdgeList, mesh: Mesh | None = None) -> jax.Array:
  """``S x`` for an item-item graph whose edges are ``src`` (neighbour) -> ``dst`` (row)."""
  return segment_propagate(x, graph.src, graph.dst, graph.weight, x.shape[0], mesh)


def degree_sensitive_prune(
  graph: EdgeList, rng: jax.Array, keep_ratio: float, num_users: int, num_items: int
) -> EdgeList:
  """FREEDOM's degree-sensitive edge pruning, then re-normalisation of the kept graph.

  FREEDOM samples ``keep_ratio * E`` edges without replacement with probability
  proportional to ``1 / sqrt(deg_u deg_i)`` (the current weight). Here each edge is
  kept independently with ``p_e = min(1, keep_ratio * E * w_e / sum(w))`` -- the same
  expected kept count and inclusion proportions, O(E) and shape-static inside jit
  (an approximation of sampling without replacement, written down on purpose). The
  kept edges are re-weighted with the degrees of the pruned graph.
  """
  w = graph.weight
  real = w > 0
  n_real = jnp.sum(real)
  p = jnp.minimum(1.0, keep_ratio * n_real * w / jnp.maximum(jnp.sum(w), 1e-12))
  keep = real & (jax.random.uniform(rng, w.shape) < p)
  ones = keep.astype(jnp.float32)
  deg_u = jax.ops.segment_sum(ones, graph.src, num_segments=num_users)
  deg_i = jax.ops.segment_sum(ones, graph.dst, num_segments=num_items)
  norm = jax.lax.rsqrt(jnp.maximum(deg_u[graph.src] * deg_i[graph.dst], 1.0))
  return EdgeList(graph.src, graph.dst, jnp.where(keep, norm, 0.0))
