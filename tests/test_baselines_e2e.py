"""Classic baselines end to end: one step per epoch in the loop, and in ``compare``.

The ``closed_form`` regime counts one sweep per step and one step per epoch
(``loop/setup.py``); a one-shot fit (EASE, ItemKNN, MostPop) stops after its first epoch,
iALS runs one ALS sweep per epoch with validation after each. Unit references of the fits
are in tests/test_baselines.py.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]


def load_experiment(name, arg):
  spec = importlib.util.spec_from_file_location(name, REPO / "experiments" / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


@pytest.mark.parametrize("model,steps", [("ials", 3)])
def test_end_to_end_one_step_per_epoch(tmp_path, model, steps):
  from mmrec_jax.train import train_and_evaluate

  config = load_experiment("synthetic", f"smoke,{model}")
  config.data.cache_dir = str(tmp_path / "cache")
  config.train.num_epochs = 3
  config.train.max_steps = -1
  config.train.early_stopping_patience = 0
  results = train_and_evaluate(config, tmp_path / "run")
  assert results["status"] == "finished" and results["model"] == model
  assert results["steps"] == steps and results["steps_per_epoch"] == 1
  rows = [json.loads(r) for r in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
  assert sum(r["kind"] == "valid" for r in rows) == steps
  # Planted structure: a fitted model ranks far above chance (10 of 150 items: ~0.07).
  assert results["test"]["recall@10"] > 0.15, results["test"]


def test_compare_runs_the_baselines_and_ranks_them(tmp_path):
  from mmrec_jax import compare

  config = load_experiment("synthetic", "smoke")
  config.data.cache_dir = str(tmp_path / "cache")
  config.train.max_steps = -1
  config.train.num_epochs = 2
  work = tmp_path / "cmp"
  compare.run_comparison(config, ["mostpop", "itemknn", "ease", "ials"], work, baseline="mostpop")
  with open(work / "comparison.csv") as f:
    rows = list(csv.DictReader(f))
  got = {r[next(iter(r))]: float(r["ndcg@10"]) for r in rows}
  assert set(got) == {"mostpop-ids", "itemknn-ids", "ease-ids", "ials-ids"}
  for name, value in got.items():
    res = json.loads((work / name / "results.json").read_text())
    assert value == pytest.approx(res["test"]["ndcg@10"]) and 0 < value <= 1
    # One-shot fits stop after one epoch; iALS runs one ALS sweep per epoch.
    assert res["steps"] == (2 if name == "ials-ids" else 1), (name, res["steps"])
