"""Metric formulas (numpy and jax) against direct per-user definitions; significance tests."""

import math

import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats as sps

from mmrec_jax.errors import ConfigError
from mmrec_jax.evaluation import metrics as M
from mmrec_jax.evaluation import stats

KS = (1, 3, 5, 8)


def direct(hits_row, n, k):
  """Definitions of the module docstring, written as plainly as possible."""
  r = [bool(x) for x in hits_row[:k]]
  h = sum(r)
  first = next((j + 1 for j, x in enumerate(r) if x), None)
  dcg = sum(1 / math.log2(j + 2) for j, x in enumerate(r) if x)
  idcg = sum(1 / math.log2(j + 2) for j in range(min(n, k)))
  ap = sum(sum(r[: j + 1]) / (j + 1) for j, x in enumerate(r) if x) / min(n, k)
  return {
    "recall": h / n,
    "recall_capped": h / min(n, k),
    "precision": h / k,
    "hit": float(h > 0),
    "ndcg": dcg / idcg,
    "mrr": 0.0 if first is None else 1 / first,
    "map": ap,
  }


def random_hits(seed, users=60, kmax=8):
  rng = np.random.default_rng(seed)
  n = rng.integers(0, 12, users)  # includes 0 (no truth) and n < K
  hits = rng.random((users, kmax)) < 0.3
  hits &= np.arange(kmax)[None, :] < np.maximum(n, 0)[:, None] + rng.integers(0, 4, users)[:, None]
  for u in range(users):  # never more hits than ground truth
    extra = np.nonzero(hits[u])[0][n[u] :]
    hits[u, extra] = False
  return hits, n


@pytest.mark.parametrize("xp", [np, jnp], ids=["numpy", "jax"])
def test_metrics_from_hits_match_definitions(xp):
  hits, n = random_hits(0)
  got = M.metrics_from_hits(xp.asarray(hits), xp.asarray(n), KS, M.METRICS, xp=xp)
  assert list(got) == M.metric_names(M.METRICS, KS)
  for u in range(hits.shape[0]):
    for k in KS:
      want = direct(hits[u], n[u], k) if n[u] > 0 else dict.fromkeys(M.METRICS, 0.0)
      for m in M.METRICS:
        assert float(got[f"{m}@{k}"][u]) == pytest.approx(want[m], abs=1e-6), (u, m, k)


def test_hand_computed_example():
  # relevant at ranks 2 and 4, three ground-truth items, K = 4
  got = M.metrics_from_hits(np.array([[0, 1, 0, 1]], bool), np.array([3]), (4,), M.METRICS)
  idcg = 1 + 1 / math.log2(3) + 1 / math.log2(4)
  assert got["recall@4"][0] == pytest.approx(2 / 3)
  assert got["recall_capped@4"][0] == pytest.approx(2 / 3)
  assert got["precision@4"][0] == pytest.approx(0.5)
  assert got["hit@4"][0] == 1.0
  assert got["mrr@4"][0] == pytest.approx(0.5)
  assert got["ndcg@4"][0] == pytest.approx((1 / math.log2(3) + 1 / math.log2(5)) / idcg)
  assert got["map@4"][0] == pytest.approx((1 / 2 + 2 / 4) / 3)


def test_recall_uses_full_truth_size_not_min():
  # 50 ground-truth items, all of the top 10 relevant: recall 0.2, capped recall 1
  got = M.metrics_from_hits(
    np.ones((1, 10), bool), np.array([50]), (10,), ("recall", "recall_capped")
  )
  assert got["recall@10"][0] == pytest.approx(0.2)
  assert got["recall_capped@10"][0] == pytest.approx(1.0)


def test_reference_ranking_breaks_ties_by_lower_item_id_and_excludes():
  scores = np.array([1.0, 3.0, 3.0, 2.0, 3.0, 0.0])
  top, s = M.rank_items_reference(scores, np.array([2]), 6)
  assert top.tolist() == [1, 4, 3, 0, 5, 2]  # excluded item 2 last, with -inf
  assert np.isneginf(s[-1])


def test_reference_evaluate_skips_users_without_truth():
  um = np.eye(3)
  im = np.eye(3)
  truth = [np.array([0]), np.array([], int), np.array([0, 1])]
  excl = [np.array([], int)] * 3
  ref = M.reference_evaluate(um, im, np.arange(3), truth, excl, (1,), ("hit",))
  assert ref["users"].tolist() == [0, 2]
  # user 2 scores item 2 highest, which is not in truth; ties 0/1 at 0 come after
  assert ref["hit@1"].tolist() == [1.0, 0.0]


def test_unknown_metric_or_bad_k_is_a_config_error():
  with pytest.raises(ConfigError, match="valid: recall"):
    M.metric_names(("recall", "auc"), (10,))
  with pytest.raises(ConfigError, match="eval.ks"):
    M.metric_names(("recall",), (0,))


def test_paired_tests_match_scipy_and_handle_degenerate_cases():
  rng = np.random.default_rng(1)
  a = rng.random(40)
  b = a - 0.05 + 0.1 * rng.random(40)
  got = stats.paired_tests(a, b)
  assert got["t_pvalue"] == pytest.approx(sps.ttest_rel(a, b).pvalue)
  assert got["wilcoxon_pvalue"] == pytest.approx(sps.wilcoxon(a, b).pvalue)
  assert got["mean_diff"] == pytest.approx(float(np.mean(a - b)))
  same = stats.paired_tests(a, a)
  assert same["t_pvalue"] == 1.0 and same["wilcoxon_pvalue"] == 1.0


def test_compare_aligns_users():
  class R:  # minimal EvalResult stand-in
    def __init__(self, users, vals):
      self.users, self.per_user = np.asarray(users), {"ndcg@10": np.asarray(vals, float)}

  a = R([1, 2, 3, 5], [0.1, 0.2, 0.3, 0.5])
  b = R([2, 3, 4, 5], [0.0, 0.3, 0.9, 0.1])
  out = stats.compare(a, b, ["ndcg@10"])["ndcg@10"]
  assert out["n"] == 3
  assert out["mean_diff"] == pytest.approx(np.mean([0.2, 0.0, 0.4]))


def test_holm():
  np.testing.assert_allclose(stats.holm([0.01, 0.04, 0.03]), [0.03, 0.06, 0.06])
  np.testing.assert_allclose(stats.holm([0.5, 0.9]), [1.0, 1.0])
