"""Beyond-accuracy metrics of the top-K lists: coverage, Gini, novelty, popularity, diversity.

Why from the top-K lists: they describe what users are *shown*, so they need no ground
truth and no second scoring pass; the full-ranking evaluation already returns the lists.

Definitions, for the evaluated users ``U`` (those with ground truth), ``L_u`` the top-K
list of user ``u`` (positions with score ``-inf`` -- nothing rankable left -- dropped),
``I`` the catalogue, ``c(i)`` the number of TRAIN interactions of item ``i`` and ``d(i)``
the number of distinct train users of ``i``, ``n_train_users`` the users with a train row:

  * ``coverage@K`` ``|union_u L_u| / |I|`` (catalogue coverage).
  * ``gini@K``     Gini index of the exposure counts ``e(i) = |{u: i in L_u}|`` over the
    WHOLE catalogue (never-recommended items count with 0), sorted ascending
    ``e_(1) <= ... <= e_(n)``: ``sum_j (2j - n - 1) e_(j) / (n sum_j e_(j))``; 0 = every
    item shown equally often, -> 1 = one item shown to everyone (RecBole's GiniIndex).
  * ``novelty@K``  mean over users of ``mean_{i in L_u} -log2(max(d(i), 1) /
    n_train_users)``: the self-information of the recommended items (Zhou et al., PNAS
    2010); higher = less popular items.
  * ``arp@K``      average recommendation popularity, mean over users of ``mean_{i in
    L_u} c(i)`` (Yin et al., VLDB 2012; RecBole's AveragePopularity).
  * ``ild@K``      intra-list diversity, mean over users with ``|L_u| >= 2`` of the mean
    over pairs ``i < j`` in ``L_u`` of ``1 - cos(f_i, f_j)`` with ``f`` the item features
    of ``eval.ild_modality`` (an all-zero feature row has cosine 0 with everything).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mmrec_jax.errors import ConfigError

BEYOND_METRICS = ("coverage", "gini", "novelty", "arp", "ild")


def check_beyond(names: Sequence[str]) -> tuple[str, ...]:
  for n in names:
    if n not in BEYOND_METRICS:
      raise ConfigError(
        f"config.eval.beyond: unknown metric {n!r}; valid: {', '.join(BEYOND_METRICS)}"
      )
  return tuple(names)


def gini(counts: np.ndarray) -> float:
  """Gini index of non-negative counts (module doc); NaN when all are 0."""
  c = np.sort(np.asarray(counts, np.float64))
  n = c.size
  total = c.sum()
  if n == 0 or total == 0:
    return float("nan")
  j = np.arange(1, n + 1)
  return float(np.sum((2 * j - n - 1) * c) / (n * total))


def beyond_metrics(
  topk_items: np.ndarray,
  topk_scores: np.ndarray,
  *,
  ks: Sequence[int],
  metrics: Sequence[str],
  num_items: int,
  train_users: np.ndarray,
  train_items: np.ndarray,
  features: np.ndarray | None = None,
) -> tuple[dict[str, float], dict[str, np.ndarray]]:
  """(means, per-user values) of the beyond-accuracy ``metrics`` at each K (module doc)."""
  metrics = check_beyond(metrics)
  items = np.asarray(topk_items, np.int64)
  valid = np.isfinite(np.asarray(topk_scores))
  n_users = items.shape[0]
  train_users = np.asarray(train_users, np.int64)
  train_items = np.asarray(train_items, np.int64)
  c = np.bincount(train_items, minlength=num_items).astype(np.float64)
  if train_items.size:
    width = int(train_users.max()) + 1
    pairs = np.unique(train_items * width + train_users)
    d = np.bincount(pairs // width, minlength=num_items).astype(np.float64)
    n_train_users = np.unique(train_users).size
  else:
    d, n_train_users = np.zeros(num_items), 1
  info = -np.log2(np.maximum(d, 1.0) / max(n_train_users, 1))
  unit = None
  if "ild" in metrics:
    if features is None:
      raise ConfigError(
        "config.eval.beyond has 'ild' but the dataset has no item features "
        "(set eval.ild_modality to one of its modalities)"
      )
    f = np.asarray(features, np.float64)
    norm = np.linalg.norm(f, axis=1, keepdims=True)
    unit = np.where(norm > 0, f / np.where(norm > 0, norm, 1.0), 0.0)
  means, per_user = {}, {}
  for k in ks:
    k = int(k)
    it, ok = items[:, :k], valid[:, :k]
    cnt = ok.sum(1)
    has = cnt > 0
    for m in metrics:
      name = f"{m}@{k}"
      if m == "coverage":
        means[name] = float(np.unique(it[ok]).size / num_items)
      elif m == "gini":
        means[name] = gini(np.bincount(it[ok], minlength=num_items))
      elif m in ("novelty", "arp"):
        table = info if m == "novelty" else c
        v = np.where(ok, table[it], 0.0).sum(1) / np.maximum(cnt, 1)
        per_user[name] = np.where(has, v, np.nan).astype(np.float32)
        means[name] = float(v[has].mean()) if has.any() else float("nan")
      else:  # ild
        e = unit[it] * ok[..., None]  # [U, k, d]
        sim = np.einsum("ukd,ujd->ukj", e, e)
        pairs = cnt * (cnt - 1) / 2
        upper = np.triu(np.ones((k, k), bool), 1)
        okpair = ok[:, :, None] & ok[:, None, :] & upper[None]
        dist = np.where(okpair, 1.0 - sim, 0.0).sum((1, 2))
        many = pairs > 0
        v = np.where(many, dist / np.maximum(pairs, 1), np.nan)
        per_user[name] = v.astype(np.float32)
        means[name] = float(np.nanmean(v)) if many.any() else float("nan")
  del n_users
  return means, per_user
