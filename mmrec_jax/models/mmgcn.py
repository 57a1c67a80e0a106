"""MMGCN (Wei et al., ACM MM 2019, "Multi-modal Graph Convolution Network for
Personalized Recommendation of Micro-video"), after the authors' code (MMRec ``MMGCN``).

One graph per modality m over the user-item training graph. Node inputs: a trained user
preference table ``P_m [U, D]`` for users and ``Linear_m(f_m)`` for items, row-normalised.
Each of ``num_layers`` layers (``concate=False`` variant of the paper):
  ``h  = leaky_relu(mean_{n in N(v)} x_n W_l)``            (aggregation, mean over neighbours)
  ``xh = leaky_relu(x W'_l + b'_l) + e_v``                 (``e_v``: shared ID embedding)
  ``x  = leaky_relu(h G_l + g_l + xh)``                     (combination)
Final towers: the mean over modalities of ``x``; score = dot product. Loss: BPR +
``reg_weight * mean(e_u^2 + e_i+^2 + e_i-^2)`` on the batch's ID rows (the paper's code).
Latent width = ``embed_dim`` for every modality (the paper uses 256 for some).

Serving without retraining (``mmgcn``, declared in models/registry.py): a new user is
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

from mmrec_jax.errors import ConfigError
from mmrec_jax.graph import propagation
from mmrec_jax.graph.knn import l2_normalize
from mmrec_jax.layers.embedding import Embed
from mmrec_jax.layers.projection import dense
from mmrec_jax.models.graph_base import GraphRecommender, hparam
from mmrec_jax.optim.sparse import take_valid_rows


class _ModalGCN(nnx.Module):
  def __init__(self, feat_dim: int, d: int, num_users: int, num_layers: int, *, rngs: nnx.Rngs):
    self.pref = Embed(num_users, d, "users", rngs=rngs)
    self.mlp = dense(feat_dim, d, (None, "embed"), rngs=rngs)
    self.conv = nnx.List(
      [dense(d, d, ("embed", "hidden"), rngs=rngs, use_bias=False) for _ in range(num_layers)]
    )
    self.lin = nnx.List([dense(d, d, ("embed", "hidden"), rngs=rngs) for _ in range(num_layers)])
    self.g = nnx.List([dense(d, d, ("embed", "hidden"), rngs=rngs) for _ in range(num_layers)])


class MMGCN(GraphRecommender):
  def __init__(
    self,
    cfg: ml_collections.ConfigDict,
    *,
    num_users: int,
    num_items: int,
    feature_dims: Mapping[str, int],
    rngs: nnx.Rngs,
  ):
    if cfg.num_layers < 1:
      raise ConfigError(f"model.num_layers={cfg.num_layers} must be >= 1 for mmgcn")
    self.modalities = tuple(sorted(feature_dims))
    self.num_layers = int(cfg.num_layers)
    self.reg_weight = hparam(cfg, "reg_weight")
    d = cfg.embed_dim
    self.user_embed = Embed(num_users, d, "users", rngs=rngs)
    self.item_embed = Embed(num_items, d, "items", rngs=rngs)
    self.gcn = nnx.Dict(
      {
        m: _ModalGCN(feature_dims[m], d, num_users, self.num_layers, rngs=rngs)
        for m in self.modalities
      }
    )

  @classmethod
  def graph_data(cls, model_cfg, info, mesh, *, num_users, num_items, feats, masks):
    g = super().graph_data(
      model_cfg, info, mesh, num_users=num_users, num_items=num_items, feats=feats, masks=masks
    )
    src, dst = propagation.dedup_edges(info.train_users, info.train_items, num_items)
    du = np.bincount(src, minlength=num_users).astype(np.float32)
    di = np.bincount(dst, minlength=num_items).astype(np.float32)
    # Mean aggregation: 1/deg of the receiving node, one weight array per direction,
    # each a user-item graph of the configured propagation method.
    method = model_cfg.propagation
    for key, w in (("mean_to_users", 1.0 / du[src]), ("mean_to_items", 1.0 / di[dst])):
      g[key] = propagation.bipartite_graph(src, dst, w, num_users, num_items, mesh, method)
    return g

  def propagate(self, graph, feats, masks, *, rng=None):
    nu = self.user_embed.embedding.shape[0]
    ni = self.item_embed.embedding.shape[0]
    ids_u, ids_i = self.user_embed(None), self.item_embed(None)
    lrelu = jax.nn.leaky_relu
    gu, gi = graph["mean_to_users"], graph["mean_to_items"]
    outs_u, outs_i = [], []
    for m in self.modalities:
      net = self.gcn[m]
      xu, xi = l2_normalize(net.pref(None)), l2_normalize(net.mlp(feats[m]))
      for l in range(self.num_layers):
        cu, ci = net.conv[l](xu), net.conv[l](xi)
        hu = lrelu(propagation.to_users(ci, gu, nu, self.mesh))
        hi = lrelu(propagation.to_items(cu, gi, ni, self.mesh))
        xhu = lrelu(net.lin[l](xu)) + ids_u
        xhi = lrelu(net.lin[l](xi)) + ids_i
        xu, xi = lrelu(net.g[l](hu) + xhu), lrelu(net.g[l](hi) + xhi)
      outs_u.append(xu)
      outs_i.append(xi)
    return sum(outs_u) / len(outs_u), sum(outs_i) / len(outs_i)

  def aux_loss(self, users, items, user_ids, item_ids, graph, feats, masks, *, rng=None):
    if self.reg_weight == 0:
      return jnp.zeros((), jnp.float32)
    eu = take_valid_rows(self.user_embed(None), user_ids).astype(jnp.float32)
    ei = take_valid_rows(self.item_embed(None), item_ids).astype(jnp.float32)
    return self.reg_weight * (jnp.mean(eu * eu) + jnp.mean(ei * ei))
