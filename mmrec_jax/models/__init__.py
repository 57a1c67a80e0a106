"""Models chosen by ``model.name`` from the registry (``models/registry.py``).

All are dot-product recommenders (``models/base.py``). What a model is (features, training
regime, paper defaults, search space) is declared once in its registry entry. This package
imports no jax by itself, so ``config`` and the command-line tools can read the registry
cheaply; ``build_model`` and ``Recommender`` load flax on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from mmrec_jax.models import registry
from mmrec_jax.models.registry import MODELS, ModelSpec

_LAZY = {"build_model": "mmrec_jax.models.build", "Recommender": "mmrec_jax.models.base"}


def __getattr__(name: str) -> Any:
  if name in _LAZY:
    return getattr(importlib.import_module(_LAZY[name]), name)
  raise AttributeError(f"module 'mmrec_jax.models' has no attribute {name!r}")


__all__ = ["MODELS", "ModelSpec", "Recommender", "build_model", "registry"]
