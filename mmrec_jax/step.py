"""The sharded train step, state init and evaluation representations of every model.

``Task`` ties a model (``mmrec_jax.models``), a loss (``mmrec_jax.losses``), the sparse
row-wise optimizer for tables (``mmrec_jax.optim.sparse``) and an optax optimizer for
dense layers into three jitted functions with explicit shardings: ``init``,
``train_step`` and ``eval_reprs``. The training loop (``mmrec_jax/train.py``) owns
iteration, checkpoints and evaluation cadence.

State (a pytree of nested dicts, saved and restored by Orbax with ``state_shardings``):
  {'step': int32 [],
   'params':    {'tables': {<path>: [rows, d]}, 'dense': {<path>: array}},
   'opt_state': {'tables': {<path>: {'mu', 'nu', 'count'} | {'acc'} | {}},
                 'dense': optax state}}
Tables (``Table`` variables) are row-sharded over all devices through the 'users'/'items'
logical axes; their row counts are padded (``layers.embedding.padded_rows``), so
``num_users``/``num_items`` here are the real counts and ``padded_users``/
``padded_items`` the allocated ones. Frozen item features and modality masks are NOT
state (they are data, not trained, and would bloat checkpoints): ``Task`` places them
once on device, row-sharded like item tables, and passes them to the jitted step.

Why the step is built this way: a table is never differentiated as a whole. The step
takes the distinct ids of the batch (``jnp.unique`` with a static size, padded with an
out-of-range id), gathers those rows, and merges the model with the *gathered rows* in
place of each table while the batch ids are remapped to positions in them. The gradient
w.r.t. the gathered rows is then exactly the dense table gradient restricted to the
touched rows (duplicates summed), and the sparse optimizer scatters the new rows back.
Step cost grows with the batch, not with the catalogue.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx, traverse_util
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from mmrec_jax import losses, sharding
from mmrec_jax.errors import ConfigError, DataError
from mmrec_jax.layers.embedding import Table, logical_axes, padded_rows
from mmrec_jax.models import USES_FEATURES, build_model
from mmrec_jax.optim.dense import make_dense_optimizer
from mmrec_jax.optim.sparse import gather_rows, make_sparse_optimizer, unique_ids

State = dict[str, Any]
STREAM_EVAL_CHUNK = 65536   # item rows per host->device chunk in streamed evaluation
COMPUTE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


@dataclasses.dataclass(frozen=True)
class DataInfo:
  """What the step needs to know about the data (from the prepared dataset).

  features: modality -> float [num_items, d], zeros where missing (may be empty).
  feature_masks: modality -> bool [num_items], True where the item has the modality.
  item_counts: int64 [num_items], train interactions per item.
  train_users, train_items: int [n_train], the TRAIN-split interactions (optional; graph
    models build their user-item graph from them and raise when they are missing).
  modalities: the modality names the model uses, after ``data.text_features`` mapped
    'text' to e.g. 'text_minilm' (``train.resolve_modalities``); None means
    ``config.data.modalities`` as written.
  """
  num_users: int
  num_items: int
  features: Mapping[str, np.ndarray] = dataclasses.field(default_factory=dict)
  feature_masks: Mapping[str, np.ndarray] = dataclasses.field(default_factory=dict)
  item_counts: np.ndarray | None = None
  train_users: np.ndarray | None = None
  train_items: np.ndarray | None = None
  modalities: tuple[str, ...] | None = None


def _host_rows(arr: np.ndarray, index: tuple[slice, ...], padded_shape: tuple[int, ...]
               ) -> np.ndarray:
  """Rows ``index`` of ``arr`` zero-padded to ``padded_shape`` (no full host copy)."""
  rows = index[0]
  start, stop, _ = rows.indices(padded_shape[0])
  out = np.zeros((stop - start, *padded_shape[1:]), arr.dtype)
  hi = min(stop, arr.shape[0])
  if hi > start:
    out[: hi - start] = arr[start:hi]
  return out[(slice(None),) + tuple(index[1:])]


def _put_rows(mesh: Mesh, arr: np.ndarray, rows: int, axis: str) -> jax.Array:
  """Global device array of ``arr`` padded to ``rows``, row-sharded on ``axis``."""
  shape = (rows, *arr.shape[1:])
  spec = sharding.named_sharding(mesh, axis, *([None] * (arr.ndim - 1)))
  return jax.make_array_from_callback(shape, spec,
                                      lambda idx: _host_rows(arr, idx, shape))


def _put_rows_replicated(mesh: Mesh, arr: np.ndarray, start: int, rows: int, dtype
                         ) -> jax.Array:
  """Rows [start, start + rows) of ``arr`` (zero-padded past its end), replicated."""
  shape = (rows, *arr.shape[1:])
  host = _host_rows(arr[start:], (slice(0, rows),), shape).astype(dtype)
  return jax.make_array_from_callback(shape, sharding.replicated(mesh), lambda idx: host[idx])


class Task:
  """Model + loss + optimizers with sharded ``init``/``train_step``/``eval_reprs``."""

  def __init__(self, config: ml_collections.ConfigDict, info: DataInfo, mesh: Mesh):
    self.config = config
    self.info = info
    self.mesh = mesh
    self.num_users = int(info.num_users)
    self.num_items = int(info.num_items)
    self.padded_users = padded_rows(self.num_users, mesh.size)
    self.padded_items = padded_rows(self.num_items, mesh.size)
    self.in_batch = config.input.negative_sampler == "in_batch"
    self.stream = bool(config.input.stream_features)
    self.loss_name = config.loss.name
    losses.check_loss_name(self.loss_name)
    self.use_logq = (self.loss_name == "sampled_softmax" and self.in_batch
                     and bool(config.loss.logq_correction))
    if config.train.compute_dtype not in COMPUTE_DTYPES:
      raise ConfigError(f"train.compute_dtype={config.train.compute_dtype!r} is not one of "
                        f"{list(COMPUTE_DTYPES)}")
    self.compute_dtype = COMPUTE_DTYPES[config.train.compute_dtype]
    self.modalities = self._check_modalities()
    self.sparse_opt = make_sparse_optimizer(config.optimizer.sparse,
                                            config.optimizer.sparse_learning_rate)
    self.dense_tx = make_dense_optimizer(config.optimizer.name,
                                         config.optimizer.learning_rate,
                                         config.optimizer.weight_decay)
    feature_dims = {m: int(info.features[m].shape[1]) for m in self.modalities}
    self._build = functools.partial(build_model, config.model, num_users=self.padded_users,
                                    num_items=self.padded_items, feature_dims=feature_dims)
    with nnx.use_eager_sharding(False):
      abstract = nnx.eval_shape(lambda: self._build(rngs=nnx.Rngs(0)))
    # Graph models (models/graph_base.py) propagate whole tables: whole-table gradients.
    self.graph_model = bool(getattr(abstract, "uses_graph", False))
    if self.graph_model:
      if self.stream:
        raise ConfigError(f"model.name={config.model.name!r} propagates over the whole "
                          "catalogue and needs the features on device; set "
                          "input.stream_features=False")
      abstract.mesh = mesh   # static: edge lists are sharded on its 'data' axis
    self.graphdef, tables, dense, rest = nnx.split(abstract, Table, nnx.Param, ...)
    if jax.tree.leaves(rest):
      raise TypeError(f"model state other than Table/Param is not supported: {rest}")
    self._table_axes = {path: logical_axes(v) for path, v in nnx.to_flat_state(tables)}
    self._dense_axes = {path: logical_axes(v) for path, v in nnx.to_flat_state(dense)}
    self._abstract = jax.eval_shape(self._init_fn, jax.random.PRNGKey(0))
    self._shardings = self._make_shardings()
    self._frozen = self._place_frozen()
    if self.graph_model:
      self._frozen["graph"] = type(abstract).graph_data(
          config.model, info, mesh, num_users=self.padded_users,
          num_items=self.padded_items, feats=self._frozen["feat"], masks=self._frozen["mask"])
    self._frozen_shardings = jax.tree.map(lambda a: a.sharding, self._frozen)
    batch_sharding = NamedSharding(mesh, P(sharding.DATA))
    train_fn = self._train_graph_fn if self.graph_model else self._train_fn
    self._train_jit = jax.jit(train_fn, donate_argnums=0,
                              in_shardings=(self._shardings, batch_sharding,
                                            self._frozen_shardings),
                              out_shardings=(self._shardings, sharding.replicated(mesh)))
    self._eval_jit = jax.jit(
        self._eval_fn, in_shardings=(self._shardings["params"], self._frozen_shardings),
        out_shardings=(sharding.named_sharding(mesh, "users", "embed"),
                       sharding.named_sharding(mesh, "items", "embed")))

  # ------------------------------------------------------------------ setup helpers
  def _check_modalities(self) -> tuple[str, ...]:
    if self.config.model.name not in USES_FEATURES:
      return ()
    wanted = (self.config.data.modalities if self.info.modalities is None
              else self.info.modalities)
    mods = tuple(sorted(wanted))
    for m in mods:
      if m not in self.info.features or m not in self.info.feature_masks:
        raise ConfigError(f"data.modalities has {m!r} but the dataset has features for "
                          f"{sorted(self.info.features)}")
      f, k = self.info.features[m], self.info.feature_masks[m]
      if f.ndim != 2 or f.shape[0] != self.num_items:
        raise DataError(f"DataInfo.features[{m!r}]",
                        f"shape {f.shape}, expected [{self.num_items}, dim]")
      if k.shape != (self.num_items,):
        raise DataError(f"DataInfo.feature_masks[{m!r}]",
                        f"shape {k.shape}, expected [{self.num_items}]")
    return mods

  def _place_frozen(self) -> dict[str, dict[str, jax.Array]]:
    """Frozen feature tables and masks on device, row-sharded like item tables."""
    if self.stream:
      return {"feat": {}, "mask": {}}
    feat = {m: _put_rows(self.mesh, np.asarray(self.info.features[m], np.float32),
                         self.padded_items, "items") for m in self.modalities}
    mask = {m: _put_rows(self.mesh, np.asarray(self.info.feature_masks[m], bool),
                         self.padded_items, "items") for m in self.modalities}
    return {"feat": feat, "mask": mask}

  def _init_fn(self, key: jax.Array) -> State:
    with nnx.use_eager_sharding(False):
      model = self._build(rngs=nnx.Rngs(key))
    _, tables, dense, _ = nnx.split(model, Table, nnx.Param, ...)
    tables, dense = nnx.to_pure_dict(tables), nnx.to_pure_dict(dense)
    flat = traverse_util.flatten_dict(tables)
    table_opt = traverse_util.unflatten_dict(
        {k: self.sparse_opt.init(v.shape, v.dtype) for k, v in flat.items()})
    return {"step": jnp.zeros((), jnp.int32),
            "params": {"tables": tables, "dense": dense},
            "opt_state": {"tables": table_opt, "dense": self.dense_tx.init(dense)}}

  def _make_shardings(self) -> State:
    mesh = self.mesh
    rep = sharding.replicated(mesh)

    def table_sh(path, leaf):
      axes = self._table_axes[path]
      return sharding.named_sharding(mesh, *axes[: leaf.ndim], *([None] * (leaf.ndim - 2)))

    def dense_sh(path, leaf):
      axes = self._dense_axes.get(path)
      return rep if axes is None else sharding.named_sharding(mesh, *axes)

    ab = self._abstract
    tables = traverse_util.unflatten_dict(
        {k: table_sh(k, v) for k, v in traverse_util.flatten_dict(ab["params"]["tables"]).items()})
    dense = traverse_util.unflatten_dict(
        {k: dense_sh(k, v) for k, v in traverse_util.flatten_dict(ab["params"]["dense"]).items()})
    table_opt = {}
    for path, st in traverse_util.flatten_dict(ab["opt_state"]["tables"], is_leaf=lambda k, v: (
        isinstance(v, dict) and tuple(k) in self._table_axes)).items():
      row_axis = self._table_axes[path][0]
      table_opt[path] = {name: sharding.named_sharding(mesh, row_axis, *([None] * (a.ndim - 1)))
                         for name, a in st.items()}
    table_opt = traverse_util.unflatten_dict(table_opt) if table_opt else {}
    dense_opt = optax.tree_map_params(self.dense_tx, lambda _, s: s, ab["opt_state"]["dense"],
                                      dense, transform_non_params=lambda _: rep)
    return {"step": rep, "params": {"tables": tables, "dense": dense},
            "opt_state": {"tables": table_opt, "dense": dense_opt}}

  # ------------------------------------------------------------------ public API
  @property
  def state_shardings(self) -> State:
    """NamedShardings of the state on this task's mesh (Orbax restore targets)."""
    return self._shardings

  def abstract_state(self) -> State:
    """ShapeDtypeStructs of the state, each with its ``.sharding``."""
    return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                        self._abstract, self._shardings)

  def init(self, seed: int) -> State:
    """Fresh state, created directly in its shards (jit with ``out_shardings``)."""
    init = jax.jit(self._init_fn, out_shardings=self._shardings)
    return init(jax.random.PRNGKey(seed))

  def batch_keys(self) -> tuple[str, ...]:
    """Keys ``train_step`` reads from a batch (others are ignored)."""
    keys = ["user", "pos"]
    keys.append("pos_logq" if self.use_logq else None)
    if not self.in_batch:
      keys.append("neg")
    if self.stream:
      for m in self.modalities:
        keys += [f"feat_pos/{m}", f"mask_pos/{m}"]
        if not self.in_batch:
          keys += [f"feat_neg/{m}", f"mask_neg/{m}"]
    return tuple(k for k in keys if k is not None)

  def train_step(self, state: State, batch: Mapping[str, jax.Array]
                 ) -> tuple[State, dict[str, jax.Array]]:
    """One update. ``state`` is donated; metrics are device scalars (no host sync)."""
    missing = [k for k in self.batch_keys() if k not in batch]
    if missing:
      raise DataError("train batch", f"missing keys {missing}; has {sorted(batch)}")
    return self._train_jit(state, {k: batch[k] for k in self.batch_keys()}, self._frozen)

  def eval_reprs(self, state: State) -> tuple[jax.Array, jax.Array]:
    """(users [padded_users, D], items [padded_items, D]), row-sharded, deterministic.

    ``score(u, i) = users[u] . items[i]``. Rows >= num_users / num_items are padding
    (item padding rows are zeros): the evaluator must exclude them from rankings.
    With ``input.stream_features`` and a feature model, the item tower runs over
    host feature chunks of ``STREAM_EVAL_CHUNK`` rows (features never all on device).
    """
    if self.stream and self.modalities:
      return self._eval_streamed(state["params"])
    return self._eval_jit(state["params"], self._frozen)

  def _eval_streamed(self, params: State) -> tuple[jax.Array, jax.Array]:
    mesh = self.mesh
    chunk = min(self.padded_items, padded_rows(STREAM_EVAL_CHUNK, mesh.size))
    total = -(-self.padded_items // chunk) * chunk
    rep = sharding.replicated(mesh)
    rows_sh = sharding.named_sharding(mesh, "items", "embed")
    if not hasattr(self, "_stream_eval_jits"):
      def users_fn(params):
        return nnx.merge(self.graphdef, params["tables"], params["dense"]).user_repr(None)

      def chunk_fn(params, out, feats, masks, start):
        model = nnx.merge(self.graphdef, params["tables"], params["dense"])
        ids = start + jnp.arange(chunk)
        items = model.item_repr(ids, feats, masks)
        items = jnp.where((ids < self.num_items)[:, None], items, 0).astype(out.dtype)
        return jax.lax.dynamic_update_slice(out, items, (start, 0))

      self._stream_eval_jits = (
          jax.jit(users_fn, out_shardings=sharding.named_sharding(mesh, "users", "embed")),
          jax.jit(chunk_fn, donate_argnums=1, out_shardings=rows_sh))
    users_jit, chunk_jit = self._stream_eval_jits
    users = users_jit(params)
    dim = users.shape[1]
    out = jax.jit(lambda: jnp.zeros((total, dim), jnp.float32),
                  out_shardings=rows_sh if total % mesh.size == 0 else rep)()
    for start in range(0, self.padded_items, chunk):
      feats = {m: _put_rows_replicated(mesh, self.info.features[m], start, chunk, np.float32)
               for m in self.modalities}
      masks = {m: _put_rows_replicated(mesh, self.info.feature_masks[m], start, chunk, bool)
               for m in self.modalities}
      out = chunk_jit(params, out, feats, masks, jnp.int32(start))
    if total != self.padded_items:
      out = jax.jit(lambda x: x[: self.padded_items], out_shardings=rows_sh)(out)
    return users, out

  def lower_train_step(self, batch_size: int, num_negatives: int = 1):
    """``jax.jit(...).lower`` of the step on abstract inputs (compile-only checks)."""
    return self._train_jit.lower(self.abstract_state(),
                                 self.abstract_batch(batch_size, num_negatives),
                                 self._frozen)

  def abstract_batch(self, batch_size: int, num_negatives: int = 1
                     ) -> dict[str, jax.ShapeDtypeStruct]:
    """ShapeDtypeStructs of a global batch (for lowering and tests)."""
    sh = NamedSharding(self.mesh, P(sharding.DATA))
    b, n = batch_size, num_negatives
    shapes = {"user": ((b,), jnp.int32), "pos": ((b,), jnp.int32),
              "neg": ((b, n), jnp.int32), "pos_logq": ((b,), jnp.float32)}
    for m in self.modalities:
      d = int(self.info.features[m].shape[1])
      shapes.update({f"feat_pos/{m}": ((b, d), jnp.float32), f"mask_pos/{m}": ((b,), bool),
                     f"feat_neg/{m}": ((b, n, d), jnp.float32),
                     f"mask_neg/{m}": ((b, n), bool)})
    return {k: jax.ShapeDtypeStruct(*shapes[k], sharding=sh) for k in self.batch_keys()}

  # ------------------------------------------------------------------ jitted bodies
  def _row_kind(self, path: tuple) -> str:
    return self._table_axes[path][0]

  def _constrain_batch(self, x: jax.Array) -> jax.Array:
    spec = P(sharding.DATA, *([None] * (x.ndim - 1)))
    return jax.lax.with_sharding_constraint(x, NamedSharding(self.mesh, spec))

  def _rank_terms(self, u: jax.Array, it: jax.Array, batch: dict[str, jax.Array]):
    """(rank loss, pos scores [B], neg scores [B, N], valid mask or None) of a batch.

    ``u`` [B, D] user towers, ``it`` [B, 1+N, D] item towers (positive first).
    """
    pos = batch["pos"]
    if self.in_batch:
      logits = jnp.einsum("bd,cd->bc", u, it[:, 0], preferred_element_type=jnp.float32)
      pos_s = jnp.diagonal(logits)
      neg_s, neg_valid = logits, pos[None, :] != pos[:, None]
      pos_logq = batch["pos_logq"] if self.use_logq else None
      neg_logq = (jnp.broadcast_to(pos_logq[None, :], logits.shape)
                  if self.use_logq else None)
    else:
      s = jnp.einsum("bd,bkd->bk", u, it, preferred_element_type=jnp.float32)
      pos_s, neg_s, neg_valid, pos_logq, neg_logq = s[:, 0], s[:, 1:], None, None, None
    rank_loss = losses.compute_loss(self.loss_name, pos_s, neg_s, neg_valid,
                                    pos_logq=pos_logq, neg_logq=neg_logq,
                                    temperature=float(self.config.loss.temperature))
    return rank_loss, pos_s, neg_s, neg_valid

  def _train_fn(self, state: State, batch: dict[str, jax.Array],
                frozen: dict[str, dict[str, jax.Array]]) -> tuple[State, dict[str, jax.Array]]:
    cfg = self.config
    cdt = self.compute_dtype
    user, pos = batch["user"], batch["pos"]
    b = user.shape[0]
    items = pos[:, None] if self.in_batch else jnp.concatenate([pos[:, None], batch["neg"]], 1)
    rng = jax.random.fold_in(jax.random.PRNGKey(cfg.seed), state["step"])
    rng_user, rng_item = jax.random.split(rng)

    # Distinct ids per row kind; the model sees ids remapped into the gathered rows.
    u_uniq, u_inv = unique_ids(user, self.padded_users)
    i_uniq, i_inv = unique_ids(items, self.padded_items)
    uniq = {"users": u_uniq, "items": i_uniq}
    u_inv, i_inv = self._constrain_batch(u_inv), self._constrain_batch(i_inv)

    tables = traverse_util.flatten_dict(state["params"]["tables"])
    rows = {k: gather_rows(t, uniq[self._row_kind(k)]) for k, t in tables.items()}

    # Features of the batch items: streamed, or gathered from the frozen tables.
    if self.stream:
      feats = {m: (batch[f"feat_pos/{m}"][:, None] if self.in_batch else jnp.concatenate(
          [batch[f"feat_pos/{m}"][:, None], batch[f"feat_neg/{m}"]], 1)) for m in self.modalities}
      masks = {m: (batch[f"mask_pos/{m}"][:, None] if self.in_batch else jnp.concatenate(
          [batch[f"mask_pos/{m}"][:, None], batch[f"mask_neg/{m}"]], 1)) for m in self.modalities}
    else:
      feats = {m: jnp.take(gather_rows(frozen["feat"][m], i_uniq), i_inv, axis=0)
               for m in self.modalities}
      masks = {m: jnp.take(gather_rows(frozen["mask"][m], i_uniq), i_inv, axis=0)
               for m in self.modalities}
    feats = {m: self._constrain_batch(f.astype(cdt)) for m, f in feats.items()}
    masks = {m: self._constrain_batch(k.astype(bool)) for m, k in masks.items()}

    # Occurrences of each distinct row, for the per-batch L2 on the rows used.
    counts = {"users": jax.ops.segment_sum(jnp.ones(u_inv.size), u_inv.reshape(-1),
                                           num_segments=u_uniq.shape[0]),
              "items": jax.ops.segment_sum(jnp.ones(i_inv.size), i_inv.reshape(-1),
                                           num_segments=i_uniq.shape[0])}

    def loss_fn(rows, dense):
      cast = lambda t: jax.tree.map(lambda x: x.astype(cdt), t)
      model = nnx.merge(self.graphdef, traverse_util.unflatten_dict(cast(rows)), cast(dense))
      u = self._constrain_batch(model.user_repr(u_inv, rng=rng_user))          # [B, D]
      it = self._constrain_batch(model.item_repr(i_inv, feats, masks, rng=rng_item))  # [B, 1+N, D]
      rank_loss, pos_s, neg_s, neg_valid = self._rank_terms(u, it, batch)
      l2 = sum(jnp.sum(counts[self._row_kind(k)][:, None] * jnp.square(r))
               for k, r in rows.items()) / b
      loss = rank_loss + cfg.loss.l2 * l2
      valid = jnp.ones(neg_s.shape, bool) if neg_valid is None else neg_valid
      aux = {"rank_loss": rank_loss, "l2": l2, "pos_score": jnp.mean(pos_s),
             "neg_score": jnp.sum(jnp.where(valid, neg_s, 0)) / jnp.maximum(jnp.sum(valid), 1)}
      return loss, aux

    dense = state["params"]["dense"]
    (loss, aux), (g_rows, g_dense) = jax.value_and_grad(loss_fn, argnums=(0, 1),
                                                        has_aux=True)(rows, dense)
    grad_norm = optax.tree.norm((g_rows, g_dense))
    if cfg.optimizer.grad_clip > 0:
      scale = jnp.minimum(1.0, cfg.optimizer.grad_clip / (grad_norm + 1e-12))
      g_rows, g_dense = jax.tree.map(lambda g: g * scale, (g_rows, g_dense))

    opt_tables = traverse_util.flatten_dict(
        state["opt_state"]["tables"],
        is_leaf=lambda k, v: isinstance(v, dict) and tuple(k) in self._table_axes)
    new_tables, new_opt_tables = {}, {}
    for k, t in tables.items():
      new_tables[k], new_opt_tables[k] = self.sparse_opt.update(
          t, opt_tables.get(k, {}), uniq[self._row_kind(k)], rows[k], g_rows[k])
    updates, dense_opt = self.dense_tx.update(g_dense, state["opt_state"]["dense"], dense)
    new_state = {
        "step": state["step"] + 1,
        "params": {"tables": traverse_util.unflatten_dict(new_tables),
                   "dense": optax.apply_updates(dense, updates)},
        "opt_state": {"tables": traverse_util.unflatten_dict(new_opt_tables),
                      "dense": dense_opt}}
    metrics = {"loss": loss, "grad_norm": grad_norm, **aux}
    return new_state, jax.tree.map(lambda x: x.astype(jnp.float32), metrics)

  def _train_graph_fn(self, state: State, batch: dict[str, jax.Array],
                      frozen: dict[str, Any]) -> tuple[State, dict[str, jax.Array]]:
    """Step of a graph model: whole-table gradients (see models/graph_base.py).

    The model propagates every row over the graph, so the gradient of a table is not
    confined to the batch rows; it is taken w.r.t. the whole (row-sharded) table and
    the row-wise optimizer updates all rows (for Adam: exactly dense Adam, as in the
    papers). The L2 term is the same per-batch one as in ``_train_fn`` (layer-0 rows
    the batch touches, counted with multiplicity).
    """
    cfg = self.config
    cdt = self.compute_dtype
    user, pos = batch["user"], batch["pos"]
    b = user.shape[0]
    items = pos[:, None] if self.in_batch else jnp.concatenate([pos[:, None], batch["neg"]], 1)
    rng = jax.random.fold_in(jax.random.PRNGKey(cfg.seed), state["step"])
    rng_model, rng_aux = jax.random.split(rng)
    tables = traverse_util.flatten_dict(state["params"]["tables"])
    counts = {"users": jax.ops.segment_sum(jnp.ones(b), user, num_segments=self.padded_users),
              "items": jax.ops.segment_sum(jnp.ones(items.size), items.reshape(-1),
                                           num_segments=self.padded_items)}
    feats = {m: f.astype(cdt) for m, f in frozen["feat"].items()}

    def loss_fn(tables, dense):
      cast = lambda t: jax.tree.map(lambda x: x.astype(cdt), t)
      model = nnx.merge(self.graphdef, traverse_util.unflatten_dict(cast(tables)), cast(dense))
      users_all, items_all = model.propagate(frozen["graph"], feats, frozen["mask"],
                                             rng=rng_model)
      aux_loss = model.aux_loss(users_all, items_all, user, items, frozen["graph"], feats,
                                frozen["mask"], rng=rng_aux)
      su, si = model.score_reprs(users_all, items_all)
      u = self._constrain_batch(jnp.take(su, user, axis=0))
      it = self._constrain_batch(jnp.take(si, items, axis=0))
      if model.uses_rank_loss:
        rank_loss, pos_s, neg_s, neg_valid = self._rank_terms(u, it, batch)
      else:
        s = jnp.einsum("bd,bkd->bk", u, it, preferred_element_type=jnp.float32)
        rank_loss, pos_s, neg_s, neg_valid = jnp.zeros((), jnp.float32), s[:, 0], s[:, 1:], None
      l2 = sum(jnp.sum(counts[self._row_kind(k)][:, None] * jnp.square(t))
               for k, t in tables.items()) / b
      loss = rank_loss + cfg.loss.l2 * l2 + aux_loss
      valid = jnp.ones(neg_s.shape, bool) if neg_valid is None else neg_valid
      aux = {"rank_loss": rank_loss, "l2": l2, "aux_loss": aux_loss,
             "pos_score": jnp.mean(pos_s),
             "neg_score": jnp.sum(jnp.where(valid, neg_s, 0)) / jnp.maximum(jnp.sum(valid), 1)}
      return loss, aux

    dense = state["params"]["dense"]
    (loss, aux), (g_tables, g_dense) = jax.value_and_grad(loss_fn, argnums=(0, 1),
                                                          has_aux=True)(tables, dense)
    grad_norm = optax.tree.norm((g_tables, g_dense))
    if cfg.optimizer.grad_clip > 0:
      scale = jnp.minimum(1.0, cfg.optimizer.grad_clip / (grad_norm + 1e-12))
      g_tables, g_dense = jax.tree.map(lambda g: g * scale, (g_tables, g_dense))
    opt_tables = traverse_util.flatten_dict(
        state["opt_state"]["tables"],
        is_leaf=lambda k, v: isinstance(v, dict) and tuple(k) in self._table_axes)
    new_tables, new_opt_tables = {}, {}
    for k, t in tables.items():
      every_row = jnp.arange(t.shape[0], dtype=jnp.int32)
      new_tables[k], new_opt_tables[k] = self.sparse_opt.update(
          t, opt_tables.get(k, {}), every_row, t, g_tables[k])
    updates, dense_opt = self.dense_tx.update(g_dense, state["opt_state"]["dense"], dense)
    new_state = {
        "step": state["step"] + 1,
        "params": {"tables": traverse_util.unflatten_dict(new_tables),
                   "dense": optax.apply_updates(dense, updates)},
        "opt_state": {"tables": traverse_util.unflatten_dict(new_opt_tables),
                      "dense": dense_opt}}
    metrics = {"loss": loss, "grad_norm": grad_norm, **aux}
    return new_state, jax.tree.map(lambda x: x.astype(jnp.float32), metrics)

  def _eval_fn(self, params: State, frozen: dict[str, Any]
               ) -> tuple[jax.Array, jax.Array]:
    model = nnx.merge(self.graphdef, params["tables"], params["dense"])
    if self.graph_model:
      users, items = model.score_reprs(*model.propagate(frozen["graph"], frozen["feat"],
                                                        frozen["mask"], rng=None))
      real = jnp.arange(items.shape[0]) < self.num_items
      return users.astype(jnp.float32), jnp.where(real[:, None], items, 0).astype(jnp.float32)
    users = model.user_repr(None)
    items = model.item_repr(None, frozen["feat"], frozen["mask"])
    real = jnp.arange(items.shape[0]) < self.num_items
    return users, jnp.where(real[:, None], items, 0).astype(jnp.float32)
