"""Row-wise (sparse) optimizers for big embedding tables.

Why: a dense gradient of a [1M, 64] table with dense Adam reads and writes the whole
table and both moments every step (~70x slower than row updates on our CPU). Here the
cost of a step grows with the number of distinct ids in the batch, not with the table.

Protocol. The train step gathers ``rows = table[uniq]`` for the distinct ids ``uniq`` of
a batch (padded to a static size with an out-of-range fill id), differentiates the loss
w.r.t. ``rows`` -- duplicate ids are summed by the gather's transpose, i.e. exactly the
gradient a dense table would receive -- and calls ``update``, which writes only those
rows of the table and of its optimizer state with ``.at[uniq].set(..., mode='drop')``;
fill ids are out of range, so their writes are dropped. All scatters/gathers act on
row-sharded arrays with replicated indices, which XLA partitions into local updates
plus an all-reduce of ``[len(uniq), dim]`` -- never an all-gather of a table.

Optimizers (``optimizer.sparse``):
  * ``adam``: lazy Adam with a **per-row step count** (bias correction uses how often
    that row was updated). A row therefore follows exactly the trajectory dense
    ``optax.adam`` would give it if it ran only on the steps that touched the row;
    untouched rows (and their moments) stay bit-for-bit unchanged. Same formula and
    order of operations as ``optax.scale_by_adam``. The state is ONE array per table,
    ``moments [rows, 2k + 1] = [mu | nu | count]`` (:func:`adam_moments` splits it): a
    batch's optimizer rows are then one gather and one scatter of contiguous memory,
    which on a 1e7-row table took the BPR-MF step from 1.53x to 1.29x the 1e5-row step
    (benchmarks/RESULTS_step.md; three separate arrays meant three cache/TLB misses per
    row). Against the former three arrays the moments differ by at most one float32 ulp
    per update (XLA contracts the update into FMAs differently); counts are equal.
  * ``rowwise_adagrad``: one accumulator per row (TorchRec/FBGEMM), ``acc += mean(g**2)``
    over the row; ``row -= lr * g / sqrt(acc + eps)``. The accumulator starts at 0.1 and
    eps sits inside the square root, like ``optax.adagrad`` (so for dim=1 it equals
    ``optax.adagrad``); memory is one float per row instead of a second table.
  * ``sgd``: ``row -= lr * g``.

Learning-rate schedule (``optimizer.schedule``, :func:`learning_rate_at`): ``constant``,
or ``linear`` from the configured rate at step 0 to 0 at ``optimizer.decay_steps`` (the
run's last step unless set). Why: constant-rate SGD on BPR-MF swings by +-0.003 test
NDCG@10 from epoch to epoch on ML-100K; decaying the rate over a planned number of
epochs lands at the top of that band and allows a 5x larger starting rate: 10 epochs
then beat 15-20 constant-rate ones (benchmarks/RESULTS_bpr_peers.md). The rate of a step
is that of the batch's global step (``state['step']`` before the update).

Two ways to index a batch's rows (``optimizer.sparse_rows``, chosen per row kind by
:func:`pick_row_mode`): ``unique`` sorts the batch ids (:func:`unique_ids`), gathers and
scatters the distinct rows of the table and of every optimizer array; ``dense`` skips
the sort, differentiates the whole (small) table -- the gather's transpose scatter-adds
the batch gradients into a ``[rows, dim]`` buffer -- and updates every array with a
``where(touched, new, old)`` over the table, ``touched`` being the rows the batch used.
Untouched rows stay bit-for-bit unchanged and touched rows go through the same
element-wise formula, so both modes give the same optimizer (tests/test_sparse_optim.py
compares them). ``dense`` wins while the table is small enough that streaming it is
cheaper than the sort plus row gathers/scatters: a table of at most a couple of rows per
batch id (benchmarks/RESULTS_step.md).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from mmrec_jax.errors import ConfigError

SPARSE_OPTIMIZERS = ("adam", "rowwise_adagrad", "sgd")
SCHEDULES = ("constant", "linear")

State = dict[str, jax.Array]


ROW_MODES = ("auto", "unique", "dense")
# ``auto`` picks ``dense`` for a row kind while its table has at most this many rows per
# id of the batch (measured on CPU, batch 1024, d=64: 943 users / 1682 items 2x faster
# dense; 6,040 users or 1e4+ items slower: benchmarks/RESULTS_step.md).
DENSE_MAX_ROWS_PER_ID = 2


def order_after(x: Any, values: Any) -> Any:
  """``x`` (a pytree) unchanged, bit for bit, but computed only after ``values`` are.

  Why: a step rewrites a table, or a row-state array, in place while other values read
  its old contents on paths the write does not wait for (the loss and metrics read the
  old tables; the new table rows read the old Adam moments). XLA:CPU's copy insertion
  cannot order those reads before the in-place write then, and inside a training loop (data/device_epoch.py) it copies each such array whole on every
  step: in dense row mode, 2-4 table-sized copies per ML-100K step, 9-17% of an epoch
  (benchmarks/RESULTS_bpr_peers.md). ``jax.lax.optimization_barrier`` did not remove
  them; a data dependency does. ``x + (-0.0) == x`` for every float (signed zeros,
  infinities and NaN included; subnormals are flushed on XLA:CPU, as by every other
  arithmetic op of the update), and the scalar is -0.0 whatever ``values`` hold (a
  non-finite value is replaced first), so nothing changes but the order: training is
  bit-identical on one device. On several devices XLA may fuse and partition the step
  differently with the extra operand, which moves the last bits of float sums
  (deterministic, as before).
  """
  s = sum(jnp.sum(v.astype(jnp.float32)) for v in jax.tree.leaves(values))
  minus_zero = -(0.0 * jnp.abs(jnp.where(jnp.isfinite(s), s, 0.0)))
  return jax.tree.map(lambda a: a + minus_zero.astype(a.dtype), x)


def gather_rows(x: jax.Array, uniq: jax.Array | None) -> jax.Array:
  """``x[uniq]`` where out-of-range (fill) ids read zeros; ``uniq=None``: all of ``x``.

  ``uniq`` holds valid ids then fill ids (>= rows). Written as a clamped gather that
  promises in-bounds indices, then a per-row select, rather than ``mode='fill'``: the
  same values (training bit-identical), but XLA:CPU emits the fill-mode gather with a
  bounds check and select per element. Alone, a gather of 8,192 rows of 64 floats took
  0.7-1.0 ms in fill mode and 0.3-0.4 ms this way; inside the BPR-MF step at batch 4096
  it saved 7% at 1e5 item rows (7.3 -> 6.8 ms) and nothing measurable where the gather
  waits on memory (1e7 rows, the ML-25M-shaped epoch).
  """
  if uniq is None:
    return x
  n = x.shape[0]
  rows = x.at[jnp.minimum(uniq, n - 1)].get(mode="promise_in_bounds")
  valid = (uniq < n).reshape(uniq.shape + (1,) * (x.ndim - 1))
  return jnp.where(valid, rows, jnp.zeros((), x.dtype))


def take_valid_rows(x: jax.Array, ids: jax.Array) -> jax.Array:
  """``x[ids]`` for ids known to be in range (batch ids, never a fill id).

  ``promise_in_bounds`` drops the per-element bounds check and select that ``fill`` mode
  adds (XLA:CPU; the frozen feature and side-bag lookups of a ranker step).
  """
  return x.at[ids].get(mode="promise_in_bounds")


def scatter_rows(
  x: jax.Array, uniq: jax.Array | None, rows: jax.Array, touched: jax.Array | None = None
) -> jax.Array:
  """``x.at[uniq].set(rows)``; writes of out-of-range (fill) ids are dropped.

  ``uniq=None`` (dense mode): ``rows`` covers every row of ``x`` and only the rows where
  ``touched`` is True are written.
  """
  rows = rows.astype(x.dtype)
  if uniq is None:
    if touched is None:
      return rows
    return jnp.where(touched.reshape(touched.shape + (1,) * (x.ndim - 1)), rows, x)
  return x.at[uniq].set(rows, mode="drop")


@dataclasses.dataclass(frozen=True)
class SparseOptimizer:
  """A row-wise optimizer: ``init`` state arrays with the table's rows; ``update`` rows.

  ``init(table_shape: tuple, dtype) -> State``: arrays whose leading dim is the table's
  rows (so they are row-sharded like the table).
  ``update(table, state, uniq, rows, grads, touched=None, step=None) -> (table, state)``
  (``step``: the global step, for the learning-rate schedule): ``uniq``
  [n] distinct row ids padded with an out-of-range id, ``rows = table[uniq]`` (already
  gathered for the forward pass) and ``grads`` [n, dim] their summed gradients. Dense
  mode: ``uniq=None``, ``rows`` is the whole table, ``grads`` its gradient and
  ``touched`` [rows] bool the rows the batch used (the only ones written).
  """

  name: str
  init: Callable[[tuple[int, ...], jnp.dtype], State]
  update: Callable[..., tuple[jax.Array, State]]


def learning_rate_at(
  learning_rate: float, schedule: str = "constant", decay_steps: int = 0
) -> Callable[[jax.Array | None], float | jax.Array]:
  """``step -> rate`` of ``optimizer.schedule``; the constant one returns the Python float.

  Constant: the very same float as before schedules existed (the step's program does
  not change). ``linear``: ``rate * max(0, 1 - step / decay_steps)``.
  """
  if schedule not in SCHEDULES:
    raise ConfigError(f"optimizer.schedule={schedule!r} is not one of {list(SCHEDULES)}")
  lr = float(learning_rate)
  if schedule == "constant":
    return lambda step: lr
  if decay_steps <= 0:
    raise ConfigError(
      f"optimizer.schedule='linear' needs optimizer.decay_steps > 0, not {decay_steps}"
    )

  def at(step):
    frac = jnp.asarray(step, jnp.float32) / jnp.float32(decay_steps)
    return lr * jnp.maximum(0.0, 1.0 - frac)

  return at


def _sgd(lr: Callable) -> SparseOptimizer:
  def init(shape, dtype):
    del shape, dtype
    return {}

  def update(table, state, uniq, rows, grads, touched=None, step=None):
    return scatter_rows(table, uniq, rows - lr(step) * grads, touched), state

  return SparseOptimizer("sgd", init, update)


def _adam(lr: Callable, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8) -> SparseOptimizer:
  # One state array per table, [rows, 2k + 1] = [mu | nu | count] with k the row's width:
  # a batch's optimizer rows are one gather and one scatter of contiguous memory instead
  # of three (module doc). The count is a float: exact up to 2**24 updates of a row, and
  # past that b1**c and b2**c are 0 in float32 anyway, so the bias correction is the same.
  def init(shape, dtype):
    k = math.prod(shape[1:])
    return {"moments": jnp.zeros((shape[0], 2 * k + 1), dtype)}

  def update(table, state, uniq, rows, grads, touched=None, step=None):
    n, k = grads.shape[0], math.prod(grads.shape[1:])
    g = grads.reshape(n, k)
    m = gather_rows(state["moments"], uniq)
    mu = (1 - b1) * g + b1 * m[:, :k]
    nu = (1 - b2) * (g * g) + b2 * m[:, k : 2 * k]
    count = m[:, 2 * k :] + 1
    mu_hat = mu / (1 - b1**count)
    nu_hat = nu / (1 - b2**count)
    new_rows = rows + (-lr(step)) * (mu_hat / (jnp.sqrt(nu_hat) + eps)).reshape(rows.shape)
    moments = jnp.concatenate([mu, nu, count], axis=1)
    if uniq is None:  # whole moments rewritten in place, and the new rows read the old
      moments = order_after(moments, new_rows)
    return scatter_rows(table, uniq, new_rows, touched), {
      "moments": scatter_rows(state["moments"], uniq, moments, touched)
    }

  return SparseOptimizer("adam", init, update)


def adam_moments(state: State) -> tuple[jax.Array, jax.Array, jax.Array]:
  """(mu [rows, k], nu [rows, k], count [rows] int32) of a sparse Adam state (inspection)."""
  m = state["moments"]
  k = (m.shape[1] - 1) // 2
  return m[:, :k], m[:, k : 2 * k], m[:, 2 * k].astype(jnp.int32)


def _rowwise_adagrad(
  lr: Callable, initial_accumulator: float = 0.1, eps: float = 1e-7
) -> SparseOptimizer:
  def init(shape, dtype):
    return {"acc": jnp.full(shape[:1], initial_accumulator, dtype)}

  def update(table, state, uniq, rows, grads, touched=None, step=None):
    acc = gather_rows(state["acc"], uniq) + jnp.mean(grads * grads, axis=-1)
    new_rows = rows - lr(step) * grads * jax.lax.rsqrt(acc + eps)[:, None]
    # Not ordered after the new rows (order_after): copying one float per row costs less
    # than the ordering (ML-100K epoch 23.5 -> 27.5 ms with it).
    return scatter_rows(table, uniq, new_rows, touched), {
      "acc": scatter_rows(state["acc"], uniq, acc, touched)
    }

  return SparseOptimizer("rowwise_adagrad", init, update)


def make_sparse_optimizer(
  name: str, learning_rate: float, schedule: str = "constant", decay_steps: int = 0
) -> SparseOptimizer:
  """The sparse optimizer named by ``optimizer.sparse``; unknown names raise."""
  makers = {"adam": _adam, "rowwise_adagrad": _rowwise_adagrad, "sgd": _sgd}
  if name not in makers:
    raise ConfigError(f"optimizer.sparse={name!r} is not one of {list(SPARSE_OPTIMIZERS)}")
  return makers[name](learning_rate_at(learning_rate, schedule, decay_steps))


UNIQUE_METHODS = ("sort_search", "jnp")


def unique_ids(
  ids: jax.Array, num_rows: int, method: str | None = None
) -> tuple[jax.Array, jax.Array]:
  """Distinct ids padded to ``ids.size`` with ``num_rows`` (out of range) + inverse.

  Returns ``(uniq [n], inverse with ids' shape)`` so that ``uniq[inverse] == ids``: the
  arrays of ``jnp.unique(flat, size=n, fill_value=num_rows, return_inverse=True)`` for
  ids in ``[0, num_rows)`` (tests/test_sparse_optim.py).

  On CPU they are computed differently, because the sort was the largest single cost of
  a sparse step there: ``jnp.unique`` sorts (id, position) pairs, which XLA:CPU runs
  through a compiled comparator called per comparison, while a sort of the ids alone
  takes its fast path; the inverse is then a binary search of each id in the sorted
  distinct ids (``searchsorted``: log2(n) vectorised steps). 8,192 ids: 2.5 -> 0.7 ms;
  the BPR-MF step at batch 4096 went from 8.3 to 6.7 ms (benchmarks/RESULTS_step.md).
  On one device the training results are bit-identical. On several, the inverse now
  stays sharded like the batch (jnp.unique's was replicated), so each device sums the
  gradients of its own examples per row before the all-reduce: results differ from
  before in the last bits of float sums, still deterministic. Other backends keep
  ``jnp.unique``: on an H200 it was as fast or faster at every measured point, 1.5-2.5x
  at batch 65,536 (a while loop per search costs launches on a GPU; its pair sort is
  one radix sort; benchmarks/RESULTS_roofline.md, stop 17).
  ``method`` (``sort_search`` | ``jnp``) overrides the choice (benchmarks' A/B).
  """
  if method is None:
    method = "sort_search" if jax.default_backend() == "cpu" else "jnp"
  if method not in UNIQUE_METHODS:
    raise ValueError(f"unique_ids: method {method!r} is not one of {list(UNIQUE_METHODS)}")
  flat = ids.reshape(-1)
  n = flat.shape[0]
  if method == "jnp" or n == 0:
    uniq, inv = jnp.unique(flat, size=n, fill_value=num_rows, return_inverse=True)
    return uniq, inv.reshape(ids.shape)
  srt = jnp.sort(flat)
  first = jnp.concatenate([jnp.ones((1,), bool), srt[1:] != srt[:-1]])
  slot = jnp.where(first, jnp.cumsum(first) - 1, n)  # n: dropped
  uniq = jnp.full((n,), num_rows, flat.dtype).at[slot].set(srt, mode="drop")
  # Leftmost match: the fill id num_rows is above every valid id, so it never matches.
  inv = jnp.searchsorted(uniq, flat, side="left").astype(jnp.int32)
  return uniq, inv.reshape(ids.shape)


@dataclasses.dataclass(frozen=True)
class RowIndex:
  """How a batch's ids address one row kind: ``table[uniq][inverse] == table[ids]``.

  ``uniq`` [n] distinct ids padded with an out-of-range id (``unique`` mode) or None
  (``dense``: the whole table, ``inverse`` are the ids themselves); ``touched`` [rows]
  bool marks the rows the batch used (dense mode only); ``counts`` [len(rows)] how often
  each gathered row occurs in the batch.
  """

  uniq: jax.Array | None
  inverse: jax.Array
  touched: jax.Array | None
  counts: jax.Array


def pick_row_mode(mode: str, num_rows: int, num_ids: int, num_shards: int = 1) -> str:
  """``unique`` or ``dense`` for a row kind of ``num_rows`` rows read by ``num_ids`` ids.

  ``auto`` never picks ``dense`` for a table cut over ``num_shards > 1`` devices: indexing
  a row-sharded table with global ids makes XLA all-gather the whole table on every
  device, the very thing row sharding exists to avoid (tests/test_compile_64.py).
  """
  if mode not in ROW_MODES:
    raise ConfigError(f"optimizer.sparse_rows={mode!r} is not one of {list(ROW_MODES)}")
  if mode != "auto":
    return mode
  if num_shards > 1:
    return "unique"
  return "dense" if num_rows <= DENSE_MAX_ROWS_PER_ID * num_ids else "unique"


def row_index(ids: jax.Array, num_rows: int, mode: str) -> RowIndex:
  """The :class:`RowIndex` of ``ids`` (any shape) in a table of ``num_rows`` rows."""
  if mode == "dense":
    counts = jax.ops.segment_sum(jnp.ones(ids.size), ids.reshape(-1), num_segments=num_rows)
    return RowIndex(None, ids, counts > 0, counts)
  uniq, inv = unique_ids(ids, num_rows)
  counts = jax.ops.segment_sum(jnp.ones(inv.size), inv.reshape(-1), num_segments=uniq.shape[0])
  return RowIndex(uniq, inv, None, counts)
