"""Base class of graph recommenders: representations come from propagating whole tables.

A graph model cannot score a batch from the batch's rows alone: the representation of a
user is a weighted sum over its multi-hop neighbourhood, i.e. over (almost) every row of
every table. The registry declares these models ``regime="graph"``, and the step trains them with
*whole-table* gradients (row-sharded like the tables; the row-wise optimizer then updates
every row) instead of the gathered-rows path of the other models. Cost per step grows
with the number of edges (propagation), not with users x items.

The graph is data, not state: :meth:`graph_data` builds it once from the TRAIN split
(``DataInfo.train_users/train_items``) and the frozen features, and the Task passes it to
the jitted step and evaluation beside the frozen feature tables. Checkpoints hold only
parameters and optimizer state.

Contract (all arrays padded: ``U`` = padded users, ``I`` = padded items):
  * ``graph_data(model_cfg, info, mesh, num_users=U, num_items=I, feats, masks)`` ->
    pytree of device arrays (classmethod; ``feats``/``masks`` are the frozen tables);
  * ``propagate(graph, feats, masks, *, rng) -> (users [U, D], items [I, D])`` -- the
    training-time representations (``rng`` None in evaluation);
  * ``aux_loss(users, items, user, items_ids, graph, feats, masks, *, rng)`` -> scalar
    added to the loss (modality BPR terms, self-supervised terms); default 0;
  * ``score_reprs(users, items)`` -> the dot-product towers used for ranking
    (default: identity; BM3 applies its predictor);
  * ``uses_rank_loss``: False for models trained without negatives (BM3).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
from jax.sharding import Mesh

from mmrec_jax.errors import DataError
from mmrec_jax.graph import propagation
from mmrec_jax.models import registry
from mmrec_jax.models.base import Recommender


def hparam(cfg: ml_collections.ConfigDict, field: str) -> float:
  """``cfg.<field>``, or the paper default of ``cfg.name`` (its registry entry) at -1."""
  value = float(getattr(cfg, field))
  if value >= 0:
    return value
  return registry.paper_default(cfg.name, field)


class GraphRecommender(Recommender):
  """A recommender whose towers are computed over the whole graph (see module doc)."""

  uses_rank_loss = True
  mesh: Mesh | None = None  # set by the Task (static): edges are sharded on its 'data'

  @classmethod
  def graph_data(
    cls,
    model_cfg: ml_collections.ConfigDict,
    info: Any,
    mesh: Mesh,
    *,
    num_users: int,
    num_items: int,
    feats: Mapping[str, jax.Array],
    masks: Mapping[str, jax.Array],
  ) -> dict[str, Any]:
    """The normalised user-item training graph; subclasses add item-item graphs.

    Built for ``model_cfg.propagation`` (``propagation.BipartiteGraph``): the models call
    ``propagation.to_users/to_items/lightgcn_propagate`` and never see the method.
    """
    del feats, masks
    if getattr(info, "train_users", None) is None or getattr(info, "train_items", None) is None:
      raise DataError(
        "DataInfo.train_users/train_items",
        "graph models need the train-split interactions (build_data_info "
        "fills them from ds.split('train'))",
      )
    return {
      "ui": propagation.user_item_graph(
        info.train_users,
        info.train_items,
        num_users,
        num_items,
        mesh,
        method=model_cfg.propagation,
      )
    }

  def propagate(self, graph, feats, masks, *, rng=None) -> tuple[jax.Array, jax.Array]:
    raise NotImplementedError

  def aux_loss(
    self, users, items, user_ids, item_ids, graph, feats, masks, *, rng=None
  ) -> jax.Array:
    del users, items, user_ids, item_ids, graph, feats, masks, rng
    return jnp.zeros((), jnp.float32)

  def score_reprs(self, users: jax.Array, items: jax.Array) -> tuple[jax.Array, jax.Array]:
    return users, items

  # The per-batch towers of Recommender do not exist for graph models: a row's
  # representation depends on the whole graph. The Task never calls these.
  def user_repr(self, ids, *, rng=None):
    raise NotImplementedError(
      "graph models are scored through propagate(); see mmrec_jax/models/graph_base.py"
    )

  def item_repr(self, ids, feats, masks, *, rng=None):
    raise NotImplementedError(
      "graph models are scored through propagate(); see mmrec_jax/models/graph_base.py"
    )


def bpr(pos: jax.Array, neg: jax.Array) -> jax.Array:
  """``mean(-log sigmoid(pos - neg))`` over all (example, negative) pairs."""
  pos, neg = pos.astype(jnp.float32), neg.astype(jnp.float32)
  return jnp.mean(-jax.nn.log_sigmoid(pos[..., None] - neg))


def modality_weights(modalities: tuple[str, ...], image_weight: float) -> dict[str, float]:
  """FREEDOM/LATTICE-style mixing of per-modality item graphs.

  The papers use ``image_weight`` for image and ``1 - image_weight`` for text; with other
  modality sets, image keeps its weight and the rest share the remainder equally.
  """
  if not modalities:
    return {}
  others = [m for m in modalities if m != "image"]
  if "image" not in modalities:
    return {m: 1.0 / len(others) for m in others}
  if not others:
    return {"image": 1.0}
  rest = (1.0 - image_weight) / len(others)
  return {m: (image_weight if m == "image" else rest) for m in modalities}
