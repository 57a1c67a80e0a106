"""The seeds' split protocols: Cornac's RatioSplit and CrossValidation, Elliot's carve.

Checked: the global random split is Cornac's ``RatioSplit`` row for row (set equality
through the real ``prepare`` path), determinism under a seed, the exclude-unknowns rule,
k-fold partitions (Cornac's, disjoint, covering), the validation carve.
"""

import numpy as np
import pytest

from mmrec_jax.data import prepare as prep
from mmrec_jax.data import splits
from mmrec_jax.errors import ConfigError


def _ratings_log(seed=0, n_users=60, n_items=80, n=900):
  rng = np.random.default_rng(seed)
  pairs = rng.choice(n_users * n_items, n, replace=False)
  users, items = np.divmod(pairs, n_items)
  ratings = rng.integers(1, 6, n).astype(np.float32)
  return users, items, ratings


def _write_inter(path, users, items, ratings):
  with open(path, "w") as f:
    f.write("user_id:token\titem_id:token\trating:float\ttimestamp:float\n")
    for k, (u, i, r) in enumerate(zip(users, items, ratings)):
      f.write(f"u{u}\ti{i}\t{r:g}\t{k}\n")


def _prepare(tmp_path, inter, seed, **data):
  cfg = {
    "source": "recbole",
    "path": str(inter),
    "split": "global_random",
    "split_ratios": (0.8, 0.0, 0.2),
    "exclude_unknowns": True,
    "cache_dir": str(tmp_path / "cache"),
    **data,
  }
  return prep.prepare(cfg, seed=seed)


def _rows(ds, name):
  sp = ds.split(name)
  u, i = ds.user_raw_ids(), ds.item_raw_ids()
  return {(str(u[a]), str(i[b]), float(r)) for a, b, r in zip(sp.users, sp.items, sp.ratings)}


def test_global_random_is_cornac_ratiosplit(tmp_path):
  cornac = pytest.importorskip("cornac")
  del cornac
  from cornac.eval_methods import RatioSplit

  users, items, ratings = _ratings_log()
  inter = tmp_path / "log.inter"
  _write_inter(inter, users, items, ratings)
  triples = [(f"u{u}", f"i{i}", float(r)) for u, i, r in zip(users, items, ratings)]
  for seed in (123, 7):
    ds = _prepare(tmp_path, inter, seed)
    rs = RatioSplit(triples, test_size=0.2, rating_threshold=4.0, exclude_unknowns=True, seed=seed)

    def cornac_rows(d):
      uid = {v: k for k, v in d.uid_map.items()}
      iid = {v: k for k, v in d.iid_map.items()}
      return {(uid[a], iid[b], float(c)) for a, b, c in zip(*d.uir_tuple)}

    assert _rows(ds, "train") == cornac_rows(rs.train_set)
    assert _rows(ds, "test") == cornac_rows(rs.test_set)
    assert ds.split("valid").users.size == 0


def test_global_random_deterministic_and_exclude_unknowns(tmp_path):
  users, items, ratings = _ratings_log(seed=3, n_users=200, n_items=300, n=1200)
  inter = tmp_path / "log.inter"
  _write_inter(inter, users, items, ratings)
  a = _prepare(tmp_path, inter, 5, prepared_dir=str(tmp_path / "a"))
  b = _prepare(tmp_path, inter, 5, prepared_dir=str(tmp_path / "b"))
  c = _prepare(tmp_path, inter, 6, prepared_dir=str(tmp_path / "c"))
  assert _rows(a, "test") == _rows(b, "test") and _rows(a, "train") == _rows(b, "train")
  assert _rows(a, "test") != _rows(c, "test")
  # exclude_unknowns: every test user and item has a train row, and some rows were dropped
  for ds in (a, c):
    tr = ds.split("train")
    te = ds.split("test")
    assert set(te.users.tolist()) <= set(tr.users.tolist())
    assert set(te.items.tolist()) <= set(tr.items.tolist())
    # ids stay dense over what survived
    assert set(tr.users.tolist()) == set(range(ds.num_users))
  kept = _prepare(tmp_path, inter, 5, exclude_unknowns=False, prepared_dir=str(tmp_path / "d"))
  assert _rows(kept, "train") == _rows(a, "train")
  assert _rows(a, "test") < _rows(kept, "test")  # a strict subset: unknowns were dropped
  unknown = {r for r in _rows(kept, "test") - _rows(a, "test")}
  train_users = {u for u, _, _ in _rows(a, "train")}
  train_items = {i for _, i, _ in _rows(a, "train")}
  assert all(u not in train_users or i not in train_items for u, i, _ in unknown)


def test_global_random_sizes_follow_cornac_rounding():
  labels = splits.assign(
    "global_random",
    np.zeros(101, np.int64),
    np.zeros(101, np.int64),
    num_users=1,
    ratios=(0.7, 0.1, 0.2),
    seed=0,
  )
  # Cornac: test = ceil(0.2 * 101) = 21, val = ceil(0.1 * 101) = 11
  assert list(np.bincount(labels, minlength=3)) == [69, 11, 21]
  with pytest.raises(ConfigError):
    splits.assign(
      "global_random",
      np.zeros(3, np.int64),
      np.zeros(3, np.int64),
      num_users=1,
      ratios=(0.2, 0.4, 0.4),
    )


def test_kfold_is_cornac_partition_and_covers_rows():
  n, folds = 103, 5
  part = splits.kfold_partition(n, folds, seed=11)
  cornac = pytest.importorskip("cornac")
  del cornac
  from cornac.eval_methods import CrossValidation

  data = [(str(k), str(k), 1.0) for k in range(n)]
  cv = CrossValidation(data, n_folds=folds, seed=11)
  np.testing.assert_array_equal(part, cv._partition)
  users = np.zeros(n, np.int64)
  tests = [
    splits.assign("kfold", users, users, num_users=1, seed=11, folds=(folds, f))
    for f in range(folds)
  ]
  is_test = np.stack([t == splits.TEST for t in tests])
  assert (is_test.sum(0) == 1).all()  # every row in exactly one test fold
  assert all(((t == splits.TEST) | (t == splits.TRAIN)).all() for t in tests)
  again = splits.assign("kfold", users, users, num_users=1, seed=11, folds=(folds, 2))
  np.testing.assert_array_equal(again, tests[2])
  with pytest.raises(ConfigError, match="data.fold"):
    splits.assign("kfold", users, users, num_users=1, seed=11, folds=(folds, 5))


def test_carve_valid_from_train():
  labels = np.array([0] * 90 + [2] * 10, np.int8)
  out = splits.carve_valid(labels, 0.1, seed=4)
  assert (out[90:] == 2).all()
  assert (out == 1).sum() == 9 and (out == 0).sum() == 81  # ceil(0.1 * 90)
  np.testing.assert_array_equal(out, splits.carve_valid(labels, 0.1, seed=4))
  assert not np.array_equal(out, splits.carve_valid(labels, 0.1, seed=5))
  np.testing.assert_array_equal(splits.carve_valid(labels, 0.0, seed=4), labels)


def test_elliot_protocol_through_prepare(tmp_path):
  users, items, ratings = _ratings_log(seed=1, n_users=50, n_items=60, n=1000)
  inter = tmp_path / "log.inter"
  _write_inter(inter, users, items, ratings)
  ds = _prepare(tmp_path, inter, 0, valid_of_train=0.1, exclude_unknowns=False)
  n = {s: ds.split(s).users.size for s in ("train", "valid", "test")}
  assert n["test"] == 200 and n["valid"] == 80 and n["train"] == 720


def test_data_seed_fixes_the_split_when_preparing_from_the_data_section(tmp_path):
  """Training prepares from ``config.data`` alone: ``data.seed`` must reach the split."""
  users, items, ratings = _ratings_log(seed=4)
  inter = tmp_path / "log.inter"
  _write_inter(inter, users, items, ratings)
  base = {
    "source": "recbole",
    "path": str(inter),
    "split": "global_random",
    "split_ratios": (0.8, 0.0, 0.2),
    "cache_dir": str(tmp_path / "cache"),
  }
  a = prep.prepare({**base, "seed": 123, "prepared_dir": str(tmp_path / "a")})
  b = prep.prepare({**base, "prepared_dir": str(tmp_path / "b")}, seed=123)
  c = prep.prepare({**base, "prepared_dir": str(tmp_path / "c")})  # seed 0
  assert _rows(a, "test") == _rows(b, "test") != _rows(c, "test")
