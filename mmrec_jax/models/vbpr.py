"""VBPR (He & McAuley, AAAI 2016): ID factors plus content factors from item features.

``x_ui = beta_i + gamma_u . gamma_i + theta_u . (E f_i) + beta' . f_i`` (the global and
user biases of the paper cancel in every pairwise/softmax loss and in ranking, so they
are left out). ``f_i`` concatenates the configured modalities (the paper's visual CNN
feature; here any of text/image/graph) with missing ones zero-imputed. Written as one
dot product of
``user = [gamma_u, theta_u, 1, 1]`` and ``item = [gamma_i, E f_i, beta' f_i, beta_i]``.
``model.embed_dim`` is split between gamma (ceil half) and theta (floor half).

Serving without retraining (``vbpr``, declared in models/registry.py): a new user is
folded in by implicit-ALS solve for [gamma_u, theta_u] (bias columns kept); a new item
is embedded as the content part of the item vector: [0, E f, beta' f, 0].
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from mmrec_jax.errors import ConfigError
from mmrec_jax.layers.embedding import Embed
from mmrec_jax.layers.projection import dense
from mmrec_jax.models.base import Recommender


class VBPR(Recommender):
  def __init__(
    self,
    cfg: ml_collections.ConfigDict,
    *,
    num_users: int,
    num_items: int,
    feature_dims: Mapping[str, int],
    rngs: nnx.Rngs,
  ):
    if cfg.embed_dim < 2:
      raise ConfigError(f"model.embed_dim={cfg.embed_dim} must be >= 2 for vbpr")
    self.modalities = tuple(sorted(feature_dims))
    k_theta = cfg.embed_dim // 2
    k_gamma = cfg.embed_dim - k_theta
    self.k_gamma = k_gamma
    f_dim = sum(feature_dims[m] for m in self.modalities)
    self.gamma_user = Embed(num_users, k_gamma, "users", rngs=rngs)
    self.theta_user = Embed(num_users, k_theta, "users", rngs=rngs)
    self.gamma_item = Embed(num_items, k_gamma, "items", rngs=rngs)
    self.item_bias = Embed(num_items, 1, "items", rngs=rngs, stddev=0.0)
    self.proj = dense(f_dim, k_theta, (None, "embed"), rngs=rngs, use_bias=False)  # E
    self.feat_bias = dense(f_dim, 1, (None, None), rngs=rngs, use_bias=False)  # beta'

  def features(self, feats: Mapping[str, jax.Array], masks: Mapping[str, jax.Array]) -> jax.Array:
    """``f_i``: concatenated modality features, zeroed where the modality is missing."""
    parts = [
      jnp.where(masks[m][..., None], feats[m], jnp.zeros((), feats[m].dtype))
      for m in self.modalities
    ]
    return jnp.concatenate(parts, axis=-1)

  def user_repr(self, ids, *, rng=None) -> jax.Array:
    g = self.gamma_user(ids)
    t = self.theta_user(ids)
    ones = jnp.ones((*g.shape[:-1], 2), g.dtype)
    return jnp.concatenate([g, t, ones], axis=-1)

  def content_item_repr(self, ids, feats, masks) -> jax.Array:
    """The item vector from features alone (a new item): ``[0, E f, beta' f, 0]``."""
    v = self.item_repr(ids, feats, masks)
    k_gamma = self.k_gamma
    keep = jnp.ones((v.shape[-1],), v.dtype).at[:k_gamma].set(0.0).at[-1].set(0.0)
    return v * keep

  def item_repr(self, ids, feats, masks, *, rng=None) -> jax.Array:
    f = self.features(feats, masks)
    return jnp.concatenate(
      [self.gamma_item(ids), self.proj(f), self.feat_bias(f), self.item_bias(ids)], axis=-1
    )
