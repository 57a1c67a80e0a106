"""Grain training pipeline: whole batches as records, pure functions of (seed, batch index).

Why a batch is the unit of work: per-example grain pipelines reach ~40k examples/s on a
small host, far below what an embedding-table train step consumes. Here grain's record
``g`` is the whole GLOBAL batch number ``g`` (only this process's rows of it), built with
vectorised numpy:

  * epoch ``e = g // steps_per_epoch`` shuffles the train interactions with the
    permutation ``default_rng([seed, tag, e])`` (cached per epoch, one per worker);
  * batch ``i = g % steps_per_epoch`` is ``perm[i*B:(i+1)*B]``; process ``p`` of ``P``
    takes rows ``[p*B/P, (p+1)*B/P)`` of it (what ``grain.sharding.ShardByJaxProcess``
    does per record, done per batch);
  * negatives come from counter-based random bits keyed by (seed, e, i) and the GLOBAL
    element index (see ``negatives.py``), so a process's slice equals the same rows of the
    single-process batch.

So a batch never depends on what was read before it: resuming is "start at record g"
(``get_state`` is ``{"next_batch": g, ...}``, independent of worker count and prefetch),
and worker processes (``input.worker_count``, grain ``mp_prefetch``) produce exactly the
batches of the single-process pipeline.

Where the work runs: with ``worker_count=0`` grain read threads (``num_threads``, buffer
``input.prefetch``) build whole batches ahead of the consumer. With workers, the worker
processes build the id part (shuffle, negatives, exclusion) and the feature rows are
gathered in the consumer process behind a grain thread prefetch: sending hundreds of MB of
rows per batch through shared memory was measured slower than gathering them
(benchmarks/RESULTS_pipeline.md).

Each epoch drops its last ``num_train % batch_size`` interactions (a different random set
every epoch) so that every batch has the same static shape; ``steps_per_epoch`` is
``num_train // batch_size``.

Batch (per process, ``b = batch_size / process_count``), as in docs/architecture.md:
``user [b] int32``, ``pos [b] int32``, ``neg [b, n_neg] int32`` (not with ``in_batch``),
``pos_logq [b] float32`` (only with ``in_batch``: log of the item's train frequency, for
the logQ correction of in-batch softmax), ``rating [b] float32`` (the rows' ratings, when
the split has them: what the ``rating`` regime regresses on; ranking steps ignore it), and
with ``input.stream_features`` per modality
``m``: ``feat_pos/m [b, d]``, ``mask_pos/m [b] bool``, ``feat_neg/m [b, n_neg, d]``,
``mask_neg/m [b, n_neg] bool``.
"""

from __future__ import annotations

import copy
import sys
import threading
from collections.abc import Iterator, Mapping
from typing import Any

import grain
import numpy as np
from absl import flags

from mmrec_jax.data import negatives as negatives_lib
from mmrec_jax.errors import ConfigError, DataError

_PERM_TAG = 0x5045524D  # 'PERM': separates the permutation seed from the negative keys
_NEG_TAG = 0x4E454753  # 'NEGS'
STATE_VERSION = 1


def saved_position(
  state: Mapping[str, Any],
  version: int,
  seed: int,
  global_batch: int,
  steps_per_epoch: int,
  num_batches: int,
) -> int:
  """The ``next_batch`` of a saved input position, after checking it fits this run.

  Shared by both input paths (this grain pipeline and ``device_epoch.DeviceEpochs``): a
  position only means the same batches under the same seed, global batch size and epoch
  length, so any difference is a one-line DataError instead of silently other batches.
  """
  if state.get("version") != version:
    raise DataError("pipeline state", f"version {state.get('version')!r} != {version}")
  for key, mine in (
    ("seed", seed),
    ("global_batch_size", global_batch),
    ("steps_per_epoch", steps_per_epoch),
  ):
    if state.get(key) != mine:
      raise DataError(
        "pipeline state",
        f"{key}={state.get(key)!r} but this run has {key}={mine} "
        "(the saved position would point at different batches)",
      )
  nxt = int(state["next_batch"])
  if not 0 <= nxt <= num_batches:
    raise DataError("pipeline state", f"next_batch={nxt} outside [0, {num_batches}]")
  return nxt


class _Features:
  """A modality's FeatureShards plus its mask held in memory.

  FeatureShards pickles as its path, so grain worker processes re-map the shard files
  instead of receiving a copy of every row.
  """

  def __init__(self, shards: Any):
    self.shards = shards
    self.dim = int(shards.dim)
    self.mask = np.asarray(shards.mask, dtype=bool)

  def gather(self, ids: np.ndarray) -> np.ndarray:
    return self.shards.gather(ids)


class _BatchSource:
  """grain RandomAccessDataSource: record g = this process's rows of global batch g."""

  def __init__(
    self,
    *,
    users,
    items,
    num_items,
    seed,
    global_batch,
    local_batch,
    process_index,
    steps_per_epoch,
    num_batches,
    num_negatives,
    sampler,
    exclude,
    logq,
    features,
    ratings=None,
  ):
    self.users = users
    self.items = items
    self.ratings = ratings
    self.num_items = num_items
    self.seed = seed
    self.global_batch = global_batch
    self.local_batch = local_batch
    self.process_index = process_index
    self.steps_per_epoch = steps_per_epoch
    self.num_batches = num_batches
    self.num_negatives = num_negatives
    self.sampler = sampler
    self.exclude = exclude
    self.logq = logq
    self.features = features
    self._init_cache()

  def _init_cache(self):
    self._lock = threading.Lock()
    self._perms = {}  # epoch -> permutation; the last two (read threads may straddle)

  def __getstate__(self):
    state = dict(self.__dict__)
    state.pop("_lock")
    state.pop("_perms")
    return state

  def __setstate__(self, state):
    self.__dict__.update(state)
    self._init_cache()

  def __len__(self) -> int:
    return self.num_batches

  def __getitem__(self, g: int) -> dict[str, np.ndarray]:
    return self.batch(int(g))

  def permutation(self, epoch: int) -> np.ndarray:
    """The epoch's order of the train interactions (a pure function of seed, epoch)."""
    with self._lock:
      perm = self._perms.get(epoch)
      if perm is None:
        n = len(self.users)
        perm = np.random.default_rng([self.seed, _PERM_TAG, epoch]).permutation(n)
        perm = perm.astype(np.int32) if n < 2**31 else perm
        self._perms = {e: p for e, p in self._perms.items() if abs(e - epoch) == 1}
        self._perms[epoch] = perm
      return perm

  def batch(self, g: int) -> dict[str, np.ndarray]:
    """Batch g with feature rows joined (when the pipeline streams features)."""
    return self.join_features(self.id_batch(g))

  def id_batch(self, g: int) -> dict[str, np.ndarray]:
    """Batch g without feature rows: user, pos and neg (or pos_logq)."""
    if g < 0 or g >= self.num_batches:
      raise IndexError(f"batch {g} out of range [0, {self.num_batches})")
    epoch, i = divmod(g, self.steps_per_epoch)
    lo = i * self.global_batch + self.process_index * self.local_batch
    rows = self.permutation(epoch)[lo : lo + self.local_batch]
    user = self.users[rows]
    pos = self.items[rows]
    out = {"user": user, "pos": pos}
    if self.ratings is not None:
      out["rating"] = self.ratings[rows]
    if self.sampler is None:
      out["pos_logq"] = self.logq[pos]
    else:
      keys = negatives_lib.derive_keys(
        self.seed, _NEG_TAG, epoch, i, count=self.sampler.max_rounds + 1
      )
      start = self.process_index * self.local_batch * self.num_negatives
      out["neg"] = self.sampler.sample(keys, user, self.num_negatives, start, self.exclude)
    return out

  def join_features(self, out: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Adds feat_/mask_ entries for pos (and neg) of every streamed modality."""
    pos, neg = out["pos"], out.get("neg")
    for name, f in self.features.items():
      out[f"feat_pos/{name}"] = f.gather(pos)
      out[f"mask_pos/{name}"] = f.mask[pos]
      if neg is not None:
        out[f"feat_neg/{name}"] = f.gather(neg)
        out[f"mask_neg/{name}"] = f.mask[neg]
    return out


class _IdSource:
  """The ids-only view of a _BatchSource, sent to grain worker processes."""

  def __init__(self, source: _BatchSource):
    self.source = copy.copy(source)
    self.source.features = {}

  def __len__(self) -> int:
    return len(self.source)

  def __getitem__(self, g: int) -> dict[str, np.ndarray]:
    return self.source.id_batch(int(g))


class TrainPipeline:
  """Iterator of this process's training batches, with exact, JSON-able resume state.

  Iterating yields batch dicts (see module docstring). ``epoch`` and ``step`` describe the
  NEXT batch to be yielded. ``get_state()``/``set_state()`` save and restore the position;
  a restored pipeline yields exactly the batches the uninterrupted one would have.
  """

  def __init__(
    self,
    source: _BatchSource,
    *,
    worker_count: int,
    prefetch: int,
    num_threads: int,
    element_spec: dict[str, tuple[tuple[int, ...], np.dtype]],
  ):
    self._source = source
    self.worker_count = worker_count
    self.prefetch = prefetch
    self.num_threads = num_threads
    self.element_spec = element_spec
    self._next = 0
    self._it = None

  # ------------------------------------------------------------------ properties
  @property
  def steps_per_epoch(self) -> int:
    return self._source.steps_per_epoch

  @property
  def num_batches(self) -> int:
    """Total batches over all epochs (``sys.maxsize`` when repeating forever)."""
    return self._source.num_batches

  @property
  def global_batch_size(self) -> int:
    return self._source.global_batch

  @property
  def local_batch_size(self) -> int:
    return self._source.local_batch

  @property
  def step(self) -> int:
    """Global index of the next batch (batches already yielded, counted from 0)."""
    return self._next

  @property
  def epoch(self) -> int:
    """Epoch of the next batch."""
    return self._next // self.steps_per_epoch

  # ------------------------------------------------------------------ iteration
  def batch_at(self, g: int) -> dict[str, np.ndarray]:
    """Batch number g computed directly (no prefetch); what iteration yields at step g."""
    return self._source.batch(g)

  def _make_iter(self):
    read = grain.ReadOptions(num_threads=self.num_threads, prefetch_buffer_size=self.prefetch)
    if self.worker_count == 0:
      ds = grain.MapDataset.source(self._source)
      return iter((ds[self._next :] if self._next else ds).to_iter_dataset(read))
    # Workers build the id part (permutation, negatives, exclusion). Feature rows are
    # joined here, in a prefetch thread: moving them through shared memory costs more
    # than gathering them (measured: 0.28 vs 2.0 GB/s, benchmarks/RESULTS_pipeline.md).
    # grain's process prefetch reads absl flags; outside absl.app (notebooks, tests,
    # library use) they are unparsed, so take their defaults rather than fail.
    if not flags.FLAGS.is_parsed():
      flags.FLAGS.mark_as_parsed()
    ds = grain.MapDataset.source(_IdSource(self._source))
    it_ds = (ds[self._next :] if self._next else ds).to_iter_dataset(read)
    # Id arrays are small: pickling them through the queue beats a shared-memory segment
    # per array (grain's default min_shm_size=0 creates one for every array).
    it_ds = grain.experimental.WithOptionsIterDataset(
      it_ds, grain.experimental.DatasetOptions(min_shm_size=1 << 20)
    )
    it_ds = it_ds.mp_prefetch(
      grain.MultiprocessingOptions(
        num_workers=self.worker_count, per_worker_buffer_size=max(1, self.prefetch)
      )
    )
    if self._source.features:
      it_ds = it_ds.map(self._source.join_features)
      if self.prefetch:
        it_ds = grain.experimental.ThreadPrefetchIterDataset(
          it_ds, prefetch_buffer_size=self.prefetch
        )
    return iter(it_ds)

  def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    if self._next >= self.num_batches:
      raise StopIteration
    if self._it is None:
      self._it = self._make_iter()
    batch = next(self._it)
    self._next += 1
    return batch

  def close(self) -> None:
    """Stops prefetch threads and worker processes (iteration may start again later)."""
    if self._it is not None:
      close = getattr(self._it, "close", None)
      if close is not None:
        close()
      self._it = None

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()

  def __del__(self):
    try:
      self.close()
    except Exception:
      pass

  def device_epoch_inputs(self) -> dict[str, Any]:
    """The checked ids, sizes and sampler, for ``device_epoch.DeviceEpochs``."""
    s = self._source
    return {
      "users": s.users,
      "items": s.items,
      "ratings": s.ratings,
      "num_items": s.num_items,
      "batch_size": s.global_batch,
      "num_negatives": s.num_negatives,
      "sampler": s.sampler,
      "logq": s.logq,
      "seed": s.seed,
      "positives": s.exclude,
      "num_epochs": None if s.num_batches == sys.maxsize else s.num_batches // s.steps_per_epoch,
    }

  # ------------------------------------------------------------------ state
  def get_state(self) -> dict[str, Any]:
    """JSON-able position; valid for any worker_count/prefetch, same seed and sizes."""
    s = self._source
    return {
      "version": STATE_VERSION,
      "next_batch": self._next,
      "epoch": self.epoch,
      "batch_in_epoch": self._next % self.steps_per_epoch,
      "seed": s.seed,
      "global_batch_size": s.global_batch,
      "steps_per_epoch": s.steps_per_epoch,
    }

  def set_state(self, state: Mapping[str, Any]) -> None:
    """Restores a position saved by ``get_state`` (checks it belongs to this pipeline)."""
    s = self._source
    if state.get("kind", "grain") != "grain":
      raise DataError(
        "pipeline state",
        f"the checkpoint was written by the {state.get('kind')!r} input path (input."
        "device_epochs) but this run uses the grain pipeline; resume with the same setting",
      )
    nxt = saved_position(
      state, STATE_VERSION, s.seed, s.global_batch, s.steps_per_epoch, self.num_batches
    )
    self.close()
    self._next = nxt


# ---------------------------------------------------------------------- building
def _cfg(input_cfg, key, default):
  try:
    return input_cfg[key]
  except (KeyError, AttributeError):
    return default


def _check_ids(name: str, ids: np.ndarray, n: int, what: str) -> np.ndarray:
  ids = np.asarray(ids)
  if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer):
    raise DataError(
      f"train split {name}", f"expected a 1-D integer array, got {ids.dtype} of shape {ids.shape}"
    )
  bad = np.flatnonzero((ids < 0) | (ids >= n))
  if bad.size:
    r = int(bad[0])
    raise DataError(
      f"train split row {r}",
      f"{what} id {int(ids[r])} out of range [0, {n}) ({bad.size} such rows)",
    )
  return np.ascontiguousarray(ids, dtype=np.int32)


def _check_features(features, expected_dims, num_items) -> dict[str, _Features]:
  if features is None:
    raise ConfigError(
      "input.stream_features=True needs feature shards per modality; "
      "none were passed (features=None)"
    )
  # An empty expected_dims means "the model streams no modality", not "all of them".
  wanted = list(expected_dims) if expected_dims is not None else list(features)
  out = {}
  for m in wanted:
    if m not in features:
      raise ConfigError(
        f"modality {m!r} is not available for input.stream_features; available: {sorted(features)}"
      )
    fs = features[m]
    where = f"features/{m}"
    if int(fs.num_items) != num_items:
      raise DataError(where, f"has num_items={fs.num_items} but the dataset has {num_items}")
    if expected_dims is not None and int(fs.dim) != int(expected_dims[m]):
      raise DataError(where, f"has dim={fs.dim} but {expected_dims[m]} was expected")
    f = _Features(fs)
    if f.mask.shape != (num_items,):
      raise DataError(f"{where}/mask.npy", f"shape {f.mask.shape} != ({num_items},)")
    out[m] = f
  return out


def make_train_pipeline(
  train_split: Any,
  num_users: int,
  num_items: int,
  input_cfg: Any,
  *,
  seed: int,
  features: Mapping[str, Any] | None = None,
  expected_dims: Mapping[str, int] | None = None,
  process_index: int | None = None,
  process_count: int | None = None,
  num_epochs: int | None = None,
  num_threads: int = 1,
) -> TrainPipeline:
  """Builds this process's training pipeline; all input checks happen here.

  Args:
    train_split: anything with ``users`` and ``items`` int arrays (a ``Split``).
    num_users, num_items: sizes of the id spaces.
    input_cfg: the ``config.input`` section (batch_size is GLOBAL).
    seed: the run's seed; batches are a pure function of (seed, batch index).
    features: FeatureShards per modality; used when ``input.stream_features``.
    expected_dims: modality -> feature dim the model expects; exactly these modalities
      are streamed, each must be in ``features`` with that dim (None: every modality of
      ``features``, unchecked; {}: none).
    process_index, process_count: default ``jax.process_index()/process_count()``.
    num_epochs: None repeats forever.
    num_threads: grain read threads per process (prefetching batches ahead).

  Raises:
    DataError / ConfigError (one line) on bad ids, empty split, bad sizes or features.
  """
  if process_index is None or process_count is None:
    import jax  # noqa: PLC0415

    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
  if not 0 <= process_index < process_count:
    raise ConfigError(f"process_index={process_index} not in [0, {process_count})")
  batch_size = int(_cfg(input_cfg, "batch_size", 0))
  if batch_size <= 0 or batch_size % process_count:
    raise ConfigError(
      f"input.batch_size={batch_size} must be a positive multiple of the "
      f"process count {process_count} (it is the GLOBAL batch size)"
    )
  name = _cfg(input_cfg, "negative_sampler", "uniform")
  if name not in negatives_lib.SAMPLERS:
    raise ConfigError(
      f"input.negative_sampler={name!r} is not one of {list(negatives_lib.SAMPLERS)}"
    )
  num_negatives = int(_cfg(input_cfg, "num_negatives", 1))
  if name != negatives_lib.IN_BATCH and num_negatives < 1:
    raise ConfigError(
      f"input.num_negatives={num_negatives} must be >= 1 with input.negative_sampler={name!r}"
    )
  worker_count = int(_cfg(input_cfg, "worker_count", 0))
  prefetch = int(_cfg(input_cfg, "prefetch", 2))
  if worker_count < 0 or prefetch < 0:
    raise ConfigError(
      f"input.worker_count={worker_count} and input.prefetch={prefetch} must be >= 0"
    )
  if num_epochs is not None and num_epochs < 1:
    raise ConfigError(f"num_epochs={num_epochs} must be >= 1 (or None for no limit)")

  users = getattr(train_split, "users", None)
  items = getattr(train_split, "items", None)
  if users is None or items is None:
    raise DataError("train split", "needs 'users' and 'items' arrays")
  if len(users) != len(items):
    raise DataError("train split", f"users has {len(users)} rows but items has {len(items)}")
  if len(users) == 0:
    raise DataError("train split", "has no interactions")
  ratings = getattr(train_split, "ratings", None)
  if ratings is not None:
    ratings = np.asarray(ratings, np.float32)
    if ratings.shape != (len(users),):
      raise DataError("train split", f"ratings has shape {ratings.shape}, expected ({len(users)},)")
  users = _check_ids("users", users, int(num_users), "user")
  items = _check_ids("items", items, int(num_items), "item")
  n = len(users)
  steps_per_epoch = n // batch_size
  if steps_per_epoch == 0:
    raise ConfigError(
      f"input.batch_size={batch_size} is larger than the {n} train "
      "interactions (the last partial batch of an epoch is dropped)"
    )

  counts = np.bincount(items, minlength=num_items)
  sampler = exclude = logq = None
  if name == negatives_lib.IN_BATCH:
    with np.errstate(divide="ignore"):
      logq = np.log(counts / n).astype(np.float32)  # -inf for items never in train
  else:
    sampler = negatives_lib.NegativeSampler(
      name, num_items, counts, float(_cfg(input_cfg, "popularity_alpha", 0.75))
    )
    if bool(_cfg(input_cfg, "exclude_positives", False)):
      exclude = negatives_lib.PositiveSet(users, items, num_items)
      full = np.flatnonzero(exclude.positives_per_user(num_users) >= num_items)
      if full.size:
        raise DataError(
          f"train split user {int(full[0])}",
          "has every item as a positive; input.exclude_positives cannot find a negative",
        )

  feats = {}
  if bool(_cfg(input_cfg, "stream_features", False)):
    feats = _check_features(features, expected_dims, int(num_items))

  local = batch_size // process_count
  source = _BatchSource(
    users=users,
    items=items,
    num_items=int(num_items),
    seed=int(seed),
    global_batch=batch_size,
    local_batch=local,
    process_index=int(process_index),
    steps_per_epoch=steps_per_epoch,
    num_batches=sys.maxsize if num_epochs is None else steps_per_epoch * num_epochs,
    num_negatives=num_negatives,
    sampler=sampler,
    exclude=exclude,
    logq=logq,
    features=feats,
    ratings=ratings,
  )
  spec = {"user": ((local,), np.dtype(np.int32)), "pos": ((local,), np.dtype(np.int32))}
  if ratings is not None:
    spec["rating"] = ((local,), np.dtype(np.float32))
  if sampler is None:
    spec["pos_logq"] = ((local,), np.dtype(np.float32))
  else:
    spec["neg"] = ((local, num_negatives), np.dtype(np.int32))
  for m, f in feats.items():
    dtype = np.dtype(getattr(f.shards, "dtype", np.float32))
    spec[f"feat_pos/{m}"] = ((local, f.dim), dtype)
    spec[f"mask_pos/{m}"] = ((local,), np.dtype(bool))
    if sampler is not None:
      spec[f"feat_neg/{m}"] = ((local, num_negatives, f.dim), dtype)
      spec[f"mask_neg/{m}"] = ((local, num_negatives), np.dtype(bool))
  return TrainPipeline(
    source, worker_count=worker_count, prefetch=prefetch, num_threads=num_threads, element_spec=spec
  )
