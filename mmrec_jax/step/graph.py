"""The whole-table (graph) regime: models that propagate every row over a graph.

The model propagates every row over the graph, so the gradient of a table is not
confined to the batch rows; it is taken w.r.t. the whole (row-sharded) table and the
row-wise optimizer updates all rows (for Adam: exactly dense Adam, as in the papers).
The L2 term is the same per-batch one as in the rows regime (layer-0 rows the batch
touches, counted with multiplicity). The graph itself is frozen data built once from the
train split (``models/graph_base.py``), placed beside the feature tables. The step reads
only ids, so its epochs can be made on device (``device_epochs``, data/device_epoch.py).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import traverse_util

from mmrec_jax.errors import ConfigError
from mmrec_jax.optim.sparse import take_valid_rows
from mmrec_jax.step.regime import Regime, Setup
from mmrec_jax.step.types import Frozen, State
from mmrec_jax.step.update import (
  apply_gradients,
  cast,
  constrain_batch,
  score_summary,
  weighted_sq_sum,
)


class GraphRegime(Regime):
  """Whole-table gradients through ``propagate`` (see module doc)."""

  # The step reads only ids (user, positives, negatives), so its batches can be made on
  # device and many steps run per call (data/device_epoch.py). On one CPU device this
  # took the ML-100K LightGCN epoch from ~230 to ~175-200 ms (no grain batch, host
  # copy and dispatch per step; benchmarks/RESULTS_graph_peers.md). The host-CSR
  # propagation's callback runs inside the loop like any other op.
  device_epochs = True

  def __init__(self, setup: Setup):
    if setup.contract.stream:
      raise ConfigError(
        f"model.name={setup.config.model.name!r} propagates over the whole "
        "catalogue and needs the features on device; set "
        "input.stream_features=False"
      )
    super().__init__(setup)

  @staticmethod
  def prepare_abstract(abstract, mesh) -> None:
    """The model's static mesh: its edge lists are sharded on the 'data' axis."""
    abstract.mesh = mesh

  def frozen_data(self, frozen: Frozen) -> Frozen:
    s = self.s
    frozen["graph"] = s.model_class.graph_data(
      s.config.model,
      s.info,
      s.mesh,
      num_users=s.padded_users,
      num_items=s.padded_items,
      feats=frozen["feat"],
      masks=frozen["mask"],
    )
    return frozen

  def train_fn(
    self, state: State, batch: dict[str, jax.Array], frozen: Frozen
  ) -> tuple[State, dict[str, jax.Array]]:
    s = self.s
    cfg, cdt, layout = s.config, s.compute_dtype, s.layout
    user = batch["user"]
    b = user.shape[0]
    items = s.contract.item_ids(batch)
    rng = jax.random.fold_in(jax.random.PRNGKey(cfg.seed), state["step"])
    rng_model, rng_aux = jax.random.split(rng)
    tables = traverse_util.flatten_dict(state["params"]["tables"])
    counts = {
      "users": jax.ops.segment_sum(jnp.ones(b), user, num_segments=s.padded_users),
      "items": jax.ops.segment_sum(
        jnp.ones(items.size), items.reshape(-1), num_segments=s.padded_items
      ),
    }
    feats = {m: f.astype(cdt) for m, f in frozen["feat"].items()}

    def loss_fn(tables, dense):
      model = layout.merge(traverse_util.unflatten_dict(cast(tables, cdt)), cast(dense, cdt))
      users_all, items_all = model.propagate(frozen["graph"], feats, frozen["mask"], rng=rng_model)
      aux_loss = model.aux_loss(
        users_all, items_all, user, items, frozen["graph"], feats, frozen["mask"], rng=rng_aux
      )
      su, si = model.score_reprs(users_all, items_all)
      # Batch ids are always in range: no per-element bounds check and fill select.
      u = constrain_batch(s.mesh, take_valid_rows(su, user))
      it = constrain_batch(s.mesh, take_valid_rows(si, items))
      if model.uses_rank_loss:
        rank_loss, pos_s, neg_s, neg_valid = s.objective(u, it, batch)
      else:
        sc = jnp.einsum("bd,bkd->bk", u, it, preferred_element_type=jnp.float32)
        rank_loss, pos_s, neg_s, neg_valid = jnp.zeros((), jnp.float32), sc[:, 0], sc[:, 1:], None
      l2 = sum(weighted_sq_sum(counts[layout.row_kind(k)], t) for k, t in tables.items()) / b
      loss = rank_loss + cfg.loss.l2 * l2 + aux_loss
      return loss, {
        "rank_loss": rank_loss,
        "l2": l2,
        "aux_loss": aux_loss,
        **score_summary(pos_s, neg_s, neg_valid),
      }

    (loss, aux), (g_tables, g_dense) = jax.value_and_grad(loss_fn, argnums=(0, 1), has_aux=True)(
      tables, state["params"]["dense"]
    )
    # Whole tables (ids None, no mask): every row and its optimizer state updated
    # elementwise, without gathering/scattering all rows by id (a per-element loop on
    # XLA:CPU). Same arithmetic as passing every row id.
    whole = {k: None for k in tables}
    return apply_gradients(
      layout,
      state,
      tables,
      whole,
      tables,
      g_tables,
      g_dense,
      loss,
      aux,
      cfg.optimizer.grad_clip,
    )

  def eval_fn(self, params: State, frozen: Frozen) -> tuple[jax.Array, jax.Array]:
    model = self.s.layout.merge(params["tables"], params["dense"])
    users, items = model.score_reprs(
      *model.propagate(frozen["graph"], frozen["feat"], frozen["mask"], rng=None)
    )
    real = jnp.arange(items.shape[0]) < self.s.num_items
    return users.astype(jnp.float32), jnp.where(real[:, None], items, 0).astype(jnp.float32)
