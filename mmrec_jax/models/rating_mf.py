"""Rating-prediction matrix factorisation: biased MF and PMF, trained on explicit ratings.

Why they are dot-product models like every other: the evaluator scores
``user_repr(u) . item_repr(i)`` for full ranking and for MAE/RMSE
(``evaluation/rating.py``), so biases travel as extra columns of the towers and one model
serves rating prediction and top-K ranking unchanged. Both train in the ``rating`` regime
(``step/rating.py``): squared error against ``batch['rating']`` plus L2 on the rows used.

* :class:`BiasedMF` (Koren, Bell & Volinsky, IEEE Computer 2009; Cornac's ``MF`` with
  ``use_bias=True``): ``r_hat = mu + b_u + b_i + p_u . q_i`` as ``user = [p_u, b_u, 1]``,
  ``item = [q_i, 1, b_i + mu]``. ``mu`` is a learned scalar (a dense parameter, so the
  model needs no data statistics at construction), starting at ``model.rating_offset``.
* :class:`PMF` (Salakhutdinov & Mnih, NIPS 2007, the linear-Gaussian model of its eq. 1):
  ``r_hat = p_u . q_i``, optionally around a fixed offset ``model.rating_offset`` carried
  as a constant column (``user = [p_u, 1]``, ``item = [q_i, offset]``). Cornac's default
  PMF (``variant='non_linear'``) squashes ``p_u . q_i`` through a logistic on ratings
  rescaled to [0, 1]: that likelihood is ``eval.rating_link='sigmoid'``, applied by the
  rating regime in training and by the evaluator for MAE/RMSE, so the score stays a dot
  product (the logistic is monotone: the ranking is the dot product's). Factors start at
  N(0, 0.001^2), Cornac's PMF initialisation (``cornac/models/pmf/cython/pmf.pyx``).

Serving without retraining (``mf``, declared in models/registry.py): a new user is
folded in by implicit-ALS solve against the item factors (bias columns kept); a new item
cannot be embedded from features (one-line error).

Serving without retraining (``pmf``, declared in models/registry.py): a new user is
folded in by implicit-ALS solve against the item factors (bias columns kept); a new item
cannot be embedded from features (one-line error).
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from mmrec_jax.layers.embedding import Embed
from mmrec_jax.models.base import Recommender

INIT_STDDEV = 0.01  # Cornac's MF initialises factors with N(0, 0.01^2)
PMF_INIT_STDDEV = 0.001  # Cornac's PMF: N(0, 0.001^2) (pmf.pyx, _init_factors)


class BiasedMF(Recommender):
  """``r_hat(u, i) = mu + b_u + b_i + p_u . q_i`` (module doc)."""

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
    self.user_embed = Embed(num_users, cfg.embed_dim, "users", rngs=rngs, stddev=INIT_STDDEV)
    self.item_embed = Embed(num_items, cfg.embed_dim, "items", rngs=rngs, stddev=INIT_STDDEV)
    self.user_bias = Embed(num_users, 1, "users", rngs=rngs, stddev=0.0)
    self.item_bias = Embed(num_items, 1, "items", rngs=rngs, stddev=0.0)
    self.global_bias = nnx.Param(
      jnp.full((1,), float(cfg.rating_offset), jnp.float32), out_sharding=(None,)
    )

  def user_repr(self, ids, *, rng=None) -> jax.Array:
    p = self.user_embed(ids)
    ones = jnp.ones((*p.shape[:-1], 1), p.dtype)
    return jnp.concatenate([p, self.user_bias(ids), ones], axis=-1)

  def item_repr(self, ids, feats, masks, *, rng=None) -> jax.Array:
    q = self.item_embed(ids)
    ones = jnp.ones((*q.shape[:-1], 1), q.dtype)
    mu = self.global_bias[...].astype(q.dtype)
    return jnp.concatenate([q, ones, self.item_bias(ids) + mu], axis=-1)


class PMF(Recommender):
  """``r_hat(u, i) = offset + p_u . q_i`` (module doc)."""

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
    self.offset = float(cfg.rating_offset)
    self.user_embed = Embed(num_users, cfg.embed_dim, "users", rngs=rngs, stddev=PMF_INIT_STDDEV)
    self.item_embed = Embed(num_items, cfg.embed_dim, "items", rngs=rngs, stddev=PMF_INIT_STDDEV)

  def user_repr(self, ids, *, rng=None) -> jax.Array:
    p = self.user_embed(ids)
    return jnp.concatenate([p, jnp.ones((*p.shape[:-1], 1), p.dtype)], axis=-1)

  def item_repr(self, ids, feats, masks, *, rng=None) -> jax.Array:
    q = self.item_embed(ids)
    return jnp.concatenate([q, jnp.full((*q.shape[:-1], 1), self.offset, q.dtype)], axis=-1)
