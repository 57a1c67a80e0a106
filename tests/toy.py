"""Shared toy data for model and step tests: configs, DataInfo, batches.

One builder instead of a copy per test file: a small config for any registered model, a
``DataInfo`` with random features (zeros where the modality is missing, as prepared
datasets store them) and train edges, and global batches that carry every key a
``Task``'s batch contract can ask for.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from mmrec_jax import config as config_lib
from mmrec_jax import sharding
from mmrec_jax.step import DataInfo

DIMS = {"image": 6, "text": 5}


def toy_config(
  name: str,
  *,
  embed_dim: int = 8,
  hidden_dim: int = 16,
  modalities: tuple[str, ...] = ("image", "text"),
  batch_size: int = 16,
  **overrides: Any,
):
  """A base config for ``name``; ``overrides`` keys are ``section__field``."""
  c = config_lib.base_config()
  c.model.name = name
  c.model.embed_dim = embed_dim
  c.model.hidden_dim = hidden_dim
  c.model.knn_k = 3
  c.data.modalities = modalities
  c.input.batch_size = batch_size
  for key, v in overrides.items():
    section, field = key.split("__")
    setattr(getattr(c, section), field, v)
  return c


def toy_info(
  num_users: int = 20,
  num_items: int = 30,
  *,
  dims: Mapping[str, int] = DIMS,
  seed: int = 0,
  p_missing: float = 0.3,
  num_edges: int = 100,
) -> DataInfo:
  """Random features and masks, item counts and ``num_edges`` train interactions."""
  rng = np.random.default_rng(seed)
  feats = {m: rng.normal(size=(num_items, d)).astype(np.float32) for m, d in dims.items()}
  masks = {m: rng.random(num_items) > p_missing for m in dims}
  for m in dims:
    feats[m][~masks[m]] = 0.0
  users = rng.integers(0, num_users, num_edges)
  items = rng.integers(0, num_items, num_edges)
  return DataInfo(
    num_users,
    num_items,
    feats,
    masks,
    np.bincount(items, minlength=num_items).astype(np.int64),
    train_users=users,
    train_items=items,
  )


def toy_batch(
  task, info: DataInfo, rng: np.random.Generator, batch_size: int = 16, num_negatives: int = 1
) -> dict:
  """A uniform random global batch with exactly the keys ``task`` reads."""
  b, n = batch_size, num_negatives
  user = rng.integers(0, info.num_users, b).astype(np.int32)
  pos = rng.integers(0, info.num_items, b).astype(np.int32)
  neg = rng.integers(0, info.num_items, (b, n)).astype(np.int32)
  local = {
    "user": user,
    "pos": pos,
    "neg": neg,
    "pos_logq": np.full(b, np.log(1 / info.num_items), np.float32),
    "rating": rng.integers(1, 6, b).astype(np.float32),
  }
  for m, f in info.features.items():
    local[f"feat_pos/{m}"], local[f"mask_pos/{m}"] = f[pos], info.feature_masks[m][pos]
    local[f"feat_neg/{m}"], local[f"mask_neg/{m}"] = f[neg], info.feature_masks[m][neg]
  return sharding.global_batch_from_local(task.mesh, {k: local[k] for k in task.batch_keys()})
