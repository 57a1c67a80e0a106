"""The train state: its pytree, its initialisation and its shardings.

State (a pytree of nested dicts, saved and restored by Orbax with ``shardings``):
  {'step': int32 [],
   'params':    {'tables': {<path>: [rows, d]}, 'dense': {<path>: array}},
   'opt_state': {'tables': {<path>: {'mu', 'nu', 'count'} | {'acc'} | {}},
                 'dense': optax state}}
Tables (``Table`` variables) are row-sharded over all devices through the 'users'/'items'
logical axes; dense layers follow their logical axes or are replicated. The layout is
computed from an abstract model (``nnx.eval_shape``), so no unsharded state ever exists:
``init`` is jitted with ``out_shardings`` and each device creates only its shard.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx, traverse_util
from jax.sharding import Mesh

from mmrec_jax import sharding
from mmrec_jax.layers.embedding import Table, logical_axes
from mmrec_jax.optim.sparse import SparseOptimizer
from mmrec_jax.step.types import State


class StateLayout:
  """Graph definition, logical axes, ``init`` and shardings of a model's train state."""

  def __init__(
    self,
    build: Callable[..., nnx.Module],
    abstract: nnx.Module,
    mesh: Mesh,
    sparse_opt: SparseOptimizer,
    dense_tx: optax.GradientTransformation,
  ):
    self.build = build
    self.mesh = mesh
    self.sparse_opt = sparse_opt
    self.dense_tx = dense_tx
    self.graphdef, tables, dense, rest = nnx.split(abstract, Table, nnx.Param, ...)
    if jax.tree.leaves(rest):
      raise TypeError(f"model state other than Table/Param is not supported: {rest}")
    self.table_axes = {path: logical_axes(v) for path, v in nnx.to_flat_state(tables)}
    self.dense_axes = {path: logical_axes(v) for path, v in nnx.to_flat_state(dense)}
    self.abstract = jax.eval_shape(self.init_fn, jax.random.PRNGKey(0))
    self.shardings = self._make_shardings()

  def row_kind(self, path: tuple) -> str:
    """'users' or 'items': the logical row axis of the table at ``path``."""
    return self.table_axes[path][0]

  def merge(self, tables, dense) -> nnx.Module:
    """The model with ``tables`` (nested dict) and ``dense`` parameters."""
    return nnx.merge(self.graphdef, tables, dense)

  def flat_table_opt(self, opt_tables: State) -> dict[tuple, State]:
    """``opt_state['tables']`` flattened to one entry per table path."""
    return traverse_util.flatten_dict(
      opt_tables, is_leaf=lambda k, v: isinstance(v, dict) and tuple(k) in self.table_axes
    )

  def init_fn(self, key: jax.Array) -> State:
    with nnx.use_eager_sharding(False):
      model = self.build(rngs=nnx.Rngs(key))
    _, tables, dense, _ = nnx.split(model, Table, nnx.Param, ...)
    tables, dense = nnx.to_pure_dict(tables), nnx.to_pure_dict(dense)
    flat = traverse_util.flatten_dict(tables)
    table_opt = traverse_util.unflatten_dict(
      {k: self.sparse_opt.init(v.shape, v.dtype) for k, v in flat.items()}
    )
    return {
      "step": jnp.zeros((), jnp.int32),
      "params": {"tables": tables, "dense": dense},
      "opt_state": {"tables": table_opt, "dense": self.dense_tx.init(dense)},
    }

  def _make_shardings(self) -> State:
    mesh = self.mesh
    rep = sharding.replicated(mesh)

    def table_sh(path, leaf):
      axes = self.table_axes[path]
      return sharding.named_sharding(mesh, *axes[: leaf.ndim], *([None] * (leaf.ndim - 2)))

    def dense_sh(path, leaf):
      del leaf
      axes = self.dense_axes.get(path)
      return rep if axes is None else sharding.named_sharding(mesh, *axes)

    ab = self.abstract
    tables = traverse_util.unflatten_dict(
      {k: table_sh(k, v) for k, v in traverse_util.flatten_dict(ab["params"]["tables"]).items()}
    )
    dense = traverse_util.unflatten_dict(
      {k: dense_sh(k, v) for k, v in traverse_util.flatten_dict(ab["params"]["dense"]).items()}
    )
    table_opt = {}
    for path, st in self.flat_table_opt(ab["opt_state"]["tables"]).items():
      row_axis = self.table_axes[path][0]
      table_opt[path] = {
        name: sharding.named_sharding(mesh, row_axis, *([None] * (a.ndim - 1)))
        for name, a in st.items()
      }
    table_opt = traverse_util.unflatten_dict(table_opt) if table_opt else {}
    dense_opt = optax.tree_map_params(
      self.dense_tx,
      lambda _, s: s,
      ab["opt_state"]["dense"],
      dense,
      transform_non_params=lambda _: rep,
    )
    return {
      "step": rep,
      "params": {"tables": tables, "dense": dense},
      "opt_state": {"tables": table_opt, "dense": dense_opt},
    }

  def abstract_state(self) -> State:
    """ShapeDtypeStructs of the state, each with its ``.sharding``."""
    return jax.tree.map(
      lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), self.abstract, self.shardings
    )
