"""The Merlin ML-25M notebooks' ranker: an MLP over the concatenated fields.

``logit = MLP([user_emb, item_emb, side bags..., frozen features])`` with
``model.num_layers`` hidden layers of ``model.hidden_dim`` ReLU units and one output
(the notebooks: 16-d embeddings for user, movie and sum-pooled genres, the frozen
pretrained movie table concatenated as is, MLP 128-ReLU-128-ReLU-1, binary
cross-entropy). Trained by the ``pointwise`` regime; not a dot-product model, so it is
evaluated by AUC / GAUC / LogLoss on held-out labelled rows.
"""

from __future__ import annotations

import jax

from mmrec_jax.models.ranker_base import MLP, PointwiseRanker


class MLPRanker(PointwiseRanker):
  def __init__(self, cfg, *, num_users, num_items, feature_dims, rngs, side_vocab=None):
    super().__init__(
      cfg,
      num_users=num_users,
      num_items=num_items,
      feature_dims=feature_dims,
      rngs=rngs,
      side_vocab=side_vocab,
    )
    in_dim = self.num_fields * self.embed_dim + self.dense_dim
    self.mlp = MLP(in_dim, int(cfg.hidden_dim), int(cfg.num_layers), 1, rngs=rngs)

  def logits(self, users, items, side, feats, masks, *, rng=None) -> jax.Array:
    del rng
    e = self.embedding_fields(users, items, side)
    x = e.reshape(*e.shape[:-2], -1)
    dense = self.dense_features(feats, masks)
    if dense is not None:
      x = jax.numpy.concatenate([x, dense.astype(x.dtype)], axis=-1)
    return self.mlp(x)[..., 0]
