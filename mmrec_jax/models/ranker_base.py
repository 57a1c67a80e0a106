"""What the pointwise rankers share: their input layer and the ``logits`` interface.

A pointwise ranker scores one (user, item) row at a time, ``p(click) = sigmoid(logits)``,
from *fields*: the user and item ID embeddings, one pooled embedding per categorical side
feature (genres multi-hot, year bucket, user age/gender/occupation/zip; each a
:class:`~mmrec_jax.layers.embedding_bag.CatEmbed` bag) and the frozen pretrained item
features (the modalities; never trained, row-sharded beside the tables). How the fields
meet is the model: an MLP over their concatenation (``mlp_ranker``), DLRM's pairwise dot
interactions (``dlrm``), DCN-v2's cross layers (``dcn_v2``) or DeepFM's factorisation
machine (``deepfm``). The score is not ``user_repr . item_repr`` -- these models train
in the ``pointwise`` regime (``step/pointwise.py``) and are evaluated on held-out labelled
rows (``evaluation/pointwise.py``); ``user_repr``/``item_repr`` return the ID embeddings
only (what ``Task.eval_reprs`` exposes, e.g. for item similarity), never the ranker.

Inputs of :meth:`PointwiseRanker.logits` (all with the rows' leading shape ``[n]``):
  * ``users``/``items``: ids into the ID tables (the train step passes ids remapped into
    the gathered rows, as for every model);
  * ``side``: field name -> ``int [n, L]`` bag of category ids (``-1`` = empty slot);
  * ``feats``/``masks``: modality -> ``[n, d_m]`` frozen feature rows / ``bool [n]``.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from mmrec_jax.layers.embedding import Embed
from mmrec_jax.layers.embedding_bag import CatEmbed
from mmrec_jax.layers.projection import dense
from mmrec_jax.models.base import Recommender


class MLP(nnx.Module):
  """``num_layers`` x ``Linear(., hidden) -> ReLU``, then ``Linear(hidden, out)``.

  ``out_dim=0`` leaves the last hidden layer as the output (a tower without a head).
  """

  def __init__(
    self, in_dim: int, hidden_dim: int, num_layers: int, out_dim: int, *, rngs: nnx.Rngs
  ):
    dims = [in_dim] + [hidden_dim] * num_layers
    self.layers = nnx.List(
      [dense(a, b, (None, "hidden"), rngs=rngs) for a, b in zip(dims[:-1], dims[1:])]
    )
    self.head = dense(dims[-1], out_dim, ("hidden", None), rngs=rngs) if out_dim else None

  def __call__(self, x: jax.Array) -> jax.Array:
    for layer in self.layers:
      x = jax.nn.relu(layer(x))
    return x if self.head is None else self.head(x)


class PointwiseRanker(Recommender):
  """Base of the rankers: ID tables, side-feature bags, frozen features (module doc).

  Args:
    cfg: ``config.model`` (``embed_dim`` is the width of every embedding field).
    num_users, num_items: padded table rows.
    feature_dims: modality -> width of its frozen feature table (empty = ID-only).
    side_vocab: side-feature field -> number of categories (empty = none).
  """

  def __init__(
    self,
    cfg: ml_collections.ConfigDict,
    *,
    num_users: int,
    num_items: int,
    feature_dims: Mapping[str, int],
    rngs: nnx.Rngs,
    side_vocab: Mapping[str, int] | None = None,
  ):
    d = int(cfg.embed_dim)
    self.embed_dim = d
    self.modalities = tuple(sorted(feature_dims))
    self.feature_dims = {m: int(feature_dims[m]) for m in self.modalities}
    self.side_names = tuple(sorted(side_vocab or {}))
    self.user_embed = Embed(num_users, d, "users", rngs=rngs)
    self.item_embed = Embed(num_items, d, "items", rngs=rngs)
    self.side = nnx.Dict({n: CatEmbed(int(side_vocab[n]), d, rngs=rngs) for n in self.side_names})

  @property
  def num_fields(self) -> int:
    """Embedding fields: user, item and one per side feature."""
    return 2 + len(self.side_names)

  @property
  def dense_dim(self) -> int:
    """Width of the concatenated frozen features (0 when ID-only)."""
    return sum(self.feature_dims.values())

  def embedding_fields(self, users, items, side) -> jax.Array:
    """``[n, F, D]``: user, item, then the pooled side bags in sorted field order."""
    fields = [self.user_embed(users), self.item_embed(items)]
    fields += [self.side[n](side[n]) for n in self.side_names]
    return jnp.stack(fields, axis=-2)

  def dense_features(self, feats, masks) -> jax.Array | None:
    """``[n, sum d_m]`` frozen features (zeros where an item lacks a modality) or None."""
    if not self.modalities:
      return None
    parts = [jnp.where(masks[m][..., None], feats[m], 0) for m in self.modalities]
    return jnp.concatenate(parts, axis=-1)

  def logits(
    self,
    users: jax.Array,
    items: jax.Array,
    side: Mapping[str, jax.Array],
    feats: Mapping[str, jax.Array],
    masks: Mapping[str, jax.Array],
    *,
    rng: jax.Array | None = None,
  ) -> jax.Array:
    """``[n]`` logits of p(label = 1) for the rows (module doc)."""
    raise NotImplementedError

  def user_repr(self, ids, *, rng=None) -> jax.Array:
    return self.user_embed(ids)

  def item_repr(self, ids, feats, masks, *, rng=None) -> jax.Array:
    return self.item_embed(ids)
