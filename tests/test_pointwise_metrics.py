"""AUC / GAUC / LogLoss of evaluation/pointwise.py against scikit-learn, ties included.

The metrics are computed on 8 fake devices in chunks that end on user boundaries; the
references are sklearn's ``roc_auc_score`` / ``log_loss`` on the whole arrays and a
per-user loop for GAUC.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.metrics import log_loss, roc_auc_score

from mmrec_jax import sharding
from mmrec_jax.evaluation.pointwise import auc_from_histograms, chunk_bounds, pointwise_metrics


def _rows(seed: int, n_users: int = 40, ties: bool = False):
  rng = np.random.default_rng(seed)
  counts = rng.integers(1, 30, n_users)
  users = np.repeat(np.arange(n_users), counts).astype(np.int32)
  n = users.shape[0]
  logits = rng.normal(size=n).astype(np.float32)
  if ties:  # few distinct scores: many ties within and across users
    logits = np.round(logits * 2) / 2
  labels = (rng.random(n) < jax.nn.sigmoid(logits + 0.3 * rng.normal(size=n))).astype(np.float32)
  return users, logits, labels


def _gauc_reference(users, scores, labels):
  num = den = 0.0
  for u in np.unique(users):
    m = users == u
    if 0 < labels[m].sum() < m.sum():
      num += m.sum() * roc_auc_score(labels[m], scores[m])
      den += m.sum()
  return num / den


def _metrics(users, logits, labels, chunk):
  mesh = sharding.make_mesh()
  table = jnp.asarray(logits)
  # The "model": row r's logit is looked up by its item id (= row index).
  score = jax.jit(lambda u, i: table[i])
  items = np.arange(users.shape[0], dtype=np.int32)
  return pointwise_metrics(score, users, items, labels, mesh, chunk=chunk, bins=1 << 18)


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("chunk", [128, 100000])
def test_matches_sklearn(ties, chunk):
  users, logits, labels = _rows(0, ties=ties)
  got = _metrics(users, logits, labels, chunk)
  probs = 1 / (1 + np.exp(-logits.astype(np.float64)))
  assert got["auc"] == pytest.approx(roc_auc_score(labels, logits), abs=2e-5)
  assert got["gauc"] == pytest.approx(_gauc_reference(users, logits, labels), abs=1e-6)
  assert got["logloss"] == pytest.approx(log_loss(labels, probs), rel=1e-5)
  assert got["rows"] == users.shape[0]


def test_all_ties_is_one_half_and_histogram_auc_is_exact_for_binned_scores():
  users = np.zeros(10, np.int32)
  labels = np.array([1, 0] * 5, np.float32)
  got = _metrics(users, np.zeros(10, np.float32), labels, 8)
  assert got["auc"] == 0.5 and got["gauc"] == 0.5
  rng = np.random.default_rng(3)
  b = rng.integers(0, 50, 500)
  y = rng.random(500) < b / 50
  hp, hn = np.bincount(b[y], minlength=50), np.bincount(b[~y], minlength=50)
  assert auc_from_histograms(hp, hn) == pytest.approx(roc_auc_score(y, b), abs=1e-12)


def test_chunks_never_split_a_user_and_cover_all_rows():
  users = np.repeat(np.arange(6), [3, 10, 1, 1, 7, 2])
  bounds = chunk_bounds(users, 4)
  assert bounds[0][0] == 0 and bounds[-1][1] == users.shape[0]
  for (_, e), (s2, _) in zip(bounds, bounds[1:]):
    assert e == s2 and users[e - 1] != users[e]
  with pytest.raises(ValueError, match="grouped by user"):
    chunk_bounds(np.array([0, 1, 0]), 2)
