"""The gathered-rows regime: a step's cost grows with the batch, not the catalogue.

A table is never differentiated as a whole. The step takes the distinct ids of the batch
(``optim.sparse.unique_ids``: a static size, padded with an out-of-range id), gathers
those rows, and merges the model with the *gathered rows* in place of each table while
the batch ids are remapped to positions in them. The gradient w.r.t. the gathered rows
is then exactly the dense table gradient restricted to the touched rows (duplicates
summed), and the sparse optimizer scatters the new rows back.

With ``input.stream_features`` the batch carries the feature rows of its items, and
evaluation runs the item tower over host feature chunks of ``STREAM_EVAL_CHUNK`` rows,
so features never all sit on device.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from mmrec_jax import sharding
from mmrec_jax.layers.embedding import padded_rows
from mmrec_jax.optim.sparse import gather_rows, pick_row_mode, row_index
from mmrec_jax.step import placement
from mmrec_jax.step.regime import Regime
from mmrec_jax.step.types import Frozen, State
from mmrec_jax.step.update import (
  apply_gradients,
  cast,
  constrain_batch,
  score_summary,
  weighted_sq_sum,
)

STREAM_EVAL_CHUNK = 65536  # item rows per host->device chunk in streamed evaluation


class RowsRegime(Regime):
  """Per-batch towers over gathered rows; sparse updates of the touched rows only."""

  # Batches can be made on device (data/device_epoch.py): the step reads only ids.
  device_epochs = True

  def row_modes(self, batch_size: int = 1024, ids_per_row: int = 2) -> dict[str, str]:
    """Row kind -> ``unique`` | ``dense`` (``optimizer.sparse_rows``, optim/sparse.py)."""
    s = self.s
    mode = s.config.optimizer.get("sparse_rows", "auto")
    return {
      "users": pick_row_mode(mode, s.padded_users, batch_size, s.mesh.size),
      "items": pick_row_mode(mode, s.padded_items, batch_size * ids_per_row, s.mesh.size),
    }

  def train_fn(
    self, state: State, batch: dict[str, jax.Array], frozen: Frozen
  ) -> tuple[State, dict[str, jax.Array]]:
    s = self.s
    cfg, cdt, layout = s.config, s.compute_dtype, s.layout
    constrain = lambda x: constrain_batch(s.mesh, x)
    user = batch["user"]
    b = user.shape[0]
    items = s.contract.item_ids(batch)
    rng = jax.random.fold_in(jax.random.PRNGKey(cfg.seed), state["step"])
    rng_user, rng_item = jax.random.split(rng)

    # Rows per row kind (distinct ids, or the whole small table); the model sees ids
    # remapped into the gathered rows.
    modes = self.row_modes(b, items.shape[1])
    index = {
      "users": row_index(user, s.padded_users, modes["users"]),
      "items": row_index(items, s.padded_items, modes["items"]),
    }
    uniq = {kind: ix.uniq for kind, ix in index.items()}
    # Occurrences of each gathered row, for the per-batch L2 on the rows used.
    counts = {kind: ix.counts for kind, ix in index.items()}
    u_inv, i_inv = constrain(index["users"].inverse), constrain(index["items"].inverse)

    tables = traverse_util.flatten_dict(state["params"]["tables"])
    rows = {k: gather_rows(t, uniq[layout.row_kind(k)]) for k, t in tables.items()}
    # Whole-catalogue item tower: when the item table is used whole (dense rows) and the
    # catalogue has no more rows than the batch has item slots, the item tower runs once
    # per item and the batch gathers its outputs (ML-25M-shaped two-tower: 59k items
    # against 131k slots of a 65,536 batch with one negative). Random parts of the tower
    # (dropout) are then drawn per item, not per slot.
    catalogue = (
      modes["items"] == "dense"
      and bool(s.modalities)
      and not s.contract.stream
      and s.padded_items <= items.size
    )
    if catalogue:
      feats = {m: frozen["feat"][m].astype(cdt) for m in s.modalities}
      masks = {m: frozen["mask"][m].astype(bool) for m in s.modalities}
    else:
      feats, masks = self._batch_features(batch, frozen, uniq["items"], i_inv)
      feats = {m: constrain(f.astype(cdt)) for m, f in feats.items()}
      masks = {m: constrain(k.astype(bool)) for m, k in masks.items()}

    def loss_fn(rows, dense):
      model = layout.merge(traverse_util.unflatten_dict(cast(rows, cdt)), cast(dense, cdt))
      u = constrain(model.user_repr(u_inv, rng=rng_user))  # [B, D]
      if catalogue:
        every = model.item_repr(jnp.arange(s.padded_items), feats, masks, rng=rng_item)
        it = constrain(jnp.take(every, i_inv, axis=0))  # [B, 1+N, D]
      else:
        it = constrain(model.item_repr(i_inv, feats, masks, rng=rng_item))  # [B, 1+N, D]
      rank_loss, pos_s, neg_s, neg_valid = s.objective(u, it, batch)
      l2 = sum(weighted_sq_sum(counts[layout.row_kind(k)], r) for k, r in rows.items()) / b
      loss = rank_loss + cfg.loss.l2 * l2
      return loss, {"rank_loss": rank_loss, "l2": l2, **score_summary(pos_s, neg_s, neg_valid)}

    (loss, aux), (g_rows, g_dense) = jax.value_and_grad(loss_fn, argnums=(0, 1), has_aux=True)(
      rows, state["params"]["dense"]
    )
    ids = {k: uniq[layout.row_kind(k)] for k in tables}
    touched = {k: index[layout.row_kind(k)].touched for k in tables}
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

  def _batch_features(self, batch, frozen, i_uniq, i_inv):
    """Features and masks of the batch items [B, 1+N, ...]: streamed or gathered."""
    s = self.s
    if s.contract.stream:

      def join(prefix):
        return {
          m: (
            batch[f"{prefix}_pos/{m}"][:, None]
            if s.contract.in_batch
            else jnp.concatenate(
              [batch[f"{prefix}_pos/{m}"][:, None], batch[f"{prefix}_neg/{m}"]], 1
            )
          )
          for m in s.modalities
        }

      return join("feat"), join("mask")
    feats = {
      m: jnp.take(gather_rows(frozen["feat"][m], i_uniq), i_inv, axis=0) for m in s.modalities
    }
    masks = {
      m: jnp.take(gather_rows(frozen["mask"][m], i_uniq), i_inv, axis=0) for m in s.modalities
    }
    return feats, masks

  def eval_fn(self, params: State, frozen: Frozen) -> tuple[jax.Array, jax.Array]:
    model = self.s.layout.merge(params["tables"], params["dense"])
    users = model.user_repr(None)
    items = model.item_repr(None, frozen["feat"], frozen["mask"])
    real = jnp.arange(items.shape[0]) < self.s.num_items
    return users, jnp.where(real[:, None], items, 0).astype(jnp.float32)

  def eval_reprs(self, params: State, frozen: Frozen, eval_jit) -> tuple[jax.Array, jax.Array]:
    if self.s.contract.stream and self.s.modalities:
      return self._eval_streamed(params)
    return eval_jit(params, frozen)

  def _eval_streamed(self, params: State) -> tuple[jax.Array, jax.Array]:
    s = self.s
    mesh = s.mesh
    chunk = min(s.padded_items, padded_rows(STREAM_EVAL_CHUNK, mesh.size))
    total = -(-s.padded_items // chunk) * chunk
    rep = sharding.replicated(mesh)
    rows_sh = sharding.named_sharding(mesh, "items", "embed")
    if getattr(self, "_stream_eval_jits", (None, None, None))[2] != chunk:

      def users_fn(params):
        return s.layout.merge(params["tables"], params["dense"]).user_repr(None)

      def chunk_fn(params, out, feats, masks, start):
        model = s.layout.merge(params["tables"], params["dense"])
        ids = start + jnp.arange(chunk)
        items = model.item_repr(ids, feats, masks)
        items = jnp.where((ids < s.num_items)[:, None], items, 0).astype(out.dtype)
        return jax.lax.dynamic_update_slice(out, items, (start, 0))

      self._stream_eval_jits = (
        jax.jit(users_fn, out_shardings=sharding.named_sharding(mesh, "users", "embed")),
        jax.jit(chunk_fn, donate_argnums=1, out_shardings=rows_sh),
        chunk,
      )
    users_jit, chunk_jit, _ = self._stream_eval_jits
    users = users_jit(params)
    dim = users.shape[1]
    out = jax.jit(
      lambda: jnp.zeros((total, dim), jnp.float32),
      out_shardings=rows_sh if total % mesh.size == 0 else rep,
    )()
    for start in range(0, s.padded_items, chunk):
      feats = {
        m: placement.put_rows_replicated(mesh, s.info.features[m], start, chunk, np.float32)
        for m in s.modalities
      }
      masks = {
        m: placement.put_rows_replicated(mesh, s.info.feature_masks[m], start, chunk, bool)
        for m in s.modalities
      }
      out = chunk_jit(params, out, feats, masks, jnp.int32(start))
    if total != s.padded_items:
      out = jax.jit(lambda x: x[: s.padded_items], out_shardings=rows_sh)(out)
    return users, out
