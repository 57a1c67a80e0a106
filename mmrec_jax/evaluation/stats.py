"""Paired significance tests between two systems evaluated on the same users.

Both tests pair users: the per-user values of a metric from two
:class:`~mmrec_jax.evaluation.ranking.EvalResult` objects are aligned on the users both
evaluated (normally all of them: same split, same ground truth).

  * paired t-test (``scipy.stats.ttest_rel``): mean of the per-user differences;
  * Wilcoxon signed-rank (``scipy.stats.wilcoxon``, ``zero_method='wilcox'``): drops users
    whose values are equal (typical: both 0), robust to the skewed metric distributions.
    When every difference is zero the test is undefined; we report statistic 0, p = 1.

``holm`` adjusts a family of p-values (several metrics or baselines) for multiple comparison.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import stats as sps


def align(
  users_a: np.ndarray, values_a: np.ndarray, users_b: np.ndarray, values_b: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Values of both systems on the users they share, in increasing user order."""
  common, ia, ib = np.intersect1d(users_a, users_b, assume_unique=True, return_indices=True)
  return common, np.asarray(values_a, np.float64)[ia], np.asarray(values_b, np.float64)[ib]


def paired_tests(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
  """t-test and Wilcoxon on paired samples ``a`` (system A) and ``b`` (system B)."""
  a = np.asarray(a, np.float64)
  b = np.asarray(b, np.float64)
  if a.shape != b.shape or a.ndim != 1:
    raise ValueError(f"paired samples need equal 1-d shapes, got {a.shape} and {b.shape}")
  d = a - b
  out: dict[str, float] = {
    "n": float(a.size),
    "mean_a": float(a.mean()) if a.size else np.nan,
    "mean_b": float(b.mean()) if b.size else np.nan,
    "mean_diff": float(d.mean()) if d.size else np.nan,
  }
  if a.size < 2 or not np.any(d != 0):
    out.update(t_stat=0.0, t_pvalue=1.0, wilcoxon_stat=0.0, wilcoxon_pvalue=1.0)
    return out
  if np.all(d == d[0]):  # constant non-zero difference: t undefined (zero variance), p -> 0
    out.update(t_stat=float(np.sign(d[0]) * np.inf), t_pvalue=0.0)
  else:
    t = sps.ttest_rel(a, b)
    out.update(t_stat=float(t.statistic), t_pvalue=float(t.pvalue))
  w = sps.wilcoxon(a, b, zero_method="wilcox")
  out.update(wilcoxon_stat=float(w.statistic), wilcoxon_pvalue=float(w.pvalue))
  return out


def compare(result_a: Any, result_b: Any, metrics: Sequence[str]) -> dict[str, dict[str, float]]:
  """Paired tests of two EvalResults for each metric name (e.g. ``'ndcg@10'``)."""
  out = {}
  for m in metrics:
    if m not in result_a.per_user or m not in result_b.per_user:
      raise KeyError(f"metric {m!r} missing; available: {sorted(result_a.per_user)}")
    _, va, vb = align(result_a.users, result_a.per_user[m], result_b.users, result_b.per_user[m])
    out[m] = paired_tests(va, vb)
  return out


def holm(pvalues: Sequence[float]) -> np.ndarray:
  """Holm-Bonferroni adjusted p-values (same order as given), monotone and capped at 1."""
  p = np.asarray(pvalues, np.float64)
  m = p.size
  order = np.argsort(p, kind="stable")
  adj = np.maximum.accumulate((m - np.arange(m)) * p[order])
  out = np.empty(m)
  out[order] = np.minimum(adj, 1.0)
  return out
