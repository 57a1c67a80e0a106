"""Hyperparameter search: the registry's space, TPE + pruning, resumable study, outputs.

Most tests drive ``run_search`` with a stand-in trainer (a known function of the
parameters, with a validation curve fed to the pruning hook), so they check the search
itself in milliseconds; one test runs the documented command end to end on the smoke
config through the real trainer.
"""

import json
import math
import os
import pathlib
import subprocess
import sys

import optuna
import pytest

from mmrec_jax import config as config_lib
from mmrec_jax import tune
from mmrec_jax.errors import ConfigError

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _config(model="bpr_mf", metric="ndcg@10"):
  c = config_lib.base_config()
  c.model.name = model
  c.data.modalities = ()
  c.train.selection_metric = metric
  return config_lib.finalize(c)


class FakeTrainer:
  """valid metric = a peak at lr 1e-2 (log scale); records every call."""

  def __init__(self, curve_len=4):
    self.calls = []
    self.curve_len = curve_len

  def __call__(self, cfg, run_dir, on_validation=None):
    self.calls.append((str(run_dir), cfg.optimizer.learning_rate, cfg.seed))
    peak = 0.5 - 0.05 * (math.log10(cfg.optimizer.learning_rate) + 2.0) ** 2 + 0.001 * cfg.seed
    for k in range(1, self.curve_len + 1):
      if on_validation is not None and on_validation(
        k * 10, {"ndcg@10": peak * k / self.curve_len}
      ):
        return {"pruned": True, "valid": {"ndcg@10": peak * k / self.curve_len}}
    return {"valid": {"ndcg@10": peak}, "test": {"ndcg@10": -1.0}}


def test_search_writes_outputs_and_selects_the_best_validation_trial(tmp_path):
  fake = FakeTrainer()
  best = tune.run_search(_config(), tmp_path, trials=6, train_fn=fake)
  assert len(fake.calls) == 6
  rows = (tmp_path / "trials.csv").read_text().splitlines()
  assert len(rows) == 7 and rows[0].startswith("trial,state,valid ndcg@10")
  values = [float(r.split(",")[2]) for r in rows[1:] if ",COMPLETE," in r]
  assert best["value"] == pytest.approx(max(values))
  # The best parameters reproduce the best value under the trainer.
  cfg = tune.apply_params(_config(), best["params"])
  assert fake(cfg, tmp_path / "x")["valid"]["ndcg@10"] == pytest.approx(best["value"])
  assert set(best["params"]) == set(tune.search_space(_config()))
  assert (
    f"--config.optimizer.learning_rate={best['params']['optimizer.learning_rate']}"
    in (best["overrides"])
  )
  saved = json.loads((tmp_path / "best_config.json").read_text())
  assert saved["optimizer"]["learning_rate"] == best["params"]["optimizer.learning_rate"]
  assert (tmp_path / "history.png").stat().st_size > 0
  assert (tmp_path / "params.png").stat().st_size > 0


def test_rerun_continues_the_study_without_retraining(tmp_path):
  fake = FakeTrainer()
  tune.run_search(_config(), tmp_path, trials=3, train_fn=fake)
  first = list(fake.calls)
  tune.run_search(_config(), tmp_path, trials=5, train_fn=fake)
  assert fake.calls[:3] == first and len(fake.calls) == 5
  tune.run_search(_config(), tmp_path, trials=5, train_fn=fake)
  assert len(fake.calls) == 5  # already done: nothing trains


def test_interrupted_trial_is_rerun_with_its_parameters_in_its_directory(tmp_path):
  study = tune._study(tmp_path, "maximize", 0)
  trial = study.ask()  # a process died here: the trial stays RUNNING
  params = tune.suggest(trial, tune.search_space(_config()))
  fake = FakeTrainer()
  tune.run_search(_config(), tmp_path, trials=1, train_fn=fake)
  states = [
    t.state
    for t in optuna.load_study(
      study_name=tune.STUDY_NAME, storage=f"sqlite:///{tmp_path / 'study.db'}"
    ).get_trials()
  ]
  assert states == [optuna.trial.TrialState.FAIL, optuna.trial.TrialState.COMPLETE]
  run_dir, lr, _ = fake.calls[0]
  assert lr == params["optimizer.learning_rate"]
  assert pathlib.Path(run_dir).name == tune.trial_key(params, 0)


def test_pruned_trials_stop_at_the_hook_and_count_as_done(tmp_path):
  fake = FakeTrainer(curve_len=4)
  # Prunes every trial whose intermediate value is below 10 (all of them) after step 2.
  pruner = optuna.pruners.ThresholdPruner(lower=10.0, n_warmup_steps=1)
  best = tune.run_search(_config(), tmp_path, trials=2, train_fn=fake, pruner=pruner)
  assert best.get("trials_complete") is None  # no trial completed
  md = (tmp_path / "trials.md").read_text()
  assert md.count("PRUNED") == 2


def test_several_seeds_average_and_train_each(tmp_path):
  fake = FakeTrainer()
  best = tune.run_search(_config(), tmp_path, trials=2, seeds=[0, 3], train_fn=fake)
  assert [c[2] for c in fake.calls] == [0, 3, 0, 3]
  assert best["value"] == pytest.approx(sum(best["per_seed"]) / 2)
  assert best["per_seed"][1] - best["per_seed"][0] == pytest.approx(0.003)


def test_lower_is_better_metrics_are_minimised_and_study_direction_checked(tmp_path):
  calls = []

  def trainer(cfg, run_dir, on_validation=None):
    calls.append(cfg.optimizer.learning_rate)
    return {"valid": {"rmse": cfg.optimizer.learning_rate}}

  best = tune.run_search(_config("mf", "rmse"), tmp_path, trials=4, train_fn=trainer)
  assert best["direction"] == "minimize" and best["value"] == pytest.approx(min(calls))
  with pytest.raises(ConfigError, match="minimized"):
    tune.run_search(_config(), tmp_path, trials=5, train_fn=FakeTrainer())


def test_unknown_search_key_fails_in_one_line(monkeypatch):
  import dataclasses

  from mmrec_jax.models import registry

  spec = registry.get("bpr_mf")
  bad = dataclasses.replace(spec, search_space={"model.no_such_key": ("float", 0.0, 1.0)})
  monkeypatch.setitem(registry.MODELS, "bpr_mf", bad)
  with pytest.raises(ConfigError, match="'model.no_such_key' is not a config key"):
    tune.search_space(_config())


def test_documented_command_runs_two_trials_end_to_end(tmp_path):
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1")
  cmd = [
    sys.executable,
    "-m",
    "mmrec_jax.tune",
    "--config=experiments/synthetic.py:smoke,bpr_mf",
    f"--workdir={tmp_path / 'tune'}",
    "--trials=2",
    f"--config.data.cache_dir={tmp_path / 'cache'}",
  ]
  out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-2000:]
  best = json.loads((tmp_path / "tune" / "best.json").read_text())
  assert best["trials_complete"] + best["trials_pruned"] == 2
  # Each trial is a real run: its results.json holds the value the study recorded.
  dirs = sorted((tmp_path / "tune" / "trials").iterdir())
  assert len(dirs) == 2
  valid = [json.loads((d / "results.json").read_text())["valid"]["ndcg@10"] for d in dirs]
  assert best["value"] == pytest.approx(max(valid))


def test_on_validation_hook_stops_the_real_trainer_like_an_early_stop(tmp_path):
  from mmrec_jax.train import train_and_evaluate

  c = config_lib.base_config()
  c.data.source = "synthetic"
  c.data.num_users, c.data.num_items, c.data.num_interactions = 60, 40, 900
  c.data.cache_dir = str(tmp_path / "cache")
  c.data.modalities = ()
  c.model.name = "bpr_mf"
  c.model.embed_dim = 8
  c.input.batch_size = 64
  c.train.num_epochs = 6
  c.train.progress_bar = False
  c.eval.ks = (5,)
  c.train.selection_metric = "ndcg@5"
  config_lib.finalize(c)
  seen = []

  def hook(step, metrics):
    seen.append((step, metrics["ndcg@5"]))
    return len(seen) == 2

  result = train_and_evaluate(c, tmp_path / "run", on_validation=hook)
  steps_per_epoch = result["steps_per_epoch"]
  assert [s for s, _ in seen] == [steps_per_epoch, 2 * steps_per_epoch]
  assert result["pruned"] is True and result["steps"] == 2 * steps_per_epoch
  assert result["status"] == "finished" and "test" in result
