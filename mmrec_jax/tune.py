r"""Hyperparameter search on validation: ``python -m mmrec_jax.tune``.

  python -m mmrec_jax.tune --config=experiments/ml100k.py:bpr_mf --trials=30 \
      --workdir=runs/tune_bpr [--seeds=0,1,2] [--config.train.num_epochs=40]

Why it looks like this:

* The space is the model's own: ``search_space`` of its registry entry
  (``models/registry.py``), dotted config keys -> ``("log_float", lo, hi)``,
  ``("float", lo, hi)``, ``("int", lo, hi)`` or ``("choice", values)``. A model added with
  one file and one registry line is searchable with no change here.
* Optuna's TPE sampler (seeded with ``config.seed``) proposes; a median pruner stops a
  trial whose validation curve falls below the median of earlier trials at the same
  validation step (``train_and_evaluate``'s ``on_validation`` hook ends the run as an
  early stop, so its best checkpoint and results are still written).
* Selection uses the validation split only: the objective is the best validation value of
  ``train.selection_metric`` (lower-is-better metrics such as RMSE are minimised). Test
  metrics are computed by every trial's run (it is the same trainer) but never read here.
* Several seeds (``--seeds``): each trial trains once per seed (``config.seed``, which also
  seeds random splits) and the objective is the mean, so a setting that only suits one
  split or one initialisation is not chosen. The pruner watches the first seed's curve.
* Resumable: the study lives in ``<workdir>/study.db`` (SQLite, transactional, so a kill
  loses nothing that was committed) and each trial trains in ``<workdir>/trials/<key>``,
  ``key`` a hash of its parameters and seed, so the same command continues a search. A
  trial that was running when the process died is marked failed and its parameters are
  queued again: its runs resume from their own checkpoints. The workdir is locked
  (``workdir_lock``) so two searches cannot write the same study.

Outputs in ``<workdir>``, the tables rewritten after every trial, the plots at the end: ``trials.csv`` / ``trials.md`` (one
row per trial: state, objective, parameters), ``best.json`` (parameters, objective, the
``--config.*`` overrides that reproduce it), ``best_config.json`` (the whole config) and
``history.png`` (objective per trial and the running best) and ``params.png`` (objective
against each parameter).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import pathlib
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import ml_collections
from absl import app, flags, logging

from mmrec_jax.errors import ConfigError

FLAGS = flags.FLAGS
STUDY_NAME = "mmrec_jax"


def define_flags() -> None:
  """Registers the command's flags (only when run as the command; see compare.py)."""
  from ml_collections import config_flags  # noqa: PLC0415

  config_flags.DEFINE_config_file("config", None, "Experiment config file.", lock_config=True)
  flags.DEFINE_string("workdir", None, "Directory of the study, its trials and outputs.")
  flags.DEFINE_integer("trials", 20, "Total number of finished trials to reach.")
  flags.DEFINE_list("seeds", None, "Seeds each trial trains with (default: the config's seed).")


def search_space(config: ml_collections.ConfigDict) -> dict[str, tuple]:
  """The configured model's search space, each key checked against the config."""
  from mmrec_jax.models import registry  # noqa: PLC0415

  space = dict(registry.get(config.model.name).search_space)
  if not space:
    raise ConfigError(f"model.name={config.model.name!r} has no search_space in models/registry.py")
  for key in space:
    get_value(config, key)
  return space


def get_value(config: ml_collections.ConfigDict, dotted: str) -> Any:
  node = config
  for part in dotted.split("."):
    if not isinstance(node, ml_collections.ConfigDict) or part not in node:
      raise ConfigError(f"search space key {dotted!r} is not a config key")
    node = node[part]
  return node


def suggest(trial, space: Mapping[str, tuple]) -> dict[str, Any]:
  """Draws one value per key from its distribution (models/registry.py DISTRIBUTIONS)."""
  params = {}
  for key, dist in space.items():
    kind = dist[0]
    if kind == "log_float":
      params[key] = trial.suggest_float(key, float(dist[1]), float(dist[2]), log=True)
    elif kind == "float":
      params[key] = trial.suggest_float(key, float(dist[1]), float(dist[2]))
    elif kind == "int":
      params[key] = trial.suggest_int(key, int(dist[1]), int(dist[2]))
    elif kind == "choice":
      params[key] = trial.suggest_categorical(key, list(dist[1]))
    else:
      raise ConfigError(f"search space {key!r}: unknown distribution {kind!r}")
  return params


def apply_params(
  config: ml_collections.ConfigDict, params: Mapping[str, Any], seed: int | None = None
) -> ml_collections.ConfigDict:
  """A copy of ``config`` with ``params`` (dotted keys) and ``seed`` set, validated."""
  from mmrec_jax import config as config_lib  # noqa: PLC0415

  out = ml_collections.ConfigDict(config.to_dict())
  for key, value in params.items():
    *path, last = key.split(".")
    node = out
    for part in path:
      node = node[part]
    current = node[last]
    if isinstance(current, float) and isinstance(value, int):
      value = float(value)
    node[last] = value
  if seed is not None:
    out.seed = int(seed)
  config_lib.validate(out)
  out.lock()
  return out


def trial_key(params: Mapping[str, Any], seed: int) -> str:
  """Directory name of one (parameters, seed) run: stable across processes."""
  blob = json.dumps({"params": dict(sorted(params.items())), "seed": seed}, sort_keys=True)
  return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _study(workdir: pathlib.Path, direction: str, seed: int, pruner=None):
  import optuna  # noqa: PLC0415  (the `tune` extra)

  optuna.logging.set_verbosity(optuna.logging.WARNING)
  storage = optuna.storages.RDBStorage(f"sqlite:///{workdir / 'study.db'}")
  study = optuna.create_study(
    study_name=STUDY_NAME,
    storage=storage,
    direction=direction,
    sampler=optuna.samplers.TPESampler(seed=seed),
    pruner=pruner
    if pruner is not None
    else optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=0),
    load_if_exists=True,
  )
  if study.direction.name.lower() != direction:
    raise ConfigError(
      f"{workdir / 'study.db'} holds a study that is {study.direction.name.lower()}d; this "
      f"selection metric is {direction}d: use another --workdir"
    )
  # Trials left RUNNING by a process that died: failed, and their parameters queued
  # again (their runs resume from their checkpoints, the directory is keyed by them).
  for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
    study._storage.set_trial_state_values(t._trial_id, optuna.trial.TrialState.FAIL)
    study.enqueue_trial(t.params, skip_if_exists=False)
    logging.warning("trial %d was interrupted: its parameters are queued again", t.number)
  return study


def _pruning_hook(trial, metric: str) -> Callable[[int, Mapping[str, float]], bool]:
  """``on_validation`` for ``train_and_evaluate``: reports each validation, asks to prune."""
  count = [0]

  def hook(step: int, metrics: Mapping[str, float]) -> bool:
    del step
    count[0] += 1
    trial.report(float(metrics[metric]), count[0])
    return trial.should_prune()

  return hook


def run_search(
  config: ml_collections.ConfigDict,
  workdir: str | pathlib.Path,
  trials: int,
  seeds: Sequence[int] | None = None,
  *,
  pruner=None,
  train_fn: Callable | None = None,
) -> dict:
  """Runs (or continues) the search until ``trials`` trials are complete or pruned.

  Returns the content of ``best.json``. ``train_fn(config, workdir, on_validation=...)``
  defaults to :func:`mmrec_jax.train.train_and_evaluate` (tests pass their own).
  """
  import optuna  # noqa: PLC0415

  from mmrec_jax.evaluation import LOWER_IS_BETTER  # noqa: PLC0415
  from mmrec_jax.workdir_lock import WorkdirLock  # noqa: PLC0415

  if trials < 1:
    raise ConfigError(f"--trials={trials}: must be >= 1")
  if train_fn is None:
    from mmrec_jax.train import train_and_evaluate as train_fn  # noqa: PLC0415
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  space = search_space(config)
  seeds = [int(config.seed)] if not seeds else [int(s) for s in seeds]
  metric = config.train.selection_metric
  direction = "minimize" if metric in LOWER_IS_BETTER else "maximize"
  done_states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)

  with WorkdirLock(workdir):
    study = _study(workdir, direction, int(config.seed), pruner)

    def objective(trial) -> float:
      params = suggest(trial, space)
      values = []
      for j, seed in enumerate(seeds):
        cfg = apply_params(config, params, seed)
        run_dir = workdir / "trials" / trial_key(params, seed)
        trial.set_user_attr(f"run_dir_{seed}", str(run_dir))
        hook = _pruning_hook(trial, metric) if j == 0 else None
        result = train_fn(cfg, run_dir, on_validation=hook)
        if result.get("pruned"):
          raise optuna.TrialPruned()
        values.append(float(result["valid"][metric]))
      trial.set_user_attr("per_seed", values)
      return sum(values) / len(values)

    while True:
      finished = len(study.get_trials(deepcopy=False, states=done_states))
      if finished >= trials:
        break
      study.optimize(objective, n_trials=1, catch=())
      write_outputs(study, config, space, workdir, metric, plots=False)
    return write_outputs(study, config, space, workdir, metric)


def write_outputs(
  study, config, space, workdir: pathlib.Path, metric: str, *, plots: bool = True
) -> dict:
  """trials.csv/.md, best.json, best_config.json and (``plots``) the plots (module doc)."""
  import optuna  # noqa: PLC0415

  from mmrec_jax import io_utils  # noqa: PLC0415

  trials = study.get_trials(deepcopy=False)
  keys = list(space)
  header = ["trial", "state", f"valid {metric}"] + keys
  rows = [
    [t.number, t.state.name, "" if t.value is None else t.value]
    + [t.params.get(k, "") for k in keys]
    for t in trials
  ]
  buf = io.StringIO()
  csv.writer(buf).writerows([header] + rows)
  io_utils.atomic_write_text(workdir / "trials.csv", buf.getvalue())
  md = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  for r in rows:
    md.append("| " + " | ".join(f"{v:.5g}" if isinstance(v, float) else str(v) for v in r) + " |")
  io_utils.atomic_write_text(workdir / "trials.md", "\n".join(md) + "\n")
  complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
  best: dict[str, Any] = {"metric": metric, "direction": study.direction.name.lower()}
  if complete:
    b = study.best_trial
    best.update(
      trial=b.number,
      value=b.value,
      per_seed=b.user_attrs.get("per_seed"),
      params=b.params,
      overrides=[f"--config.{k}={v}" for k, v in b.params.items()],
      trials_complete=len(complete),
      trials_pruned=sum(t.state == optuna.trial.TrialState.PRUNED for t in trials),
    )
    io_utils.atomic_write_text(
      workdir / "best_config.json",
      json.dumps(apply_params(config, b.params).to_dict(), indent=2, default=str),
    )
  io_utils.atomic_write_text(workdir / "best.json", json.dumps(best, indent=2, default=str))
  if plots:
    _plots(complete, keys, metric, workdir, best.get("direction") == "minimize")
  return best


def _plots(complete, keys, metric, workdir: pathlib.Path, minimize: bool) -> None:
  if not complete:
    return
  import matplotlib  # noqa: PLC0415

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # noqa: PLC0415

  nums = [t.number for t in complete]
  vals = [t.value for t in complete]
  running, cur = [], None
  for v in vals:
    cur = v if cur is None else (min(cur, v) if minimize else max(cur, v))
    running.append(cur)
  fig, ax = plt.subplots(figsize=(6, 3.5))
  ax.plot(nums, vals, "o", label="trial")
  ax.step(nums, running, where="post", label="best so far")
  ax.set_xlabel("trial")
  ax.set_ylabel(f"valid {metric}")
  ax.legend()
  fig.tight_layout()
  fig.savefig(workdir / "history.png", dpi=100)
  plt.close(fig)
  fig, axes = plt.subplots(1, len(keys), figsize=(3.2 * len(keys), 3), squeeze=False)
  for ax, key in zip(axes[0], keys):
    xs = [t.params[key] for t in complete]
    numeric = all(isinstance(x, (int, float)) for x in xs)
    ax.plot(xs if numeric else [str(x) for x in xs], vals, "o")
    if numeric and key.endswith(("learning_rate", "l2", "reg_weight")):
      ax.set_xscale("log")
    ax.set_xlabel(key, fontsize=8)
  axes[0][0].set_ylabel(f"valid {metric}")
  fig.tight_layout()
  fig.savefig(workdir / "params.png", dpi=100)
  plt.close(fig)


def main(argv) -> int:
  del argv
  from mmrec_jax.errors import MmrecError  # noqa: PLC0415

  if not FLAGS.workdir:
    print("error: --workdir is required", file=sys.stderr)
    return 2
  try:
    best = run_search(FLAGS.config, FLAGS.workdir, FLAGS.trials, FLAGS.seeds)
  except MmrecError as e:
    print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
    return e.exit_code
  print(json.dumps(best, indent=2, default=str))
  print(f"trials: {FLAGS.workdir}/trials.md")
  return 0


if __name__ == "__main__":
  define_flags()
  flags.mark_flags_as_required(["config"])
  app.run(lambda argv: sys.exit(main(argv)))
