"""Multimodal two-tower model: user ID tower . fused multimodal item tower.

Item tower: K sources, each an embedding of width ``model.embed_dim``:
  * the item ID embedding (when ``model.use_ids``; a row-sharded table), always present;
  * per modality m: ``ModalityMLP(d_m -> model.hidden_dim -> embed_dim)`` of the frozen
    feature, present where the item has m (mask), and in training dropped per example
    with probability ``model.modality_dropout`` (the whole modality embedding), which
    teaches the tower to cope with missing modalities (cold or partially described items);
then ``model.fusion`` (``mmrec_jax.layers.fusion``) combines them. ``model.dropout``
applies inside the MLPs. User tower: the user ID embedding.

Items never seen in training (item cold start), ``model.id_dropout = p > 0``: as in
DropoutNet (Volkovs et al., NeurIPS 2017), each training example drops the item's ID source
with probability ``p``, so the content sources alone must rank well; at evaluation an item
without train interactions (``masks[base.TRAINED_ITEMS]``, placed by the Task from the train
counts) is scored without its ID source -- its ID row was only ever pushed down as a
sampled negative, never up -- exactly as training's dropped examples and serving's new
items are.

Serving without retraining (``two_tower``, declared in models/registry.py): a new user
is folded in by implicit-ALS solve against the item-tower vectors; a new item is
embedded as the item tower on the features, ID source absent.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from mmrec_jax.errors import ConfigError
from mmrec_jax.layers.embedding import Embed
from mmrec_jax.layers.fusion import make_fusion
from mmrec_jax.layers.projection import ModalityMLP
from mmrec_jax.models.base import TRAINED_ITEMS, Recommender


class TwoTower(Recommender):
  def __init__(
    self,
    cfg: ml_collections.ConfigDict,
    *,
    num_users: int,
    num_items: int,
    feature_dims: Mapping[str, int],
    rngs: nnx.Rngs,
  ):
    self.modalities = tuple(sorted(feature_dims))
    self.use_ids = bool(cfg.use_ids)
    if not self.use_ids and not self.modalities:
      raise ConfigError("model.use_ids=False needs at least one modality in data.modalities")
    if not 0.0 <= cfg.modality_dropout < 1.0:
      raise ConfigError(f"model.modality_dropout={cfg.modality_dropout} must be in [0, 1)")
    self.id_dropout = float(cfg.get("id_dropout", 0.0))
    if not 0.0 <= self.id_dropout < 1.0:
      raise ConfigError(f"model.id_dropout={self.id_dropout} must be in [0, 1)")
    if self.id_dropout > 0 and not (self.use_ids and self.modalities):
      raise ConfigError(
        "model.id_dropout > 0 needs item IDs (model.use_ids) and at least one modality"
      )
    d = cfg.embed_dim
    self.modality_dropout = float(cfg.modality_dropout)
    self.user_embed = Embed(num_users, d, "users", rngs=rngs)
    if self.use_ids:
      self.item_embed = Embed(num_items, d, "items", rngs=rngs)
    self.towers = nnx.Dict(
      {
        m: ModalityMLP(
          feature_dims[m], cfg.hidden_dim, d, rngs=rngs, dropout_rate=float(cfg.dropout)
        )
        for m in self.modalities
      }
    )
    self.fusion = make_fusion(cfg.fusion, int(self.use_ids) + len(self.modalities), d, rngs=rngs)

  def user_repr(self, ids, *, rng=None) -> jax.Array:
    return self.user_embed(ids)

  def content_item_repr(self, ids, feats, masks) -> jax.Array:
    """The item tower from features alone (a new item): the ID source marked absent."""
    embs, present = self.sources(ids, feats, masks)
    if self.use_ids:
      present = present.at[:, 0].set(False)
    return self.fusion(embs, present)

  def sources(self, ids, feats, masks, *, rng=None) -> tuple[jax.Array, jax.Array]:
    """Per-source embeddings ``[..., K, D]`` and presence ``[..., K]`` (before fusion)."""
    embs, present = [], []
    keys = (
      jax.random.split(rng, 2 * len(self.modalities) + 1)
      if rng is not None
      else [None] * (2 * len(self.modalities) + 1)
    )
    if self.use_ids:
      e = self.item_embed(ids)
      embs.append(e)
      has_id = jnp.ones(e.shape[:-1], bool)
      if self.id_dropout > 0 and rng is not None:
        has_id = jax.random.bernoulli(keys[-1], 1.0 - self.id_dropout, has_id.shape)
      elif self.id_dropout > 0 and ids is None and TRAINED_ITEMS in masks:
        has_id = masks[TRAINED_ITEMS]  # evaluation: cold items go by content (module doc)
      present.append(has_id)
    for j, m in enumerate(self.modalities):
      embs.append(self.towers[m](feats[m], keys[2 * j]))
      keep = masks[m]
      if rng is not None and self.modality_dropout > 0:
        keep = keep & jax.random.bernoulli(keys[2 * j + 1], 1.0 - self.modality_dropout, keep.shape)
      present.append(keep)
    return jnp.stack(embs, axis=-2), jnp.stack(present, axis=-1)

  def item_repr(self, ids, feats, masks, *, rng=None) -> jax.Array:
    embs, present = self.sources(ids, feats, masks, rng=rng)
    return self.fusion(embs, present)
