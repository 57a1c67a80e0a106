"""A one-step end-to-end run of every experiment's ``:smoke`` variant.

MovieLens-100K is the real data (fetched once from PyPI, see the data tests); the other
experiments read small files in their real formats that the tests write, via the same
``--config.data.path`` override a user would give.
"""

import json
import os
import pathlib

import numpy as np
import pytest
from test_train import load_config

from mmrec_jax.train import train_and_evaluate

N_USERS, N_ITEMS = 60, 40


def _interactions(seed=0):
  """~900 (user, item, rating, timestamp) rows with every user active."""
  rng = np.random.default_rng(seed)
  rows = []
  for u in range(1, N_USERS + 1):
    items = rng.choice(np.arange(1, N_ITEMS + 1), size=15, replace=False)
    for k, i in enumerate(items):
      rows.append((u, int(i), int(rng.integers(1, 6)), 1_000_000 + 100 * u + k))
  return rows


def _write_ml1m(root: pathlib.Path) -> None:
  root.mkdir(parents=True)
  (root / "ratings.dat").write_text(
    "".join(f"{u}::{i}::{r}::{t}\n" for u, i, r, t in _interactions())
  )
  (root / "movies.dat").write_text(
    "".join(
      f"{i}::Movie {i} ({1950 + i})::{'Comedy' if i % 2 else 'Drama|Action'}\n"
      for i in range(1, N_ITEMS + 1)
    ),
    encoding="latin-1",
  )


def _write_ml25m(root: pathlib.Path) -> None:
  root.mkdir(parents=True)
  (root / "ratings.csv").write_text(
    "userId,movieId,rating,timestamp\n"
    + "".join(f"{u},{i},{r}.0,{t}\n" for u, i, r, t in _interactions())
  )
  (root / "movies.csv").write_text(
    "movieId,title,genres\n"
    + "".join(
      f"{i},Movie {i} ({1950 + i}),{'Comedy' if i % 2 else 'Drama|Action'}\n"
      for i in range(1, N_ITEMS + 1)
    )
  )
  (root / "tags.csv").write_text(
    "userId,movieId,tag,timestamp\n"
    + "".join(f"1,{i},tag{i % 5},{i}\n" for i in range(1, N_ITEMS + 1))
  )


def _write_mmrec(root: pathlib.Path, name: str) -> None:
  root.mkdir(parents=True)
  rows = _interactions()
  lines = ["userID\titemID\trating\ttimestamp\tx_label"]
  for k, (u, i, r, t) in enumerate(rows):
    x = 0 if k % 15 < 11 else (1 if k % 15 < 13 else 2)
    lines.append(f"{u - 1}\t{i - 1}\t{r}\t{t}\t{x}")
  (root / f"{name}.inter").write_text("\n".join(lines) + "\n")
  rng = np.random.default_rng(1)
  np.save(root / "image_feat.npy", rng.standard_normal((N_ITEMS, 32)).astype(np.float32))
  np.save(root / "text_feat.npy", rng.standard_normal((N_ITEMS, 24)).astype(np.float32))


def _check(results, workdir):
  assert results["status"] == "finished" and results["steps"] == 1
  saved = json.loads((workdir / "results.json").read_text())
  assert set(saved["test"]) >= {"recall@10", "ndcg@10"}
  assert all(0.0 <= v <= 1.0 for v in saved["test"].values())


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
  return os.environ.get("MMREC_JAX_CACHE") or str(tmp_path_factory.mktemp("mmrec_cache"))


def test_ml100k_smoke_on_real_data(tmp_path, cache_dir):
  config = load_config("ml100k", "smoke", **{"data.cache_dir": cache_dir, "train.max_steps": 1})
  _check(train_and_evaluate(config, tmp_path / "run"), tmp_path / "run")


@pytest.mark.parametrize("name,writer", [("ml1m", _write_ml1m), ("ml25m", _write_ml25m)])
def test_movielens_experiment_smoke(tmp_path, name, writer):
  writer(tmp_path / "raw")
  config = load_config(
    name,
    "smoke",
    **{
      "data.path": str(tmp_path / "raw"),
      "data.cache_dir": str(tmp_path / "cache"),
      "train.max_steps": 1,
    },
  )
  _check(train_and_evaluate(config, tmp_path / "run"), tmp_path / "run")


def test_mmrec_amazon_smoke(tmp_path):
  _write_mmrec(tmp_path / "baby", "baby")
  config = load_config(
    "mmrec_amazon",
    "smoke,baby",
    **{
      "data.path": str(tmp_path / "baby"),
      "data.cache_dir": str(tmp_path / "cache"),
      "train.max_steps": 1,
    },
  )
  results = train_and_evaluate(config, tmp_path / "run")
  _check(results, tmp_path / "run")
  assert results["modalities"] == ["text", "image"]


def _write_presplit(root: pathlib.Path) -> dict[str, pathlib.Path]:
  """train/valid/test TSVs (80/10/10 of the interactions) and an items file with text."""
  rows = _interactions()
  cut1, cut2 = int(0.8 * len(rows)), int(0.9 * len(rows))
  parts = {"train": rows[:cut1], "valid": rows[cut1:cut2], "test": rows[cut2:]}
  paths = {}
  for split, part in parts.items():
    paths[split] = root / f"{split}.tsv"
    paths[split].write_text(
      "user_id\titem_id\trating\ttimestamp\n"
      + "".join(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in part)
    )
  paths["items"] = root / "items.tsv"
  paths["items"].write_text(
    "item_id\ttitle\tgenres\tyear\n"
    + "".join(
      f"{i}\tMovie {i} {'comedy' if i % 3 else 'thriller'}\t"
      f"{'Comedy' if i % 2 else 'Drama|Action'}\t{1950 + i}\n"
      for i in range(1, N_ITEMS + 1)
    )
  )
  return paths


def _presplit_overrides(paths, tmp_path, items=True):
  over = {
    "data.source": "presplit",
    "data.train": str(paths["train"]),
    "data.valid": str(paths["valid"]),
    "data.test": str(paths["test"]),
    "data.cache_dir": str(tmp_path / "cache"),
    "train.max_steps": 1,
  }
  if items:
    over["data.items_file"] = str(paths["items"])
  return over


def test_presplit_override_keeps_the_experiments_model_and_features(tmp_path):
  """ml1m's two-tower model on pre-split files: its text tower reads features built from
  the items file (handcrafted, as the experiment's smoke variant says)."""
  from test_train import latest_params

  from mmrec_jax.data import prepare as prep
  from mmrec_jax.features.handcrafted import handcrafted_text_features

  paths = _write_presplit(tmp_path)
  config = load_config("ml1m", "smoke", **_presplit_overrides(paths, tmp_path))
  experiment = load_config("ml1m", "smoke")
  assert experiment.model.name == "two_tower" and tuple(experiment.data.modalities) == ("text",)
  results = train_and_evaluate(config, tmp_path / "run")
  _check(results, tmp_path / "run")
  assert results["model"] == "two_tower" and results["modalities"] == ["text"]
  ds = prep.prepare(config.data)  # the dataset the run used (reused, not rebuilt)
  assert ds.manifest["source"] == "presplit" and ds.manifest["prep_config"]["split"] == "given"
  info = ds.item_info()
  assert {d["title"] for d in info} == {
    f"Movie {i} {'comedy' if i % 3 else 'thriller'}" for i in range(1, N_ITEMS + 1)
  }
  want, mask = handcrafted_text_features(info)
  assert mask.all()
  np.testing.assert_array_equal(ds.features("text").to_array(), want)
  params = latest_params(tmp_path / "run")
  kernel = params["/params/dense/towers/text/fc1/kernel"]
  assert kernel.shape[0] == ds.features("text").dim == want.shape[1]
  # The step's gradient reached the text tower (Adam's first moment is non-zero there):
  # the features were really used, not just declared.
  assert np.abs(params["/opt_state/dense/0/mu/towers/text/fc1/kernel"]).sum() > 0


def test_presplit_override_without_items_has_no_text_for_the_model(tmp_path):
  """Without data.items_file there is no side info, so ml1m's text model cannot run: a clear
  error rather than a silent ID-only run."""
  from mmrec_jax.errors import ConfigError

  paths = _write_presplit(tmp_path)
  config = load_config("ml1m", "smoke", **_presplit_overrides(paths, tmp_path, items=False))
  with pytest.raises(
    ConfigError,
    match=r"config\.data\.modalities: \['text'\] not in the "
    r"dataset at .* \(it has \[\]\)",
  ):
    train_and_evaluate(config, tmp_path / "run")


def _readme_presplit_command() -> str:
  """The pre-split command line as README.md documents it."""
  readme = (pathlib.Path(__file__).resolve().parents[1] / "README.md").read_text()
  line = next(l for l in readme.splitlines() if "--config.data.source=presplit" in l)
  return line.strip().strip("*` ").split("`")[0]


def test_readme_presplit_command_through_the_real_flag_parser(tmp_path):
  """The README's flags, typed as a user would, reach the run (``items_file`` included)."""
  import subprocess
  import sys

  flags = _readme_presplit_command().replace("[", "").replace("]", "").split()
  assert "--config.data.items_file=items.tsv" in flags, flags
  _write_presplit(tmp_path)
  cmd = [
    sys.executable,
    "-m",
    "mmrec_jax.main",
    "--config="
    + str(pathlib.Path(__file__).resolve().parents[1] / "experiments/ml1m.py")
    + ":smoke",
    "--workdir=run",
    "--mode=prepare",
    f"--config.data.cache_dir={tmp_path / 'cache'}",
    *flags,
  ]
  out = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-2000:]
  from mmrec_jax.data.dataset import PreparedDataset

  prepared = list((tmp_path / "cache" / "prepared").iterdir())
  assert len(prepared) == 1
  ds = PreparedDataset.open(prepared[0])
  assert ds.manifest["source"] == "presplit" and "text" in ds.modalities
  assert {d["title"] for d in ds.item_info()} >= {"Movie 1 comedy"}
  # The old key fails at once with one line naming the new one.
  old = [f.replace("items_file", "items") for f in cmd]
  out = subprocess.run(old, cwd=tmp_path, capture_output=True, text=True, timeout=300)
  assert out.returncode == 2
  assert out.stderr.strip().splitlines() == [
    "error: --config.data.items: this key is now config.data.items_file; "
    "use --config.data.items_file=..."
  ]
