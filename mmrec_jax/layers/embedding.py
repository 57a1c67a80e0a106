"""Row-sharded embedding tables that are trained by sparse (row-wise) optimizers.

A :class:`Table` is an ``nnx.Variable`` of its own type -- not an ``nnx.Param`` -- so
``nnx.split(model, Table, nnx.Param)`` separates the big tables from the dense layers.
The train step never differentiates a table as a whole array: it gathers the rows a
batch touches and *substitutes* them for the table value before calling the model, with
the batch ids remapped to positions in the gathered rows (see ``mmrec_jax/step.py``).
Code in models therefore just writes ``self.user_embed(ids)``; the same code scores the
whole table in evaluation (``ids=None``).

Row counts are padded to a multiple of :func:`padded_rows`' granularity because jax
shardings must divide the array evenly; padded rows are never indexed by data.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

# Row counts of tables are rounded up to a multiple of this (and of the device count),
# so that a checkpoint written on N devices restores onto any power-of-two device count
# up to ROW_MULTIPLE: the padded shape does not depend on the mesh in that range.
ROW_MULTIPLE = 256

# Logical axes a table's rows may carry; the train step remaps batch ids per kind.
ROW_KINDS = ("users", "items")


class Table(nnx.Variable):
  """A big [rows, dim] table updated row-wise by a sparse optimizer."""


def padded_rows(num_rows: int, num_devices: int = 1) -> int:
  """Rows to allocate for ``num_rows``: a multiple of lcm(ROW_MULTIPLE, num_devices)."""
  mult = math.lcm(ROW_MULTIPLE, max(1, num_devices))
  return max(mult, -(-num_rows // mult) * mult)


def logical_axes(var: nnx.Variable) -> tuple[str | None, ...] | None:
  """The logical axis names stored on a variable (flax keeps them as ``out_sharding``)."""
  meta = var.get_metadata() if hasattr(var, "get_metadata") else {}
  for key in ("out_sharding", "sharding_names", "sharding"):
    if meta.get(key) is not None:
      return tuple(meta[key])
  return None


class Embed(nnx.Module):
  """Embedding table ``[num_rows, dim]`` whose rows are sharded on ``row_axis``.

  Args:
    num_rows: rows to allocate (already padded, see :func:`padded_rows`).
    dim: width.
    row_axis: 'users' or 'items'; which batch ids index this table.
    stddev: init scale (normal); 0 gives zeros (e.g. bias columns).
  """

  def __init__(
    self, num_rows: int, dim: int, row_axis: str, *, rngs: nnx.Rngs, stddev: float = 0.1
  ):
    if row_axis not in ROW_KINDS:
      raise ValueError(f"row_axis={row_axis!r} is not one of {list(ROW_KINDS)}")
    if stddev > 0:
      value = stddev * jax.random.normal(rngs.params(), (num_rows, dim), jnp.float32)
    else:
      value = jnp.zeros((num_rows, dim), jnp.float32)
    self.row_axis = row_axis
    self.embedding = Table(value, out_sharding=(row_axis, "embed"))

  def __call__(self, ids: jax.Array | None) -> jax.Array:
    """Rows for ``ids`` (any shape) or the whole table when ``ids`` is None."""
    table = self.embedding[...]
    if ids is None:
      return table
    return jnp.take(table, ids, axis=0)
