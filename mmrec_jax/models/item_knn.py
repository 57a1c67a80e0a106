"""ItemKNN: item-based collaborative filtering with shrunk cosine similarity (as RecBole's).

``S_ij = x_i . x_j / (|x_i| |x_j| + shrink + 1e-6)`` over the binary train columns ``x_i``
of ``X``, ``S_ii = 0``; for every item ``j`` only its ``k`` most similar items are kept
(``model.num_neighbors``, RecBole's ``k=100``; ``model.shrink``, RecBole's 0), giving ``W``
with ``W[i, j] = S_ij`` for ``i`` among ``j``'s neighbours. Score ``s(u, j) = X_u . W[:, j]``
(RecBole ``ItemKNN.predict``): towers ``users = X``, ``items = W^T`` whose row ``j`` is the
top-``k`` of ``S``'s row ``j`` (``S`` is symmetric). Deng & Karypis, "Item-based top-N
recommendation algorithms", TOIS 2004.

Sharding and memory as EASE (``models/ease.py``): the Gram and ``S`` are row-sharded over
every device; the top-``k`` is per row, hence local.

Serving: no fold-in (serving folds a new user in against item vectors; ItemKNN's user
tower is the user's interaction row, which serving does not build yet) and no new items.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax.numpy as jnp
import ml_collections
from flax import nnx

from mmrec_jax.errors import ConfigError
from mmrec_jax.layers.embedding import Table
from mmrec_jax.models import fitted_base as fb


class ItemKNN(fb.FittedRecommender):
  one_shot = True

  def __init__(
    self,
    cfg: ml_collections.ConfigDict,
    *,
    num_users: int,
    num_items: int,
    feature_dims: Mapping[str, int],
    rngs: nnx.Rngs,
  ):
    del feature_dims, rngs, num_users
    if cfg.num_neighbors < 1:
      raise ConfigError(f"model.num_neighbors={cfg.num_neighbors} must be >= 1")
    if cfg.shrink < 0:
      raise ConfigError(f"model.shrink={cfg.shrink} must be >= 0")
    self.modalities = ()
    self.k = int(cfg.num_neighbors)
    self.shrink = float(cfg.shrink)
    self.item_matrix = Table(
      jnp.zeros((num_items, num_items), jnp.float32), out_sharding=("items", "embed")
    )

  @classmethod
  def fit_data(cls, model_cfg, info, mesh, *, num_users, num_items):
    return fb.item_item_fit_data(model_cfg, info, mesh, num_users, num_items)

  def fit_step(self, data, step):
    del step
    g = fb.gram(data["x"], self.mesh)
    self.item_matrix.set_value(fb.cosine_topk(g, self.k, self.shrink, self.mesh))
    return {"loss": jnp.zeros((), jnp.float32)}

  def towers(self, data):
    return data["x"], self.item_matrix[...]
