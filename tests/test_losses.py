"""Losses against numpy references."""

import jax.numpy as jnp
import numpy as np
import pytest

from mmrec_jax import losses
from mmrec_jax.errors import ConfigError


def _log_sigmoid(x):
  return -np.logaddexp(0.0, -x)


@pytest.fixture
def scores():
  rng = np.random.default_rng(0)
  pos = rng.normal(size=6).astype(np.float32)
  neg = rng.normal(size=(6, 3)).astype(np.float32)
  valid = rng.random((6, 3)) > 0.3
  valid[0] = False  # an example without valid negatives
  return pos, neg, valid


def test_bpr(scores):
  pos, neg, valid = scores
  ref = np.mean(-_log_sigmoid(pos[:, None] - neg))
  np.testing.assert_allclose(losses.bpr_loss(jnp.asarray(pos), jnp.asarray(neg)), ref, rtol=1e-6)
  ref_m = np.sum(-_log_sigmoid(pos[:, None] - neg) * valid) / valid.sum()
  np.testing.assert_allclose(losses.compute_loss("bpr", pos, neg, valid), ref_m, rtol=1e-6)


def test_bce(scores):
  pos, neg, valid = scores
  ref = np.mean(-_log_sigmoid(pos) - np.sum(_log_sigmoid(-neg) * valid, axis=1))
  np.testing.assert_allclose(losses.compute_loss("bce", pos, neg, valid), ref, rtol=1e-6)


def _softmax_ref(pos, neg, valid, pos_logq, neg_logq, tau):
  lp = pos / tau - pos_logq
  ln = np.where(valid, neg / tau - neg_logq, -np.inf)
  logits = np.concatenate([lp[:, None], ln], axis=1)
  m = logits.max(axis=1, keepdims=True)
  lse = m[:, 0] + np.log(np.exp(logits - m).sum(axis=1))
  return np.mean(lse - lp)


def test_sampled_softmax_with_logq_and_temperature(scores):
  pos, neg, valid = scores
  rng = np.random.default_rng(1)
  pos_logq = np.log(rng.uniform(0.01, 0.5, size=6)).astype(np.float32)
  neg_logq = np.log(rng.uniform(0.01, 0.5, size=(6, 3))).astype(np.float32)
  got = losses.compute_loss(
    "sampled_softmax", pos, neg, valid, pos_logq=pos_logq, neg_logq=neg_logq, temperature=0.5
  )
  np.testing.assert_allclose(got, _softmax_ref(pos, neg, valid, pos_logq, neg_logq, 0.5), rtol=1e-5)
  # No correction = zero logQ.
  got0 = losses.compute_loss("sampled_softmax", pos, neg, valid)
  np.testing.assert_allclose(got0, _softmax_ref(pos, neg, valid, 0.0, 0.0, 1.0), rtol=1e-5)


def test_in_batch_softmax_matrix_form():
  """In-batch form used by the step: logits U I^T, duplicates of the positive masked."""
  rng = np.random.default_rng(2)
  u = rng.normal(size=(5, 4)).astype(np.float32)
  it = rng.normal(size=(5, 4)).astype(np.float32)
  pos_ids = np.array([1, 2, 1, 3, 4])
  logq = np.log(np.array([0.1, 0.2, 0.1, 0.3, 0.05], np.float32))
  logits = u @ it.T
  valid = pos_ids[None, :] != pos_ids[:, None]
  got = losses.compute_loss(
    "sampled_softmax",
    np.diag(logits),
    logits,
    valid,
    pos_logq=logq,
    neg_logq=np.broadcast_to(logq, (5, 5)),
  )
  ref = []
  for b in range(5):
    cand = [j for j in range(5) if j == b or pos_ids[j] != pos_ids[b]]
    lg = np.array([logits[b, j] - logq[j] for j in cand])
    ref.append(np.log(np.exp(lg).sum()) - (logits[b, b] - logq[b]))
  np.testing.assert_allclose(got, np.mean(ref), rtol=1e-5)


def test_bf16_scores_reduce_in_f32(scores):
  pos, neg, _ = scores
  got = losses.compute_loss("bpr", jnp.asarray(pos, jnp.bfloat16), jnp.asarray(neg, jnp.bfloat16))
  assert got.dtype == jnp.float32


def test_unknown_loss_lists_valid():
  with pytest.raises(ConfigError, match="sampled_softmax"):
    losses.compute_loss("hinge", np.zeros(2), np.zeros((2, 1)))
