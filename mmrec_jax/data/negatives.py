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

Samplers (``input.negative_sampler``; :data:`SAMPLERS`, the registry it is checked against,
maps each name to the function giving its sampling distribution):
  * ``uniform``    -- every item with probability 1/num_items;
  * ``popularity`` -- item i with probability proportional to ``count_i ** alpha``
    (``count_i`` = train interactions of i; items never seen in train get 0 when
    alpha > 0), drawn in O(1) from a Walker alias table;
  * ``trained_uniform`` -- uniform over the items with train interactions (item cold
    start: items absent from train are never drawn), through the same alias table;
  * ``in_batch``   -- no sampled negatives (the loss uses the batch's other positives);
    handled by the pipeline, not here.

Exclusion of known positives (``input.exclude_positives``): membership of (user, item) in
the train set is tested with ``np.searchsorted`` on the sorted unique int64 keys
``user * num_items + item`` (behind a Bloom filter, so most misses cost one read). Hits are redrawn from the same sampler with fresh bits for up
to ``max_rounds`` rounds; what is still a hit afterwards is replaced deterministically by
the next item id (cyclically) that is not a positive of that user -- such fallback items
may have zero popularity probability, which only happens for users whose positives cover
most of the sampling mass.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from mmrec_jax.errors import ConfigError, DataError

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


def _mix64(x: np.ndarray) -> np.ndarray:
  """SplitMix64's finaliser: a bijective bit mixer of uint64 values."""
  with np.errstate(over="ignore"):
    x = (x ^ (x >> np.uint64(30))) * _M1
    x = (x ^ (x >> np.uint64(27))) * _M2
    return x ^ (x >> np.uint64(31))


class PositiveSet:
  """Train (user, item) pairs as sorted int64 keys for vectorised membership tests.

  ``contains`` first looks each query up in a one-hash Bloom filter (~32 bits per key, so
  ~3% false positives) -- one random read per query instead of a ~22-step binary search
  through the key array -- and binary-searches only the filter's hits.
  """

  def __init__(self, users: np.ndarray, items: np.ndarray, num_items: int):
    self.num_items = int(num_items)
    keys = users.astype(np.int64) * self.num_items + items.astype(np.int64)
    self.keys = np.unique(keys)  # sorted, duplicates removed
    self._bits_log2 = max(16, int(np.ceil(np.log2(max(1, self.keys.size) * 32))))
    flags = np.zeros(1 << self._bits_log2, bool)
    flags[self._slot(self.keys)] = True
    self._bloom = np.packbits(flags, bitorder="little")

  def _slot(self, keys: np.ndarray) -> np.ndarray:
    return (_mix64(keys.astype(np.uint64)) >> np.uint64(64 - self._bits_log2)).astype(np.int64)

  def positives_per_user(self, num_users: int) -> np.ndarray:
    return np.bincount(self.keys // self.num_items, minlength=num_users)

  def contains(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
    """Bool array (shape of ``items``): True where (user, item) is a train positive."""
    q = (users.astype(np.int64) * self.num_items + items.astype(np.int64)).reshape(-1)
    out = np.zeros(q.shape, bool)
    if self.keys.size:
      slot = self._slot(q)
      maybe = np.flatnonzero((self._bloom[slot >> 3] >> (slot & 7).astype(np.uint8)) & 1)
      if maybe.size > 1024:  # sorted queries search ~2x faster (cache locality)
        maybe = maybe[np.argsort(q[maybe], kind="stable")]
      cand = q[maybe]
      pos = np.searchsorted(self.keys, cand)
      np.minimum(pos, self.keys.size - 1, out=pos)
      out[maybe] = self.keys[pos] == cand
    return out.reshape(np.shape(items))


def _alias_table(probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Walker/Vose alias table: (uint64 keep-thresholds scaled to 2**32, int32 aliases).

  O(1) per draw (two reads of n-sized tables) instead of a binary search of the CDF.
  Built with Vose's pairing, vectorised over as many (small, large) pairs as possible per
  step.
  """
  n = probs.size
  q = probs * n
  alias = np.arange(n, dtype=np.int32)
  keep = np.ones(n, np.float64)
  small = np.flatnonzero(q < 1.0)
  large = np.flatnonzero(q >= 1.0)
  while small.size and large.size:
    k = min(small.size, large.size)
    s, l = small[:k], large[:k]
    keep[s] = q[s]
    alias[s] = l
    q[l] -= 1.0 - q[s]
    now_small = q[l] < 1.0
    small = np.concatenate([small[k:], l[now_small]])
    large = np.concatenate([large[k:], l[~now_small]])
  # Leftovers (rounding) keep themselves with probability 1.
  threshold = np.minimum(np.round(keep * 2.0**32), 2.0**32).astype(np.uint64)
  return threshold, alias


def uniform_distribution(num_items: int, item_counts: np.ndarray | None, alpha: float) -> None:
  """Every item with probability 1/num_items (None: drawn without an alias table)."""
  del num_items, item_counts, alpha


def popularity_distribution(
  num_items: int, item_counts: np.ndarray | None, alpha: float
) -> np.ndarray:
  """float64 [num_items]: ``count_i ** alpha``, normalised (module docstring)."""
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
  return weights / total


def trained_uniform_distribution(
  num_items: int, item_counts: np.ndarray | None, alpha: float
) -> np.ndarray:
  """float64 [num_items]: uniform over the items WITH train interactions.

  For item cold start: an item absent from the train log is unknown to training, and
  drawing it as a negative would push exactly the items the content must rank up down.
  """
  del alpha
  if item_counts is None or len(item_counts) != num_items:
    raise DataError("item_counts", f"trained_uniform sampler needs {num_items} item counts")
  weights = (np.asarray(item_counts) > 0).astype(np.float64)
  if not weights.any():
    raise DataError("train split", "trained_uniform sampler: no item has train interactions")
  return weights / weights.sum()


# input.negative_sampler -> (num_items, item_counts, alpha) -> the sampling probabilities
# (None: uniform). 'in_batch' draws nothing: the loss uses the other positives of the
# batch, so it has no distribution here (pipeline.py handles it).
SAMPLERS: dict[str, Callable[[int, np.ndarray | None, float], np.ndarray | None] | None] = {
  "uniform": uniform_distribution,
  "popularity": popularity_distribution,
  "trained_uniform": trained_uniform_distribution,
  "in_batch": None,
}
IN_BATCH = "in_batch"


class NegativeSampler:
  """Draws item ids from a fixed distribution as a pure function of (key, index)."""

  def __init__(
    self,
    name: str,
    num_items: int,
    item_counts: np.ndarray | None = None,
    alpha: float = 0.75,
    max_rounds: int = 10,
  ):
    if SAMPLERS.get(name) is None:  # unknown, or in_batch (nothing to draw)
      raise ConfigError(f"input.negative_sampler={name!r} is not one of {list(SAMPLERS)}")
    if num_items < 2:
      raise DataError("num_items", f"need at least 2 items to sample negatives, got {num_items}")
    self.name = name
    self.num_items = int(num_items)
    self.max_rounds = int(max_rounds)
    self._probs = SAMPLERS[name](self.num_items, item_counts, alpha)
    if self._probs is not None:
      self._threshold, self._alias = _alias_table(self._probs)

  @property
  def probabilities(self) -> np.ndarray:
    """float64 [num_items]: the sampling distribution (for tests and logQ)."""
    if self._probs is None:
      return np.full(self.num_items, 1.0 / self.num_items)
    return self._probs

  def draw(self, key: int | np.uint64, index: np.ndarray) -> np.ndarray:
    """int32 items, one per element index, from the bits ``splitmix64(key, index)``."""
    bits = splitmix64(key, index)
    # Multiply-shift: high 32 bits times n, top 32 bits of the product; bias <= n / 2**32.
    col = ((bits >> np.uint64(32)) * np.uint64(self.num_items)) >> np.uint64(32)
    col = col.astype(np.int32)
    if self._probs is None:
      return col
    # Walker alias: keep column col with probability threshold/2**32, else its alias.
    keep = (bits & np.uint64(0xFFFFFFFF)) < self._threshold[col]
    return np.where(keep, col, self._alias[col])

  def sample(
    self,
    keys: np.ndarray,
    users: np.ndarray,
    num_negatives: int,
    start: int,
    exclude: PositiveSet | None = None,
  ) -> np.ndarray:
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
