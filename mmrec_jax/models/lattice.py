"""LATTICE (Zhang et al., ACM MM 2021, "Mining Latent Structures for Multimedia
Recommendation"), following the authors' code as ported to MMRec.

Item-item structure learning:
  * frozen graphs: per modality, the kNN graph (``model.knn_k``) of the raw features,
    weighted by cosine similarity, normalised with row sums (``D^-1/2 A D^-1/2``);
  * learned graphs: the same construction on ``W_m f_m`` (a trained projection), so the
    graph follows the training signal through the top-k similarity values;
  * ``S = (1 - lambda) * sum_m a_m S_m^learned + lambda * sum_m a_m S_m^frozen`` with
    ``a = softmax(modal_weight)`` (trained) and ``lambda = model.lambda_coeff``.
Towers: ``LightGCN(ui)`` (``num_layers``) for users and items, items plus
``normalize(S^L e_items)`` (``num_mm_layers``). Loss: BPR + ``reg_weight`` x L2 of the
propagated batch rows (``(|u|^2 + |i+|^2 + |i-|^2) / 2`` per example, the paper's code).

Cost note: the learned graph is rebuilt in every step here (the paper's code rebuilds it
once per epoch and detaches it in between): chunked top-k over items x items similarities,
O(items^2 x d) per step -- fine for MovieLens-sized catalogues, and the reason FREEDOM
freezes the graph.

Serving without retraining (``lattice``, declared in models/registry.py): a new user is
folded in by implicit-ALS solve against the propagated item vectors (approximate: the
graph is not updated); a new item cannot be embedded from features (one-line error).
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from mmrec_jax.errors import ConfigError
from mmrec_jax.graph import knn, propagation
from mmrec_jax.layers.embedding import Embed
from mmrec_jax.layers.projection import dense
from mmrec_jax.models.freedom import frozen_item_graph
from mmrec_jax.models.graph_base import GraphRecommender, hparam
from mmrec_jax.optim.sparse import take_valid_rows


class LATTICE(GraphRecommender):
  def __init__(
    self,
    cfg: ml_collections.ConfigDict,
    *,
    num_users: int,
    num_items: int,
    feature_dims: Mapping[str, int],
    rngs: nnx.Rngs,
  ):
    if not 0.0 <= cfg.lambda_coeff <= 1.0:
      raise ConfigError(f"model.lambda_coeff={cfg.lambda_coeff} must be in [0, 1]")
    self.modalities = tuple(sorted(feature_dims))
    self.num_layers = int(cfg.num_layers)
    self.num_mm_layers = int(cfg.num_mm_layers)
    self.k = int(cfg.knn_k)
    self.lam = float(cfg.lambda_coeff)
    self.reg_weight = hparam(cfg, "reg_weight")
    d = cfg.embed_dim
    self.user_embed = Embed(num_users, d, "users", rngs=rngs)
    self.item_embed = Embed(num_items, d, "items", rngs=rngs)
    self.proj = nnx.Dict(
      {m: dense(feature_dims[m], d, (None, "embed"), rngs=rngs) for m in self.modalities}
    )
    self.modal_weight = nnx.Param(
      jnp.zeros((len(self.modalities),), jnp.float32), out_sharding=(None,)
    )

  @classmethod
  def graph_data(cls, model_cfg, info, mesh, *, num_users, num_items, feats, masks):
    g = super().graph_data(
      model_cfg, info, mesh, num_users=num_users, num_items=num_items, feats=feats, masks=masks
    )
    g["mm"] = frozen_item_graph(feats, masks, int(model_cfg.knn_k), 0.0, mesh, weighted=True)
    return g

  def item_graph(self, graph, feats, masks) -> propagation.EdgeList:
    a = jax.nn.softmax(self.modal_weight[...].astype(jnp.float32))
    learned = [
      knn.knn_graph(self.proj[m](feats[m]), self.k, masks[m], weighted=True)
      for m in self.modalities
    ]
    frozen = [graph["mm"][m] for m in self.modalities]
    return knn.combine(
      learned + frozen,
      [(1 - self.lam) * a[j] for j in range(len(self.modalities))]
      + [self.lam * a[j] for j in range(len(self.modalities))],
    )

  def propagate(self, graph, feats, masks, *, rng=None):
    s = self.item_graph(graph, feats, masks)
    h = self.item_embed(None)
    for _ in range(self.num_mm_layers):
      h = propagation.item_propagate(h, s)
    u, i = propagation.lightgcn_propagate(
      self.user_embed(None), self.item_embed(None), graph["ui"], self.num_layers, self.mesh
    )
    h = knn.l2_normalize(h)
    return u, i + h.astype(i.dtype)

  def aux_loss(self, users, items, user_ids, item_ids, graph, feats, masks, *, rng=None):
    if self.reg_weight == 0:
      return jnp.zeros((), jnp.float32)
    u = take_valid_rows(users, user_ids).astype(jnp.float32)
    it = take_valid_rows(items, item_ids).astype(jnp.float32)
    reg = 0.5 * (jnp.sum(u * u) + jnp.sum(it * it)) / user_ids.shape[0]
    return self.reg_weight * reg
