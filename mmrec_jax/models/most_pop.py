"""MostPop: every user gets the items with the most train interactions.

The popularity of item ``i`` is its number of train rows (``DataInfo.item_counts``, counted
on device from the train item ids, sharded on 'data'). Towers: ``users = 1`` ([U, 1]),
``items = popularity`` ([I, 1]), so ``score(u, i) = count(i)`` for every user; the
evaluator's exclusion of train items then gives "most popular unseen".

Serving: no fold-in and no new items (every user gets the same scores).
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from mmrec_jax import sharding
from mmrec_jax.errors import DataError
from mmrec_jax.layers.embedding import Table
from mmrec_jax.models import fitted_base as fb


class MostPop(fb.FittedRecommender):
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
    del cfg, feature_dims, rngs
    self.modalities = ()
    self.num_users = num_users
    self.num_items = num_items
    self.popularity = Table(jnp.zeros((num_items, 1), jnp.float32), out_sharding=("items", "embed"))

  @classmethod
  def fit_data(cls, model_cfg, info, mesh, *, num_users, num_items):
    del model_cfg, num_users
    items = getattr(info, "train_items", None)
    if items is None:
      raise DataError("DataInfo.train_items", "MostPop counts the train-split interactions")
    items = np.asarray(items, np.int32)
    # Padded to a multiple of the 'data' axis with ids past the catalogue, which the
    # segment sum drops.
    d = int(mesh.shape[sharding.DATA])
    total = max(d, -(-items.size // d) * d)
    items = np.concatenate([items, np.full(total - items.size, num_items, np.int32)])
    sh = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(sharding.DATA))
    return {"items": jax.make_array_from_callback(items.shape, sh, lambda idx: items[idx])}

  def fit_step(self, data, step):
    del step
    counts = jax.ops.segment_sum(
      jnp.ones(data["items"].shape, jnp.float32), data["items"], num_segments=self.num_items
    )
    self.popularity.set_value(counts[:, None])
    return {"loss": jnp.zeros((), jnp.float32)}

  def towers(self, data):
    del data
    return jnp.ones((self.num_users, 1), jnp.float32), self.popularity[...]
