"""DeepFM: a factorisation machine and a deep tower over the same field embeddings.

Guo et al., DeepFM, IJCAI 2017: ``logit = b + first order + FM + deep``. Fields are the
user, item and side-feature embeddings plus the frozen features projected to
``embed_dim`` by one linear layer; first order: per-id scalar weights of the user and
item (1-wide tables), of each side category (1-wide bags) and a linear term of the
frozen features; FM: ``0.5 * sum_d ((sum_f v_fd)^2 - sum_f v_fd^2)``; deep:
``num_layers`` x ``hidden_dim`` ReLU over the concatenated fields, one output.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from mmrec_jax.layers.embedding import Embed
from mmrec_jax.layers.embedding_bag import CatEmbed
from mmrec_jax.layers.projection import dense
from mmrec_jax.models.ranker_base import MLP, PointwiseRanker


class DeepFM(PointwiseRanker):
  def __init__(self, cfg, *, num_users, num_items, feature_dims, rngs, side_vocab=None):
    super().__init__(
      cfg,
      num_users=num_users,
      num_items=num_items,
      feature_dims=feature_dims,
      rngs=rngs,
      side_vocab=side_vocab,
    )
    d = self.embed_dim
    self.user_w = Embed(num_users, 1, "users", rngs=rngs, stddev=0.0)
    self.item_w = Embed(num_items, 1, "items", rngs=rngs, stddev=0.0)
    self.side_w = nnx.Dict(
      {n: CatEmbed(int(side_vocab[n]), 1, rngs=rngs, stddev=0.0) for n in self.side_names}
    )
    self.proj = dense(self.dense_dim, d, (None, "embed"), rngs=rngs) if self.dense_dim else None
    self.linear = dense(self.dense_dim, 1, (None, None), rngs=rngs) if self.dense_dim else None
    self.bias = nnx.Param(jnp.zeros((1,), jnp.float32))
    f = self.num_fields + int(self.proj is not None)
    self.deep = MLP(f * d, int(cfg.hidden_dim), int(cfg.num_layers), 1, rngs=rngs)

  def logits(self, users, items, side, feats, masks, *, rng=None) -> jax.Array:
    del rng
    e = self.embedding_fields(users, items, side)  # [n, F, D]
    first = self.user_w(users)[..., 0] + self.item_w(items)[..., 0]
    for n in self.side_names:
      first = first + self.side_w[n](side[n])[..., 0]
    if self.proj is not None:
      f = self.dense_features(feats, masks).astype(e.dtype)
      e = jnp.concatenate([e, self.proj(f)[..., None, :]], axis=-2)
      first = first + self.linear(f)[..., 0]
    s = jnp.sum(e, axis=-2)
    fm = 0.5 * jnp.sum(s * s - jnp.sum(e * e, axis=-2), axis=-1)
    deep = self.deep(e.reshape(*e.shape[:-2], -1))[..., 0]
    return self.bias[...][0] + first + fm + deep
