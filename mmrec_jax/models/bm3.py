"""BM3 (Zhou et al., WWW 2023, "Bootstrap Latent Representations for Multi-modal
Recommendation"), following the authors' code (MMRec ``BM3``).

No negative sampling: the towers are ``LightGCN(ui)`` (``num_layers``) for users and
``LightGCN(ui) + e_items`` for items; an online predictor ``P`` (Linear d->d) is trained to
match dropout-perturbed, stop-gradient *targets* of the paired view:
  ``L = (1 - cos(P u, sg(drop(i)))) + (1 - cos(P i, sg(drop(u))))``
      ``+ cl_weight * sum_m [(1 - cos(P W_m f_m, sg(drop(i)))) + (1 - cos(P W_m f_m,
      sg(drop(W_m f_m))))]``
      ``+ reg_weight * (||U||_F + ||I||_F) / num_items``  (the paper's EmbLoss on the
      whole propagated tables, padding rows excluded),
averaged over the batch's (user, positive item) pairs; ``model.graph_dropout`` is the target
dropout ratio. Ranking: ``(P u) . (P i)``. The Task's sampled negatives are unused.

Serving without retraining (``bm3``, declared in models/registry.py): a new user is
folded in by implicit-ALS solve against the propagated item vectors (approximate: the
graph is not updated); a new item cannot be embedded from features (one-line error).
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from mmrec_jax.errors import ConfigError
from mmrec_jax.graph import propagation
from mmrec_jax.layers.embedding import Embed
from mmrec_jax.layers.projection import dense, dropout
from mmrec_jax.models.graph_base import GraphRecommender, hparam
from mmrec_jax.optim.sparse import take_valid_rows


def _cos_loss(a: jax.Array, b: jax.Array) -> jax.Array:
  """``mean(1 - cos(a, b))`` over rows (torch's cosine_similarity, eps 1e-8)."""
  a, b = a.astype(jnp.float32), b.astype(jnp.float32)
  num = jnp.sum(a * b, -1)
  den2 = jnp.maximum(jnp.sum(a * a, -1) * jnp.sum(b * b, -1), 1e-16)
  return jnp.mean(1.0 - num * jax.lax.rsqrt(den2))


class BM3(GraphRecommender):
  uses_rank_loss = False

  def __init__(
    self,
    cfg: ml_collections.ConfigDict,
    *,
    num_users: int,
    num_items: int,
    feature_dims: Mapping[str, int],
    rngs: nnx.Rngs,
  ):
    drop = hparam(cfg, "graph_dropout")
    if not 0.0 <= drop < 1.0:
      raise ConfigError(f"model.graph_dropout={drop} must be in [0, 1)")
    self.modalities = tuple(sorted(feature_dims))
    self.num_layers = int(cfg.num_layers)
    self.drop = drop
    self.reg_weight = hparam(cfg, "reg_weight")
    self.cl_weight = float(cfg.cl_weight)
    d = cfg.embed_dim
    self.user_embed = Embed(num_users, d, "users", rngs=rngs)
    self.item_embed = Embed(num_items, d, "items", rngs=rngs)
    self.predictor = dense(d, d, ("embed", "hidden"), rngs=rngs)
    self.proj = nnx.Dict(
      {m: dense(feature_dims[m], d, (None, "embed"), rngs=rngs) for m in self.modalities}
    )

  @classmethod
  def graph_data(cls, model_cfg, info, mesh, *, num_users, num_items, feats, masks):
    g = super().graph_data(
      model_cfg, info, mesh, num_users=num_users, num_items=num_items, feats=feats, masks=masks
    )
    g["num_real"] = jax.device_put(
      np.asarray([info.num_users, info.num_items], np.int32), NamedSharding(mesh, P())
    )
    return g

  def propagate(self, graph, feats, masks, *, rng=None):
    items0 = self.item_embed(None)
    u, i = propagation.lightgcn_propagate(
      self.user_embed(None), items0, graph["ui"], self.num_layers, self.mesh
    )
    return u, i + items0

  def score_reprs(self, users, items):
    return self.predictor(users), self.predictor(items)

  def aux_loss(self, users, items, user_ids, item_ids, graph, feats, masks, *, rng=None):
    pos = item_ids[:, 0]
    keys = jax.random.split(
      rng if rng is not None else jax.random.PRNGKey(0), 2 + len(self.modalities)
    )
    u_on = take_valid_rows(users, user_ids)
    i_on = take_valid_rows(items, pos)
    u_tg = dropout(jax.lax.stop_gradient(u_on), self.drop, keys[0])
    i_tg = dropout(jax.lax.stop_gradient(i_on), self.drop, keys[1])
    loss = _cos_loss(self.predictor(u_on), i_tg) + _cos_loss(self.predictor(i_on), u_tg)
    cl = jnp.zeros((), jnp.float32)
    for j, m in enumerate(self.modalities):
      f = self.proj[m](take_valid_rows(feats[m], pos))
      f_tg = dropout(jax.lax.stop_gradient(f), self.drop, keys[2 + j])
      f_on = self.predictor(f)
      cl = cl + _cos_loss(f_on, i_tg) + _cos_loss(f_on, f_tg)
    n_u, n_i = graph["num_real"][0], graph["num_real"][1]
    real_u = (jnp.arange(users.shape[0]) < n_u)[:, None]
    real_i = (jnp.arange(items.shape[0]) < n_i)[:, None]
    fro = lambda x, keep: jnp.sqrt(jnp.sum(jnp.where(keep, x.astype(jnp.float32), 0) ** 2) + 1e-12)
    reg = (fro(users, real_u) + fro(items, real_i)) / n_i.astype(jnp.float32)
    return loss + self.cl_weight * cl + self.reg_weight * reg
