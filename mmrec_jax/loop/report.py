"""The end of a finished run: the best model on valid and test, exports, results.json.

Model selection used the validation split only; the test split is scored here once, on
the best-validation checkpoint.
"""

from __future__ import annotations

import pathlib
from typing import Any

import ml_collections
import numpy as np

from mmrec_jax import io_utils, reporting
from mmrec_jax.data.dataset import PreparedDataset
from mmrec_jax.evaluation import evaluate_split, export
from mmrec_jax.loop import signals
from mmrec_jax.step import Task


def evaluate(
  task: Task, state: Any, ds: PreparedDataset, split: str, config: ml_collections.ConfigDict, mesh
) -> Any:
  """Full-ranking evaluation of ``state`` on ``split`` (padding rows excluded)."""
  users, items = task.eval_reprs(state)
  # Tables are padded to a multiple of the device count; padding rows are not users/items.
  return evaluate_split(
    users[: task.num_users], items[: task.num_items], ds, split, config.eval, mesh
  )


def final_report(
  *,
  task: Task,
  state: Any,
  ds: PreparedDataset,
  config: ml_collections.ConfigDict,
  mesh,
  workdir: pathlib.Path,
  writer,
  header: dict[str, Any],
  is_main: bool,
) -> dict[str, Any]:
  """Scores valid and test, writes exports and per-user metrics; returns the results.

  ``header`` holds the run's summary fields (status, steps, times, model) that come
  before the metrics in ``results.json``.
  """
  results = dict(header)
  step = header["steps"]
  for split in ("valid", "test"):
    res = evaluate(task, state, ds, split, config, mesh)
    results[split] = {k: float(v) for k, v in res.metrics.items()}
    if config.eval.slices and getattr(res, "slices", None):
      results[f"{split}_slices"] = res.slices
    if config.eval.export_topk and is_main:
      export.write_topk(
        workdir / f"topk_{split}.tsv",
        ds.user_raw_ids()[res.users],
        ds.item_raw_ids(),
        res.topk_items,
        res.topk_scores,
      )
    if is_main:
      # Atomic: a run killed here leaves the previous file or none, never half of one.
      with io_utils.atomic_path(workdir / f"per_user_{split}.npz") as tmp:
        np.savez(tmp, users=res.users, **{k: v for k, v in res.per_user.items()})
    if split == "valid":
      signals.fault_point("final_eval", step)
  signals.fault_point("export", step)
  writer.write(step, "final_valid", results["valid"])
  writer.write(step, "final_test", results["test"])
  return results


def write_results(workdir: pathlib.Path, results: dict[str, Any], metric_name: str) -> None:
  """results.json (atomic) and the learning-curve plot."""
  reporting.write_json_atomic(workdir / "results.json", results)
  reporting.plot_learning_curves(
    workdir / "metrics.jsonl", workdir / "learning_curve.png", metric_name
  )
