"""New metrics against references: scikit-learn AUC, numpy loops, and Cornac itself.

Every metric is checked with ties in the scores and with users holding one relevant item;
the whole evaluation path (relevance threshold, exclusions, AUC/MAP/MAE/RMSE and the
top-K metrics) is checked against Cornac 3.0.1's evaluator on a small random dataset.
"""

import math

import jax
import ml_collections
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from mmrec_jax import sharding
from mmrec_jax.evaluation import beyond, full, rating, sampled
from mmrec_jax.evaluation.metrics import metrics_from_hits
from mmrec_jax.evaluation.ranking import csr_from_pairs, evaluate_split


def _toy(seed=0, users=9, items=15, dim=3, p_truth=0.2, p_excl=0.2):
  """Integer embeddings (many exact ties) and random truth/exclusion pairs."""
  rng = np.random.default_rng(seed)
  um = rng.integers(-2, 3, (users, dim)).astype(np.float32)
  im = rng.integers(-2, 3, (items, dim)).astype(np.float32)
  truth, excl = [], []
  for u in range(users):
    t = [i for i in range(items) if rng.random() < p_truth]
    if u == 0:
      t = [3]  # a user with exactly one relevant item
    if u == 1:
      t = []  # a user with none: left out
    e = [i for i in range(items) if i not in t and rng.random() < p_excl]
    truth.append(t)
    excl.append(e)
  return um, im, truth, excl


def _csr(lists):
  u = np.array([a for a, l in enumerate(lists) for _ in l], np.int64)
  i = np.array([b for l in lists for b in l], np.int64)
  return csr_from_pairs(u, i, len(lists))


@pytest.mark.parametrize("seed", [0, 1])
def test_auc_gauc_map_match_sklearn_and_loops(seed):
  um, im, truth, excl = _toy(seed)
  users = np.array([u for u in range(len(truth)) if truth[u]])
  means, per_user = full.full_metrics(
    um,
    im,
    users=users,
    truth=_csr(truth),
    exclude=_csr(excl),
    metrics=full.FULL_METRICS,
    user_chunk=4,
  )
  s = um @ im.T
  aucs, weights, aps = [], [], []
  for j, u in enumerate(users):
    cand = [i for i in range(im.shape[0]) if i not in excl[u]]
    y = np.array([i in truth[u] for i in cand])
    ref = full.reference_full(s[u], truth[u], excl[u])
    assert per_user["map"][j] == pytest.approx(ref["map"], abs=1e-6)
    aps.append(ref["map"])
    if 0 < y.sum() < y.size:
      sk = roc_auc_score(y, s[u, cand])
      assert per_user["auc"][j] == pytest.approx(sk, abs=1e-6)
      assert ref["auc"] == pytest.approx(sk, abs=1e-12)
      aucs.append(sk)
      weights.append(y.sum())
  assert means["auc"] == pytest.approx(np.mean(aucs), abs=1e-6)
  assert means["gauc"] == pytest.approx(np.average(aucs, weights=weights), abs=1e-6)
  assert means["map"] == pytest.approx(np.mean(aps), abs=1e-6)
  assert per_user["map"][0] == pytest.approx(aps[0])  # user 0: one relevant item


def test_map_and_auc_equal_cornac_on_continuous_scores():
  pytest.importorskip("cornac")
  from cornac.metrics import AUC, MAP

  rng = np.random.default_rng(4)
  um, im = rng.normal(size=(6, 4)), rng.normal(size=(30, 4))
  truth = [list(rng.choice(30, k, replace=False)) for k in (1, 2, 3, 5, 8, 1)]
  excl = [[i for i in range(30) if i not in t and rng.random() < 0.2] for t in truth]
  _, per_user = full.full_metrics(
    um.astype(np.float32),
    im.astype(np.float32),
    users=np.arange(6),
    truth=_csr(truth),
    exclude=_csr(excl),
    metrics=("auc", "map"),
  )
  s = (um.astype(np.float32) @ im.astype(np.float32).T).astype(np.float64)
  for u in range(6):
    cand = np.array([i for i in range(30) if i not in excl[u]])
    pos = np.array(sorted(truth[u]))
    neg = np.array([i for i in cand if i not in truth[u]])
    auc = AUC().compute(item_indices=cand, pd_scores=s[u, cand], gt_pos=pos, gt_neg=neg)
    ap = MAP().compute(item_indices=cand, pd_scores=s[u, cand], gt_pos=pos)
    assert per_user["auc"][u] == pytest.approx(auc, abs=1e-6)
    assert per_user["map"][u] == pytest.approx(ap, abs=1e-6)


def test_rating_metrics_against_loops_and_clipping():
  rng = np.random.default_rng(2)
  users = np.array([0, 0, 0, 1, 2, 2])  # user 1 has a single rating
  pred = np.array([3.2, 6.0, 0.5, 4.0, 2.5, 2.5], np.float32)
  truth = rng.integers(1, 6, 6).astype(np.float32)
  clipped = np.clip(pred, 1, 5)
  per_u = {u: clipped[users == u] - truth[users == u] for u in range(3)}
  out = rating.rating_metrics(
    pred, truth, users, metrics=("mae", "rmse"), rating_range=(1.0, 5.0), user_based=True
  )
  assert out["mae"] == pytest.approx(np.mean([np.abs(e).mean() for e in per_u.values()]))
  assert out["rmse"] == pytest.approx(np.mean([math.sqrt((e**2).mean()) for e in per_u.values()]))
  out = rating.rating_metrics(
    pred, truth, users, metrics=("mae", "rmse"), rating_range=(1.0, 5.0), user_based=False
  )
  assert out["mae"] == pytest.approx(np.abs(clipped - truth).mean())
  assert out["rmse"] == pytest.approx(math.sqrt(((clipped - truth) ** 2).mean()))
  um = rng.normal(size=(3, 2)).astype(np.float32)
  im = rng.normal(size=(4, 2)).astype(np.float32)
  np.testing.assert_allclose(
    rating.predict(um, im, users, np.array([0, 1, 2, 3, 0, 1])),
    np.sum(um[users] * im[[0, 1, 2, 3, 0, 1]], 1),
    rtol=1e-6,
  )


def test_beyond_metrics_against_loops():
  rng = np.random.default_rng(5)
  n_items, k = 12, 4
  top = np.stack([rng.permutation(n_items)[:k] for _ in range(7)])
  scores = np.sort(rng.normal(size=(7, k)), axis=1)[:, ::-1].copy()
  scores[2, 3] = -np.inf  # a short list
  tr_u = rng.integers(0, 5, 40)
  tr_i = rng.integers(0, n_items, 40)
  feats = rng.integers(-1, 2, (n_items, 3)).astype(np.float32)
  feats[0] = 0  # an all-zero feature row
  means, per_user = beyond.beyond_metrics(
    top,
    scores,
    ks=(k,),
    metrics=beyond.BEYOND_METRICS,
    num_items=n_items,
    train_users=tr_u,
    train_items=tr_i,
    features=feats,
  )
  lists = [[int(i) for i, s in zip(t, sc) if np.isfinite(s)] for t, sc in zip(top, scores)]
  assert means[f"coverage@{k}"] == pytest.approx(len({i for l in lists for i in l}) / n_items)
  exp = np.bincount([i for l in lists for i in l], minlength=n_items)
  e = np.sort(exp)
  n = n_items
  gini = sum((2 * (j + 1) - n - 1) * e[j] for j in range(n)) / (n * e.sum())
  assert means[f"gini@{k}"] == pytest.approx(gini)
  c = np.bincount(tr_i, minlength=n_items)
  d = np.array([len(set(tr_u[tr_i == i])) for i in range(n_items)])
  nu = len(set(tr_u))
  nov = [np.mean([-math.log2(max(d[i], 1) / nu) for i in l]) for l in lists]
  arp = [np.mean([c[i] for i in l]) for l in lists]
  assert means[f"novelty@{k}"] == pytest.approx(np.mean(nov))
  assert means[f"arp@{k}"] == pytest.approx(np.mean(arp))

  def cos(a, b):
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    return 0.0 if na == 0 or nb == 0 else float(a @ b / (na * nb))

  ild = [
    np.mean([1 - cos(feats[a], feats[b]) for x, a in enumerate(l) for b in l[x + 1 :]])
    for l in lists
  ]
  np.testing.assert_allclose(per_user[f"ild@{k}"], ild, rtol=1e-5)
  assert means[f"ild@{k}"] == pytest.approx(np.mean(ild), rel=1e-5)
  assert beyond.gini(np.ones(5)) == pytest.approx(0.0)
  assert beyond.gini(np.array([0, 0, 0, 9])) == pytest.approx(0.75)


@pytest.mark.parametrize("mode", ["uni5", "pop5"])
def test_sampled_metrics_against_loops(mode):
  um, im, truth, excl = _toy(3, users=8, items=40)
  history = [sorted(set(t) | set(e)) for t, e in zip(truth, excl)]
  users = np.array([u for u in range(8) if truth[u]])
  counts = np.arange(40) % 7
  means, per_user = sampled.sampled_metrics(
    um,
    im,
    users=users,
    truth=_csr(truth),
    history=_csr(history),
    mode=mode,
    ks=(3, 10),
    metrics=("recall", "ndcg", "hit"),
    item_counts=counts,
    seed=9,
  )
  # the same draws, replayed: negatives avoid the history; pessimistic ties
  rng = np.random.default_rng([9, sampled._SEED_TAG])
  probs = counts / counts.sum() if mode.startswith("pop") else None
  for j, u in enumerate(users):
    negs = sampled.sample_negatives(int(u), 5 * len(truth[u]), np.array(history[u]), probs, rng, 40)
    assert not set(negs.tolist()) & set(history[u])
    avail = [i for i in range(40) if i not in history[u] and (probs is None or counts[i] > 0)]
    assert negs.size == min(5 * len(truth[u]), len(avail))
    assert np.unique(negs).size == negs.size  # distinct
    if probs is not None:
      assert (counts[negs] > 0).all()
    s_pos = [float(um[u] @ im[i]) for i in sorted(truth[u])]
    s_neg = [float(um[u] @ im[i]) for i in negs]
    # rank of each positive = 1 + #candidates strictly above + #negatives tied
    for k in (3, 10):
      hits = 0
      dcg = 0.0
      ranked = sorted([(-s, 0, "p") for s in s_pos] + [(-s, -1, "n") for s in s_neg])
      for r, (_, _, kind) in enumerate(ranked[:k]):
        if kind == "p":
          hits += 1
          dcg += 1 / math.log2(r + 2)
      idcg = sum(1 / math.log2(r + 2) for r in range(min(len(s_pos), k)))
      assert per_user[f"recall@{k}/{mode}"][j] == pytest.approx(hits / len(s_pos))
      assert per_user[f"ndcg@{k}/{mode}"][j] == pytest.approx(dcg / idcg, abs=1e-6)
      assert per_user[f"hit@{k}/{mode}"][j] == float(hits > 0)
  assert means[f"recall@3/{mode}"] == pytest.approx(per_user[f"recall@3/{mode}"].mean())
  # the candidates are a subset of the full ranking's: never below the full-ranking value
  from mmrec_jax.evaluation.metrics import reference_evaluate

  ref = reference_evaluate(um, im, users, truth, excl, (3, 10), ("recall",))
  assert ref["recall@10"].max() > 0
  assert (per_user[f"recall@10/{mode}"] >= ref["recall@10"] - 1e-6).all()


def _cornac_scorer(um, im, user_ids, item_ids):
  import cornac

  u_ours = {str(r): k for k, r in enumerate(user_ids)}
  i_ours = {str(r): k for k, r in enumerate(item_ids)}

  class Fixed(cornac.models.Recommender):
    def __init__(self):
      super().__init__(name="fixed")

    def fit(self, train_set, val_set=None):
      super().fit(train_set, val_set)

      def rows(mapping, ours, m):
        out = np.zeros((max(mapping.values()) + 1, m.shape[1]))
        for raw, idx in mapping.items():
          if str(raw) in ours:
            out[idx] = m[ours[str(raw)]]
        return out

      self.s = rows(train_set.uid_map, u_ours, um) @ rows(train_set.iid_map, i_ours, im).T
      return self

    def score(self, user_idx, item_idx=None):
      return self.s[user_idx] if item_idx is None else self.s[user_idx, item_idx]

  return Fixed()


def test_evaluate_split_equals_cornac_evaluator(tmp_path):
  """Cornac's split written as files, our evaluator vs Cornac's on the same scores.

  With a validation set, so the rule "valid positives are masked at test" is covered too.
  """
  pytest.importorskip("cornac")
  from cornac.eval_methods import RatioSplit
  from cornac.metrics import AUC, MAE, MAP, NDCG, RMSE, Precision, Recall

  from mmrec_jax.data import prepare as prep

  rng = np.random.default_rng(0)
  pairs = rng.choice(40 * 50, 700, replace=False)
  triples = [(f"u{p // 50}", f"i{p % 50}", float(rng.integers(1, 6))) for p in pairs]
  rs = RatioSplit(
    triples, test_size=0.2, val_size=0.1, rating_threshold=4.0, exclude_unknowns=True, seed=1
  )
  files = {}
  for name, d in (("train", rs.train_set), ("test", rs.test_set), ("valid", rs.val_set)):
    f = tmp_path / f"{name}.tsv"
    lines = ["user_id\titem_id\trating"]
    if d is not None:
      uid = {v: k for k, v in d.uid_map.items()}
      iid = {v: k for k, v in d.iid_map.items()}
      lines += [f"{uid[a]}\t{iid[b]}\t{c:g}" for a, b, c in zip(*d.uir_tuple)]
    f.write_text("\n".join(lines) + "\n")
    files[name] = str(f)
  ds = prep.prepare({"source": "presplit", "cache_dir": str(tmp_path / "c"), **files})
  um = rng.normal(size=(ds.num_users, 5)).astype(np.float32) + 0.6
  im = rng.normal(size=(ds.num_items, 5)).astype(np.float32) + 0.6
  cfg = ml_collections.ConfigDict(
    {
      "ks": (5,),
      "metrics": ("ndcg", "precision", "recall"),
      "user_chunk": 16,
      "item_chunk": 0,
      "mask_valid_in_test": True,
      "slices": False,
      "export_topk": 0,
      "relevance_threshold": 4.0,
      "full_metrics": ("auc", "map"),
      "rating_metrics": ("mae", "rmse"),
      "rating_user_based": True,
      "sampled": "",
      "beyond": (),
      "ild_modality": "",
    }
  )
  mesh = sharding.make_mesh(-1, 1)
  ours = evaluate_split(jax.numpy.asarray(um), jax.numpy.asarray(im), ds, "test", cfg, mesh).metrics
  model = _cornac_scorer(um, im, ds.user_raw_ids(), ds.item_raw_ids())
  test_res, _ = rs.evaluate(
    model, [MAE(), RMSE(), AUC(), MAP(), NDCG(k=5), Precision(k=5), Recall(k=5)], user_based=True
  )
  theirs = test_res.metric_avg_results
  for c_name, o_name in (
    ("MAE", "mae"),
    ("RMSE", "rmse"),
    ("AUC", "auc"),
    ("MAP", "map"),
    ("NDCG@5", "ndcg@5"),
    ("Precision@5", "precision@5"),
    ("Recall@5", "recall@5"),
  ):
    assert ours[o_name] == pytest.approx(theirs[c_name], abs=2e-5), c_name


def test_metrics_from_hits_single_relevant_item():
  hits = np.array([[False, True, False]])
  out = metrics_from_hits(hits, np.array([1]), (2,), ("recall", "ndcg", "map"))
  assert out["recall@2"][0] == 1.0
  assert out["ndcg@2"][0] == pytest.approx(1 / math.log2(3))
