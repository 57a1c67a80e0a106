"""Models chosen by ``model.name``; all are dot-product recommenders (models/base.py)."""

from __future__ import annotations

from collections.abc import Mapping

import ml_collections
from flax import nnx

from mmrec_jax.errors import ConfigError
from mmrec_jax.models.base import Recommender
from mmrec_jax.models.bpr_mf import BPRMF
from mmrec_jax.models.graph_models import GRAPH_MODELS, GRAPH_USES_FEATURES
from mmrec_jax.models.two_tower import TwoTower
from mmrec_jax.models.vbpr import VBPR

MODELS: dict[str, type[Recommender]] = {"bpr_mf": BPRMF, "vbpr": VBPR, "two_tower": TwoTower,
                                        **GRAPH_MODELS}

# Models that consume item features (the others ignore data.modalities).
USES_FEATURES = ("vbpr", "two_tower") + GRAPH_USES_FEATURES


def build_model(model_cfg: ml_collections.ConfigDict, *, num_users: int, num_items: int,
                feature_dims: Mapping[str, int], rngs: nnx.Rngs) -> Recommender:
  """Builds ``model_cfg.name`` with (padded) table sizes and per-modality feature widths.

  Call under ``nnx.use_eager_sharding(False)`` (as ``step.Task`` does) so the
  logical axis names on parameters stay metadata until shardings are chosen.
  """
  if model_cfg.name not in MODELS:
    raise ConfigError(f"model.name={model_cfg.name!r} is not one of {sorted(MODELS)}")
  dims = dict(feature_dims) if model_cfg.name in USES_FEATURES else {}
  return MODELS[model_cfg.name](model_cfg, num_users=num_users, num_items=num_items,
                                feature_dims=dims, rngs=rngs)


__all__ = ["BPRMF", "MODELS", "Recommender", "TwoTower", "VBPR", "build_model"]
