r"""k-fold cross-validation of any experiment: every fold trained, one table over folds.

    .venv/bin/python benchmarks/cross_validate.py --config=experiments/ml100k_cornac.py:mf \
        --folds=5 --workdir=runs/cv_mf [--config.x.y=value ...]

Fold ``f`` is the run of the experiment with ``data.split=kfold``, ``data.num_folds=k``,
``data.fold=f`` (Cornac's ``CrossValidation`` partition, seeded by ``config.seed``) in
``<workdir>/fold<f>``; finished folds are reused (each run resumes or reuses its workdir).
Writes ``<workdir>/crossval.json`` and ``crossval.md``: mean ± std of every test metric
and each fold's value (``mmrec_jax.evaluation.crossval``).
"""

from __future__ import annotations

import json
import pathlib
import sys

from absl import app, flags
from ml_collections import config_flags

FLAGS = flags.FLAGS


def define_flags() -> None:
  """Registers ``--config``, ``--folds``, ``--workdir``; only when run as the command.

  absl has one process-wide flag registry: defining ``--config`` at import time made loading this
  file in a process that had imported another command module defining ``--config``
  (``mmrec_jax.compare``, ``mmrec_jax.main``) fail with ``DuplicateFlagError``.
  """
  config_flags.DEFINE_config_file("config", None, "Experiment config file.", lock_config=True)
  flags.DEFINE_integer("folds", 5, "Number of folds.")
  flags.DEFINE_string("workdir", None, "Directory of the fold runs and the table.")
  flags.mark_flags_as_required(["config", "workdir"])


def cross_validate(config, workdir: str | pathlib.Path, folds: int) -> dict:
  """Trains every fold of ``config``; returns (and writes) the table over folds."""
  from mmrec_jax.evaluation import crossval
  from mmrec_jax.train import train_and_evaluate

  workdir = pathlib.Path(workdir)
  per_fold = []
  for f in range(folds):
    cfg = config.copy_and_resolve_references()
    cfg.data.split = "kfold"
    cfg.data.num_folds = folds
    cfg.data.fold = f
    res = train_and_evaluate(cfg, workdir / f"fold{f}")
    per_fold.append(res["test"])
  table = crossval.fold_table(per_fold)
  workdir.mkdir(parents=True, exist_ok=True)
  (workdir / "crossval.json").write_text(json.dumps(table, indent=1))
  (workdir / "crossval.md").write_text(crossval.fold_markdown(table) + "\n")
  return table


def main(argv) -> None:
  del argv
  from mmrec_jax.evaluation import crossval

  table = cross_validate(FLAGS.config, FLAGS.workdir, FLAGS.folds)
  print(crossval.fold_markdown(table))


if __name__ == "__main__":
  define_flags()
  sys.exit(app.run(main))
