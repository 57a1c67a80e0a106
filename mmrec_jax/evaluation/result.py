"""What an evaluation returns (:class:`EvalResult`) and its ground-truth lists (:data:`CSR`).

A module of its own so the host-side slice metrics (slices.py, numpy only) can take the
result of the on-device ranking (ranking.py) without importing it: ranking.py fills the
result and calls slices.py, never the other way round.
"""

from __future__ import annotations

import dataclasses

import numpy as np

CSR = tuple[np.ndarray, np.ndarray]  # (indptr int64 [num_users + 1], indices int32)


@dataclasses.dataclass
class EvalResult:
  """What one evaluation returns; every array is numpy on the host.

  Attributes:
    metrics: ``{'recall@10': mean over users with ground truth, ...}``.
    per_user: ``{'recall@10': float32 [n_users]}`` aligned with ``users``.
    users: int64 [n_users], the evaluated users (those with ground truth), sorted.
    coverage: ``{'coverage@10': fraction of the catalogue in some user's top-10, ...}``.
    topk_items: int32 [n_users, K] ranked item ids when asked for (``return_topk``).
    topk_scores: float32 [n_users, K] their scores (``-inf``: nothing rankable left).
    num_items: catalogue size.
    slices: filled by :func:`mmrec_jax.evaluation.slices.evaluate_slices` callers.
  """

  metrics: dict[str, float]
  per_user: dict[str, np.ndarray]
  users: np.ndarray
  coverage: dict[str, float]
  num_items: int
  topk_items: np.ndarray | None = None
  topk_scores: np.ndarray | None = None
  slices: dict[str, dict[str, float]] | None = None
