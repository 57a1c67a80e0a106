"""Negative samplers: distributions, exclusion of positives, slice consistency."""

import numpy as np
import pytest
from scipy import stats

from mmrec_jax.data import negatives
from mmrec_jax.errors import ConfigError, DataError

MASK64 = (1 << 64) - 1


def _splitmix_ref(key: int, j: int) -> int:
  """Pure-Python SplitMix64: the (j+1)-th output of the stream whose state starts at key."""
  z = (key + (j + 1) * 0x9E3779B97F4A7C15) & MASK64
  z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
  z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
  return z ^ (z >> 31)


def test_splitmix64_matches_reference():
  key = int(negatives.derive_keys(7, 1, 2)[0])
  idx = np.array([0, 1, 2, 1000, 2**40], np.uint64)
  got = negatives.splitmix64(key, idx)
  assert [int(v) for v in got] == [_splitmix_ref(key, int(j)) for j in idx]


def test_uniform_distribution_within_tolerance():
  n_items, n = 50, 200_000
  s = negatives.NegativeSampler("uniform", n_items)
  items = s.draw(negatives.derive_keys(0)[0], np.arange(n, dtype=np.uint64))
  assert items.dtype == np.int32 and items.min() >= 0 and items.max() < n_items
  freq = np.bincount(items, minlength=n_items) / n
  # Tolerance: max abs error of empirical frequencies over 200k samples < 0.01 (the
  # binomial std is ~4.4e-4 here), and a chi-square goodness-of-fit p-value > 1e-3.
  assert np.abs(freq - 1 / n_items).max() < 0.01
  assert stats.chisquare(freq * n).pvalue > 1e-3


def test_popularity_distribution_matches_count_power_alpha():
  n_items, n, alpha = 50, 200_000, 0.75
  counts = (1000 / np.arange(1, n_items + 1) ** 1.1).astype(np.int64)
  counts[[3, 17]] = 0  # never in train: must never be drawn when alpha > 0
  s = negatives.NegativeSampler("popularity", n_items, counts, alpha)
  want = counts.astype(np.float64) ** alpha
  want /= want.sum()
  np.testing.assert_allclose(s.probabilities, want, atol=1e-12)
  items = s.draw(negatives.derive_keys(1)[0], np.arange(n, dtype=np.uint64))
  emp = np.bincount(items, minlength=n_items) / n
  assert emp[3] == 0 and emp[17] == 0
  # Stated tolerance: max abs error < 0.01 over 200k samples, chi-square p > 1e-3.
  assert np.abs(emp - want).max() < 0.01
  nz = want > 0
  assert stats.chisquare(emp[nz] * n, want[nz] * n).pvalue > 1e-3


def test_alias_table_reproduces_the_distribution_exactly():
  rng = np.random.default_rng(3)
  probs = rng.pareto(1.0, 1000) * (rng.random(1000) < 0.8)
  probs /= probs.sum()
  threshold, alias = negatives._alias_table(probs)
  keep = threshold.astype(np.float64) / 2.0**32
  recon = keep + np.bincount(alias, weights=1.0 - keep, minlength=1000)
  np.testing.assert_allclose(recon / 1000, probs, atol=1e-9)
  assert (recon[probs == 0] == 0).all()


def test_popularity_alpha_zero_is_uniform():
  s = negatives.NegativeSampler("popularity", 4, np.array([5, 0, 1, 9]), alpha=0.0)
  np.testing.assert_allclose(s.probabilities, 0.25)


def test_positive_set_contains_matches_python_set():
  rng = np.random.default_rng(0)
  u, i = rng.integers(0, 30, 400), rng.integers(0, 20, 400)
  ps = negatives.PositiveSet(u, i, 20)
  # 5000 queries at ~50% density: > 1024 filter hits, so the sorted-search path runs too.
  qu, qi = rng.integers(0, 30, 5000), rng.integers(0, 20, 5000)
  ref = {(a, b) for a, b in zip(u.tolist(), i.tolist())}
  want = np.array([(a, b) in ref for a, b in zip(qu.tolist(), qi.tolist())])
  np.testing.assert_array_equal(ps.contains(qu, qi), want)


@pytest.mark.parametrize("name,max_rounds", [("uniform", 10), ("popularity", 10), ("uniform", 0)])
def test_exclusion_never_returns_a_positive(name, max_rounds):
  # Dense positives: each user has ~60% of the 20 items, so many draws hit; with
  # max_rounds=0 every hit goes through the deterministic fallback.
  rng = np.random.default_rng(1)
  n_users, n_items = 30, 20
  have = rng.random((n_users, n_items)) < 0.6
  have[:, 0] = False  # every user has at least one non-positive
  u, i = np.nonzero(have)
  ps = negatives.PositiveSet(u, i, n_items)
  counts = np.bincount(i, minlength=n_items) + 1
  s = negatives.NegativeSampler(name, n_items, counts, 0.75, max_rounds=max_rounds)
  users = rng.integers(0, n_users, 500).astype(np.int32)
  keys = negatives.derive_keys(3, count=s.max_rounds + 1)
  neg = s.sample(keys, users, 4, 0, exclude=ps)
  assert neg.shape == (500, 4) and neg.dtype == np.int32
  assert not have[users[:, None], neg].any()
  np.testing.assert_array_equal(neg, s.sample(keys, users, 4, 0, exclude=ps))


@pytest.mark.parametrize("exclude", [False, True])
def test_slice_of_batch_equals_rows_of_whole_batch(exclude):
  rng = np.random.default_rng(2)
  n_items = 25
  u, i = rng.integers(0, 10, 120), rng.integers(0, n_items, 120)
  ps = negatives.PositiveSet(u, i, n_items) if exclude else None
  s = negatives.NegativeSampler("popularity", n_items, np.bincount(i, minlength=n_items))
  users = rng.integers(0, 10, 64).astype(np.int32)
  keys = negatives.derive_keys(4, count=s.max_rounds + 1)
  whole = s.sample(keys, users, 3, 0, ps)
  for a, b in [(0, 16), (16, 48), (48, 64)]:
    np.testing.assert_array_equal(s.sample(keys, users[a:b], 3, a * 3, ps), whole[a:b])


def test_bad_sampler_settings():
  with pytest.raises(ConfigError, match="input.negative_sampler='nope'.*uniform"):
    negatives.NegativeSampler("nope", 10)
  with pytest.raises(ConfigError, match="input.popularity_alpha"):
    negatives.NegativeSampler("popularity", 3, np.ones(3), alpha=-1.0)
  with pytest.raises(DataError, match="no item has train interactions"):
    negatives.NegativeSampler("popularity", 3, np.zeros(3), alpha=1.0)


def test_samplers_registry_names_and_in_batch():
  """SAMPLERS (what config validation reads): name -> distribution; in_batch draws none."""
  assert list(negatives.SAMPLERS) == ["uniform", "popularity", "trained_uniform", "in_batch"]
  assert negatives.SAMPLERS[negatives.IN_BATCH] is None
  assert negatives.SAMPLERS["uniform"](5, None, 0.75) is None
  np.testing.assert_allclose(
    negatives.SAMPLERS["popularity"](3, np.array([1, 0, 3]), 1.0), [0.25, 0.0, 0.75]
  )
  with pytest.raises(
    ConfigError,
    match=r"'in_batch' is not one of \['uniform', "
    r"'popularity', 'trained_uniform', 'in_batch'\]",
  ):
    negatives.NegativeSampler("in_batch", 10)
