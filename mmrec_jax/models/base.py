"""The one interface every model implements: a dot-product recommender.

``score(u, i) = user_repr(u) . item_repr(i)``. Keeping every model in this form lets
the full-ranking evaluator score a sharded catalogue with one matmul per user chunk,
and lets the train step compute in-batch logits as ``U @ I.T``.

Conventions:
  * big tables are :class:`mmrec_jax.layers.Embed` modules (``Table`` variables with
    rows on 'users' or 'items'); the train step swaps their values for the rows a batch
    touches and passes ids remapped into those rows, so a model simply indexes its
    tables with the ids it is given. ``ids=None`` means "every row, in order" (eval);
  * features arrive already gathered for the items: ``feats[m] [..., d_m]`` and
    ``masks[m] [...]`` bool (False = the item lacks modality m; its row is zeros);
  * ``rng`` None = deterministic evaluation; a key = training (dropout etc.);
  * in evaluation (``ids=None``) ``masks`` may also hold :data:`TRAINED_ITEMS`, bool [I]:
    True where the item has train interactions (cold-start aware models read it; the
    others only look up their own modalities).
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
from flax import nnx

# Key of the evaluation-time "item has train interactions" mask (module doc).
TRAINED_ITEMS = "_trained_items"


class Recommender(nnx.Module):
  """Base class; subclasses set ``modalities`` and implement the two towers."""

  modalities: tuple[str, ...] = ()

  def user_repr(self, ids: jax.Array | None, *, rng: jax.Array | None = None) -> jax.Array:
    raise NotImplementedError

  def item_repr(
    self,
    ids: jax.Array | None,
    feats: Mapping[str, jax.Array],
    masks: Mapping[str, jax.Array],
    *,
    rng: jax.Array | None = None,
  ) -> jax.Array:
    raise NotImplementedError
