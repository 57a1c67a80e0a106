"""Item-item k-nearest-neighbour graphs from modality features, built on device in chunks.

Why chunks: the cosine-similarity matrix of a catalogue is items x items (60k items:
14 GB in float32). Rows are processed ``chunk`` at a time: a [chunk, items] block of
similarities is formed, ``lax.top_k`` keeps the k best per row, and only the [items, k]
neighbour ids and similarities survive. Peak memory is chunk x items; work is
items^2 x dim, as any exact kNN. The loop is a ``lax.map`` over chunks (one compile),
and it is differentiable w.r.t. the features (LATTICE learns its graph through the
top-k similarity values).

Items without the modality (mask False) and padding rows get no neighbours and are
never chosen as neighbours (their similarity is set to -inf before top-k and their
edges get weight 0), so a missing modality never links unrelated items.

The edge convention matches :func:`mmrec_jax.graph.propagation.item_propagate`:
``dst`` = the row item i, ``src`` = its neighbour j, so ``(S x)_i = sum_j S_ij x_j``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from mmrec_jax.graph.propagation import EdgeList

NEG = -1e30


def l2_normalize(x: jax.Array, eps: float = 1e-12) -> jax.Array:
  """``x / max(|x|, eps)`` row-wise, with a finite gradient at zero rows (padding)."""
  return x * jax.lax.rsqrt(jnp.maximum(jnp.sum(x * x, axis=-1, keepdims=True), eps * eps))


def knn(
  features: jax.Array, k: int, valid: jax.Array | None = None, chunk: int = 1024
) -> tuple[jax.Array, jax.Array]:
  """Top-k cosine neighbours of every row: ``(ids [n, k] int32, sims [n, k])``.

  The row itself is included (similarity 1), as in LATTICE/FREEDOM's ``topk`` over the
  full similarity matrix. Rows where ``valid`` is False get sims of ``NEG``.
  """
  n = features.shape[0]
  k = min(int(k), n)
  x = features.astype(jnp.float32)
  x = l2_normalize(x)
  valid = jnp.ones((n,), bool) if valid is None else valid.astype(bool)
  chunk = max(1, min(int(chunk), n))
  n_chunks = -(-n // chunk)
  pad = n_chunks * chunk - n
  xp = jnp.pad(x, ((0, pad), (0, 0)))
  vp = jnp.pad(valid, (0, pad))

  def one(c):
    rows = jax.lax.dynamic_slice_in_dim(xp, c * chunk, chunk)
    rvalid = jax.lax.dynamic_slice_in_dim(vp, c * chunk, chunk)
    sim = rows @ x.T  # [chunk, n]
    sim = jnp.where(valid[None, :] & rvalid[:, None], sim, NEG)
    return jax.lax.top_k(sim, k)

  sims, ids = jax.lax.map(one, jnp.arange(n_chunks))
  sims = sims.reshape(-1, k)[:n]
  ids = ids.reshape(-1, k)[:n].astype(jnp.int32)
  return ids, sims


def knn_edges(ids: jax.Array, sims: jax.Array, *, weighted: bool) -> EdgeList:
  """Row-normalised-Laplacian edges ``S_ij = a_ij / sqrt(r_i r_j)`` of a kNN graph.

  ``a_ij`` is 1 (``weighted=False``: FREEDOM's frozen graph) or the similarity clipped
  at 0 (``weighted=True``: LATTICE's graphs; a negative row sum would have no square
  root), ``r`` the row sums of ``a`` -- the
  ``compute_normalized_laplacian`` of both papers' code. Invalid entries weigh 0.
  """
  n, k = ids.shape
  ok = sims > NEG / 2
  a = jnp.where(ok, jnp.maximum(sims, 0.0) if weighted else 1.0, 0.0)
  r = jnp.sum(a, axis=1)
  rinv = jnp.where(r > 0, jax.lax.rsqrt(jnp.maximum(r, 1e-12)), 0.0)
  w = a * rinv[:, None] * rinv[ids]
  dst = jnp.broadcast_to(jnp.arange(n, dtype=jnp.int32)[:, None], (n, k))
  return EdgeList(ids.reshape(-1), dst.reshape(-1), w.reshape(-1))


def knn_graph(
  features: jax.Array,
  k: int,
  valid: jax.Array | None = None,
  *,
  weighted: bool = False,
  chunk: int = 1024,
) -> EdgeList:
  """kNN of ``features`` as normalised item-item edges (``n * k`` of them)."""
  ids, sims = knn(features, k, valid, chunk)
  return knn_edges(ids, sims, weighted=weighted)


def combine(graphs: list[EdgeList], weights: list[float | jax.Array]) -> EdgeList:
  """``sum_m weight_m S_m`` as one edge list (concatenation; duplicates add up)."""
  return EdgeList(
    jnp.concatenate([g.src for g in graphs]),
    jnp.concatenate([g.dst for g in graphs]),
    jnp.concatenate([g.weight * w for g, w in zip(graphs, weights)]),
  )
