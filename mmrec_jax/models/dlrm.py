"""DLRM: bottom MLP on dense features, pairwise dot interactions, top MLP.

Naumov et al. 2019, as TorchRec's ``DLRM`` lays it out: the frozen item features (the
"dense" input) go through a bottom MLP (``hidden_dim`` ReLU units, then ``embed_dim``
outputs) and become one more field beside the ID and side-feature embeddings; every pair
``i < j`` of the ``F`` fields contributes the dot product ``<e_i, e_j>``; the top MLP
(``num_layers`` x ``hidden_dim`` ReLU, then 1 output) reads ``[bottom output,
interactions]`` (interactions only when the model is ID-only).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from mmrec_jax.models.ranker_base import MLP, PointwiseRanker


class DLRM(PointwiseRanker):
  def __init__(self, cfg, *, num_users, num_items, feature_dims, rngs, side_vocab=None):
    super().__init__(
      cfg,
      num_users=num_users,
      num_items=num_items,
      feature_dims=feature_dims,
      rngs=rngs,
      side_vocab=side_vocab,
    )
    d, h = self.embed_dim, int(cfg.hidden_dim)
    self.bottom = MLP(self.dense_dim, h, 1, d, rngs=rngs) if self.dense_dim else None
    f = self.num_fields + int(self.bottom is not None)
    self.pairs = tuple(zip(*np.triu_indices(f, k=1)))
    top_in = len(self.pairs) + (d if self.bottom is not None else 0)
    self.top = MLP(top_in, h, int(cfg.num_layers), 1, rngs=rngs)

  def logits(self, users, items, side, feats, masks, *, rng=None) -> jax.Array:
    del rng
    e = self.embedding_fields(users, items, side)  # [n, F, D]
    parts = []
    if self.bottom is not None:
      z = self.bottom(self.dense_features(feats, masks).astype(e.dtype))  # [n, D]
      e = jnp.concatenate([z[..., None, :], e], axis=-2)
      parts.append(z)
    gram = jnp.einsum("...fd,...gd->...fg", e, e)
    iu, ju = np.asarray(self.pairs).T
    parts.append(gram[..., iu, ju])
    return self.top(jnp.concatenate(parts, axis=-1))[..., 0]
