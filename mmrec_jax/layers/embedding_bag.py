"""Categorical tables and the embedding-bag (pooled multi-hot lookup) of the rankers.

Why a layer of its own: a movie has several genres, so its genre embedding is the pooled
lookup of a *bag* of ids (TorchRec's ``EmbeddingBagCollection``, Merlin's multi-hot
``Embedding(combiner='sum')``). Bags are stored as fixed-width int arrays ``[..., L]``
padded with ``-1``; padding slots contribute nothing, an empty bag pools to zeros.

The pooling is ``sum(take(table, ids) * valid)`` -- plain jnp, so on a table row-sharded
over the mesh (``Table`` variables with rows on the 'rows' logical axis) XLA partitions
the gather into local lookups plus a reduction, exactly as for the ID tables; no device
ever holds the whole table (tests/test_ranking_layers.py checks 8 fake devices against
one).

:class:`CatEmbed` tables are ``Table`` variables, so the train step updates them with
the sparse row-wise optimizer like the ID tables; their row axis is ``'rows'`` (neither
users nor items), which the pointwise regime reads as "indexed by side-feature ids".
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from mmrec_jax.layers.embedding import Table, padded_rows

POOLING = ("sum", "mean")
# Logical row axis of categorical (side-feature) tables; sharding.LOGICAL_AXIS_RULES maps
# it over every device like the ID tables.
CAT_ROWS = "rows"


def embedding_bag(table: jax.Array, ids: jax.Array, pooling: str = "sum") -> jax.Array:
  """Pooled rows of ``table`` for bags ``ids [..., L]`` (``-1`` = empty slot) -> ``[..., D]``.

  ``pooling='mean'`` divides by the number of valid ids (an empty bag stays zeros).
  """
  if pooling not in POOLING:
    raise ValueError(f"pooling={pooling!r} is not one of {list(POOLING)}")
  valid = ids >= 0
  rows = jnp.take(table, jnp.where(valid, ids, 0), axis=0)  # [..., L, D]
  pooled = jnp.sum(jnp.where(valid[..., None], rows, 0), axis=-2)
  if pooling == "mean":
    n = jnp.sum(valid, axis=-1, keepdims=True).astype(pooled.dtype)
    pooled = pooled / jnp.maximum(n, 1)
  return pooled


class CatEmbed(nnx.Module):
  """A categorical (side-feature) table ``[padded vocab, dim]`` with bag pooling.

  Args:
    vocab: number of categories (ids 0..vocab-1); rows are padded like every table
      (``padded_rows``), so a checkpoint restores on any device count up to 256.
    dim: width.
    pooling: 'sum' (Merlin's multi-hot combiner in the notebooks) or 'mean'.
  """

  def __init__(
    self, vocab: int, dim: int, *, rngs: nnx.Rngs, pooling: str = "sum", stddev: float = 0.1
  ):
    if vocab < 1:
      raise ValueError(f"vocab={vocab}: a categorical table needs at least one category")
    if pooling not in POOLING:
      raise ValueError(f"pooling={pooling!r} is not one of {list(POOLING)}")
    self.vocab = int(vocab)
    self.pooling = pooling
    value = stddev * jax.random.normal(rngs.params(), (padded_rows(vocab), dim), jnp.float32)
    self.embedding = Table(value, out_sharding=(CAT_ROWS, "embed"))

  def __call__(self, ids: jax.Array) -> jax.Array:
    """Pooled embedding of the bags ``ids [..., L]`` -> ``[..., dim]``."""
    return embedding_bag(self.embedding[...], ids, self.pooling)
