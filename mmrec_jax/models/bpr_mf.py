"""BPR-MF (Rendle et al., UAI 2009): user and item ID factors, score = dot product."""

from __future__ import annotations

from collections.abc import Mapping

import jax
import ml_collections
from flax import nnx

from mmrec_jax.layers.embedding import Embed
from mmrec_jax.models.base import Recommender


class BPRMF(Recommender):
  """``score(u, i) = p_u . q_i``; trained with any loss of ``mmrec_jax.losses``."""

  def __init__(self, cfg: ml_collections.ConfigDict, *, num_users: int, num_items: int,
               feature_dims: Mapping[str, int], rngs: nnx.Rngs):
    del feature_dims   # IDs only
    self.modalities = ()
    self.user_embed = Embed(num_users, cfg.embed_dim, "users", rngs=rngs)
    self.item_embed = Embed(num_items, cfg.embed_dim, "items", rngs=rngs)

  def user_repr(self, ids, *, rng=None) -> jax.Array:
    return self.user_embed(ids)

  def item_repr(self, ids, feats, masks, *, rng=None) -> jax.Array:
    return self.item_embed(ids)
