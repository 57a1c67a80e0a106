"""Vectorised negative sampling that is a pure function of (key, global element index).

Why counter-based random numbers instead of a ``np.random.Generator`` per batch: a
training batch is split across processes (each process builds only its rows of the
GLOBAL batch). If negatives came from a sequential generator, process ``p`` would have to
draw and discard the values of processes ``0..p-1`` to stay consistent, or the batches
would change with the process count. Here the random bits of element ``j`` of a global
batch are ``splitmix64(key, j)`` (exactly the j-th output of a SplitMix64 stream started at
``key``), so any slice of any batch is computed on its own and equals the same slice of the
single-process batch. The per-batch ``key`` comes from ``np.random.SeedSequence`` over
(seed, epoch, batch, round), which decorrelates neighbouring batches.

Samplers (``input.negative_sampler``):
  * ``uniform``    -- every item with probability 1/num_items;
  * ``popularity`` -- item i with probability proportional to ``count_i ** alpha``
    (``count_i`` = train interactions of i; items never seen in train get 0 when
    alpha > 0);
  * ``in_batch``   -- no sampled negatives (the loss uses the batch's other positives);
    handled by the pipeline, not here.

Exclusion of known positives (``input.exclude_positives``): membership of (user, item) in
the train set is tested with ``np.searchsorted`` on the sorted unique int64 keys
``user * num_items + item``. Hits are redrawn from the same sampler with fresh bits for up
to ``max_rounds`` rounds; what is still a hit afterwards is replaced deterministically by
the next item id (cyclically) that is not a positive of that user -- such fallback items
may have zero popularity probability, which only happens for users whose positives cover
most of the sampling mass.
"""

from __future__ import annotations

import numpy as np

from mmrec_jax.errors import ConfigError, DataError

SAMPLERS = ("uniform", "popularity")
_GAMMA = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def splitmix64(key: int | np.uint64, index: np.ndarray) -> np.ndarray:
  """Returns uint64 random bits for each element index (the SplitMix64 stream at key)."""
  with np.errstate(over="ignore"):
    z = (np.asarray(index, dtype=np.uint64) + np.uint64(1)) * _GAMMA + np.uint64(key)
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


def derive_keys(*words: int, count: int = 1) -> np.ndarray:
  """``count`` uint64 keys from non-negative integer words (seed, tag, epoch, batch...)."""
  return np.random.SeedSequence([int(w) for w in words]).generate_state(count, np.uint64)


class PositiveSet:
  """Train (user, item) pairs as sorted int64 keys for vectorised membership tests."""

  def __init__(self, users: np.ndarray, items: np.ndarray, num_items: int):
    self.num_items = int(num_items)
    keys = users.astype(np.int64) * self.num_items + items.astype(np.int64)
    self.keys = np.unique(keys)  # sorted, duplicates removed

  def positives_per_user(self, num_users: int) -> np.ndarray:
    return np.bincount(self.keys // self.num_items, minlength=num_users)

  def contains(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
    """Bool array (shape of ``items``): True where (user, item) is a train positive."""
    q = users.astype(np.int64) * self.num_items + items.astype(np.int64)
    if self.keys.size == 0:
      return np.zeros(q.shape, bool)
    pos = np.searchsorted(self.keys, q)
    np.minimum(pos, self.keys.size - 1, out=pos)
    return self.keys[pos] == q


class NegativeSampler:
  """Draws item ids from a fixed distribution as a pure function of (key, index)."""

  def __init__(self, name: str, num_items: int, item_counts: np.ndarray | None = None,
               alpha: float = 0.75, max_rounds: int = 10):
    if name not in SAMPLERS:
      raise ConfigError(
          f"input.negative_sampler={name!r} is not one of {list(SAMPLERS) + ['in_batch']}")
    if num_items < 2:
      raise DataError("num_items", f"need at least 2 items to sample negatives, got {num_items}")
    self.name = name
    self.num_items = int(num_items)
    self.max_rounds = int(max_rounds)
    self._cdf = None
    if name == "popularity":
      if alpha < 0:
        raise ConfigError(f"input.popularity_alpha={alpha} must be >= 0")
      if item_counts is None or len(item_counts) != num_items:
        raise DataError("item_counts", f"popularity sampler needs {num_items} item counts")
      weights = np.asarray(item_counts, np.float64) ** float(alpha)
      if alpha > 0:
        weights[np.asarray(item_counts) == 0] = 0.0
      total = weights.sum()
      if not total > 0:
        raise DataError("train split", "popularity sampler: no item has train interactions")
      self._cdf = np.cumsum(weights / total)
      self._cdf[-1] = 1.0

  @property
  def probabilities(self) -> np.ndarray:
    """float64 [num_items]: the sampling distribution (for tests and logQ)."""
    if self._cdf is None:
      return np.full(self.num_items, 1.0 / self.num_items)
    return np.diff(self._cdf, prepend=0.0)

  def draw(self, key: int | np.uint64, index: np.ndarray) -> np.ndarray:
    """int32 items, one per element index, from the bits ``splitmix64(key, index)``."""
    bits = splitmix64(key, index)
    if self._cdf is None:
      # Multiply-shift: high 32 bits times n, top 32 bits of the product; bias <= n / 2**32.
      return (((bits >> np.uint64(32)) * np.uint64(self.num_items))
              >> np.uint64(32)).astype(np.int32)
    u = (bits >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))
    items = np.searchsorted(self._cdf, u, side="right")
    np.minimum(items, self.num_items - 1, out=items)
    return items.astype(np.int32)

  def sample(self, keys: np.ndarray, users: np.ndarray, num_negatives: int, start: int,
             exclude: PositiveSet | None = None) -> np.ndarray:
    """int32 [len(users), num_negatives] negatives for rows starting at global element start.

    Args:
      keys: uint64 [max_rounds + 1] per-batch keys; keys[0] draws, keys[r] redraws round r.
      users: int32 [b] users of the rows (used only with ``exclude``).
      num_negatives: negatives per row.
      start: global index of this slice's first element (row * num_negatives), so that a
        slice of a batch equals the same rows of the whole batch.
      exclude: train positives to avoid, or None.
    """
    b = len(users)
    index = np.arange(start, start + b * num_negatives, dtype=np.uint64)
    neg = self.draw(keys[0], index).reshape(b, num_negatives)
    if exclude is None:
      return neg
    row_users = np.broadcast_to(users[:, None], neg.shape)
    hit = np.flatnonzero(exclude.contains(row_users, neg))
    flat = neg.reshape(-1)
    flat_users = row_users.reshape(-1)
    for r in range(1, self.max_rounds + 1):
      if hit.size == 0:
        break
      flat[hit] = self.draw(keys[r], index[hit])
      hit = hit[exclude.contains(flat_users[hit], flat[hit])]
    while hit.size:  # deterministic fallback: next non-positive id, cyclically
      flat[hit] = (flat[hit] + 1) % self.num_items
      hit = hit[exclude.contains(flat_users[hit], flat[hit])]
    return neg
