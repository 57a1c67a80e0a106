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
    order of operations as ``optax.scale_by_adam``.
  * ``rowwise_adagrad``: one accumulator per row (TorchRec/FBGEMM), ``acc += mean(g**2)``
    over the row; ``row -= lr * g / sqrt(acc + eps)``. The accumulator starts at 0.1 and
    eps sits inside the square root, like ``optax.adagrad`` (so for dim=1 it equals
    ``optax.adagrad``); memory is one float per row instead of a second table.
  * ``sgd``: ``row -= lr * g``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp

from mmrec_jax.errors import ConfigError

SPARSE_OPTIMIZERS = ("adam", "rowwise_adagrad", "sgd")

State = dict[str, jax.Array]


def gather_rows(x: jax.Array, uniq: jax.Array) -> jax.Array:
  """``x[uniq]`` where out-of-range (fill) ids read zeros."""
  return x.at[uniq].get(mode="fill", fill_value=0)


def scatter_rows(x: jax.Array, uniq: jax.Array, rows: jax.Array) -> jax.Array:
  """``x.at[uniq].set(rows)``; writes of out-of-range (fill) ids are dropped."""
  return x.at[uniq].set(rows.astype(x.dtype), mode="drop")


@dataclasses.dataclass(frozen=True)
class SparseOptimizer:
  """A row-wise optimizer: ``init`` state arrays with the table's rows; ``update`` rows.

  ``init(table_shape: tuple, dtype) -> State``: arrays whose leading dim is the table's
  rows (so they are row-sharded like the table).
  ``update(table, state, uniq, rows, grads) -> (table, state)``: ``uniq`` [n] distinct
  row ids padded with an out-of-range id, ``rows = table[uniq]`` (already gathered for
  the forward pass) and ``grads`` [n, dim] their summed gradients.
  """

  name: str
  init: Callable[[tuple[int, ...], jnp.dtype], State]
  update: Callable[..., tuple[jax.Array, State]]


def _sgd(lr: float) -> SparseOptimizer:
  def init(shape, dtype):
    del shape, dtype
    return {}

  def update(table, state, uniq, rows, grads):
    return scatter_rows(table, uniq, rows - lr * grads), state

  return SparseOptimizer("sgd", init, update)


def _adam(lr: float, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8) -> SparseOptimizer:
  def init(shape, dtype):
    return {
      "mu": jnp.zeros(shape, dtype),
      "nu": jnp.zeros(shape, dtype),
      "count": jnp.zeros(shape[:1], jnp.int32),
    }

  def update(table, state, uniq, rows, grads):
    mu = (1 - b1) * grads + b1 * gather_rows(state["mu"], uniq)
    nu = (1 - b2) * (grads * grads) + b2 * gather_rows(state["nu"], uniq)
    count = gather_rows(state["count"], uniq) + 1
    c = count.astype(grads.dtype)[:, None]
    mu_hat = mu / (1 - b1**c)
    nu_hat = nu / (1 - b2**c)
    new_rows = rows + (-lr) * (mu_hat / (jnp.sqrt(nu_hat) + eps))
    return scatter_rows(table, uniq, new_rows), {
      "mu": scatter_rows(state["mu"], uniq, mu),
      "nu": scatter_rows(state["nu"], uniq, nu),
      "count": scatter_rows(state["count"], uniq, count),
    }

  return SparseOptimizer("adam", init, update)


def _rowwise_adagrad(
  lr: float, initial_accumulator: float = 0.1, eps: float = 1e-7
) -> SparseOptimizer:
  def init(shape, dtype):
    return {"acc": jnp.full(shape[:1], initial_accumulator, dtype)}

  def update(table, state, uniq, rows, grads):
    acc = gather_rows(state["acc"], uniq) + jnp.mean(grads * grads, axis=-1)
    new_rows = rows - lr * grads * jax.lax.rsqrt(acc + eps)[:, None]
    return scatter_rows(table, uniq, new_rows), {"acc": scatter_rows(state["acc"], uniq, acc)}

  return SparseOptimizer("rowwise_adagrad", init, update)


def make_sparse_optimizer(name: str, learning_rate: float) -> SparseOptimizer:
  """The sparse optimizer named by ``optimizer.sparse``; unknown names raise."""
  makers = {"adam": _adam, "rowwise_adagrad": _rowwise_adagrad, "sgd": _sgd}
  if name not in makers:
    raise ConfigError(f"optimizer.sparse={name!r} is not one of {list(SPARSE_OPTIMIZERS)}")
  return makers[name](float(learning_rate))


def unique_ids(ids: jax.Array, num_rows: int) -> tuple[jax.Array, jax.Array]:
  """Distinct ids padded to ``ids.size`` with ``num_rows`` (out of range) + inverse.

  Returns ``(uniq [n], inverse with ids' shape)`` so that ``uniq[inverse] == ids``.
  """
  flat = ids.reshape(-1)
  uniq, inv = jnp.unique(flat, size=flat.shape[0], fill_value=num_rows, return_inverse=True)
  return uniq, inv.reshape(ids.shape)
