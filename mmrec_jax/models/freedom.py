"""FREEDOM (Zhou & Shen, ACM MM 2023, "A Tale of Two Graphs: Freezing and Denoising Graph
Structures for Multimodal Recommendation").

Two graphs, as in the authors' code (MMRec ``FREEDOM``):
  * a FROZEN item-item graph: per modality the kNN graph (``model.knn_k``) of the raw
    features by cosine similarity, binary, normalised ``D^-1/2 A D^-1/2`` with row sums;
    the modality graphs mixed as ``image_weight * S_image + (1 - image_weight) * S_text``
    (any other modality, e.g. the side-data 'graph' modality, shares the non-image part);
    built once on device (chunked top-k, ``mmrec_jax.graph.knn``);
  * the user-item graph, DENOISED in training by degree-sensitive edge pruning
    (``model.graph_dropout`` = pruning ratio; resampled every step here, every epoch in the
    paper) and used whole in evaluation.
Item tower: ``LightGCN(ui)_items + S^L e_items`` (``num_mm_layers`` item-graph layers on
the ID embeddings); user tower: ``LightGCN(ui)_users`` (``num_layers`` layers).
Loss: BPR on the towers + ``reg_weight * sum_m BPR(u, W_m f_pos, W_m f_neg)`` (each
modality's projected features as an extra item tower), exactly as the paper's code.

Propagation with a pruned graph (``model.propagation``, graph/propagation.py): the pruned
graph keeps the structure and the method of the user-item graph; only the edge weights
change per step. 'host_csr' (auto on CPU) passes the new weights to each host CSR
product (the CSR structure is built once); 'dense' rebuilds the [users, items] block from
the weights once per step inside the jitted step (one scatter of the edge weights into a
zeroed block); 'segment' uses the weights directly. Decided by measurement
(benchmarks/RESULTS_graph_peers.md, FREEDOM rows): on this CPU host_csr is the fastest
of the three for FREEDOM as for LightGCN, so no separate rule for pruned graphs.
The item-item kNN graph always runs as segment sums (items x k edges, small).

Serving without retraining (``freedom``, declared in models/registry.py): a new user is
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
from mmrec_jax.models.graph_base import GraphRecommender, bpr, hparam, modality_weights
from mmrec_jax.optim.sparse import take_valid_rows


def frozen_item_graph(
  feats: Mapping[str, jax.Array],
  masks: Mapping[str, jax.Array],
  k: int,
  image_weight: float,
  mesh,
  *,
  weighted: bool = False,
) -> dict[str, propagation.EdgeList]:
  """Per-modality normalised kNN item graphs of the raw features, edges on 'data'."""
  mods = sorted(feats)

  def build(feats, masks):
    return {m: knn.knn_graph(feats[m], k, masks[m], weighted=weighted) for m in mods}

  sh = propagation.edge_sharding(mesh)
  out_sh = {m: propagation.EdgeList(sh, sh, sh) for m in mods}
  return jax.jit(build, out_shardings=out_sh)(dict(feats), dict(masks))


class FREEDOM(GraphRecommender):
  def __init__(
    self,
    cfg: ml_collections.ConfigDict,
    *,
    num_users: int,
    num_items: int,
    feature_dims: Mapping[str, int],
    rngs: nnx.Rngs,
  ):
    prune = hparam(cfg, "graph_dropout")
    if not 0.0 <= prune < 1.0:
      raise ConfigError(f"model.graph_dropout={prune} (edge pruning ratio) must be in [0, 1)")
    self.modalities = tuple(sorted(feature_dims))
    self.num_layers = int(cfg.num_layers)
    self.num_mm_layers = int(cfg.num_mm_layers)
    self.prune_ratio = prune
    self.reg_weight = hparam(cfg, "reg_weight")
    self.mix = modality_weights(self.modalities, float(cfg.image_weight))
    d = cfg.embed_dim
    self.user_embed = Embed(num_users, d, "users", rngs=rngs)
    self.item_embed = Embed(num_items, d, "items", rngs=rngs)
    self.proj = nnx.Dict(
      {m: dense(feature_dims[m], d, (None, "embed"), rngs=rngs) for m in self.modalities}
    )

  @classmethod
  def graph_data(cls, model_cfg, info, mesh, *, num_users, num_items, feats, masks):
    g = super().graph_data(
      model_cfg, info, mesh, num_users=num_users, num_items=num_items, feats=feats, masks=masks
    )
    g["mm"] = frozen_item_graph(
      feats, masks, int(model_cfg.knn_k), float(model_cfg.image_weight), mesh
    )
    return g

  def item_graph_embed(self, graph) -> jax.Array:
    """``S^L e`` with ``S = sum_m mix_m S_m`` (applied per modality: same result)."""
    h = self.item_embed(None)
    for _ in range(self.num_mm_layers):
      h = sum(
        self.mix[m] * propagation.item_propagate(h, graph["mm"][m], self.mesh)
        for m in self.modalities
      )
    return h

  def propagate(self, graph, feats, masks, *, rng=None):
    ui = graph["ui"]
    if rng is not None and self.prune_ratio > 0:
      ui = propagation.degree_sensitive_prune(
        ui,
        rng,
        1.0 - self.prune_ratio,
        self.user_embed.embedding.shape[0],
        self.item_embed.embedding.shape[0],
      )
    u, i = propagation.lightgcn_propagate(
      self.user_embed(None), self.item_embed(None), ui, self.num_layers, self.mesh
    )
    return u, i + self.item_graph_embed(graph).astype(i.dtype)

  def aux_loss(self, users, items, user_ids, item_ids, graph, feats, masks, *, rng=None):
    if self.reg_weight == 0:
      return jnp.zeros((), jnp.float32)
    u = take_valid_rows(users, user_ids)  # [B, D]
    total = jnp.zeros((), jnp.float32)
    for m in self.modalities:
      f = self.proj[m](take_valid_rows(feats[m], item_ids))  # [B, 1+N, D]
      s = jnp.einsum("bd,bkd->bk", u, f, preferred_element_type=jnp.float32)
      total = total + bpr(s[:, 0], s[:, 1:])
    return self.reg_weight * total
