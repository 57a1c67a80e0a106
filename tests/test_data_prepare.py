"""prepare(): implicit conversion, dedup, k-core, reuse, atomicity, describe, TFDS."""

import importlib.util
import json
import os
import pickle
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from mmrec_jax import config as config_lib
from mmrec_jax.data import prepare as prep
from mmrec_jax.data.dataset import PreparedDataset, describe

H = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"


def write_inter(tmp_path, rows, name="log"):
  d = tmp_path / name
  d.mkdir(exist_ok=True)
  (d / f"{name}.inter").write_text(H + "".join(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in rows))
  return str(d)


def triples(ds):
  ur, ir = ds.user_raw_ids(), ds.item_raw_ids()
  out = []
  for name in ("train", "valid", "test"):
    s = ds.split(name)
    out += [
      (ur[u], ir[i], int(t), float(r))
      for u, i, t, r in zip(s.users, s.items, s.timestamps, s.ratings)
    ]
  return sorted(out)


def test_dedup_keeps_earliest_and_threshold(tmp_path):
  rows = [
    (1, 5, 4, 30),
    (1, 5, 2, 10),
    (1, 5, 5, 10),
    (1, 6, 1, 3),
    (2, 5, 5, 8),
    (2, 7, 4.5, 9),
    (2, 7, 1, 1),
  ]
  path = write_inter(tmp_path, rows)
  c = str(tmp_path / "c")
  ds = prep.prepare({"source": "recbole", "path": path, "cache_dir": c})
  # (1,5): earliest time 10, tie between two rows -> the first in the file (rating 2)
  assert triples(ds) == [
    ("1", "5", 10, 2.0),
    ("1", "6", 3, 1.0),
    ("2", "5", 8, 5.0),
    ("2", "7", 1, 1.0),
  ]
  ds = prep.prepare({"source": "recbole", "path": path, "cache_dir": c, "dedup": False})
  assert len(triples(ds)) == 7
  # threshold first, then dedup: (1,5) keeps its earliest row with rating >= 4
  ds = prep.prepare({"source": "recbole", "path": path, "cache_dir": c, "rating_threshold": 4.0})
  assert triples(ds) == [("1", "5", 10, 5.0), ("2", "5", 8, 5.0), ("2", "7", 9, 4.5)]
  assert list(ds.item_raw_ids()) == ["5", "7"]  # item 6 gone: dense ids re-made


def kcore_reference(pairs, uk, ik):
  pairs = set(pairs)
  while True:
    uc, ic = {}, {}
    for u, i in pairs:
      uc[u] = uc.get(u, 0) + 1
      ic[i] = ic.get(i, 0) + 1
    keep = {(u, i) for u, i in pairs if uc[u] >= uk and ic[i] >= ik}
    if keep == pairs:
      return pairs
    pairs = keep


def test_kcore_iterates_until_stable(tmp_path):
  rng = np.random.default_rng(3)
  pairs = sorted(
    {(int(u), int(i)) for u, i in zip(rng.integers(0, 60, 700), (rng.zipf(1.6, 700) % 80))}
  )
  rows = [(u, i, 3, k) for k, (u, i) in enumerate(pairs)]
  ds = prep.prepare(
    {
      "source": "recbole",
      "path": write_inter(tmp_path, rows),
      "cache_dir": str(tmp_path / "c"),
      "user_core": 5,
      "item_core": 4,
    }
  )
  want = kcore_reference(pairs, 5, 4)
  assert 0 < len(want) < len(pairs)
  got = {(int(u), int(i)) for u, i, _, _ in triples(ds)}
  assert got == want
  assert ds.num_users == len({u for u, _ in want}) and ds.num_items == len({i for _, i in want})


def test_reuse_and_fingerprint(tmp_path):
  rows = [(u, i, 3, u * 10 + i) for u in range(5) for i in range(4)]
  cfg = {"source": "recbole", "path": write_inter(tmp_path, rows), "cache_dir": str(tmp_path / "c")}
  a = prep.prepare(cfg)
  mtime = (a.path / "manifest.json").stat().st_mtime_ns
  b = prep.prepare(cfg)
  assert b.path == a.path and (b.path / "manifest.json").stat().st_mtime_ns == mtime
  c = prep.prepare({**cfg, "split": "leave_last_out"})
  assert c.path != a.path and c.manifest["fingerprint"] != a.manifest["fingerprint"]
  # an input file change is a different dataset too
  rows.append((9, 9, 1, 1))
  write_inter(tmp_path, rows)
  d = prep.prepare(cfg)
  assert d.manifest["fingerprint"] != a.manifest["fingerprint"] and d.num_users == 6
  # seed only matters where it is used
  assert prep.prepare(cfg, seed=7).path == d.path


def test_full_config_and_seed(tmp_path):
  cfg = config_lib.base_config()
  cfg.seed = 11
  cfg.data.source = "synthetic"
  cfg.data.num_users, cfg.data.num_items, cfg.data.num_interactions = 30, 20, 200
  cfg.data.cache_dir = str(tmp_path)
  cfg.data.split = "random_ratio"
  ds = prep.prepare(cfg)
  assert ds.manifest["prep_config"]["seed"] == 11
  assert prep.prepare(cfg.data, seed=11).path == ds.path
  assert prep.prepare(cfg.data, seed=12).path != ds.path


def _earlier(tmp_path):
  """An existing prepared dataset at an explicit prepared_dir, and a config that differs."""
  rows = [(u, i, 1 + (u + i) % 5, u * 10 + i) for u in range(8) for i in range(6)]
  target = tmp_path / "prepared"
  cfg = {
    "source": "recbole",
    "path": write_inter(tmp_path, rows),
    "cache_dir": str(tmp_path / "c"),
    "prepared_dir": str(target),
  }
  first = prep.prepare(cfg)
  return cfg, target, first.manifest["fingerprint"], triples(first)


def _intact(target, fingerprint, rows):
  ds = PreparedDataset.open(target, verify=True)
  assert ds.manifest["fingerprint"] == fingerprint and triples(ds) == rows


def test_failed_run_leaves_earlier_dataset(tmp_path, monkeypatch):
  cfg, target, fp, rows = _earlier(tmp_path)

  def boom(out):
    assert (out / "train" / "user.npy").is_file()  # partial writes happened
    raise RuntimeError("injected failure")

  monkeypatch.setattr(prep, "_after_partial_write", boom)
  with pytest.raises(RuntimeError, match="injected"):
    prep.prepare({**cfg, "split": "leave_last_out"})
  _intact(target, fp, rows)
  assert not [p for p in tmp_path.iterdir() if p.name.startswith(".prepared.")]  # no temp
  monkeypatch.setattr(prep, "_after_partial_write", None)
  new = prep.prepare({**cfg, "split": "leave_last_out"})
  assert new.path == target and new.manifest["fingerprint"] != fp


def test_sigkill_mid_prepare_leaves_earlier_dataset(tmp_path):
  cfg, target, fp, rows = _earlier(tmp_path)
  script = textwrap.dedent(f"""
      import os, signal
      from mmrec_jax.data import prepare as prep
      prep._after_partial_write = lambda out: os.kill(os.getpid(), signal.SIGKILL)
      prep.prepare({json.dumps({**cfg, "split": "leave_last_out"})})
  """)
  r = subprocess.run(
    [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
  )
  assert r.returncode == -signal.SIGKILL, r.stderr[-2000:]
  leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".prepared.tmp-")]
  assert len(leftovers) == 1  # the killed run's half-written temp dir
  _intact(target, fp, rows)
  new = prep.prepare({**cfg, "split": "leave_last_out"})  # cleans up and replaces
  assert new.manifest["fingerprint"] != fp
  assert not [p for p in tmp_path.iterdir() if p.name.startswith(".prepared.")]


def test_interrupted_swap_is_undone(tmp_path):
  cfg, target, fp, rows = _earlier(tmp_path)
  os.rename(target, tmp_path / ".prepared.old-12345")  # killed between the two renames
  ds = prep.prepare(cfg)  # restores, then reuses
  assert ds.path == target
  _intact(target, fp, rows)


def test_refuses_to_overwrite_foreign_dir(tmp_path):
  (tmp_path / "mine").mkdir()
  (tmp_path / "mine" / "notes.txt").write_text("precious")
  with pytest.raises(Exception, match="exists and is not a prepared dataset"):
    prep.prepare(
      {
        "source": "synthetic",
        "num_users": 10,
        "num_items": 10,
        "num_interactions": 40,
        "prepared_dir": str(tmp_path / "mine"),
        "cache_dir": str(tmp_path),
      }
    )
  assert (tmp_path / "mine" / "notes.txt").read_text() == "precious"


def test_describe_and_pickle(tmp_path):
  ds = prep.prepare(
    {
      "source": "synthetic",
      "num_users": 30,
      "num_items": 20,
      "num_interactions": 240,
      "cache_dir": str(tmp_path),
    }
  )
  text = describe(ds)
  assert "users 30" in text and "interactions 240" in text and "density 40.0000%" in text
  for name in ("train", "valid", "test"):
    assert f"{ds.manifest['splits'][name]['interactions']:,}" in text
  assert "modality text" in text and "coverage 100.0%" in text
  again = pickle.loads(pickle.dumps(ds))
  assert np.array_equal(again.split("test").items, ds.split("test").items)


def test_tfds_array_record_without_tensorflow(tmp_path):
  from mmrec_jax.data import tfds_builder

  assert importlib.util.find_spec("tensorflow") is None  # and stays uninstalled
  ds = prep.prepare(
    {
      "source": "synthetic",
      "num_users": 25,
      "num_items": 20,
      "num_interactions": 200,
      "cache_dir": str(tmp_path),
    }
  )
  data_dir = tfds_builder.build(ds, tmp_path / "tfds")
  assert list((data_dir / "prepared_interactions" / "1.0.0").glob("*.array_record*"))
  for name in ("train", "valid", "test"):
    src = tfds_builder.data_source(data_dir, name, prepared=ds)
    sp = ds.split(name)
    assert len(src) == sp.users.shape[0]
    recs = [src[k] for k in range(len(src))]
    assert np.array_equal([r["user"] for r in recs], sp.users)
    assert np.array_equal([r["item"] for r in recs], sp.items)
    assert np.array_equal([r["timestamp"] for r in recs], sp.timestamps)
  assert tfds_builder.build(ds, tmp_path / "tfds") == data_dir  # idempotent
  assert "tensorflow" not in sys.modules
  # a fresh process reads it with tfds alone (no mmrec_jax import, no TensorFlow)
  code = (
    "import sys, tensorflow_datasets as tfds\n"
    f"s = tfds.data_source('prepared_interactions', data_dir={str(data_dir)!r}, "
    "split='test')\n"
    "print(len(s), int(s[0]['item']), 'tensorflow' in sys.modules, "
    "'mmrec_jax' in sys.modules)"
  )
  r = subprocess.run(
    [sys.executable, "-c", code],
    capture_output=True,
    text=True,
    timeout=120,
    check=True,
    cwd=str(tmp_path),
  )
  n, first, tf_loaded, ours = r.stdout.split()
  assert int(n) == ds.split("test").users.shape[0]
  assert int(first) == int(ds.split("test").items[0])
  assert tf_loaded == "False" and ours == "False"


def test_cache_dir_from_environment_when_config_is_empty(tmp_path, monkeypatch):
  """data.cache_dir='' -> $MMREC_JAX_CACHE; a set data.cache_dir wins; neither -> ~/.cache."""
  env_cache, cfg_cache = tmp_path / "from_env", tmp_path / "from_cfg"
  monkeypatch.setenv("HOME", str(tmp_path / "home"))
  monkeypatch.setenv("MMREC_JAX_CACHE", str(env_cache))
  data = config_lib.base_config().data
  assert data.cache_dir == ""
  assert prep.cache_dir_of(data) == env_cache
  data.cache_dir = str(cfg_cache)
  assert prep.cache_dir_of(data) == cfg_cache
  data.cache_dir = "~/elsewhere"
  assert prep.cache_dir_of(data) == tmp_path / "home" / "elsewhere"
  data.cache_dir = ""
  monkeypatch.delenv("MMREC_JAX_CACHE")
  assert prep.cache_dir_of(data) == tmp_path / "home" / ".cache" / "mmrec_jax"
  # And prepare() really puts the dataset where the variable says.
  monkeypatch.setenv("MMREC_JAX_CACHE", str(env_cache))
  ds = prep.prepare(
    {
      "source": "synthetic",
      "num_users": 20,
      "num_items": 15,
      "num_interactions": 120,
      "latent_dim": 2,
      "text_dim": 3,
      "image_dim": 2,
    }
  )
  assert ds.path.parent == env_cache / "prepared"
  assert ds.path.name.startswith("synthetic-")
  assert not (tmp_path / "home").exists()
