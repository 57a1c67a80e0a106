"""The data and state types every part of the step shares."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax.numpy as jnp
import numpy as np

State = dict[str, Any]
Frozen = dict[str, Any]
COMPUTE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


@dataclasses.dataclass(frozen=True)
class DataInfo:
  """What the step needs to know about the data (from the prepared dataset).

  features: modality -> float [num_items, d], zeros where missing (may be empty).
  feature_masks: modality -> bool [num_items], True where the item has the modality.
  item_counts: int64 [num_items], train interactions per item.
  train_users, train_items: int [n_train], the TRAIN-split interactions (optional; graph
    models build their user-item graph from them and raise when they are missing).
  modalities: the modality names the model uses, after ``data.text_features`` mapped
    'text' to e.g. 'text_minilm' (``train.resolve_modalities``); None means
    ``config.data.modalities`` as written.
  side: categorical side features (``data/side_features.py``) for the pointwise regime.
  """

  num_users: int
  num_items: int
  features: Mapping[str, np.ndarray] = dataclasses.field(default_factory=dict)
  feature_masks: Mapping[str, np.ndarray] = dataclasses.field(default_factory=dict)
  item_counts: np.ndarray | None = None
  train_users: np.ndarray | None = None
  train_items: np.ndarray | None = None
  # Their timestamps (None when the data has none): the closed-form regime's popularity
  # fallback for users without history weights recent interactions (models/recency.py).
  train_timestamps: np.ndarray | None = None
  modalities: tuple[str, ...] | None = None
  # Categorical side features of the pointwise rankers (data/side_features.SideFeatures:
  # per-field id bags of users/items and vocabulary sizes); None = none.
  side: Any = None
