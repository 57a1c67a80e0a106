"""The feature-shard store: round trips, streaming, imputation, atomic replace, validation."""

import itertools
import json
import pickle

import numpy as np
import pytest

from mmrec_jax.data import feature_store as F
from mmrec_jax.data.feature_store import (
  FeatureShards,
  write_feature_shards,
  write_from_mmrec,
  write_from_npy,
)
from mmrec_jax.errors import DataError


def _data(n=1000, d=7, seed=0, p_missing=0.3):
  rng = np.random.default_rng(seed)
  x = rng.standard_normal((n, d)).astype(np.float32)
  mask = rng.random(n) >= p_missing
  return x, mask


def _imputed(x, mask):
  return np.where(mask[:, None], x, 0).astype(np.float32)


@pytest.fixture
def written(tmp_path):
  x, mask = _data()
  fs = write_feature_shards(tmp_path / "text", x, mask, modality="text", rows_per_shard=128)
  return fs, _imputed(x, mask), mask


def test_round_trip_across_shards(written):
  fs, ref, mask = written
  assert (fs.num_items, fs.dim, fs.num_shards, fs.rows_per_shard) == (1000, 7, 8, 128)
  assert fs.manifest["shards"][-1]["rows"] == 1000 - 7 * 128  # shorter last shard
  assert fs.num_present == int(mask.sum()) and fs.modality == "text"
  rng = np.random.default_rng(1)
  ids = rng.integers(0, 1000, size=(3, 17, 5))
  got = fs.gather(ids)
  assert got.shape == (3, 17, 5, 7) and got.dtype == np.float32
  np.testing.assert_array_equal(got, ref[ids])
  np.testing.assert_array_equal(fs.mask_of(ids), mask[ids])
  # Ids only from the last (short) shard, and from one middle shard: no-permutation path.
  for ids in (np.arange(896, 1000)[::-1], np.array([300, 257, 383, 300])):
    np.testing.assert_array_equal(fs.gather(ids), ref[ids])
  np.testing.assert_array_equal(fs.to_array(), ref)
  assert fs.gather(np.zeros((0,), np.int32)).shape == (0, 7)
  np.testing.assert_array_equal(fs.gather(np.array(5, np.uint64)), ref[5])


def test_reopen_and_out_buffer(written):
  fs, ref, _ = written
  fs2 = FeatureShards.open(fs.path, verify=True)
  ids = np.array([[0, 999], [128, 127]], np.int32)
  out = np.full((2, 2, 7), np.nan, np.float32)
  assert fs2.gather(ids, out=out) is out
  np.testing.assert_array_equal(out, ref[ids])
  with pytest.raises(ValueError, match="out must be"):
    fs2.gather(ids, out=np.empty((4, 7), np.float32))


def test_single_shard_fast_path(tmp_path):
  x, mask = _data(n=300, d=5)
  fs = write_feature_shards(tmp_path / "f", x, mask, modality="image")
  assert fs.num_shards == 1
  ids = np.random.default_rng(2).integers(0, 300, size=(64, 3))
  np.testing.assert_array_equal(fs.gather(ids), _imputed(x, mask)[ids])


def test_pickles_as_path(written):
  fs, ref, _ = written
  blob = pickle.dumps(fs)
  assert len(blob) < 1000  # the shards are not copied into the pickle
  np.testing.assert_array_equal(pickle.loads(blob).gather([3, 900]), ref[[3, 900]])


def test_row_view_reads_only_what_is_indexed(written, monkeypatch):
  """fs.rows(): a lazy [num_items, dim] table; slices are views, other indexes read rows."""
  fs, ref, _ = written
  view = fs.rows()
  assert (view.shape, view.ndim, view.dtype, len(view)) == ((1000, 7), 2, np.float32, 1000)
  read = []
  real_gather = fs.gather
  monkeypatch.setattr(
    fs, "gather", lambda ids, out=None: read.append(np.size(ids)) or real_gather(ids, out)
  )
  part = view[100:400]  # crosses shard boundaries (128 rows per shard)
  sub = part[250:900]  # clipped like numpy: rows 350..399
  assert read == [] and part.shape == (300, 7) and sub.shape == (50, 7)
  np.testing.assert_array_equal(np.asarray(sub), ref[350:400])
  assert read == [50]
  np.testing.assert_array_equal(view[5], ref[5])
  np.testing.assert_array_equal(view[-1], ref[999])
  np.testing.assert_array_equal(part[[0, 299, 130]], ref[[100, 399, 230]])
  np.testing.assert_array_equal(view[10:20, 3], ref[10:20, 3])
  np.testing.assert_array_equal(np.asarray(view[990:], np.float64), ref[990:])
  assert view[1200:].shape == (0, 7) and view[300:100].shape == (0, 7)
  out = np.zeros((4, 7), np.float32)  # how step.py copies host rows into a buffer
  out[:3] = view[997:1000]
  np.testing.assert_array_equal(out[:3], ref[997:])
  with pytest.raises(IndexError):
    view[1000]


def test_streamed_chunks_equal_array(tmp_path):
  x, mask = _data()
  a = write_feature_shards(tmp_path / "a", x, mask, modality="t", rows_per_shard=128)
  bounds = [0, 1, 50, 51, 300, 700, 1000]  # irregular chunks crossing shard boundaries
  chunks = (x[lo:hi] for lo, hi in itertools.pairwise(bounds))
  b = write_feature_shards(
    tmp_path / "b", chunks, mask, modality="t", rows_per_shard=128, num_items=1000
  )
  assert a.manifest == b.manifest  # same per-shard sha256: byte-identical shards
  np.testing.assert_array_equal(a.to_array(), b.to_array())


def test_imputation_zeros_and_nan_allowed_in_missing_rows(tmp_path):
  x, mask = _data(n=50)
  x[~mask] = np.nan  # extractors may mark failures with NaN; masked rows become zeros
  fs = write_feature_shards(tmp_path / "f", x, mask, modality="t", rows_per_shard=16)
  arr = fs.to_array()
  assert np.all(arr[~mask] == 0) and np.array_equal(arr[mask], x[mask])
  assert fs.manifest["imputation"] == "zeros"
  assert fs.manifest["num_present"] == int(mask.sum())
  np.testing.assert_array_equal(np.load(fs.path / "mask.npy"), mask)
  full = write_feature_shards(tmp_path / "g", x[mask], None, modality="t")
  assert full.mask.all() and full.num_present == int(mask.sum())


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_low_precision_dtypes(tmp_path, dtype):
  x, mask = _data(n=40)
  fs = write_feature_shards(tmp_path / "f", x, mask, modality="t", rows_per_shard=16, dtype=dtype)
  fs = FeatureShards.open(fs.path)
  assert fs.dtype.name == dtype and fs.manifest["dtype"] == dtype
  got = fs.gather(np.arange(40)).astype(np.float32)
  np.testing.assert_allclose(got, _imputed(x, mask), rtol=1e-2, atol=1e-2)


def test_float16_overflow_is_an_error(tmp_path):
  x = np.ones((4, 3), np.float32)
  x[2, 1] = 1e6
  with pytest.raises(DataError, match=r"features\[t\]: row 2 overflows float16"):
    write_feature_shards(tmp_path / "f", x, None, modality="t", dtype="float16")


def test_atomic_replace(tmp_path):
  x, mask = _data(n=100)
  out = tmp_path / "f"
  write_feature_shards(out, x, mask, modality="t", rows_per_shard=32)
  before = {p.name: p.read_bytes() for p in out.iterdir()}

  def failing_chunks():
    yield x[:50] + 1
    raise RuntimeError("extractor died")

  with pytest.raises(RuntimeError, match="extractor died"):
    write_feature_shards(out, failing_chunks(), mask, modality="t", rows_per_shard=32)
  assert {p.name: p.read_bytes() for p in out.iterdir()} == before
  assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]  # no temp dirs left behind
  # A successful write replaces the old directory completely.
  new = write_feature_shards(out, x[:40] * 2, None, modality="t", rows_per_shard=32)
  assert new.num_items == 40 and sorted(p.name for p in tmp_path.iterdir()) == ["f"]
  np.testing.assert_array_equal(FeatureShards.open(out).to_array(), x[:40] * 2)


# -- writer validation -----------------------------------------------------------------


def test_nan_names_modality_and_row(tmp_path):
  x = np.ones((300, 4), np.float32)
  x[137, 2] = np.inf
  x[200, 0] = np.nan
  with pytest.raises(DataError, match=r"^features\[image\]: row 137 has a NaN or infinite"):
    write_feature_shards(
      tmp_path / "f", iter([x[:100], x[100:]]), None, modality="image", rows_per_shard=64
    )
  assert not (tmp_path / "f").exists()


def test_wrong_dim_between_chunks(tmp_path):
  chunks = [np.ones((10, 4)), np.ones((5, 3))]
  with pytest.raises(
    DataError, match="chunk starting at row 10 has dim 3, earlier rows have dim 4"
  ):
    write_feature_shards(tmp_path / "f", chunks, None, modality="t")


def test_mask_length_and_num_items(tmp_path):
  x = np.ones((10, 2), np.float32)
  with pytest.raises(
    DataError, match=r"mask has 9 entries but features have more rows \(at least 10\)"
  ):
    write_feature_shards(tmp_path / "f", x, np.ones(9, bool), modality="t")
  with pytest.raises(DataError, match="mask has 11 entries but features have 10 rows"):
    write_feature_shards(tmp_path / "f", x, np.ones(11, bool), modality="t")
  with pytest.raises(DataError, match="10 feature rows but num_items=12"):
    write_feature_shards(tmp_path / "f", x, None, modality="t", num_items=12)
  with pytest.raises(DataError, match="more rows than num_items=8"):
    write_feature_shards(tmp_path / "f", x, None, modality="t", num_items=8)
  with pytest.raises(DataError, match="expected a 2-D"):
    write_feature_shards(tmp_path / "f", np.ones(5), None, modality="t")
  with pytest.raises(DataError, match="no feature rows"):
    write_feature_shards(tmp_path / "f", [], None, modality="t")
  with pytest.raises(DataError, match="unknown feature dtype 'int8'"):
    write_feature_shards(tmp_path / "f", x, None, modality="t", dtype="int8")
  assert list(tmp_path.iterdir()) == []


# -- reader validation -----------------------------------------------------------------


def test_truncated_shard(written):
  fs, _, _ = written
  shard = fs.path / "shard-00003.npy"
  data = shard.read_bytes()
  shard.write_bytes(data[: len(data) - 40])
  with pytest.raises(DataError, match=r"shard-00003\.npy: unreadable or truncated shard") as e:
    FeatureShards.open(fs.path)
  assert "\n" not in str(e.value)


def test_missing_shard(written):
  fs, _, _ = written
  (fs.path / "shard-00007.npy").unlink()
  with pytest.raises(DataError, match=r"shard-00007\.npy: missing shard 7 of 8"):
    FeatureShards.open(fs.path)


def test_shard_with_wrong_shape(written):
  fs, _, _ = written
  np.save(fs.path / "shard-00001.npy", np.zeros((128, 6), np.float32))
  with pytest.raises(
    DataError,
    match=r"shard-00001\.npy: shape \(128, 6\) dtype float32, "
    r"manifest says \(128, 7\)",
  ):
    FeatureShards.open(fs.path)


def test_checksum_mismatch_with_verify(written):
  fs, _, _ = written
  np.save(fs.path / "shard-00002.npy", np.zeros((128, 7), np.float32))
  FeatureShards.open(fs.path)  # shapes fine: only verify=True reads the bytes
  with pytest.raises(DataError, match=r"shard-00002\.npy: sha256 does not match"):
    FeatureShards.open(fs.path, verify=True)


def _edit_manifest(path, **changes):
  m = json.loads((path / "manifest.json").read_text())
  for k, v in changes.items():
    if v is None:
      del m[k]
    else:
      m[k] = v
  (path / "manifest.json").write_text(json.dumps(m))


@pytest.mark.parametrize(
  "changes,pattern",
  [
    ({"dim": None}, r"missing keys \['dim'\]"),
    ({"format_version": 2}, "format_version 2 is not supported"),
    ({"dtype": "int8"}, "key 'dtype': unknown feature dtype"),
    ({"num_items": -1}, "'num_items' must be a non-negative int"),
    ({"num_shards": 7}, "'shards' must list num_shards=7 entries"),
    ({"num_present": 3}, "manifest num_present=3"),
  ],
)
def test_bad_manifest(written, changes, pattern):
  fs, _, _ = written
  _edit_manifest(fs.path, **changes)
  with pytest.raises(DataError, match=pattern):
    FeatureShards.open(fs.path)


def test_bad_manifest_json_and_mask(written, tmp_path):
  fs, _, _ = written
  with pytest.raises(DataError, match="manifest.json: missing"):
    FeatureShards.open(tmp_path / "nowhere")
  np.save(fs.path / "mask.npy", np.ones(999, bool))
  with pytest.raises(DataError, match=r"mask\.npy: mask must be bool \[1000\]"):
    FeatureShards.open(fs.path)
  (fs.path / "manifest.json").write_text("{not json")
  with pytest.raises(DataError, match="manifest.json: not valid JSON"):
    FeatureShards.open(fs.path)


def test_out_of_range_ids(written):
  fs, _, _ = written
  with pytest.raises(DataError, match=r"features/text: item id 1000 out of range \[0, 1000\)"):
    fs.gather(np.array([1, 1000]))
  with pytest.raises(DataError, match="item id -1 out of range"):
    fs.mask_of(np.array([[-1, 2]]))
  with pytest.raises(DataError, match="must be integers"):
    fs.gather(np.array([1.5]))


# -- writers from files ----------------------------------------------------------------


def test_write_from_npy_identity_and_item_index(tmp_path):
  x, _ = _data(n=20, d=3)
  np.save(tmp_path / "x.npy", x)
  fs = write_from_npy(
    tmp_path / "a", tmp_path / "x.npy", modality="t", num_items=20, rows_per_shard=8
  )
  np.testing.assert_array_equal(fs.to_array(), x)
  assert fs.mask.all()
  # 4 rows for items 7, 0, 29, 3 of a 30-item catalogue; the rest are missing (zeros).
  np.save(tmp_path / "y.npy", x[:4])
  idx = np.array([7, 0, 29, 3])
  fs = write_from_npy(
    tmp_path / "b", tmp_path / "y.npy", modality="t", num_items=30, item_index=idx, rows_per_shard=8
  )
  expect = np.zeros((30, 3), np.float32)
  expect[idx] = x[:4]
  np.testing.assert_array_equal(fs.to_array(), expect)
  np.testing.assert_array_equal(np.flatnonzero(fs.mask), np.sort(idx))
  # Rows of items dropped by filtering (-1) are skipped when asked.
  fs = write_from_npy(
    tmp_path / "c",
    tmp_path / "y.npy",
    modality="t",
    num_items=30,
    item_index=np.array([7, -1, 29, -1]),
    drop_unmapped=True,
  )
  assert np.flatnonzero(fs.mask).tolist() == [7, 29]
  np.testing.assert_array_equal(fs.gather([7, 29]), x[[0, 2]])


def test_write_from_npy_errors(tmp_path):
  x, _ = _data(n=4, d=3)
  p = tmp_path / "y.npy"
  np.save(p, x)
  with pytest.raises(
    DataError,
    match=r"y\.npy row 2: maps to unknown item 30 "
    r"\(num_items=30\)",
  ):
    write_from_npy(
      tmp_path / "o", p, modality="t", num_items=30, item_index=np.array([1, 2, 30, 4])
    )
  with pytest.raises(DataError, match=r"y\.npy row 1: maps to unknown item -1"):
    write_from_npy(
      tmp_path / "o", p, modality="t", num_items=30, item_index=np.array([1, -1, 3, 4])
    )
  with pytest.raises(DataError, match=r"y\.npy row 3: item 1 already has an earlier row"):
    write_from_npy(tmp_path / "o", p, modality="t", num_items=30, item_index=np.array([1, 2, 3, 1]))
  with pytest.raises(DataError, match=r"y\.npy: 4 rows but num_items=30"):
    write_from_npy(tmp_path / "o", p, modality="t", num_items=30)
  x[2, 1] = np.nan
  np.save(p, x)
  with pytest.raises(DataError, match=r"y\.npy \(features\[t\]\): row 2 has a NaN"):
    write_from_npy(tmp_path / "o", p, modality="t", num_items=4)
  p.write_bytes(p.read_bytes()[:100])
  with pytest.raises(DataError, match=r"y\.npy: unreadable \.npy"):
    write_from_npy(tmp_path / "o", p, modality="t", num_items=4)
  assert not (tmp_path / "o").exists()


def test_write_from_mmrec_zero_rows_are_missing(tmp_path):
  src = tmp_path / "baby"
  src.mkdir()
  rng = np.random.default_rng(3)
  img = rng.random((10, 6)).astype(np.float32)
  img[[2, 5]] = 0
  txt = rng.random((10, 4)).astype(np.float32)
  txt[9] = 0
  np.save(src / "image_feat.npy", img)
  np.save(src / "text_feat.npy", txt)
  out = write_from_mmrec(src, tmp_path / "features", 10, rows_per_shard=4)
  assert sorted(out) == ["image", "text"]
  assert np.flatnonzero(~out["image"].mask).tolist() == [2, 5]
  assert np.flatnonzero(~out["text"].mask).tolist() == [9]
  np.testing.assert_array_equal(FeatureShards.open(tmp_path / "features/image").to_array(), img)
  with pytest.raises(DataError, match="no MMRec feature file"):
    write_from_mmrec(tmp_path / "features", tmp_path / "x", 10)


def test_module_constants():
  assert F.FORMAT_VERSION == 1 and F.MMREC_FILES["text"] == "text_feat.npy"
