"""Metrics on slices of the evaluation: cold items, item-popularity and user-activity buckets.

A slice never changes the ranking: every user is still ranked over the whole catalogue with
the same exclusions; the slice only restricts *which ground truth counts* (item slices) or
*which users are averaged* (user slices). So slices are computed on the host from the
top-K lists that the on-device evaluation already returned -- no second scoring pass.

Definitions (``T_u`` ground truth of user u, ``c(i)`` number of train interactions of item
i, ``a(u)`` number of train interactions of user u):

  * ``cold_items``: ground truth restricted to items with ``c(i) = 0`` (never seen in
    training: pure content-based cold start). For each user ``T'_u = T_u ∩ {i: c(i) = 0}``;
    users with empty ``T'_u`` are left out; hits count only items of ``T'_u``; every metric
    then uses ``T'_u`` in place of ``T_u`` (recall = hits / |T'_u|, precision = hits / K, ...).
  * ``items_head`` / ``items_mid`` / ``items_tail``: the items with ``c(i) > 0`` sorted by
    ``c(i)`` descending (ties: lower id first) and cut into ``num_buckets`` groups of (nearly)
    equal item count (terciles by default); ground truth restricted to each group as above.
    Cold items are not in these buckets (they are their own slice).
  * ``users_low`` / ``users_mid`` / ``users_high``: the evaluated users sorted by ``a(u)``
    ascending (ties: lower id first) and cut into ``num_buckets`` groups of (nearly) equal
    user count; the metrics of each group are plain averages of the per-user values.

Each slice reports ``num_users`` (users averaged) and ``num_truth`` (ground-truth pairs that
count), so an empty or tiny slice is visible rather than silently 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mmrec_jax.evaluation.metrics import metric_names, metrics_from_hits
from mmrec_jax.evaluation.result import CSR, EvalResult

_BUCKET_NAMES = {2: ("head", "tail"), 3: ("head", "mid", "tail")}
_USER_NAMES = {2: ("low", "high"), 3: ("low", "mid", "high")}


def _names(num: int, table: dict[int, tuple[str, ...]]) -> tuple[str, ...]:
  return table.get(num, tuple(f"q{j + 1}" for j in range(num)))


def train_counts(train: CSR, num_items: int) -> tuple[np.ndarray, np.ndarray]:
  """(per-user, per-item) train interaction counts from the train CSR."""
  users = np.diff(train[0])
  items = np.bincount(train[1], minlength=num_items)
  return users, items


def item_buckets(item_counts: np.ndarray, num_buckets: int = 3) -> dict[str, np.ndarray]:
  """Bool item masks: ``cold`` plus popularity buckets over items seen in training."""
  seen = np.nonzero(item_counts > 0)[0]
  order = seen[np.lexsort((seen, -item_counts[seen]))]
  out = {"cold": item_counts == 0}
  for name, part in zip(_names(num_buckets, _BUCKET_NAMES), np.array_split(order, num_buckets)):
    mask = np.zeros(item_counts.size, bool)
    mask[part] = True
    out[name] = mask
  return out


def slice_metrics(
  result: EvalResult,
  truth: CSR,
  *,
  ks: Sequence[int],
  metrics: Sequence[str],
  items: np.ndarray | None = None,
  users: np.ndarray | None = None,
) -> dict[str, float]:
  """Mean metrics with ground truth restricted to ``items`` (bool [num_items]) and/or the
  evaluated users restricted to ``users`` (bool aligned with ``result.users``).

  Needs ``result.topk_items``/``topk_scores`` with at least ``max(ks)`` columns.
  """
  names = metric_names(metrics, ks)
  if result.topk_items is None or result.topk_items.shape[1] < max(ks):
    raise ValueError(f"slices need the top-{max(ks)} lists: evaluate with return_topk >= {max(ks)}")
  num_items = result.num_items
  rows = np.arange(result.users.size) if users is None else np.nonzero(users)[0]
  uid = result.users[rows]
  indptr, indices = truth
  lens = indptr[uid + 1] - indptr[uid]
  starts = np.repeat(indptr[uid], lens)
  pos = np.arange(int(lens.sum())) - np.repeat(np.cumsum(lens) - lens, lens)
  t_items = indices[starts + pos].astype(np.int64)
  t_rows = np.repeat(np.arange(rows.size), lens)
  if items is not None:
    keep = items[t_items]
    t_items, t_rows = t_items[keep], t_rows[keep]
  n_truth = np.bincount(t_rows, minlength=rows.size)
  key_truth = np.sort(t_rows * num_items + t_items)
  kmax = max(ks)
  top = result.topk_items[rows, :kmax].astype(np.int64)
  key_top = np.arange(rows.size)[:, None] * num_items + top
  if key_truth.size:
    at = np.minimum(np.searchsorted(key_truth, key_top), key_truth.size - 1)
    hits = (key_truth[at] == key_top) & np.isfinite(result.topk_scores[rows, :kmax])
  else:
    hits = np.zeros(key_top.shape, bool)
  has = n_truth > 0
  vals = metrics_from_hits(hits[has], n_truth[has], ks, metrics)
  out = {"num_users": float(has.sum()), "num_truth": float(n_truth.sum())}
  for name in names:
    out[name] = float(vals[name].mean(dtype=np.float64)) if has.any() else float("nan")
  return out


def evaluate_slices(
  result: EvalResult,
  truth: CSR,
  train: CSR,
  *,
  ks: Sequence[int],
  metrics: Sequence[str],
  num_buckets: int = 3,
) -> dict[str, dict[str, float]]:
  """All slices of the module docstring: ``{'cold_items': {...}, 'items_head': {...}, ...}``."""
  user_counts, item_counts = train_counts(train, result.num_items)
  out = {}
  for name, mask in item_buckets(item_counts, num_buckets).items():
    out[f"{name}_items" if name == "cold" else f"items_{name}"] = slice_metrics(
      result, truth, ks=ks, metrics=metrics, items=mask
    )
  act = user_counts[result.users]
  order = np.lexsort((result.users, act))
  for name, part in zip(_names(num_buckets, _USER_NAMES), np.array_split(order, num_buckets)):
    mask = np.zeros(result.users.size, bool)
    mask[part] = True
    out[f"users_{name}"] = slice_metrics(result, truth, ks=ks, metrics=metrics, users=mask)
  return out


def slices_table(slices: dict[str, dict[str, float]], columns: Sequence[str]) -> str:
  """Markdown table, one row per slice (for reports and logs)."""
  head = "| slice | users | truth | " + " | ".join(columns) + " |"
  lines = [head, "|" + "---|" * (len(columns) + 3)]
  for name, row in slices.items():
    vals = " | ".join(f"{row[c]:.4f}" for c in columns)
    lines.append(f"| {name} | {int(row['num_users'])} | {int(row['num_truth'])} | {vals} |")
  return "\n".join(lines)
