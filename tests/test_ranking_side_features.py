"""Categorical side features and labelled rows: bags, vocabularies, user tables, labels."""

from __future__ import annotations

import numpy as np
import pytest

from mmrec_jax import config as config_lib
from mmrec_jax.data import labelled
from mmrec_jax.data.side_features import age_band, build_side_features, encode_bags
from mmrec_jax.errors import ConfigError


class _FakeDataset:
  def __init__(self, users, items):
    self._users, self._items = users, items

  def user_raw_ids(self):
    return np.asarray(self._users)

  def item_info(self):
    return self._items


def _data(tmp_path, variant="100k"):
  d = config_lib.base_config().data
  d.path = str(tmp_path)
  d.variant = variant
  d.cache_dir = str(tmp_path / "cache")
  return d


def test_bags_are_sorted_ids_padded_with_minus_one():
  bags, vocab = encode_bags([["b", "a"], [], ["c", "a", "a"]])
  assert vocab == ["a", "b", "c"]
  assert bags.tolist() == [[0, 1], [-1, -1], [0, 2]]
  assert [age_band(a) for a in (7, 18, 24, 25, 49, 50, 73)] == [
    "1",
    "18",
    "18",
    "25",
    "45",
    "50",
    "56",
  ]


def test_ml100k_user_table_and_item_fields(tmp_path):
  (tmp_path / "u.user").write_text(
    "1|24|M|technician|85711\n2|53|F|other|94043\n3|23|M|writer|T8H1N\n"
  )
  items = [
    {"genres": ["Comedy", "Drama"], "year": 1995},
    {"genres": [], "year": None},
    {"genres": ["Drama"], "year": 1987},
  ]
  ds = _FakeDataset(["1", "2", "3", "9"], items)  # user 9 has no user-table row
  side = build_side_features(ds, _data(tmp_path), ("genre", "year", "age", "zip", "gender"))
  assert side.kinds == {
    "genre": "items",
    "year": "items",
    "age": "users",
    "zip": "users",
    "gender": "users",
  }
  assert side.names["genre"] == ["Comedy", "Drama"] and side.bags["genre"].tolist() == [
    [0, 1],
    [-1, -1],
    [1, -1],
  ]
  assert side.names["year"] == ["1980s", "1990s"] and side.bags["year"][:, 0].tolist() == [1, -1, 0]
  assert side.names["age"] == ["18", "50"] and side.bags["age"][:, 0].tolist() == [0, 1, 0, -1]
  assert side.names["zip"] == ["8", "9", "T"] and side.vocab["gender"] == 2
  items[0]["tags"] = ["Funny", "pixar", "funny", "a", "b", "c", "d"]
  tags = build_side_features(ds, _data(tmp_path), ("tag",))
  assert tags.names["tag"] == ["a", "b", "funny", "pixar"]  # first 5, lower-cased, deduped
  assert tags.bags["tag"].tolist() == [[0, 1, 2, 3], [-1] * 4, [-1] * 4]


def test_ml1m_users_dat_and_bad_requests(tmp_path):
  (tmp_path / "users.dat").write_text("1::F::1::10::48067\n2::M::56::16::70072\n")
  side = build_side_features(_FakeDataset(["2", "1"], []), _data(tmp_path, "1m"), ("occupation",))
  assert side.names["occupation"] == ["10", "16"] and side.bags["occupation"][:, 0].tolist() == [
    1,
    0,
  ]
  with pytest.raises(ConfigError, match="not among"):
    build_side_features(_FakeDataset([], []), _data(tmp_path), ("colour",))
  d = _data(tmp_path, "25m")
  with pytest.raises(ConfigError, match="MovieLens 100k or 1m"):
    build_side_features(_FakeDataset(["1"], []), d, ("age",))
  assert build_side_features(_FakeDataset([], []), d, ()) is None


class _Split:
  def __init__(self, users, items, ratings):
    self.users, self.items, self.ratings = users, items, ratings


def test_labels_explicit_and_implicit():
  sp = _Split(np.array([0, 0, 1]), np.array([3, 4, 5]), np.array([5.0, 3.0, 3.5], np.float32))
  rows = labelled.labelled_rows(sp, 3.0, num_items=10)
  assert rows.labels.tolist() == [1.0, 0.0, 1.0] and rows.items.tolist() == [3, 4, 5]
  imp = labelled.labelled_rows(sp, -1.0, num_items=10, negatives=2, seed=1)
  assert imp.users.tolist() == [0, 0, 0, 0, 0, 0, 1, 1, 1]  # still grouped by user
  assert imp.labels.tolist() == [1, 0, 0] * 3 and imp.items[::3].tolist() == [3, 4, 5]
  again = labelled.labelled_rows(sp, -1.0, num_items=10, negatives=2, seed=1)
  assert np.array_equal(imp.items, again.items)  # seeded
  with pytest.raises(ConfigError, match="at least one"):
    labelled.labelled_rows(sp, -1.0, num_items=10, negatives=0)
