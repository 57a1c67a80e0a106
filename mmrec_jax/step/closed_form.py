"""The closed-form regime: models fitted by solves over the whole train split, not by SGD.

EASE, ItemKNN and MostPop are fitted by one closed-form computation; iALS by alternating
least-squares sweeps (``models/fitted_base.py``). Here one *step* is one full sweep
(``model.fit_step``), and an epoch is one step (``steps_per_epoch_override``; the loop in
``loop/setup.py`` reads it), so validation after every epoch, early stopping on the
validation curve, checkpoints and resume are the loop's, unchanged. A one-shot model is
complete after its first sweep, so its run is capped at one epoch (``max_epochs``).

The pipeline still produces batches (the loop is the same for every regime); the step
reads only their ``user`` key and ignores it. The data the fit needs (the binary
interaction matrix, edge lists with confidences) is frozen data built once from the train
split by ``model_class.fit_data``, placed beside the feature tables.

No optimizer: the fitted values are written, not stepped, so the layout's optimizers are
replaced by stateless ones (no Adam moments of an ``I x I`` matrix in memory or in
checkpoints).

Users with no train interaction: an item-item model scores every item 0 for them (their
row of X is empty) and a factor model fits them a zero vector, so their ranking would be
the tie order. They are ranked by train popularity instead: the evaluation towers get
one more column, 1 for such a user and 0 otherwise, against ``count_i / max count``, so
every other user's scores are unchanged. Per-user splits have no such user; a global
temporal split has many (new users), and the BPR peers rank them by their item biases.
The counts are recency-weighted when the train split has timestamps, with a half-life
chosen on the train split alone (``model.fallback_half_life``; models/recency.py).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from mmrec_jax import sharding
from mmrec_jax.errors import ConfigError
from mmrec_jax.layers.embedding import Table
from mmrec_jax.models import recency
from mmrec_jax.models.fitted_base import FittedRecommender
from mmrec_jax.optim.sparse import make_sparse_optimizer
from mmrec_jax.step import placement
from mmrec_jax.step.batch import BatchContract
from mmrec_jax.step.regime import Regime, Setup
from mmrec_jax.step.state import StateLayout
from mmrec_jax.step.types import Frozen, State


@dataclasses.dataclass(frozen=True)
class FitContract(BatchContract):
  """Reads only ``user`` (ignored): the fit uses the whole train split, not the batch."""

  def keys(self) -> tuple[str, ...]:
    return ("user",)

  def abstract(
    self, mesh: Mesh, batch_size: int, num_negatives: int = 1
  ) -> dict[str, jax.ShapeDtypeStruct]:
    del num_negatives
    sh = NamedSharding(mesh, P(sharding.DATA))
    return {"user": jax.ShapeDtypeStruct((batch_size,), jnp.int32, sharding=sh)}

  def item_ids(self, batch: Mapping[str, jax.Array]) -> jax.Array:
    raise NotImplementedError("the closed-form regime reads no items from a batch")


def _drop_optimizers(layout: StateLayout) -> None:
  """Stateless optimizers on ``layout`` (in place: the Task holds this object)."""
  layout.sparse_opt = make_sparse_optimizer("sgd", 0.0)
  layout.dense_tx = optax.set_to_zero()
  layout.abstract = jax.eval_shape(layout.init_fn, jax.random.PRNGKey(0))
  layout.shardings = layout._make_shardings()  # recomputed for the new state


class ClosedFormRegime(Regime):
  """One ``fit_step`` sweep per step, one step per epoch (see module doc)."""

  steps_per_epoch_override = 1

  def __init__(self, setup: Setup):
    if not issubclass(setup.model_class, FittedRecommender):
      raise ConfigError(
        f"model.name={setup.config.model.name!r}: the closed_form regime needs a "
        "FittedRecommender (models/fitted_base.py)"
      )
    super().__init__(setup)
    self.max_epochs = 1 if setup.model_class.one_shot else None
    _drop_optimizers(setup.layout)

  @staticmethod
  def batch_contract(contract: BatchContract) -> BatchContract:
    return FitContract(in_batch=False, use_logq=False, stream=False, modalities=(), feature_dims={})

  @staticmethod
  def prepare_abstract(abstract, mesh) -> None:
    abstract.mesh = mesh

  def frozen_data(self, frozen: Frozen) -> Frozen:
    s = self.s
    frozen["fit"] = s.model_class.fit_data(
      s.config.model, s.info, s.mesh, num_users=s.padded_users, num_items=s.padded_items
    )
    frozen["fallback"] = self._fallback_data()
    return frozen

  def _fallback_data(self) -> dict[str, jax.Array]:
    """(users [U, 1]: 1 = no train interaction, items [I, 1]: popularity) (module doc)."""
    s = self.s
    pop = recency.fallback_popularity(s.config.model, s.info, s.num_items)
    empty = np.zeros(s.num_users, np.float32)
    users = getattr(s.info, "train_users", None)
    if users is not None:
      empty = (np.bincount(np.asarray(users), minlength=s.num_users) == 0).astype(np.float32)
    return {
      "users": placement.put_rows(s.mesh, empty[:, None], s.padded_users, "users"),
      "items": placement.put_rows(s.mesh, pop[:, None], s.padded_items, "items"),
    }

  def train_fn(
    self, state: State, batch: dict[str, jax.Array], frozen: Frozen
  ) -> tuple[State, dict[str, jax.Array]]:
    del batch  # the fit reads the whole train split (frozen["fit"])
    layout = self.s.layout
    model = layout.merge(state["params"]["tables"], state["params"]["dense"])
    metrics = model.fit_step(frozen["fit"], state["step"])
    _, tables, dense, _ = nnx.split(model, Table, nnx.Param, ...)
    new_state = {
      "step": state["step"] + 1,
      "params": {"tables": nnx.to_pure_dict(tables), "dense": nnx.to_pure_dict(dense)},
      "opt_state": state["opt_state"],
    }
    return new_state, {k: jnp.asarray(v, jnp.float32) for k, v in metrics.items()}

  def eval_fn(self, params: State, frozen: Frozen) -> tuple[jax.Array, jax.Array]:
    model = self.s.layout.merge(params["tables"], params["dense"])
    users, items = model.towers(frozen["fit"])
    users = jnp.concatenate([users, frozen["fallback"]["users"].astype(users.dtype)], axis=1)
    items = jnp.concatenate([items, frozen["fallback"]["items"].astype(items.dtype)], axis=1)
    real = jnp.arange(items.shape[0]) < self.s.num_items
    return users.astype(jnp.float32), jnp.where(real[:, None], items, 0).astype(jnp.float32)
