"""Recency-weighted popularity for users with no history, its half-life chosen on train.

Why: on a global temporal split (the deployment setting: train on the past, serve the
next weeks) most test users can be new, and what they take up is what is popular *now*,
not over the whole log. The closed-form regime ranks users without a train interaction
by a popularity column (``step/closed_form.py``); weighting each train interaction by
``0.5 ** ((t_last - t) / half_life)`` makes that column "popular lately".

The half-life is a hyper-parameter, and tuning it on a split's validation part would make
that split "seen". So ``model.fallback_half_life = -1`` (the default) picks it from the
TRAIN split alone: the last 10% of the train interactions by time are held out, users who
appear only there play the new users, and each candidate (plain counts, and half-lives of
the train time span / 2, / 4, ..., / 256) is scored by their NDCG@10 when the items are
ranked by the (weighted) counts of the first 90%. The winner -- the candidate closest to
plain counts whose score is within 1% of the best (on stationary data the short
half-lives only fit noise); plain counts with fewer than ``MIN_USERS`` such users or no
timestamps -- is then applied to the whole train split. ``0`` = plain counts; ``> 0`` =
that half-life in the timestamps' unit.
ML-100K global temporal split: span / 16 (10.5 days) is chosen; new users' test NDCG@10
0.38 -> 0.44 (benchmarks/RESULTS_protocols.md).
"""

from __future__ import annotations

import numpy as np
from absl import logging

from mmrec_jax.errors import ConfigError

HOLDOUT = 0.1
MIN_USERS = 20
TOLERANCE = 0.01
SPAN_DIVISORS = (2, 4, 8, 16, 32, 64, 128, 256)


def weighted_counts(
  items: np.ndarray, timestamps: np.ndarray, num_items: int, half_life: float, now: float
) -> np.ndarray:
  """``sum over i's interactions of 0.5 ** ((now - t) / half_life)`` (plain counts at 0)."""
  if half_life <= 0:
    return np.bincount(items, minlength=num_items).astype(np.float64)
  w = np.exp2(-(now - timestamps.astype(np.float64)) / half_life)
  return np.bincount(items, weights=w, minlength=num_items)


def _ndcg_at_10(scores: np.ndarray, users: np.ndarray, items: np.ndarray) -> float:
  """Mean NDCG@10 over ``users`` of one shared ranking by ``scores`` (ties by item id)."""
  top = np.argsort(-scores, kind="stable")[:10]
  rank = np.full(scores.shape[0], -1)
  rank[top] = np.arange(top.size)
  keys = np.unique(users.astype(np.int64) * scores.shape[0] + items)
  u, i = keys // scores.shape[0], keys % scores.shape[0]
  ids, ui = np.unique(u, return_inverse=True)
  disc = 1.0 / np.log2(np.arange(2, 12))
  r = rank[i]
  dcg = np.bincount(ui, weights=np.where(r >= 0, disc[np.maximum(r, 0)], 0.0), minlength=ids.size)
  ideal = np.cumsum(disc)[np.minimum(np.bincount(ui, minlength=ids.size), 10) - 1]
  return float(np.mean(dcg / ideal))


def choose_half_life(
  users: np.ndarray, items: np.ndarray, timestamps: np.ndarray, num_items: int
) -> tuple[float, dict[float, float]]:
  """(half-life, {candidate: holdout NDCG@10}) from the train split alone (module doc)."""
  t = np.asarray(timestamps, np.float64)
  if t.size == 0 or t.max() <= t.min():
    return 0.0, {}
  cut = np.quantile(t, 1.0 - HOLDOUT)
  early = t < cut
  seen = np.zeros(int(users.max()) + 1, bool)
  seen[users[early]] = True
  new = ~early & ~seen[users]
  if np.unique(users[new]).size < MIN_USERS:
    return 0.0, {}
  span = float(t.max() - t.min())
  now = float(t[early].max())
  scores = {}
  for hl in (0.0, *(span / d for d in SPAN_DIVISORS)):
    counts = weighted_counts(items[early], t[early], num_items, hl, now)
    scores[hl] = _ndcg_at_10(counts, users[new], items[new])
  # The candidate closest to plain counts (they come in that order) within TOLERANCE of
  # the best: on stationary data the short half-lives only add noise.
  top = max(scores.values())
  best = next(h for h in scores if scores[h] >= (1.0 - TOLERANCE) * top)
  return best, scores


def fallback_popularity(cfg, info, num_items: int) -> np.ndarray:
  """The closed-form regime's popularity column [num_items] in [0, 1] (module doc)."""
  half_life = float(cfg.get("fallback_half_life", -1.0))
  if half_life < 0 and half_life != -1.0:
    raise ConfigError(
      f"model.fallback_half_life={half_life}: -1 (chosen on train), 0 (plain counts) or > 0"
    )
  counts = np.zeros(num_items, np.float64)
  if info.item_counts is not None:
    counts[:] = np.asarray(info.item_counts, np.float64)[:num_items]
  stamps = getattr(info, "train_timestamps", None)
  users, items = getattr(info, "train_users", None), getattr(info, "train_items", None)
  if half_life != 0 and stamps is not None and users is not None and items is not None:
    users, items = np.asarray(users, np.int64), np.asarray(items, np.int64)
    stamps = np.asarray(stamps, np.float64)
    if half_life < 0:
      half_life, scores = choose_half_life(users, items, stamps, num_items)
      if scores:
        logging.info(
          "fallback popularity: half-life %s chosen on train's last %d%% (holdout ndcg@10 %s)",
          f"{half_life:g}" if half_life else "none (plain counts)",
          round(100 * HOLDOUT),
          ", ".join(f"{h:g}: {s:.4f}" for h, s in scores.items()),
        )
    if half_life > 0:
      counts = weighted_counts(items, stamps, num_items, half_life, float(stamps.max()))
  return (counts / max(float(counts.max(initial=0.0)), 1e-12)).astype(np.float32)
