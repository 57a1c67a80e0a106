"""LightGCN (He et al., SIGIR 2020): the ID-only graph baseline.

``E^(l+1) = D^-1/2 A D^-1/2 E^(l)`` over the user-item training graph (no feature
transforms, no non-linearities), final embeddings the mean of layers 0..L; score = dot
product. Trained with BPR plus the paper's L2 on the layer-0 (ego) rows of the batch,
``reg_weight * (|e_u|^2 + |e_i+|^2 + |e_i-|^2) / 2`` per example (``model.reg_weight``,
paper 1e-4).

Serving without retraining (``lightgcn``, declared in models/registry.py): a new user is
folded in by implicit-ALS solve against the propagated item vectors (approximate: the
graph is not updated); a new item cannot be embedded from features (one-line error).
"""

from __future__ import annotations

from collections.abc import Mapping

import jax.numpy as jnp
import ml_collections
from flax import nnx

from mmrec_jax.errors import ConfigError
from mmrec_jax.graph import propagation
from mmrec_jax.layers.embedding import Embed
from mmrec_jax.models.graph_base import GraphRecommender, hparam
from mmrec_jax.optim.sparse import take_valid_rows


class LightGCN(GraphRecommender):
  def __init__(
    self,
    cfg: ml_collections.ConfigDict,
    *,
    num_users: int,
    num_items: int,
    feature_dims: Mapping[str, int],
    rngs: nnx.Rngs,
  ):
    del feature_dims  # IDs only
    if cfg.num_layers < 0:
      raise ConfigError(f"model.num_layers={cfg.num_layers} must be >= 0")
    self.modalities = ()
    self.num_layers = int(cfg.num_layers)
    self.reg_weight = hparam(cfg, "reg_weight")
    self.user_embed = Embed(num_users, cfg.embed_dim, "users", rngs=rngs)
    self.item_embed = Embed(num_items, cfg.embed_dim, "items", rngs=rngs)

  def propagate(self, graph, feats, masks, *, rng=None):
    return propagation.lightgcn_propagate(
      self.user_embed(None), self.item_embed(None), graph["ui"], self.num_layers, self.mesh
    )

  def aux_loss(self, users, items, user_ids, item_ids, graph, feats, masks, *, rng=None):
    if self.reg_weight == 0:
      return jnp.zeros((), jnp.float32)
    u0 = take_valid_rows(self.user_embed(None), user_ids).astype(jnp.float32)
    i0 = take_valid_rows(self.item_embed(None), item_ids).astype(jnp.float32)
    return self.reg_weight * 0.5 * (jnp.sum(u0 * u0) + jnp.sum(i0 * i0)) / user_ids.shape[0]
