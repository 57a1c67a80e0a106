"""Top-K ranking metrics: one vectorised implementation for numpy and jax, and a direct reference.

Definitions (binary relevance; ``T_u`` = the user's ground-truth items, ``n = |T_u|``,
``rel_r`` = 1 when the item at 1-based rank ``r`` is in ``T_u``, ``H_k = sum_{r<=k} rel_r``):

  * ``recall@K        = H_K / n``. The denominator is the full ``n``, NOT ``min(n, K)``: a
    user with 50 test items can reach at most recall@10 = 0.2. This is the RecBole /
    MMRec / LightGCN convention, so numbers compare with published tables.
  * ``recall_capped@K = H_K / min(n, K)`` (offered because it is free; "truncated recall",
    reaches 1 for every user).
  * ``precision@K     = H_K / K`` (also when the user has fewer than K ground-truth items).
  * ``hit@K           = 1 if H_K > 0 else 0``.
  * ``ndcg@K          = DCG@K / IDCG@K`` with ``DCG@K = sum_{r<=K} rel_r / log2(r + 1)`` and
    ``IDCG@K = sum_{r<=min(n, K)} 1 / log2(r + 1)`` (the ideal list puts all of ``T_u`` first).
  * ``mrr@K           = 1 / r_first`` for the first rank ``r_first <= K`` with ``rel = 1``,
    else 0.
  * ``map@K           = (1 / min(n, K)) * sum_{r<=K} P@r * rel_r`` with ``P@r = H_r / r``.

Conventions shared by every implementation (numpy reference, numpy vectorised, jax):

  * Users with ``n = 0`` are left out of every average (they have nothing to find).
  * Ranking is over every item; items in the user's exclusion set (train items, and valid
    items when testing) get score ``-inf`` and never count as hits, even if they are also in
    ``T_u`` (they still count in ``n``; prepared splits keep the sets disjoint anyway).
  * Ties in score are broken by lower item id first. ``jax.lax.top_k`` documents exactly
    this ("If two elements are equal, the lower-index element appears first"), and the
    distributed top-k merge keeps it (candidates are concatenated in shard order, i.e. in
    item-id order), so jax and numpy rank identically. NaN scores are not supported.
  * ``coverage@K`` = |items in the top-K list of at least one evaluated user| / num_items
    (positions with score ``-inf`` -- a user with fewer than K rankable items -- do not count);
    reported with the metrics when ``eval.beyond`` has ``coverage`` (the default), beside
    the other beyond-accuracy metrics of ``beyond.py``.

Metrics without a cut-off (AUC, GAUC, Cornac's MAP) are in ``full.py``, rating metrics in
``rating.py``, sampled-candidate metrics in ``sampled.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from mmrec_jax.errors import ConfigError

METRICS = ("recall", "recall_capped", "ndcg", "precision", "hit", "mrr", "map")


def metric_names(metrics: Sequence[str], ks: Sequence[int]) -> list[str]:
  """Validated ``'<metric>@<k>'`` names, metric-major, in the order given.

  Raises ConfigError naming ``eval.metrics`` / ``eval.ks`` on an unknown metric or a bad K.
  """
  if not len(metrics):
    raise ConfigError("config.eval.metrics is empty; choose from " + ", ".join(METRICS))
  for m in metrics:
    if m not in METRICS:
      raise ConfigError(f"config.eval.metrics: unknown metric {m!r}; valid: {', '.join(METRICS)}")
  if not len(ks):
    raise ConfigError("config.eval.ks is empty; give cut-offs such as (10, 20)")
  for k in ks:
    if int(k) != k or k < 1:
      raise ConfigError(f"config.eval.ks: cut-off {k!r} must be a positive integer")
  return [f"{m}@{int(k)}" for m in metrics for k in ks]


def metrics_from_hits(
  hits: Any, n_truth: Any, ks: Sequence[int], metrics: Sequence[str], xp: Any = np
) -> dict[str, Any]:
  """Per-user metric values from a ranked hit matrix; works with ``xp=numpy`` or ``jax.numpy``.

  Args:
    hits: bool [U, K_max], ``hits[u, r]`` = the item at 0-based rank r is relevant (and
      rankable). ``K_max >= max(ks)``.
    n_truth: int [U], ground-truth set sizes. Users with 0 get 0 everywhere (callers drop them).
    ks: cut-offs.
    metrics: names from :data:`METRICS`.
    xp: the array module.

  Returns:
    ``{'<metric>@<k>': float32 [U]}`` in :func:`metric_names` order.
  """
  names = metric_names(metrics, ks)
  kmax = hits.shape[1]
  if max(ks) > kmax:
    raise ValueError(f"hit matrix has {kmax} ranks but ks asks for {max(ks)}")
  h = hits.astype(xp.float32)
  n = n_truth.astype(xp.float32)
  has = n > 0
  safe_n = xp.where(has, n, 1.0)
  ranks = xp.arange(1, kmax + 1, dtype=xp.float32)
  cum = xp.cumsum(h, axis=1)  # H_r
  disc = 1.0 / xp.log2(ranks + 1.0)  # 1 / log2(r + 1)
  dcg = xp.cumsum(h * disc, axis=1)
  idcg_table = xp.cumsum(disc)  # IDCG for m = 1..kmax ideal hits
  ap_sum = xp.cumsum(h * cum / ranks, axis=1)  # sum_r P@r * rel_r
  # Reciprocal rank of the first hit: the max of rel_r / r (1/r is decreasing).
  rr = h / ranks
  out = {}
  for m in metrics:
    for k in ks:
      k = int(k)
      hk = cum[:, k - 1]
      capped = xp.minimum(safe_n, float(k))
      if m == "recall":
        v = hk / safe_n
      elif m == "recall_capped":
        v = hk / capped
      elif m == "precision":
        v = hk / float(k)
      elif m == "hit":
        v = (hk > 0).astype(xp.float32)
      elif m == "ndcg":
        idcg = xp.take(idcg_table, capped.astype(xp.int32) - 1)
        v = dcg[:, k - 1] / idcg
      elif m == "mrr":
        v = xp.max(rr[:, :k], axis=1)
      elif m == "map":
        v = ap_sum[:, k - 1] / capped
      else:  # unreachable: metric_names validated
        raise AssertionError(m)
      out[f"{m}@{k}"] = xp.where(has, v, 0.0).astype(xp.float32)
  assert list(out) == names
  return out


# ----------------------------------------------------------------------------- reference


def rank_items_reference(
  scores: np.ndarray, exclude: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
  """Top-k of one user's full score row by the documented order (score desc, item id asc).

  ``exclude`` item ids get ``-inf`` first. Returns (items [k], scores [k]).
  """
  s = np.asarray(scores, np.float64).copy()
  s[np.asarray(exclude, np.int64)] = -np.inf
  order = np.lexsort((np.arange(s.size), -s))[:k]
  return order, s[order]


def reference_evaluate(
  user_matrix: np.ndarray,
  item_matrix: np.ndarray,
  users: np.ndarray,
  truth: Sequence[np.ndarray],
  exclude: Sequence[np.ndarray],
  ks: Sequence[int],
  metrics: Sequence[str],
) -> dict[str, np.ndarray]:
  """Direct, per-user, loop-based evaluation straight from the definitions (tests only).

  ``truth[u]`` / ``exclude[u]`` are item-id arrays of user ``u``; ``users`` are evaluated
  in the given order and users with empty truth are skipped. Scores are ``user @ item``
  in float64 (exact for the integer-valued embeddings the tests use, so ties are real).

  Returns ``{'users': int [n], '<metric>@<k>': float [n], 'topk': int [n, K_max],
  'coverage@<k>': float}``.
  """
  names = metric_names(metrics, ks)
  kmax = max(ks)
  um = np.asarray(user_matrix, np.float64)
  im = np.asarray(item_matrix, np.float64)
  num_items = im.shape[0]
  kept, rows, tops = [], {n: [] for n in names}, []
  seen = {int(k): set() for k in ks}
  for u in users:
    t = set(int(i) for i in truth[u])
    if not t:
      continue
    kept.append(int(u))
    top, top_s = rank_items_reference(um[u] @ im.T, exclude[u], kmax)
    tops.append(top)
    excl = set(int(i) for i in exclude[u])
    rel = [int(i) in t and i not in excl and np.isfinite(s) for i, s in zip(top, top_s)]
    n = len(t)
    for k in ks:
      seen[k].update(int(i) for i, s in zip(top[:k], top_s[:k]) if np.isfinite(s))
      r = rel[:k]
      hits = sum(r)
      first = next((j + 1 for j, x in enumerate(r) if x), None)
      dcg = sum(1.0 / np.log2(j + 2) for j, x in enumerate(r) if x)
      idcg = sum(1.0 / np.log2(j + 2) for j in range(min(n, k)))
      ap = sum(sum(r[: j + 1]) / (j + 1) for j, x in enumerate(r) if x) / min(n, k)
      vals = {
        "recall": hits / n,
        "recall_capped": hits / min(n, k),
        "precision": hits / k,
        "hit": float(hits > 0),
        "ndcg": dcg / idcg,
        "mrr": 0.0 if first is None else 1.0 / first,
        "map": ap,
      }
      for m in metrics:
        rows[f"{m}@{k}"].append(vals[m])
  out: dict[str, Any] = {"users": np.asarray(kept, np.int64)}
  out.update({n: np.asarray(v, np.float64) for n, v in rows.items()})
  out["topk"] = np.asarray(tops, np.int64).reshape(len(kept), kmax)
  for k in ks:
    out[f"coverage@{k}"] = len(seen[k]) / num_items
  return out
