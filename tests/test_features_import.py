"""Bring-your-own features: ``python -m mmrec_jax.features import`` (importer.py).

Small source files are written by each test: a Ducho-style directory of
``<item_id>.npy``, one ``.npy`` with an id list, Parquet files with a list column or one
column per dimension. Checked: the id mapping, zeros + mask False for items without a
vector, unknown ids counted, every bad input failing with one line that names the file
and row/id, the dataset left untouched by a failure, registration in the manifest (and
use through ``data.modalities``), and the command line.
"""

import json
import pathlib
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mmrec_jax.data import prepare as prep
from mmrec_jax.data.dataset import PreparedDataset
from mmrec_jax.data.feature_store import FeatureShards
from mmrec_jax.errors import ConfigError, DataError
from mmrec_jax.features import importer

REPO = pathlib.Path(__file__).resolve().parents[1]
NUM_ITEMS = 12
DIM = 4
RAW = [f"B{i:03d}" for i in range(NUM_ITEMS)]  # raw item ids, line i = internal id i


def _dataset(path: pathlib.Path, raw=RAW) -> pathlib.Path:
  path.mkdir(parents=True)
  manifest = {"format_version": 1, "num_items": len(raw), "modalities": {"text": "x"}}
  (path / "manifest.json").write_text(json.dumps(manifest))
  (path / "item_ids.txt").write_text("".join(f"{r}\n" for r in raw))
  return path


def _vec(i: int, dim: int = DIM) -> np.ndarray:
  return np.arange(dim, dtype=np.float32) + 10 * i + 1


def _modalities(ds: pathlib.Path) -> dict:
  return json.loads((ds / "manifest.json").read_text())["modalities"]


def _untouched(ds: pathlib.Path) -> bool:
  """No modality added, no features/ dir left (no scratch, no temp dir)."""
  return _modalities(ds) == {"text": "x"} and sorted(p.name for p in ds.iterdir()) == [
    "item_ids.txt",
    "manifest.json",
  ]


def test_ducho_directory(tmp_path):
  ds = _dataset(tmp_path / "ds")
  src = tmp_path / "ducho"
  src.mkdir()
  have = [0, 2, 3, 5, 8, 11]
  for i in have:  # Ducho writes [dim] or [1, dim]; float64 and ints are converted
    v = _vec(i)
    v = v[None] if i % 2 else v.astype(np.float64)
    np.save(src / f"{RAW[i]}.npy", v)
  np.save(src / "B999.npy", _vec(99))  # not an item of the dataset
  np.save(src / "gone.npy", _vec(98))
  (src / "README.txt").write_text("extracted by Ducho")
  (src / ".hidden.npy").write_bytes(b"junk")
  rep = importer.import_features(ds, "image", src)
  assert (rep.num_present, rep.num_vectors, rep.num_unknown) == (6, 8, 2)
  assert set(rep.unknown_examples) == {"B999", "gone"} and rep.num_skipped_files == 2
  assert rep.dim == DIM and "6/12 items" in rep.summary() and "'B999'" in rep.summary()
  fs = FeatureShards.open(ds / "features" / "image", verify=True)
  assert fs.mask.tolist() == [i in have for i in range(NUM_ITEMS)]
  rows = fs.to_array()
  for i in range(NUM_ITEMS):
    np.testing.assert_array_equal(rows[i], _vec(i) if i in have else np.zeros(DIM))
  assert _modalities(ds) == {"text": "x", "image": "features/image"}
  assert sorted(p.name for p in (ds / "features").iterdir()) == ["image"]  # no scratch


def test_npy_with_id_list(tmp_path):
  ds = _dataset(tmp_path / "ds", raw=[str(i * 7) for i in range(NUM_ITEMS)])
  order = [5, 0, 9, 3]  # rows in any order, ids given per row
  np.save(tmp_path / "v.npy", np.stack([_vec(i) for i in order] + [_vec(50)]))
  (tmp_path / "ids.txt").write_text("".join(f"{i * 7}\n" for i in order) + "1000\n")
  rep = importer.import_features(
    ds, "img", tmp_path / "v.npy", ids=tmp_path / "ids.txt", rows_per_shard=5
  )
  assert (rep.num_present, rep.num_unknown, rep.shards.num_shards) == (4, 1, 3)
  rows = rep.shards.to_array()
  assert rep.shards.mask.nonzero()[0].tolist() == sorted(order)
  for i in order:
    np.testing.assert_array_equal(rows[i], _vec(i))
  # Integer ids as a 1-D .npy, and --dim as a check; overwrite replaces the modality.
  np.save(tmp_path / "ids.npy", np.array([i * 7 for i in order] + [1000], np.int64))
  with pytest.raises(ConfigError, match="'img' already exists.*--overwrite"):
    importer.import_features(ds, "img", tmp_path / "v.npy", ids=tmp_path / "ids.npy")
  rep = importer.import_features(
    ds, "img", tmp_path / "v.npy", ids=tmp_path / "ids.npy", dim=DIM, overwrite=True
  )
  assert rep.num_present == 4 and rep.shards.num_shards == 1


def test_parquet_list_and_per_dimension_columns(tmp_path):
  ds = _dataset(tmp_path / "ds", raw=[str(100 + i) for i in range(NUM_ITEMS)])
  have = [7, 1, 4]
  vecs = [_vec(i).tolist() for i in have]
  # pandas-style float ids (an int column with gaps) match the integer raw ids.
  ids = pa.array([100.0 + i for i in have] + [5.0])
  emb = pa.array(vecs + [[0.0] * DIM], type=pa.list_(pa.float32(), DIM))  # fixed-size
  pq.write_table(
    pa.table({"item_id": ids, "emb": emb, "title": ["a", "b", "c", "d"]}),
    tmp_path / "list.parquet",
    row_group_size=2,
  )
  rep = importer.import_features(ds, "text_e5", tmp_path / "list.parquet", id_column="item_id")
  assert (rep.num_present, rep.num_unknown, rep.unknown_examples) == (3, 1, ("5",))
  rows = rep.shards.to_array()
  for i in have:
    np.testing.assert_array_equal(rows[i], _vec(i))
  # One numeric column per dimension, string ids.
  cols = {"id": [str(100 + i) for i in have]}
  cols.update({f"f{d}": [float(_vec(i)[d]) for i in have] for d in range(DIM)})
  pq.write_table(pa.table(cols), tmp_path / "wide.pq")
  rep = importer.import_features(ds, "wide", tmp_path / "wide.pq", id_column="id")
  np.testing.assert_array_equal(rep.shards.to_array(), rows)
  assert rep.shards.mask.tolist() == [i in have for i in range(NUM_ITEMS)]


def _write_bad(tmp_path, kind):
  """(source, kwargs, regex of the one-line error) for one kind of bad input."""
  src = tmp_path / "src"
  src.mkdir()
  if kind in ("nan", "ragged", "3d", "dim", "strings", "overflow"):
    np.save(src / f"{RAW[0]}.npy", _vec(0))
    bad = {
      "nan": np.array([1.0, np.nan, 0.0, 0.0]),
      "ragged": np.ones(DIM + 1),
      "3d": np.ones((2, 2, DIM)),
      "dim": np.ones(DIM),
      "strings": np.array(["a", "b", "c", "d"]),
      "overflow": np.array([1e39, 0.0, 0.0, 0.0]),
    }[kind]
    np.save(src / f"{RAW[3]}.npy", bad)
    msg = {
      "nan": "B003.npy: vector has a NaN",
      "ragged": "B003.npy: vector dim 5, but B000.npy has dim 4",
      "3d": r"B003.npy: shape \(2, 2, 4\): expected a vector",
      "dim": "B000.npy: vector dim 4, expected 3",
      "strings": "B003.npy: values are <U1, not numbers",
      "overflow": "B003.npy: vector has a value that overflows float32",
    }[kind]
    return src, {"dim": 3} if kind == "dim" else {}, msg
  if kind == "id_count":
    np.save(src / "v.npy", np.ones((3, DIM)))
    (src / "ids.txt").write_text("B000\nB001\n")
    return src / "v.npy", {"ids": src / "ids.txt"}, "ids.txt: 2 ids but v.npy has 3 rows"
  if kind == "duplicate":
    np.save(src / "v.npy", np.ones((3, DIM)))
    (src / "ids.txt").write_text("B000\nB001\nB000\n")
    return (
      src / "v.npy",
      {"ids": src / "ids.txt"},
      r"v.npy row 2 \(id 'B000'\): item id 'B000' is given twice \(first at row 0\)",
    )
  if kind == "no_match":
    np.save(src / "v.npy", np.ones((2, DIM)))
    (src / "ids.txt").write_text("1\n2\n")
    return (
      src / "v.npy",
      {"ids": src / "ids.txt"},
      r"none of the 2 ids matches an item id .*'1', '2'.*'B000'",
    )
  if kind == "parquet_ragged":
    pq.write_table(
      pa.table({"id": ["B000", "B001", "B002"], "v": [[1.0] * DIM, [1.0] * DIM, [1.0] * 3]}),
      src / "r.parquet",
    )
    return (
      src / "r.parquet",
      {"id_column": "id"},
      r"r.parquet row 2 \(id 'B002'\): vector of length 3, row 0 has 4",
    )
  if kind == "parquet_text":
    pq.write_table(pa.table({"id": ["B000"], "v": ["x"]}), src / "t.parquet")
    return src / "t.parquet", {"id_column": "id"}, "t.parquet: column 'v' holds string"
  if kind == "parquet_null":
    pq.write_table(pa.table({"id": ["B000", "B001"], "v": [[1.0] * DIM, None]}), src / "n.parquet")
    return (
      src / "n.parquet",
      {"id_column": "id"},
      r"n.parquet row 1 \(id 'B001'\): null vector in column 'v'",
    )
  raise AssertionError(kind)


@pytest.mark.parametrize(
  "kind",
  [
    "nan",
    "ragged",
    "3d",
    "dim",
    "strings",
    "overflow",
    "id_count",
    "duplicate",
    "no_match",
    "parquet_ragged",
    "parquet_text",
    "parquet_null",
  ],
)
def test_bad_input_fails_with_one_line_and_leaves_dataset(tmp_path, kind):
  ds = _dataset(tmp_path / "ds")
  src, kwargs, msg = _write_bad(tmp_path, kind)
  with pytest.raises(DataError, match=msg) as e:
    importer.import_features(ds, "image", src, **kwargs)
  assert "\n" not in str(e.value)
  assert _untouched(ds)


def test_argument_errors(tmp_path):
  ds = _dataset(tmp_path / "ds")
  np.save(tmp_path / "v.npy", np.ones((2, DIM)))
  with pytest.raises(ConfigError, match="needs --ids"):
    importer.import_features(ds, "image", tmp_path / "v.npy")
  with pytest.raises(ConfigError, match="already exists"):
    importer.import_features(ds, "text", tmp_path / "v.npy", ids=tmp_path / "v.npy")
  with pytest.raises(ConfigError, match="modality name '../x'"):
    importer.import_features(ds, "../x", tmp_path / "v.npy")
  with pytest.raises(DataError, match="not found"):
    importer.import_features(ds, "image", tmp_path / "nope")
  pq.write_table(pa.table({"id": ["B000"], "a": [[1.0]], "b": [[2.0]]}), tmp_path / "p.pq")
  with pytest.raises(ConfigError, match="--id_column is required"):
    importer.import_features(ds, "image", tmp_path / "p.pq")
  with pytest.raises(ConfigError, match=r"several list columns \['a', 'b'\]"):
    importer.import_features(ds, "image", tmp_path / "p.pq", id_column="id")
  rep = importer.import_features(ds, "image", tmp_path / "p.pq", id_column="id", vector_column="b")
  assert rep.shards.to_array()[0].tolist() == [2.0]
  assert _modalities(ds)["image"] == "features/image"


def test_prepared_dataset_uses_imported_modality(tmp_path):
  """Imported vectors are a modality like any other: data.modalities=('image',)."""
  from mmrec_jax import config as config_lib
  from mmrec_jax.loop import setup

  ds = prep.prepare(
    {
      "source": "synthetic",
      "num_users": 30,
      "num_items": 20,
      "num_interactions": 240,
      "cache_dir": str(tmp_path),
    }
  )
  raw = ds.item_raw_ids().tolist()
  src = tmp_path / "ducho"
  src.mkdir()
  for i, r in enumerate(raw[:15]):
    np.save(src / f"{r}.npy", np.full(3, i, np.float32))
  assert "image" in ds.modalities  # the synthetic source has one: replace it
  with pytest.raises(ConfigError, match="already exists"):
    importer.import_features(ds.path, "image", src)
  importer.import_features(ds.path, "image", src, overwrite=True)
  again = PreparedDataset.open(ds.path)
  assert "image" in again.modalities
  cfg = config_lib.base_config()
  cfg.data.modalities = ("image",)
  again, wanted = setup.resolve_modalities(again, cfg)
  assert wanted == ("image",)
  fs = again.features("image")
  assert fs.num_present == 15 and fs.gather(np.array([3]))[0].tolist() == [3.0] * 3


def test_command_line(tmp_path):
  ds = _dataset(tmp_path / "ds")
  np.save(tmp_path / "v.npy", np.stack([_vec(0), _vec(1)]))
  (tmp_path / "ids.txt").write_text("B001\nB000\n")
  cmd = [
    sys.executable,
    "-m",
    "mmrec_jax.features",
    "import",
    f"--dataset={ds}",
    "--modality=image",
    f"--from={tmp_path / 'v.npy'}",
    f"--ids={tmp_path / 'ids.txt'}",
  ]
  r = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, check=False)
  assert r.returncode == 0, r.stderr
  assert "image: 2/12 items have a vector (dim 4)" in r.stdout
  assert "data.modalities=\"('image',)\"" in r.stdout
  rows = FeatureShards.open(ds / "features" / "image").to_array()
  np.testing.assert_array_equal(rows[:2], [_vec(1), _vec(0)])
  r = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, check=False)
  assert r.returncode == 2 and "error: features import: modality 'image' already" in r.stderr
  r = subprocess.run(
    cmd[:5] + ["--modality=audio", "--from=" + str(tmp_path / "x.npy")],
    capture_output=True,
    text=True,
    cwd=REPO,
    check=False,
  )
  assert r.returncode == 2 and "x.npy: not found" in r.stderr.strip().splitlines()[-1]
