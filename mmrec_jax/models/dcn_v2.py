"""DCN-v2: full-rank cross layers over the concatenated fields, then a deep tower.

Wang et al., DCN V2, WWW 2021, the *stacked* structure: ``x0 = [user_emb, item_emb, side
bags..., P f]`` where the frozen features ``f`` enter through one linear projection ``P``
to ``embed_dim`` (so the cross weights stay ``K x K`` with ``K = (F + 1) * embed_dim``
instead of growing with a 3072-d pretrained table); ``model.cross_layers`` layers
``x_{l+1} = x0 * (W_l x_l + b_l) + x_l``; then ``num_layers`` x ``hidden_dim`` ReLU and
one output.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from mmrec_jax.layers.projection import dense
from mmrec_jax.models.ranker_base import MLP, PointwiseRanker


class DCNv2(PointwiseRanker):
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
    self.proj = dense(self.dense_dim, d, (None, "embed"), rngs=rngs) if self.dense_dim else None
    k = (self.num_fields + int(self.proj is not None)) * d
    self.cross = nnx.List([dense(k, k, (None, None), rngs=rngs) for _ in range(cfg.cross_layers)])
    self.deep = MLP(k, int(cfg.hidden_dim), int(cfg.num_layers), 1, rngs=rngs)

  def logits(self, users, items, side, feats, masks, *, rng=None) -> jax.Array:
    del rng
    e = self.embedding_fields(users, items, side)
    x0 = e.reshape(*e.shape[:-2], -1)
    if self.proj is not None:
      p = self.proj(self.dense_features(feats, masks).astype(x0.dtype))
      x0 = jnp.concatenate([x0, p], axis=-1)
    x = x0
    for layer in self.cross:
      x = x0 * layer(x) + x
    return self.deep(x)[..., 0]
