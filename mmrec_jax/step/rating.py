"""The rating regime: pointwise regression on (user, item, rating) over gathered rows.

Why a regime of its own: rating-prediction models (``models/rating_mf.py``) learn from the
rating *value* of each observed pair, not from a positive ranked against negatives, so
the objective and the batch differ while everything else -- gathering the rows a batch
touches, the per-occurrence L2, the sparse row-wise update -- is the ``rows`` regime's.

Objective of a batch of ``B`` rows: ``mean_b (r_b - user_{u_b} . item_{i_b})^2 +
loss.l2 * sum_rows count(row) * |row|^2 / B`` -- the sum over a pass of the data of the
per-rating SGD objective of Koren et al. (and Cornac's MF), up to the factor 1/B. With
``eval.rating_link='sigmoid'`` (Cornac's PMF) the squared error is taken on the [0, 1]
scale: ``((r_b - lo) / (hi - lo) - sigmoid(score))^2``, ``(lo, hi) = eval.rating_range``;
evaluation maps scores to ratings through the same link (``evaluation/rating.py``).

Batch contract: ``user [B] int32``, ``pos [B] int32`` (the rated item), ``rating [B]
float32`` (``data/pipeline.py`` carries the train ratings; sources without ratings have
1.0 everywhere, which a rating model cannot learn from). Negatives are ignored.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import jax
import jax.numpy as jnp
from flax import traverse_util
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from mmrec_jax import sharding
from mmrec_jax.evaluation.rating import check_link
from mmrec_jax.optim.sparse import gather_rows, unique_ids
from mmrec_jax.step.batch import BatchContract
from mmrec_jax.step.rows import RowsRegime
from mmrec_jax.step.types import Frozen, State
from mmrec_jax.step.update import apply_gradients, cast, constrain_batch


@dataclasses.dataclass(frozen=True)
class RatingContract(BatchContract):
  """Reads ``user``, ``pos`` and ``rating``; no negatives, no streamed features."""

  def keys(self) -> tuple[str, ...]:
    return ("user", "pos", "rating")

  def abstract(
    self, mesh: Mesh, batch_size: int, num_negatives: int = 1
  ) -> dict[str, jax.ShapeDtypeStruct]:
    del num_negatives
    sh = NamedSharding(mesh, P(sharding.DATA))
    return {
      "user": jax.ShapeDtypeStruct((batch_size,), jnp.int32, sharding=sh),
      "pos": jax.ShapeDtypeStruct((batch_size,), jnp.int32, sharding=sh),
      "rating": jax.ShapeDtypeStruct((batch_size,), jnp.float32, sharding=sh),
    }

  def item_ids(self, batch: Mapping[str, jax.Array]) -> jax.Array:
    return batch["pos"][:, None]


class RatingRegime(RowsRegime):
  """Squared error on explicit ratings; evaluation towers as in the rows regime."""

  # Whole epochs on device (data/device_epoch.py) feed user/pos/neg ids only, not the
  # rating values this regime regresses on: batches come from the host pipeline.
  device_epochs = False

  @staticmethod
  def batch_contract(contract: BatchContract) -> BatchContract:
    return RatingContract(
      in_batch=False, use_logq=False, stream=False, modalities=(), feature_dims={}
    )

  def train_fn(
    self, state: State, batch: dict[str, jax.Array], frozen: Frozen
  ) -> tuple[State, dict[str, jax.Array]]:
    del frozen  # ID-only: rating models take no features
    s = self.s
    cfg, cdt, layout = s.config, s.compute_dtype, s.layout
    constrain = lambda x: constrain_batch(s.mesh, x)
    user, item = batch["user"], batch["pos"]
    rating = batch["rating"].astype(jnp.float32)
    link = str(cfg.eval.rating_link)
    lo, hi = check_link(link, cfg.eval.rating_range)
    if link == "sigmoid":  # a config value, fixed at trace time
      rating = (rating - lo) / (hi - lo)
    b = user.shape[0]
    u_uniq, u_inv = unique_ids(user, s.padded_users)
    i_uniq, i_inv = unique_ids(item, s.padded_items)
    uniq = {"users": u_uniq, "items": i_uniq}
    u_inv, i_inv = constrain(u_inv), constrain(i_inv)
    tables = traverse_util.flatten_dict(state["params"]["tables"])
    rows = {k: gather_rows(t, uniq[layout.row_kind(k)]) for k, t in tables.items()}
    counts = {
      "users": jax.ops.segment_sum(jnp.ones(b), u_inv, num_segments=u_uniq.shape[0]),
      "items": jax.ops.segment_sum(jnp.ones(b), i_inv, num_segments=i_uniq.shape[0]),
    }

    def loss_fn(rows, dense):
      model = layout.merge(traverse_util.unflatten_dict(cast(rows, cdt)), cast(dense, cdt))
      u = constrain(model.user_repr(u_inv))  # [B, D]
      it = constrain(model.item_repr(i_inv, {}, {}))  # [B, D]
      pred = jnp.sum(u.astype(jnp.float32) * it.astype(jnp.float32), axis=-1)
      if link == "sigmoid":
        pred = jax.nn.sigmoid(pred)
      mse = jnp.mean(jnp.square(rating - pred))
      l2 = (
        sum(jnp.sum(counts[layout.row_kind(k)][:, None] * jnp.square(r)) for k, r in rows.items())
        / b
      )
      return mse + cfg.loss.l2 * l2, {"mse": mse, "l2": l2, "pred_mean": jnp.mean(pred)}

    (loss, aux), (g_rows, g_dense) = jax.value_and_grad(loss_fn, argnums=(0, 1), has_aux=True)(
      rows, state["params"]["dense"]
    )
    ids = {k: uniq[layout.row_kind(k)] for k in tables}
    return apply_gradients(
      layout, state, tables, ids, rows, g_rows, g_dense, loss, aux, cfg.optimizer.grad_clip
    )
