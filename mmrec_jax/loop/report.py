"""The end of a finished run: the best model on valid and test, exports, results.json.

Model selection used the validation split only; the test split is scored here once, on
the best-validation checkpoint. Pointwise rankers report AUC / GAUC / LogLoss of the
split's labelled rows (``evaluation/pointwise.py``); the others full-ranking metrics.
"""

from __future__ import annotations

import dataclasses
import functools
import pathlib
from typing import Any

import ml_collections
import numpy as np

from mmrec_jax import io_utils, reporting
from mmrec_jax.data.dataset import PreparedDataset
from mmrec_jax.data.labelled import labelled_rows
from mmrec_jax.evaluation import evaluate_split, export
from mmrec_jax.evaluation.pointwise import pointwise_metrics
from mmrec_jax.loop import signals
from mmrec_jax.step import Task
from mmrec_jax.step.pointwise import PointwiseRegime


@dataclasses.dataclass
class PointwiseResult:
  """Held-out labelled-row metrics of a pointwise ranker (``metrics``: auc, gauc, ...)."""

  metrics: dict[str, float]


def evaluate_pointwise(
  task: Task, state: Any, ds: PreparedDataset, split: str, config: ml_collections.ConfigDict, mesh
) -> PointwiseResult:
  """AUC / GAUC / LogLoss of a pointwise ranker on the labelled rows of ``split``."""
  # Seeded per split, so valid and test draw different (but fixed) implicit negatives.
  seed = int(config.seed) * 3 + ("train", "valid", "test").index(split) + 1
  rows = labelled_rows(
    ds.split(split),
    float(config.data.label_threshold),
    num_items=ds.num_items,
    negatives=int(config.eval.pointwise_negatives),
    seed=seed,
  )
  score = functools.partial(task.regime.score_rows, state["params"])
  metrics = pointwise_metrics(
    score, rows.users, rows.items, rows.labels, mesh, chunk=int(config.eval.pointwise_chunk)
  )
  return PointwiseResult(metrics)


def evaluate(
  task: Task, state: Any, ds: PreparedDataset, split: str, config: ml_collections.ConfigDict, mesh
) -> Any:
  """Full-ranking evaluation of ``state`` on ``split`` (padding rows excluded).

  Pointwise rankers (their regime scores rows, not ``user . item``) are evaluated on the
  split's labelled rows instead (:func:`evaluate_pointwise`).
  """
  if isinstance(task.regime, PointwiseRegime):
    return evaluate_pointwise(task, state, ds, split, config, mesh)
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
    if not isinstance(res, PointwiseResult):  # labelled-row metrics have no lists
      if config.eval.slices and getattr(res, "slices", None):
        results[f"{split}_slices"] = res.slices
      _write_ranking_outputs(res, split, ds, config, workdir, is_main)
    if split == "valid":
      signals.fault_point("final_eval", step)
  signals.fault_point("export", step)
  writer.write(step, "final_valid", results["valid"])
  writer.write(step, "final_test", results["test"])
  return results


def _write_ranking_outputs(res, split, ds, config, workdir, is_main) -> None:
  """Top-K export and per-user metrics of a full-ranking result."""
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


def write_results(workdir: pathlib.Path, results: dict[str, Any], metric_name: str) -> None:
  """results.json (atomic) and the learning-curve plot."""
  reporting.write_json_atomic(workdir / "results.json", results)
  reporting.plot_learning_curves(
    workdir / "metrics.jsonl", workdir / "learning_curve.png", metric_name
  )
