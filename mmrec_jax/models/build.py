"""Building the configured model from its registry entry (imports flax; the registry doesn't)."""

from __future__ import annotations

from collections.abc import Mapping

import ml_collections
from flax import nnx

from mmrec_jax.errors import ConfigError
from mmrec_jax.models import registry
from mmrec_jax.models.base import Recommender


def build_model(
  model_cfg: ml_collections.ConfigDict,
  *,
  num_users: int,
  num_items: int,
  feature_dims: Mapping[str, int],
  rngs: nnx.Rngs,
  side_vocab: Mapping[str, int] | None = None,
) -> Recommender:
  """Builds ``model_cfg.name`` with (padded) table sizes and per-modality feature widths.

  ID-only models get no feature widths; models whose spec says ``features="required"``
  fail here, once for all of them, when no modality is configured. Call under
  ``nnx.use_eager_sharding(False)`` (as ``step.Task`` does) so the logical axis names on
  parameters stay metadata until shardings are chosen.
  """
  spec = registry.get(model_cfg.name)
  dims = dict(feature_dims) if spec.uses_features else {}
  if spec.features == "required" and not dims:
    raise ConfigError(f"model.name={spec.name!r} needs at least one modality in data.modalities")
  # Categorical side-feature vocabularies go to the models that take them (the pointwise
  # rankers, models/ranker_base.py); None = the model is built as before.
  extra = {} if side_vocab is None else {"side_vocab": dict(side_vocab)}
  return spec.load()(
    model_cfg, num_users=num_users, num_items=num_items, feature_dims=dims, rngs=rngs, **extra
  )
