"""k-fold cross-validation results: one table of every metric over the folds.

Why a module of its own: the folds are separate runs (``data.split=kfold``, ``data.fold =
0..k-1``, each through ``train_and_evaluate``; ``benchmarks/cross_validate.py`` drives
them), and what a researcher reports is the mean and spread over folds, as Cornac's
``CrossValidation`` does. This module only aggregates finished runs' test metrics, so it
needs nothing from the training loop.

Per metric: ``mean`` over folds, ``std`` the sample standard deviation (``ddof=1``; 0 with
one fold), and every fold's value; a metric missing or NaN in a fold is left out of that
metric's statistics (its ``folds`` count says how many entered).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np


def fold_table(per_fold: Sequence[Mapping[str, float]]) -> dict[str, dict]:
  """``{metric: {"mean", "std", "folds", "values"}}`` from each fold's test metrics."""
  names = sorted({k for fold in per_fold for k in fold})
  out = {}
  for name in names:
    values = [float(f[name]) if name in f else float("nan") for f in per_fold]
    ok = np.array([v for v in values if np.isfinite(v)], np.float64)
    out[name] = {
      "mean": float(ok.mean()) if ok.size else float("nan"),
      "std": float(ok.std(ddof=1)) if ok.size > 1 else 0.0,
      "folds": int(ok.size),
      "values": values,
    }
  return out


def fold_markdown(table: Mapping[str, Mapping], digits: int = 4) -> str:
  """The table as Markdown: one row per metric, mean ± std, then each fold."""
  if not table:
    return ""
  k = max(len(v["values"]) for v in table.values())
  head = "| metric | mean ± std | " + " | ".join(f"fold {j}" for j in range(k)) + " |"
  lines = [head, "|---|---|" + "---|" * k]
  for name, v in table.items():
    cells = " | ".join(f"{x:.{digits}f}" for x in v["values"])
    lines.append(f"| {name} | {v['mean']:.{digits}f} ± {v['std']:.{digits}f} | {cells} |")
  return "\n".join(lines)
