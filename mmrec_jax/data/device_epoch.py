"""Training epochs made on device: shuffle, batches, negatives and many steps per call.

Why: a BPR-MF step on a 1,024 batch costs well under a millisecond of arithmetic, but the
host path adds a fixed cost per step (a grain batch built in numpy, a host->device copy,
a Python loop iteration, a dispatch), which for small models is most of an epoch. When
the train split fits on the device (20M id pairs are 160 MB), the ids live there and one
jitted call runs up to ``train.log_every_steps`` steps (``lax.fori_loop``); its metrics are
written into a ``[max_chunk]`` buffer and fetched once per call. Inside the call the
batches are made ``BLOCK_ELEMENTS`` ids at a time (``vmap`` over the batch index, then
the steps of the block): a batch's shuffle and search are a handful of small array ops
whose fixed cost per op dominated them (an ML-100K epoch's batches: 13 ms one batch at a
time, 5 ms as one block). Values are the same either way (each is a function of its
batch index alone).

Batches are a pure function of (seed, global batch index ``g``), like the grain pipeline's
(``pipeline.py``), but drawn on device instead of with numpy, so the two paths give
different (equally valid) batch streams; a checkpoint records which one made it and a
resume on the other path fails in one line. Random numbers come from a keyed counter
hash (:func:`counter_bits`: element ``c`` of a draw is ``mix(mix(c, key), key')``), not
from ``jax.random``: threefry unrolls 20 rounds per draw into the loop, and the batch
maker's eight draws were ~30% of the loop's compile time and ~5 ms of a 40 ms ML-100K
epoch (benchmarks/RESULTS_bpr_peers.md). Every element is a function of its index in
the draw and the key alone, so values do not depend on sharding:

  * epoch ``e = g // steps_per_epoch`` orders the train interactions by a keyed
    pseudo-random permutation (a Feistel network with cycle-walking, round keys from
    ``key(seed, PERM, e)``: :func:`feistel_permute`), evaluated per batch, so
    no epoch-sized array is built or sorted; batch ``i = g % steps_per_epoch`` is
    positions ``[i*B, (i+1)*B)`` of that order (each epoch drops a different remainder,
    as the grain pipeline does); the ids are replicated on every device (8 bytes per
    interaction; the batch is then sharded on 'data');
  * batch ``g``'s negatives come from
    ``key(seed, NEG, g)``: ``uniform`` draws ``randint(0, num_items)``,
    ``popularity`` draws from the Walker alias table of ``negatives.py`` (same
    distribution), ``in_batch`` draws nothing and adds ``pos_logq``;
  * ``input.exclude_positives`` with the ``uniform`` sampler draws each negative uniformly
    from the items the user has NOT interacted with, exactly and without redraws:
    ``k ~ randint(0, num_items - deg(u))`` and the k-th non-positive item is
    ``k + #{t : S_t - t <= k}`` for the user's sorted positives ``S`` (``S_t - t`` counts
    the non-positives below ``S_t``), found by a fixed-length binary search over the
    user's row of a CSR of the train pairs (4 more bytes per distinct pair, replicated).
    Why: at ML-100K's density ~6% of uniform negatives (30% for the heaviest users) are
    the user's own positives; excluding them is what lifts BPR-MF to Cornac's NDCG
    (Cornac skips such draws; benchmarks/RESULTS_bpr_peers.md). The host path (redraws,
    then the next non-positive id) is distributed slightly differently near a full row.

Drawn values do not depend on how an array is sharded and every process runs the same
global computation, so the batches are the same for any number of devices or hosts. Resuming is "start at batch
``g``": ``get_state`` records it, and a call never crosses an epoch boundary, so a
checkpoint can fall anywhere inside an epoch.

Not here (the grain path stays for them): streamed features (``input.stream_features``),
``input.exclude_positives`` with a non-uniform sampler, regimes that do not declare
``device_epochs = True`` and splits that do not fit in device memory.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from mmrec_jax import sharding
from mmrec_jax.data import negatives as negatives_lib
from mmrec_jax.errors import ConfigError, DataError

MODES = ("auto", "on", "off")
STATE_KIND = "device"
# 2: the unbalanced Feistel domain (batch orders differ from version 1's).
# 3: counter-hash random numbers instead of jax.random (different batches).
STATE_VERSION = 3
_PERM_TAG = 0x5045524D  # 'PERM'
_NEG_TAG = 0x4E454753  # 'NEGS'
# Device bytes per train interaction: the ids (2 x int32) and a rating, with room to spare.
BYTES_PER_INTERACTION = 16
_FEISTEL_ROUNDS = 6
# 'auto' uses at most this fraction of a device's memory for the ids.
MEMORY_FRACTION = 0.25
# Ids (users, positives, negatives) of the batches made at once by the loop: 16 MB.
BLOCK_ELEMENTS = 1 << 22


def _device_memory_bytes() -> int:
  """Memory of one local device (host RAM for CPU devices, which report none)."""
  stats = None
  try:
    stats = jax.local_devices()[0].memory_stats()
  except Exception:  # some backends do not implement memory_stats
    stats = None
  if stats and stats.get("bytes_limit"):
    return int(stats["bytes_limit"])
  return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def unsupported_reason(config: ml_collections.ConfigDict, regime_supports: bool) -> str | None:
  """Why this run cannot make its epochs on device (None: it can)."""
  if not regime_supports:
    return "the model's training regime does not declare device_epochs"
  if config.input.stream_features:
    return "input.stream_features=True (feature rows come from the host)"
  if config.input.exclude_positives and config.input.negative_sampler != "uniform":
    return (
      f"input.exclude_positives=True with input.negative_sampler="
      f"{config.input.negative_sampler!r} (only 'uniform' excludes on device)"
    )
  return None


def choose(
  config: ml_collections.ConfigDict,
  regime_supports: bool,
  num_train: int,
  num_devices: int,
  platform: str = "",
) -> tuple[bool, str]:
  """(use the device path, why) for ``input.device_epochs``; 'on' that cannot run raises."""
  mode = config.input.get("device_epochs", "auto")
  if mode not in MODES:
    raise ConfigError(f"input.device_epochs={mode!r} is not one of {list(MODES)}")
  if mode == "off":
    return False, "input.device_epochs='off'"
  reason = unsupported_reason(config, regime_supports)
  if reason is not None:
    if mode == "on":
      raise ConfigError(f"input.device_epochs='on' but {reason}; use 'auto' or 'off'")
    return False, reason
  if mode == "auto" and platform == "cpu" and num_devices > 1:
    # Observed with jax 0.10.2: the multi-step loop's collectives on several CPU devices
    # (fake devices: tests) stall XLA:CPU's in-process rendezvous and abort the process
    # when the executable is loaded from the persistent compilation cache.
    return False, "several CPU devices: the multi-step loop's CPU collectives can stall"
  need = BYTES_PER_INTERACTION * num_train
  have = MEMORY_FRACTION * _device_memory_bytes()  # the ids are replicated
  if need > have and mode == "auto":
    return False, f"the train ids need ~{need / 2**30:.2f} GiB, over {have / 2**30:.2f} GiB"
  return True, f"input.device_epochs={mode!r}, train ids ~{need / 2**20:.0f} MiB on device"


def _mix32(x: jax.Array, k: jax.Array) -> jax.Array:
  """A keyed 32-bit mixer (murmur3's finaliser of ``x * golden + k``), uint32 wrap-around."""
  x = x * jnp.uint32(0x9E3779B1) + k
  x = (x ^ (x >> 16)) * jnp.uint32(0x85EBCA6B)
  x = (x ^ (x >> 13)) * jnp.uint32(0xC2B2AE35)
  return x ^ (x >> 16)


def hash_key(seed: int, tag: int, index: jax.Array) -> jax.Array:
  """A uint32 key for draw ``index`` (traced) of stream ``tag`` under ``seed``."""
  s = int(seed)
  k = _mix32(jnp.uint32(s & 0xFFFFFFFF), jnp.uint32(tag))
  k = _mix32(jnp.uint32((s >> 32) & 0xFFFFFFFF), k)
  return _mix32(jnp.asarray(index).astype(jnp.uint32), k)


def counter_bits(key: jax.Array, shape: tuple[int, ...], stream: int = 0) -> jax.Array:
  """uint32 pseudo-random bits of ``shape``: two keyed mixes of each element's flat index.

  Each round (:func:`_mix32`) is a bijection of its input for a fixed key, so the
  elements of one draw are distinct before the second mix and independent-looking after
  it; ``stream`` separates draws made under the same key.
  """
  c = jnp.arange(math.prod(shape), dtype=jnp.uint32).reshape(shape)
  k2 = _mix32(key, jnp.uint32(0x7F4A7C15 + stream))
  return _mix32(_mix32(c, key) ^ k2, k2)


def _mulhi32(a: jax.Array, b: jax.Array) -> jax.Array:
  """``(a * b) >> 32`` of uint32 arrays, from 16-bit halves (no 64-bit types)."""
  m16 = jnp.uint32(0xFFFF)
  a_lo, a_hi, b_lo, b_hi = a & m16, a >> 16, b & m16, b >> 16
  lo_lo, hi_lo, lo_hi = a_lo * b_lo, a_hi * b_lo, a_lo * b_hi
  cross = (lo_lo >> 16) + (hi_lo & m16) + lo_hi  # < 2**32: no wrap-around
  return a_hi * b_hi + (hi_lo >> 16) + (cross >> 16)


def counter_randint(
  key: jax.Array, shape: tuple[int, ...], span: jax.Array | int, stream: int = 0
) -> jax.Array:
  """int32 draws in ``[0, span)`` (``span`` broadcasts against ``shape``, 1 <= span < 2**31).

  Lemire's multiply-shift ``(bits * span) >> 32``: each value gets ``floor`` or ``ceil`` of
  ``2**32 / span`` of the bit patterns, a relative bias of at most ``span / 2**32``
  (2e-5 at 100k items, 0.2% at 1e7), with no division and no rejection loop.
  """
  span = jnp.broadcast_to(jnp.asarray(span).astype(jnp.uint32), shape)
  return _mulhi32(counter_bits(key, shape, stream), span).astype(jnp.int32)


def feistel_permute(j: jax.Array, n: int, keys: jax.Array) -> jax.Array:
  """A keyed pseudo-random permutation of ``[0, n)`` applied to ``j`` (int32, < n).

  A Feistel network over the ``2**k >= n`` ids of ``k = bit_length(n - 1)`` bits, split
  into a left half of ``k // 2`` and a right half of ``k - k // 2`` bits; round ``r`` XORs
  one half with :func:`_mix32` of the other (left on even rounds, right on odd ones), so
  each round, and the network, is a bijection of that domain even when ``k`` is odd.
  Cycle-walking (re-encrypting values >= n until they fall below n) restricts it to a
  bijection of ``[0, n)``. O(1) per element and no sort: XLA:CPU sorted 20M keys in
  11-24 s, this takes milliseconds.

  The domain is less than ``2 n``, so a batch's lockstep cycle-walk ends after a few
  re-encryptions (a balanced network, rounding ``k`` up to even, made the domain up to
  ``4 n``: ~20 re-encryptions per 1,024-id batch on ML-100K, ~15% of a BPR step).
  """
  bits = max(2, int(n - 1).bit_length())
  left_bits = bits // 2
  right_bits = bits - left_bits
  mask_l = jnp.uint32((1 << left_bits) - 1)
  mask_r = jnp.uint32((1 << right_bits) - 1)

  def encrypt(x):
    left, right = x >> right_bits, x & mask_r
    for r in range(keys.shape[0]):
      if r % 2 == 0:
        left = left ^ (_mix32(right, keys[r]) & mask_l)
      else:
        right = right ^ (_mix32(left, keys[r]) & mask_r)
    return (left << right_bits) | right

  y = encrypt(j.astype(jnp.uint32))
  y = jax.lax.while_loop(lambda y: jnp.any(y >= n), lambda y: jnp.where(y >= n, encrypt(y), y), y)
  return y.astype(jnp.int32)


def _put_sharded(mesh: Mesh, x: np.ndarray, spec: P) -> jax.Array:
  """A global array from a host array every process holds in full."""
  sh = NamedSharding(mesh, spec)
  return jax.make_array_from_callback(x.shape, sh, lambda idx: x[idx])


class DeviceEpochs:
  """On-device batches and a jitted multi-step loop; the grain pipeline's position API.

  ``step``/``epoch`` describe the next batch; ``get_state``/``set_state`` save and restore
  it (JSON). ``advance(task_step, state, limit)`` runs the steps up to ``limit`` (at most
  ``max_chunk`` and never past the epoch's end) in one call.
  """

  def __init__(
    self,
    *,
    users: np.ndarray,
    items: np.ndarray,
    num_items: int,
    batch_size: int,
    num_negatives: int,
    sampler: negatives_lib.NegativeSampler | None,
    logq: np.ndarray | None,
    seed: int,
    mesh: Mesh,
    max_chunk: int,
    num_epochs: int | None = None,
    ratings: np.ndarray | None = None,
    positives: negatives_lib.PositiveSet | None = None,
  ):
    n = len(users)
    self.num_train = n
    self.num_items = int(num_items)
    self.global_batch = int(batch_size)
    self.steps_per_epoch = n // self.global_batch
    if self.steps_per_epoch == 0:
      raise ConfigError(f"input.batch_size={batch_size} is larger than the {n} train interactions")
    self.num_batches = sys.maxsize if num_epochs is None else self.steps_per_epoch * num_epochs
    self.num_negatives = int(num_negatives)
    self.seed = int(seed)
    self.mesh = mesh
    self.max_chunk = max(1, min(int(max_chunk), self.steps_per_epoch))
    self._next = 0
    ids = np.stack([np.asarray(users, np.int32), np.asarray(items, np.int32)])
    # Replicated, not sharded on 'data': a batch's rows are spread over the whole split,
    # so gathering them from a sharded array all-gathers the split at every step
    # (measured: it stalled XLA:CPU's in-process collectives on 8 fake devices).
    self._ids = _put_sharded(mesh, ids, P(None, None))
    rep = sharding.replicated(mesh)
    self._tables: dict[str, jax.Array] = {}
    if ratings is not None:
      # Labelled rows (the pointwise rankers' batches carry ``rating``), replicated as
      # the ids are; 4 more bytes per interaction.
      self._tables["rating"] = _put_sharded(mesh, np.asarray(ratings, np.float32), P(None))
    self.kind = "in_batch" if sampler is None else sampler.name
    if sampler is None:
      if logq is None:
        raise DataError("train split", "in-batch negatives need the items' log frequencies")
      self._tables["logq"] = jax.device_put(np.asarray(logq, np.float32), rep)
    elif sampler.name != "uniform":
      # Walker alias table of negatives.py: keep column c when bits < threshold[c].
      threshold = np.asarray(sampler._threshold, np.uint64)
      self._tables["keep_all"] = jax.device_put(threshold >= np.uint64(1 << 32), rep)
      self._tables["threshold"] = jax.device_put(
        np.minimum(threshold, np.uint64(0xFFFFFFFF)).astype(np.uint32), rep
      )
      self._tables["alias"] = jax.device_put(np.asarray(sampler._alias, np.int32), rep)
    # ``positives``: the train pairs of ``input.exclude_positives`` (the pipeline's set).
    self.exclude = positives is not None
    if self.exclude:
      if self.kind != "uniform":
        raise ConfigError(
          f"device epochs exclude positives only for the uniform sampler, not {self.kind!r}"
        )
      self._search_steps = self._add_positive_rows(positives)
    # Steps per block of batches made at once (``_build_loop``): at most
    # ``BLOCK_ELEMENTS`` ids per block, never more than a call runs.
    per_step = self.global_batch * (2 + self.num_negatives)
    self._block_steps = max(1, min(self.max_chunk, BLOCK_ELEMENTS // per_step))
    self._loop = None
    self._batch_jit = None

  def _add_positive_rows(self, positives: negatives_lib.PositiveSet) -> int:
    """CSR of the distinct train pairs (``pos_ptr``, ``pos_items``); binary-search length."""
    keys = positives.keys  # sorted, distinct: users' rows in order, items sorted within
    deg = positives.positives_per_user(int(keys[-1] // self.num_items) + 1 if keys.size else 0)
    if np.any(deg >= self.num_items):
      u = int(np.flatnonzero(deg >= self.num_items)[0])
      raise DataError(
        f"train split user {u}",
        "has every item as a positive; input.exclude_positives cannot find a negative",
      )
    ptr = np.concatenate([[0], np.cumsum(deg)]).astype(np.int32)
    rep = P(None)
    self._tables["pos_ptr"] = _put_sharded(self.mesh, ptr, rep)
    self._tables["pos_items"] = _put_sharded(
      self.mesh, (keys % self.num_items).astype(np.int32), rep
    )
    return int(deg.max()).bit_length() + 1

  def _uniform_non_positive(
    self, tables: Mapping[str, jax.Array], user: jax.Array, key: jax.Array, shape: tuple
  ) -> jax.Array:
    """Uniform draws from each user's non-positive items (module doc), ``shape`` [B, n]."""
    ptr, pos_items = tables["pos_ptr"], tables["pos_items"]
    start = jnp.take(ptr, user, mode="clip")[:, None]
    end = jnp.take(ptr, user + 1, mode="clip")[:, None]
    k = counter_randint(key, shape, self.num_items - (end - start))
    lo = jnp.broadcast_to(start, shape)
    hi = jnp.broadcast_to(end, shape)

    def body(_, carry):
      lo, hi = carry
      mid = (lo + hi) // 2
      right = (mid < hi) & (jnp.take(pos_items, mid, mode="clip") - (mid - start) <= k)
      return jnp.where(right, mid + 1, lo), jnp.where(right, hi, mid)

    lo, _ = jax.lax.fori_loop(0, self._search_steps, body, (lo, hi))
    return k + (lo - start)

  @classmethod
  def from_pipeline(
    cls, pipe: Any, mesh: Mesh, max_chunk: int, with_ratings: bool = False
  ) -> DeviceEpochs:
    """The device twin of a grain ``TrainPipeline`` (its checked ids and sampler).

    ``with_ratings``: batches carry ``rating`` (the step reads it: pointwise rankers).
    """
    src = dict(pipe.device_epoch_inputs())
    if not with_ratings:
      src["ratings"] = None
    elif src.get("ratings") is None:
      raise DataError("train split", "the model reads ratings but the train split has none")
    return cls(mesh=mesh, max_chunk=max_chunk, **src)

  # ------------------------------------------------------------------ position
  @property
  def step(self) -> int:
    """Global index of the next batch."""
    return self._next

  @property
  def epoch(self) -> int:
    return self._next // self.steps_per_epoch

  @property
  def global_batch_size(self) -> int:
    return self.global_batch

  def get_state(self) -> dict[str, Any]:
    """JSON-able position (checkpointed beside the model)."""
    return {
      "version": STATE_VERSION,
      "kind": STATE_KIND,
      "next_batch": self._next,
      "epoch": self.epoch,
      "batch_in_epoch": self._next % self.steps_per_epoch,
      "seed": self.seed,
      "global_batch_size": self.global_batch,
      "steps_per_epoch": self.steps_per_epoch,
    }

  def set_state(self, state: Mapping[str, Any]) -> None:
    """Restores a position saved by ``get_state``; a grain pipeline's state is refused."""
    if state.get("kind") != STATE_KIND:
      raise DataError(
        "pipeline state",
        "the checkpoint was written by the grain input pipeline but this run makes its "
        "epochs on device; resume with --config.input.device_epochs=off",
      )
    from mmrec_jax.data.pipeline import saved_position  # noqa: PLC0415  (grain import)

    nxt = saved_position(
      state, STATE_VERSION, self.seed, self.global_batch, self.steps_per_epoch, self.num_batches
    )
    self._next = nxt

  # ------------------------------------------------------------------ batches
  def _round_keys(self, epoch: jax.Array) -> jax.Array:
    return counter_bits(hash_key(self.seed, _PERM_TAG, epoch), (_FEISTEL_ROUNDS,))

  def rows_of(self, epoch: jax.Array, j: jax.Array) -> jax.Array:
    """Train rows at positions ``j`` of epoch ``epoch``'s order (a keyed permutation)."""
    return feistel_permute(j, self.num_train, self._round_keys(epoch))

  def epoch_ids(self, epoch: int) -> np.ndarray:
    """The epoch's [2, steps_per_epoch, B] (user, item) ids (tests and inspection)."""
    used = self.steps_per_epoch * self.global_batch
    rows = jax.jit(self.rows_of)(jnp.int32(epoch), jnp.arange(used, dtype=jnp.int32))
    ids = np.asarray(self._ids)[:, np.asarray(rows)]
    return ids.reshape(2, self.steps_per_epoch, self.global_batch)

  def make_batch(
    self, ids: jax.Array, tables: Mapping[str, jax.Array], g: jax.Array
  ) -> dict[str, jax.Array]:
    """Batch ``g`` (traced) from the [2, n] train ids."""
    epoch, i = g // self.steps_per_epoch, g % self.steps_per_epoch
    data = lambda x: jax.lax.with_sharding_constraint(
      x, NamedSharding(self.mesh, P(sharding.DATA, *([None] * (x.ndim - 1))))
    )
    j = i * self.global_batch + jnp.arange(self.global_batch, dtype=jnp.int32)
    rows = data(self.rows_of(epoch, j))
    user = data(jnp.take(ids[0], rows, mode="clip"))
    pos = data(jnp.take(ids[1], rows, mode="clip"))
    out = {"user": user, "pos": pos}
    if "rating" in tables:
      out["rating"] = data(jnp.take(tables["rating"], rows, mode="clip"))
    if self.kind == "in_batch":
      out["pos_logq"] = data(tables["logq"][pos])
      return out
    key = hash_key(self.seed, _NEG_TAG, g)
    shape = (self.global_batch, self.num_negatives)
    if self.kind == "uniform" and self.exclude:
      neg = self._uniform_non_positive(tables, user, key, shape)
    elif self.kind == "uniform":
      neg = counter_randint(key, shape, self.num_items)
    else:
      col = counter_randint(key, shape, self.num_items)
      bits = counter_bits(key, shape, stream=1)
      keep = tables["keep_all"][col] | (bits < tables["threshold"][col])
      neg = jnp.where(keep, col, tables["alias"][col])
    out["neg"] = data(neg)
    return out

  def batch_at(self, g: int) -> dict[str, np.ndarray]:
    """Batch ``g`` on the host (tests and inspection; the loop never fetches batches)."""
    if self._batch_jit is None:
      self._batch_jit = jax.jit(self.make_batch)
    return jax.device_get(self._batch_jit(self._ids, self._tables, jnp.int32(g)))

  # ------------------------------------------------------------------ steps
  def _build_loop(self, step_fn: Callable, state_shardings: Any, frozen: Any):
    max_chunk = self.max_chunk

    def many(state, ids, tables, frozen, g0, n):
      # A jitted inner step: the loop body's call reuses the trace ``eval_shape`` made
      # (same abstract arguments), so the step is traced once, not twice (~0.15 s of a
      # warm-cache ML-100K start). XLA inlines it.
      @jax.jit
      def one(st, batch):
        return step_fn(st, batch, frozen)

      # Batches are made a block of ``block`` steps at a time (vmapped over the batch
      # index): shuffling and sampling then run as a few large array ops instead of a
      # few small ones per step, whose fixed cost dominated them (module doc).
      # Jitted as ``one`` is: the loop's call reuses the trace ``eval_shape`` made.
      block = self._block_steps
      make = jax.jit(jax.vmap(lambda g: self.make_batch(ids, tables, g)))
      batch0 = jax.tree.map(
        lambda a: jax.ShapeDtypeStruct(a.shape[1:], a.dtype),
        jax.eval_shape(make, jnp.zeros((block,), jnp.int32)),
      )
      shapes = jax.eval_shape(one, state, batch0)[1]
      buf = jax.tree.map(lambda s: jnp.zeros((max_chunk, *s.shape), s.dtype), shapes)

      def block_body(k, carry):
        first = k * block
        batches = make(g0 + first + jnp.arange(block, dtype=jnp.int32))

        def body(i, carry):
          st, b = carry
          st, m = one(st, jax.tree.map(lambda a: a[i], batches))
          return st, jax.tree.map(lambda x, v: x.at[first + i].set(v), b, m)

        return jax.lax.fori_loop(0, jnp.minimum(block, n - first), body, carry)

      return jax.lax.fori_loop(0, (n + block - 1) // block, block_body, (state, buf))

    rep = sharding.replicated(self.mesh)
    frozen_sh = jax.tree.map(lambda a: a.sharding, frozen)
    return jax.jit(
      many,
      donate_argnums=0,
      in_shardings=(
        state_shardings,
        rep,
        jax.tree.map(lambda _: rep, self._tables),
        frozen_sh,
        rep,
        rep,
      ),
      out_shardings=(state_shardings, rep),
    )

  def advance(self, task: Any, state: Any, limit: int) -> tuple[Any, dict[str, jax.Array], int]:
    """Runs steps ``step .. min(limit, epoch end, step + max_chunk) - 1`` in one call.

    Returns (state, metrics stacked ``[max_chunk]`` of which the first ``n`` are this
    call's steps, ``n``). ``state`` is donated.
    """
    g0 = self._next
    epoch_end = (g0 // self.steps_per_epoch + 1) * self.steps_per_epoch
    n = min(limit, epoch_end, g0 + self.max_chunk, self.num_batches) - g0
    if n <= 0:
      raise ValueError(f"advance: nothing to run from batch {g0} up to {limit}")
    if self._loop is None:
      self._loop = self._build_loop(task.step_fn, task.state_shardings, task.frozen)
    state, metrics = self._loop(
      state, self._ids, self._tables, task.frozen, jnp.int32(g0), jnp.int32(n)
    )
    self._next = g0 + n
    return state, metrics, n

  def close(self) -> None:
    """Nothing runs in the background (the grain pipeline's interface)."""


__all__ = ["MODES", "DeviceEpochs", "choose", "unsupported_reason"]
