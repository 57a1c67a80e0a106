"""BPR-MF (Rendle et al., UAI 2009): user and item ID factors, score = dot product.

With ``model.item_bias=True`` the score is ``p_u . q_i + b_i``, the form Cornac, implicit
and LibRec train: the bias carries item popularity, so the factors need not. It is kept
in the one dot-product interface of :mod:`mmrec_jax.models.base` as an extra column:
``user = [p_u, 1]``, ``item = [q_i, b_i]`` (the bias is an ``items`` table of width 1,
row-sharded and updated sparsely like the factors).

Serving without retraining (``bpr_mf``, declared in models/registry.py): a new user is
folded in by implicit-ALS solve against the item factors (item bias kept as an offset);
a new item cannot be embedded from features (one-line error).
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from mmrec_jax.layers.embedding import Embed
from mmrec_jax.models.base import Recommender


class BPRMF(Recommender):
  """``score(u, i) = p_u . q_i [+ b_i]``; trained with any loss of ``mmrec_jax.losses``."""

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
    self.modalities = ()
    self.use_bias = bool(cfg.item_bias)
    self.user_embed = Embed(num_users, cfg.embed_dim, "users", rngs=rngs)
    self.item_embed = Embed(num_items, cfg.embed_dim, "items", rngs=rngs)
    if self.use_bias:
      self.item_bias = Embed(num_items, 1, "items", rngs=rngs, stddev=0.0)

  def user_repr(self, ids, *, rng=None) -> jax.Array:
    p = self.user_embed(ids)
    if not self.use_bias:
      return p
    return jnp.concatenate([p, jnp.ones((*p.shape[:-1], 1), p.dtype)], axis=-1)

  def item_repr(self, ids, feats, masks, *, rng=None) -> jax.Array:
    q = self.item_embed(ids)
    if not self.use_bias:
      return q
    return jnp.concatenate([q, self.item_bias(ids)], axis=-1)
