"""A closed-form run preempted mid-way resumes to exactly the uninterrupted result.

iALS runs one ALS sweep per step (= epoch) of the ``closed_form`` regime; its factors are
``Table`` state, so the loop's checkpoints, SIGTERM handling and resume apply unchanged. A
run stopped by SIGTERM after sweep 2 and restarted with the same command must end with
the same validation curve and test metrics as a run that was never interrupted.
"""

from __future__ import annotations

import importlib.util
import json
import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]


def ials_config(cache_dir):
  spec = importlib.util.spec_from_file_location("synthetic", REPO / "experiments" / "synthetic.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config("smoke,ials")
  config.data.cache_dir = str(cache_dir)
  config.train.num_epochs = 4
  config.train.max_steps = -1
  config.train.early_stopping_patience = 0
  return config


def valid_curve(workdir):
  rows = [json.loads(r) for r in (workdir / "metrics.jsonl").read_text().splitlines()]
  return {r["step"]: r["ndcg@10"] for r in rows if r["kind"] == "valid"}


def test_preempted_ials_run_resumes_to_the_same_result(tmp_path, monkeypatch):
  from mmrec_jax.train import train_and_evaluate

  config = ials_config(tmp_path / "cache")
  full = train_and_evaluate(config, tmp_path / "full")
  monkeypatch.setenv("MMREC_FAULT_SIGTERM_AT_STEP", "2")
  first = train_and_evaluate(config, tmp_path / "resumed")
  assert first == {"status": "preempted", "steps": 2}
  monkeypatch.delenv("MMREC_FAULT_SIGTERM_AT_STEP")
  resumed = train_and_evaluate(config, tmp_path / "resumed")
  assert resumed["status"] == "finished" and resumed["steps"] == full["steps"] == 4
  assert resumed["best_step"] == full["best_step"]
  assert valid_curve(tmp_path / "resumed") == pytest.approx(valid_curve(tmp_path / "full"))
  assert resumed["test"] == pytest.approx(full["test"], rel=1e-6)
