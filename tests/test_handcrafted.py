"""Handcrafted text features against hand-computed values."""

import math

import numpy as np
import pytest

from mmrec_jax.errors import DataError
from mmrec_jax.features.handcrafted import (
  DEFAULT_YEAR_BUCKETS,
  handcrafted_feature_names,
  handcrafted_text_blocks,
  handcrafted_text_features,
  tokenize,
)


def _rec(title=None, genres=(), year=None, tags=()):
  return {
    "title": title,
    "genres": list(genres),
    "year": year,
    "tags": list(tags),
    "image": None,
    "text": None,
  }


ITEMS = [
  _rec("Toy Story", ["Animation", "Comedy"], 1995, ["pixar"]),
  _rec("Toy Soldiers", ["Action"], 1991),
  _rec(None, [], 2000),  # no text: missing
  _rec("Toy, toy: HEAT!", ["Action", "Crime"], None, ["Pixar"]),
  _rec("  ", ["(no genres listed)"], 1925),  # blank title: missing
]


def _unit(v):
  v = np.asarray(v, np.float64)
  return v / np.linalg.norm(v)


def test_tokenize():
  assert tokenize("Toy, toy: HEAT! sci_fi Amélie 2") == [
    "toy",
    "toy",
    "heat",
    "sci",
    "fi",
    "amélie",
    "2",
  ]


def test_mask_genres_years_exact():
  b = handcrafted_text_blocks(ITEMS)
  np.testing.assert_array_equal(b.mask, [True, True, False, True, False])
  assert b.genre_names == ["action", "animation", "comedy", "crime"]
  np.testing.assert_array_equal(
    b.genres, [[0, 1, 1, 0], [1, 0, 0, 0], [0, 0, 0, 0], [1, 0, 0, 1], [0, 0, 0, 0]]
  )
  assert len(b.year_names) == len(DEFAULT_YEAR_BUCKETS) + 2
  assert b.year_names[0] == "year<1930" and b.year_names[-2:] == ["year>=2020", "year:unknown"]
  expect = np.zeros((5, len(b.year_names)))
  expect[0, b.year_names.index("year:1990-1999")] = 1
  expect[1, b.year_names.index("year:1990-1999")] = 1
  expect[3, b.year_names.index("year:unknown")] = 1  # rows 2 and 4 have no text
  np.testing.assert_array_equal(b.years, expect)


def test_year_bucket_edges():
  items = [_rec("a", year=y) for y in (1899, 1900, 1949, 1950, 2024, None)]
  b = handcrafted_text_blocks(items, year_buckets=(1900, 1950), min_df=1)
  assert b.year_names == ["year<1900", "year:1900-1949", "year>=1950", "year:unknown"]
  np.testing.assert_array_equal(b.years.argmax(1), [0, 1, 1, 2, 2, 3])
  with pytest.raises(ValueError, match="strictly increasing"):
    handcrafted_text_blocks(items, year_buckets=(1950, 1900))


def test_tfidf_hand_computed():
  # Documents (title + genres + tags tokens) of the 3 items with text:
  #   0: toy story animation comedy pixar   1: toy soldiers action
  #   3: toy toy heat action crime pixar
  # df: toy 3, action 2, pixar 2, the rest 1; min_df=2 -> terms action, pixar, toy.
  b = handcrafted_text_blocks(ITEMS, min_df=2)
  assert b.terms == ["action", "pixar", "toy"]
  idf2 = math.log(4 / 3) + 1  # smooth idf, n_docs = 3
  idf3 = math.log(4 / 4) + 1
  np.testing.assert_allclose(b.idf, [idf2, idf2, idf3])
  expect = np.zeros((5, 3))
  expect[0] = _unit([0, idf2, idf3])
  expect[1] = _unit([idf2, 0, idf3])
  expect[3] = _unit([idf2, idf2, (1 + math.log(2)) * idf3])  # sublinear tf for "toy" x2
  np.testing.assert_allclose(b.tfidf.toarray(), expect, rtol=1e-6)
  # Vocabulary cap keeps the most frequent, ties broken by token: toy(3), action(2).
  assert handcrafted_text_blocks(ITEMS, min_df=2, max_vocab=2).terms == ["action", "toy"]
  assert len(handcrafted_text_blocks(ITEMS, min_df=1).terms) == 9


def test_full_vector_concatenated_and_normalised():
  feats, mask = handcrafted_text_features(ITEMS, min_df=2)
  b = handcrafted_text_blocks(ITEMS, min_df=2)
  names = handcrafted_feature_names(ITEMS, min_df=2)
  assert feats.dtype == np.float32 and feats.shape == (5, len(names))
  assert names[:4] == ["genre:action", "genre:animation", "genre:comedy", "genre:crime"]
  assert names[-3:] == ["term:action", "term:pixar", "term:toy"]
  np.testing.assert_array_equal(mask, b.mask)
  raw = np.concatenate([b.genres, b.years, b.tfidf.toarray()], axis=1)
  for i in np.flatnonzero(mask):
    np.testing.assert_allclose(feats[i], _unit(raw[i]), rtol=1e-6)
  # Item 0 by hand: genres animation+comedy (1,1), year one-hot (1), tf-idf block (norm 1).
  np.testing.assert_allclose(np.linalg.norm(feats[0, :4]), math.sqrt(2 / 4), rtol=1e-6)
  np.testing.assert_allclose(np.linalg.norm(feats, axis=1), [1, 1, 0, 1, 0], rtol=1e-6)
  assert np.all(feats[~mask] == 0)


def test_deterministic_and_order_independent_vocab():
  a, _ = handcrafted_text_features(ITEMS, min_df=1)
  b, _ = handcrafted_text_features(list(ITEMS), min_df=1)
  np.testing.assert_array_equal(a, b)
  rev = handcrafted_text_features(ITEMS[::-1], min_df=1)[0]
  np.testing.assert_allclose(rev[::-1], a, rtol=1e-6)


def test_no_terms_and_empty():
  feats, mask = handcrafted_text_features([_rec("solo", ["Drama"], 1990)], min_df=2)
  assert mask.tolist() == [True] and feats.shape == (1, 1 + 12)
  feats, mask = handcrafted_text_features([])
  assert feats.shape[0] == 0 and mask.shape == (0,)


@pytest.mark.parametrize(
  "rec,pattern",
  [
    ({"title": 3}, r"items\.jsonl row 1 key 'title': must be a string or null"),
    ({"genres": "Drama"}, r"row 1 key 'genres': must be a list of strings"),
    ({"tags": [1]}, r"row 1 key 'tags': must be a list of strings"),
    ({"year": "1990"}, r"row 1 key 'year': must be an int or null"),
    ({"year": True}, r"row 1 key 'year': must be an int or null"),
  ],
)
def test_bad_records(rec, pattern):
  with pytest.raises(DataError, match=pattern):
    handcrafted_text_features([_rec("ok"), rec])
  with pytest.raises(DataError, match="row 0: expected a JSON object"):
    handcrafted_text_features(["not a dict"])
