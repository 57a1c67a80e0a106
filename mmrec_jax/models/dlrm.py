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


def pairwise_dots(e: jax.Array, pairs: tuple[tuple[int, int], ...]) -> jax.Array:
  """``[..., P]``: ``<e_i, e_j>`` of the field embeddings ``e [..., F, D]`` for each pair.

  Computed with the rows on the minor axis (``[D, F, rows]``): the per-row ``F x F`` Gram
  as a batched matmul over rows (``...fd,...gd->...fg``) took 6.9 ms forward + backward
  for 8,192 rows x 4 fields on XLA:CPU, this layout 1.9 ms (12.9 vs 7.6 ms at 9 fields).
  """
  lead = e.shape[:-2]
  flat = e.reshape((-1,) + e.shape[-2:])
  et = jnp.transpose(flat, (2, 1, 0))  # [D, F, rows]
  gram = jnp.einsum("dfn,dgn->fgn", et, et)
  iu, ju = np.asarray(pairs).T
  return gram[iu, ju].T.reshape(lead + (len(pairs),))


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
    parts.append(pairwise_dots(e, self.pairs))
    return self.top(jnp.concatenate(parts, axis=-1))[..., 0]
