"""The pointwise regime: binary cross-entropy on labelled (user, item) rows.

Why a regime of its own: the rankers (``models/ranker_base.py``) score one row through
side features and an MLP or interaction layer, not as ``user . item``, and learn from a
label per row rather than from a positive ranked against negatives. The parts that
matter at scale are the rows regime's: the distinct users, items and side-feature
categories of a batch are gathered from their row-sharded tables, the model runs on the
gathered rows, and the sparse row-wise optimizer writes back only those rows (the ID
tables *and* the categorical tables); dense layers take optax.

Labels (``data.label_threshold``, the same rule as ``data/labelled.py``):
  * ``>= 0``: explicit data, every train row is an example, label = rating > threshold
    (the Merlin notebooks' ``rating > 3``; lower ratings are the negatives);
  * ``< 0``: implicit data, each row is a positive and its ``input.num_negatives``
    sampled negatives (the pipeline's ``neg``) are the zeros.

Objective of ``n`` rows: ``mean BCE(logit, label) + loss.l2 * sum |gathered row|^2 / n``.

Batch contract: ``user [B]``, ``pos [B]``, ``neg [B, N]`` (read only for implicit data),
``rating [B]``. Side features are not in the batch: their id bags are frozen tables on
device, row-sharded like the feature tables, looked up by the batch's user/item ids.

Evaluation: :meth:`PointwiseRegime.score_rows` gives the logits of held-out rows
(``evaluation/pointwise.py``); ``eval_fn`` returns the ID embeddings only.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import traverse_util
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from mmrec_jax import sharding
from mmrec_jax.errors import ConfigError
from mmrec_jax.optim.sparse import (
  RowIndex,
  gather_rows,
  pick_row_mode,
  row_index,
  take_valid_rows,
)
from mmrec_jax.step import placement
from mmrec_jax.step.batch import BatchContract
from mmrec_jax.step.regime import Regime
from mmrec_jax.step.types import DataInfo, Frozen, State
from mmrec_jax.step.update import apply_gradients, cast, constrain_batch, weighted_sq_sum


@dataclasses.dataclass(frozen=True)
class PointwiseContract(BatchContract):
  """Reads ``user``, ``pos``, ``neg`` and ``rating``; features stay on device."""

  def keys(self) -> tuple[str, ...]:
    return ("user", "pos", "neg", "rating")

  def abstract(
    self, mesh: Mesh, batch_size: int, num_negatives: int = 1
  ) -> dict[str, jax.ShapeDtypeStruct]:
    sh = NamedSharding(mesh, P(sharding.DATA))
    b = batch_size
    return {
      "user": jax.ShapeDtypeStruct((b,), jnp.int32, sharding=sh),
      "pos": jax.ShapeDtypeStruct((b,), jnp.int32, sharding=sh),
      "neg": jax.ShapeDtypeStruct((b, num_negatives), jnp.int32, sharding=sh),
      "rating": jax.ShapeDtypeStruct((b,), jnp.float32, sharding=sh),
    }

  def item_ids(self, batch: Mapping[str, jax.Array]) -> jax.Array:
    return batch["pos"][:, None]


def _sq(rows: jax.Array, touched: jax.Array | None) -> jax.Array:
  """``sum |row|^2`` over gathered rows, or over the touched rows of a whole table."""
  if touched is None:
    return jnp.sum(jnp.square(rows))
  return weighted_sq_sum(touched, rows)


def side_field(path: tuple) -> str:
  """The side-feature field a categorical table at ``path`` is indexed by.

  Convention of ``models/ranker_base.py``: categorical tables live in ``nnx.Dict``s keyed
  by field name, so the path ends ``(..., <field>, 'embedding')``.
  """
  return str(path[-2])


class PointwiseRegime(Regime):
  """BCE on labelled rows over gathered ID and categorical rows (module doc)."""

  # The step reads ids and ratings only, so epochs can be made on device
  # (data/device_epoch.py, with the ratings beside the ids).
  device_epochs = True

  @staticmethod
  def batch_contract(contract: BatchContract) -> BatchContract:
    if contract.stream:
      raise ConfigError(
        "input.stream_features=True is not supported by the pointwise rankers "
        "(their frozen feature tables stay on device, row-sharded)"
      )
    return PointwiseContract(
      in_batch=False,
      use_logq=False,
      stream=False,
      modalities=contract.modalities,
      feature_dims=contract.feature_dims,
    )

  @staticmethod
  def model_kwargs(info: DataInfo) -> dict:
    """The side-feature vocabularies the ranker builds its categorical tables from."""
    side = getattr(info, "side", None)
    return {"side_vocab": dict(side.vocab) if side is not None else {}}

  def frozen_data(self, frozen: Frozen) -> Frozen:
    s = self.s
    side = getattr(s.info, "side", None)
    bags = {}
    if side is not None:
      rows = {"users": s.padded_users, "items": s.padded_items}
      for f in side.fields:
        kind = side.kinds[f]
        bags[f] = placement.put_rows(s.mesh, np.asarray(side.bags[f], np.int32), rows[kind], kind)
    self.side_kinds = dict(side.kinds) if side is not None else {}
    self.frozen = {**frozen, "side": bags}
    self._score_jit = None
    return self.frozen

  # ------------------------------------------------------------------ rows of a batch
  def labelled_rows(self, batch: Mapping[str, jax.Array]):
    """(users [n], items [n], labels [n] float32) of a batch (module doc)."""
    thr = float(self.s.config.data.label_threshold)
    user, pos = batch["user"], batch["pos"]
    if thr >= 0:
      return user, pos, (batch["rating"] > thr).astype(jnp.float32)
    neg = batch["neg"]
    n = neg.shape[1]
    users = jnp.concatenate([user, jnp.repeat(user, n)])
    items = jnp.concatenate([pos, neg.reshape(-1)])
    labels = jnp.concatenate([jnp.ones(user.shape, jnp.float32), jnp.zeros(neg.size, jnp.float32)])
    return users, items, labels

  def side_bags(self, frozen: Frozen, users: jax.Array, items: jax.Array) -> dict[str, jax.Array]:
    """field -> [n, L] category ids of the rows' users/items (-1 = empty slot)."""
    by_kind = {"users": users, "items": items}
    return {
      f: take_valid_rows(bag, by_kind[self.side_kinds[f]])
      for f, bag in frozen.get("side", {}).items()
    }

  def features(self, frozen: Frozen, items: jax.Array):
    """Frozen feature rows [n, d] and masks [n] of the rows' items."""
    s = self.s
    feats = {m: take_valid_rows(frozen["feat"][m], items) for m in s.modalities}
    masks = {m: take_valid_rows(frozen["mask"][m], items).astype(bool) for m in s.modalities}
    return feats, masks

  # ------------------------------------------------------------------ train step
  def train_fn(
    self, state: State, batch: dict[str, jax.Array], frozen: Frozen
  ) -> tuple[State, dict[str, jax.Array]]:
    s = self.s
    cfg, cdt, layout = s.config, s.compute_dtype, s.layout
    constrain = lambda x: constrain_batch(s.mesh, x)
    users, items, labels = self.labelled_rows(batch)
    n = users.shape[0]
    bags = self.side_bags(frozen, users, items)
    feats, masks = self.features(frozen, items)
    feats = {m: constrain(f.astype(cdt)) for m, f in feats.items()}

    # Rows per index (users, items, each side field's categories): the distinct ids of
    # the batch, or the whole table when it is small (``optimizer.sparse_rows``; a
    # 20-genre table read by 3 x 8192 ids would otherwise pay a sort of 24k ids).
    mode = cfg.optimizer.get("sparse_rows", "auto")
    tables = traverse_util.flatten_dict(state["params"]["tables"])
    shards = s.mesh.size
    index = {
      "users": row_index(users, s.padded_users, pick_row_mode(mode, s.padded_users, n, shards)),
      "items": row_index(items, s.padded_items, pick_row_mode(mode, s.padded_items, n, shards)),
    }
    side_inv = {}
    for f, bag in bags.items():
      vocab_rows = next(
        t.shape[0]
        for k, t in tables.items()
        if layout.row_kind(k) not in ("users", "items") and side_field(k) == f
      )
      f_mode = pick_row_mode(mode, vocab_rows, bag.size, shards)
      # Empty slots (-1) become an out-of-range id, so neither mode counts them as rows.
      index[f] = row_index(jnp.where(bag >= 0, bag, vocab_rows), vocab_rows, f_mode)
      side_inv[f] = jnp.where(bag >= 0, index[f].inverse, -1)
    u_inv, i_inv = index["users"].inverse, index["items"].inverse

    def index_of(path) -> RowIndex:
      kind = layout.row_kind(path)
      return index[kind] if kind in ("users", "items") else index[side_field(path)]

    ids = {k: index_of(k).uniq for k in tables}
    touched = {k: index_of(k).touched for k in tables}
    rows = {k: gather_rows(t, ids[k]) for k, t in tables.items()}
    u_inv, i_inv = constrain(u_inv), constrain(i_inv)

    def loss_fn(rows, dense):
      model = layout.merge(traverse_util.unflatten_dict(cast(rows, cdt)), cast(dense, cdt))
      logits = model.logits(u_inv, i_inv, side_inv, feats, masks).astype(jnp.float32)
      logits = constrain(logits)
      bce = jnp.mean(optax.sigmoid_binary_cross_entropy(logits, labels))
      # L2 on the rows the batch used (a whole small table counts its touched rows).
      l2 = sum(_sq(r, touched[k]) for k, r in rows.items()) / n
      aux = {
        "bce": bce,
        "l2": l2,
        "label_mean": jnp.mean(labels),
        "pred_mean": jnp.mean(jax.nn.sigmoid(logits)),
      }
      return bce + cfg.loss.l2 * l2, aux

    (loss, aux), (g_rows, g_dense) = jax.value_and_grad(loss_fn, argnums=(0, 1), has_aux=True)(
      rows, state["params"]["dense"]
    )
    return apply_gradients(
      layout,
      state,
      tables,
      ids,
      rows,
      g_rows,
      g_dense,
      loss,
      aux,
      cfg.optimizer.grad_clip,
      touched=touched,
    )

  # ------------------------------------------------------------------ evaluation
  def score_fn(self, params: State, frozen: Frozen, users: jax.Array, items: jax.Array):
    """Logits ``[n]`` of rows (users, items) with the full tables (deterministic)."""
    model = self.s.layout.merge(params["tables"], params["dense"])
    feats, masks = self.features(frozen, items)
    logits = model.logits(users, items, self.side_bags(frozen, users, items), feats, masks)
    return logits.astype(jnp.float32)

  def score_rows(self, params: State, users: jax.Array, items: jax.Array) -> jax.Array:
    """``score_fn`` jitted with the task's shardings; rows sharded on 'data'."""
    if self._score_jit is None:
      s = self.s
      rows_sh = NamedSharding(s.mesh, P(sharding.DATA))
      self._score_jit = jax.jit(
        self.score_fn,
        in_shardings=(
          s.layout.shardings["params"],
          jax.tree.map(lambda a: a.sharding, self.frozen),
          rows_sh,
          rows_sh,
        ),
        out_shardings=rows_sh,
      )
    return self._score_jit(params, self.frozen, users, items)

  def eval_fn(self, params: State, frozen: Frozen) -> tuple[jax.Array, jax.Array]:
    """The ID embeddings (not the ranker's score: see ``models/ranker_base.py``)."""
    del frozen
    model = self.s.layout.merge(params["tables"], params["dense"])
    users = model.user_repr(None)
    items = model.item_repr(None, {}, {})
    real = jnp.arange(items.shape[0]) < self.s.num_items
    return users.astype(jnp.float32), jnp.where(real[:, None], items, 0).astype(jnp.float32)
