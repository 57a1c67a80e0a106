"""k-fold cross-validation: folds partition the data, the table aggregates fold results."""

import importlib.util
import json
import math
import pathlib

import numpy as np
import pytest

from mmrec_jax import config as config_lib
from mmrec_jax.evaluation import crossval

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_fold_table_mean_std_and_missing_values():
  table = crossval.fold_table(
    [{"auc": 0.5, "mae": 1.0}, {"auc": 0.7}, {"auc": 0.9, "mae": float("nan")}]
  )
  assert table["auc"]["mean"] == pytest.approx(0.7)
  assert table["auc"]["std"] == pytest.approx(0.2)  # sample std (ddof=1)
  assert table["mae"]["folds"] == 1 and table["mae"]["mean"] == 1.0
  assert table["mae"]["std"] == 0.0 and math.isnan(table["mae"]["values"][1])
  md = crossval.fold_markdown(table)
  assert "| auc | 0.7000 ± 0.2000 | 0.5000 | 0.7000 | 0.9000 |" in md


def _load_cross_validate():
  spec = importlib.util.spec_from_file_location("cv", ROOT / "benchmarks" / "cross_validate.py")
  cv = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(cv)
  return cv


def test_command_modules_import_side_by_side_without_flag_clashes():
  """Importing the command modules defines no absl flag: only running them does.

  absl's flag registry is process-wide; ``--config`` defined at import time by both
  ``mmrec_jax.compare`` and ``benchmarks/cross_validate.py`` raised DuplicateFlagError when
  both were loaded in one process (as pytest does).
  """
  from absl import flags

  from mmrec_jax import compare

  before = set(flags.FLAGS)
  _load_cross_validate()
  importlib.reload(compare)
  _load_cross_validate()
  assert set(flags.FLAGS) == before


def test_cross_validate_command_still_parses_its_flags(tmp_path):
  """Run as the documented command, the flags exist: --help lists them, a missing one fails."""
  import subprocess
  import sys

  script = str(ROOT / "benchmarks" / "cross_validate.py")
  out = subprocess.run(
    [sys.executable, script, "--helpfull"], capture_output=True, text=True, timeout=120
  )
  assert "Traceback" not in out.stderr, out.stderr[-2000:]
  for flag in ("--config:", "--folds:", "--workdir:"):
    assert flag in out.stdout
  out = subprocess.run(
    [sys.executable, script, "--folds=2"], capture_output=True, text=True, timeout=120
  )
  assert out.returncode != 0 and "Flag --config must have a value" in out.stderr


def test_cross_validate_runs_every_fold(tmp_path):
  cv = _load_cross_validate()
  rng = np.random.default_rng(0)
  pairs = rng.choice(30 * 40, 600, replace=False)
  with open(tmp_path / "r.inter", "w") as f:
    f.write("user_id:token\titem_id:token\trating:float\n")
    for p in pairs:
      f.write(f"{p // 40}\t{p % 40}\t{rng.integers(1, 6)}\n")
  c = config_lib.base_config()
  c.data.source = "recbole"
  c.data.path = str(tmp_path / "r.inter")
  c.data.cache_dir = str(tmp_path / "cache")
  c.data.modalities = ()
  c.data.valid_of_train = 0.1
  c.model.name = "bpr_mf"
  c.model.embed_dim = 4
  c.input.batch_size = 64
  c.train.num_epochs = 1
  c.train.progress_bar = False
  c.eval.ks = (5,)
  c.eval.metrics = ("recall",)
  c.eval.slices = False
  c.train.selection_metric = "recall@5"
  config_lib.finalize(c)
  table = cv.cross_validate(c, tmp_path / "cv", folds=2)
  assert table["recall@5"]["folds"] == 2
  saved = json.loads((tmp_path / "cv" / "crossval.json").read_text())
  assert saved["recall@5"]["values"] == table["recall@5"]["values"]
  tests = []
  for f in range(2):
    res = json.loads((tmp_path / "cv" / f"fold{f}" / "results.json").read_text())
    tests.append(res["test"]["recall@5"])
  assert tests == table["recall@5"]["values"]
