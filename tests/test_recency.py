"""Recency-weighted popularity for users without history (models/recency.py).

The half-life is chosen on the train split alone: with a planted drift (new users take
up what became popular lately) a finite half-life wins and ranks the drifting items
first; with stationary popularity plain counts are kept; the closed-form regime gives a
user without history exactly that ranking.
"""

from __future__ import annotations

import dataclasses

import ml_collections
import numpy as np
import pytest
from test_baselines import fit
from toy import toy_info

from mmrec_jax.errors import ConfigError
from mmrec_jax.models import recency

NI = 40


def _log(drift: bool, seed: int = 0, users_per_day: int = 4, days: int = 100):
  """Each day a few new users arrive and take 5 items each, by a stationary Zipf law over
  the 40 items (item 0 the most popular); with ``drift``, from day 80 on they take items
  30-39 instead."""
  rng = np.random.default_rng(seed)
  zipf = 1.0 / np.arange(1, NI + 1)
  users, items, stamps = [], [], []
  uid = 0
  for day in range(days):
    for _ in range(users_per_day):
      if drift and day >= 80:
        picks = rng.choice(np.arange(30, 40), 5, replace=False)
      else:
        picks = rng.choice(NI, 5, replace=False, p=zipf / zipf.sum())
      users += [uid] * 5
      items += picks.tolist()
      stamps += [day * 86400 + rng.integers(0, 86400)] * 5
      uid += 1
  return np.array(users), np.array(items), np.array(stamps, np.int64)


def test_weighted_counts_halve_per_half_life():
  items = np.array([0, 0, 1])
  stamps = np.array([0, 10, 10])
  got = recency.weighted_counts(items, stamps, 3, half_life=10.0, now=10.0)
  np.testing.assert_allclose(got, [1.5, 1.0, 0.0])
  np.testing.assert_array_equal(recency.weighted_counts(items, stamps, 3, 0.0, 10.0), [2, 1, 0])


def test_a_drift_picks_a_finite_half_life_and_stationary_data_plain_counts():
  users, items, stamps = _log(drift=True)
  half_life, scores = recency.choose_half_life(users, items, stamps, NI)
  assert half_life > 0 and scores[half_life] > scores[0.0] + 0.2
  users, items, stamps = _log(drift=False)
  half_life, scores = recency.choose_half_life(users, items, stamps, NI)
  assert scores and half_life == 0.0
  # Too few new users in the holdout, or no time at all: plain counts, nothing scored.
  few = users < 40 * 4 * 10
  assert recency.choose_half_life(users[few][:100], items[few][:100], stamps[few][:100], NI) == (
    0.0,
    {},
  )
  assert recency.choose_half_life(users, items, np.zeros_like(stamps), NI) == (0.0, {})


def test_a_user_without_history_gets_the_recent_hits_in_the_closed_form_regime():
  users, items, stamps = _log(drift=True)
  info = toy_info(num_users=int(users.max()) + 2, num_items=NI, num_edges=10)
  info = dataclasses.replace(
    info,
    train_users=users,
    train_items=items,
    train_timestamps=stamps,
    item_counts=np.bincount(items, minlength=NI).astype(np.int64),
  )
  new_user = int(users.max()) + 1
  _, _, u, i, _ = fit("mostpop", info)
  _, _, u, i, _ = fit("ease", info, model__reg_weight=10.0)
  top = np.argsort(-(u[new_user] @ i[:NI].T))[:10]
  assert set(top.tolist()) == set(range(30, 40))  # what is popular now
  _, _, u, i, _ = fit("ease", info, model__reg_weight=10.0, model__fallback_half_life=0.0)
  top = np.argsort(-(u[new_user] @ i[:NI].T))[:10]
  assert set(top.tolist()) != set(range(30, 40))  # plain counts: the all-time hits
  counts = np.bincount(items, minlength=NI)
  np.testing.assert_array_equal(top, np.argsort(-counts, kind="stable")[:10])


def test_a_bad_half_life_fails_in_one_line():
  cfg = ml_collections.ConfigDict({"fallback_half_life": -2.0})
  with pytest.raises(ConfigError, match=r"model.fallback_half_life=-2.0"):
    recency.fallback_popularity(cfg, toy_info(), NI)
