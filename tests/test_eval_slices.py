"""Slices against the direct reference, the dataset-level wrapper, and the top-K export."""

import collections
import os

import jax.numpy as jnp
import numpy as np
import pytest

from mmrec_jax.config import base_config
from mmrec_jax.errors import ConfigError, DataError
from mmrec_jax.evaluation import export, slices
from mmrec_jax.evaluation import metrics as M
from mmrec_jax.evaluation.ranking import (
  csr_from_pairs,
  csr_union,
  evaluate_embeddings,
  evaluate_split,
)
from mmrec_jax.sharding import make_mesh

KS = (2, 5)
MET = ("recall", "ndcg", "precision", "mrr")
U, I, D = 30, 41, 4


def lists(csr):
  return [csr[1][csr[0][u] : csr[0][u + 1]] for u in range(csr[0].size - 1)]


@pytest.fixture(scope="module")
def setup():
  rng = np.random.default_rng(5)
  um = rng.integers(-2, 3, (U, D)).astype(np.float32)
  im = rng.integers(-2, 3, (I, D)).astype(np.float32)
  n = 200
  train = csr_from_pairs(rng.integers(0, U, n), rng.integers(0, 34, n), U)  # items 34..40 cold
  truth = csr_from_pairs(rng.integers(0, U, 80), rng.integers(0, I, 80), U)
  res = evaluate_embeddings(
    jnp.asarray(um),
    jnp.asarray(im),
    users=np.arange(U),
    truth=truth,
    exclude=train,
    ks=KS,
    metrics=MET,
    mesh=make_mesh(4, 2),
    user_chunk=8,
    return_topk=max(KS),
  )
  return um, im, train, truth, res


def reference_mean(um, im, train, truth_lists, users):
  ref = M.reference_evaluate(um, im, users, truth_lists, lists(train), KS, MET)
  return ref["users"].size, {n: ref[n].mean() for n in M.metric_names(MET, KS)}


def test_whole_slice_equals_overall(setup):
  *_, truth, res = setup
  out = slices.slice_metrics(res, truth, ks=KS, metrics=MET)
  for name, v in res.metrics.items():
    assert out[name] == pytest.approx(v, abs=1e-6)
  assert out["num_users"] == res.users.size


def test_item_and_user_slices_match_reference(setup):
  um, im, train, truth, res = setup
  got = slices.evaluate_slices(res, truth, train, ks=KS, metrics=MET)
  assert set(got) == {
    "cold_items",
    "items_head",
    "items_mid",
    "items_tail",
    "users_low",
    "users_mid",
    "users_high",
  }
  _, item_counts = slices.train_counts(train, I)
  buckets = slices.item_buckets(item_counts)
  assert buckets["cold"].sum() == (item_counts == 0).sum() >= 7
  for key, name in [("cold", "cold_items"), ("head", "items_head"), ("tail", "items_tail")]:
    restricted = [t[buckets[key][t]] for t in lists(truth)]
    n, want = reference_mean(um, im, train, restricted, np.arange(U))
    assert got[name]["num_users"] == n > 0
    for m, v in want.items():
      assert got[name][m] == pytest.approx(v, abs=1e-6), (name, m)
  # user buckets: equal thirds of the evaluated users by train activity
  act = np.diff(train[0])[res.users]
  order = np.lexsort((res.users, act))
  high = np.sort(res.users[np.array_split(order, 3)[2]])
  n, want = reference_mean(um, im, train, lists(truth), high)
  assert got["users_high"]["num_users"] == n
  for m, v in want.items():
    assert got["users_high"][m] == pytest.approx(v, abs=1e-6)
  assert "| cold_items |" in slices.slices_table(got, ["recall@5"])


def test_item_buckets_partition_seen_items():
  counts = np.array([5, 0, 9, 1, 1, 3, 0, 7, 2, 4])
  b = slices.item_buckets(counts)
  stacked = np.stack([b["cold"], b["head"], b["mid"], b["tail"]]).astype(int)
  assert (stacked.sum(0) == 1).all()
  assert np.nonzero(b["head"])[0].tolist() == [0, 2, 7]  # counts 9, 7, 5
  assert counts[b["head"]].min() >= counts[b["mid"]].max() >= counts[b["tail"]].max()


Split = collections.namedtuple("Split", "users items timestamps ratings")


class FakeDataset:
  """Duck-typed PreparedDataset (the reader lives in mmrec_jax.data.dataset)."""

  def __init__(self, splits, num_users, num_items):
    self.splits, self.num_users, self.num_items = splits, num_users, num_items

  def split(self, name):
    u, i = self.splits[name]
    return Split(u, i, np.zeros(u.size, np.int64), np.ones(u.size, np.float32))


def test_evaluate_split_masks_valid_in_test_when_configured(setup):
  um, im, *_ = setup
  rng = np.random.default_rng(9)
  parts = {
    s: (rng.integers(0, U, n).astype(np.int32), rng.integers(0, I, n).astype(np.int32))
    for s, n in (("train", 150), ("valid", 40), ("test", 40))
  }
  ds = FakeDataset(parts, U, I)
  cfg = base_config().eval
  cfg.ks, cfg.metrics, cfg.user_chunk = KS, MET, 8
  mesh = make_mesh(2, 4)
  csr = {s: csr_from_pairs(*parts[s], U) for s in parts}
  for mask_valid, exclude in ((True, csr_union(csr["train"], csr["valid"])), (False, csr["train"])):
    cfg.mask_valid_in_test = mask_valid
    got = evaluate_split(um, im, ds, "test", cfg, mesh)
    want = evaluate_embeddings(
      um, im, users=np.arange(U), truth=csr["test"], exclude=exclude, ks=KS, metrics=MET, mesh=mesh
    )
    # eval.beyond defaults to ("coverage",): coverage@K is reported with the metrics
    assert got.metrics == pytest.approx({**want.metrics, **want.coverage})
    assert got.slices is not None and "cold_items" in got.slices
    assert got.topk_items is None  # export_topk = 0
  cfg.export_topk, cfg.slices = 3, False
  got = evaluate_split(um, im, ds, "valid", cfg, mesh)
  assert got.topk_items.shape == (got.users.size, 3) and got.slices is None
  with pytest.raises(ConfigError, match="split"):
    evaluate_split(um, im, ds, "train", cfg, mesh)


def test_write_topk_roundtrip_skips_unrankable(tmp_path):
  items = np.array([[2, 0, 1], [1, 2, 0]])
  scores = np.array([[3.5, 1.25, -np.inf], [0.1, -2.0, -7.0]], np.float32)
  path = export.write_topk(
    tmp_path / "out" / "topk.tsv", np.array(["u9", "u7"]), np.array(["a", "b", "c"]), items, scores
  )
  rows = export.read_topk(path)
  assert rows[:2] == [("u9", "c", 1, 3.5), ("u9", "a", 2, 1.25)]
  assert [r[:3] for r in rows[2:]] == [("u7", "b", 1), ("u7", "c", 2), ("u7", "a", 3)]
  assert rows[2][3] == pytest.approx(0.1)
  assert os.listdir(path.parent) == ["topk.tsv"]  # no temp file left behind
  with pytest.raises(DataError, match="raw item ids"):
    export.write_topk(
      tmp_path / "bad.tsv", np.array(["u"]), np.array(["a"]), np.array([[3]]), np.array([[1.0]])
    )


def test_evaluate_split_on_a_prepared_dataset(tmp_path):
  from mmrec_jax.data import prepare as prep

  ds = prep.prepare(
    {
      "source": "synthetic",
      "num_users": 40,
      "num_items": 30,
      "num_interactions": 600,
      "latent_dim": 2,
      "text_dim": 3,
      "image_dim": 2,
      "cache_dir": str(tmp_path),
    }
  )
  rng = np.random.default_rng(0)
  um = rng.standard_normal((ds.num_users, 4)).astype(np.float32)
  im = rng.standard_normal((ds.num_items, 4)).astype(np.float32)
  cfg = base_config().eval
  cfg.ks, cfg.metrics, cfg.export_topk = (5,), ("recall", "ndcg"), 5
  got = evaluate_split(um, im, ds, "test", cfg, make_mesh(4, 2))
  sp = {s: ds.split(s) for s in ("train", "valid", "test")}
  excl = [set() for _ in range(ds.num_users)]
  for s in ("train", "valid"):
    for u, i in zip(sp[s].users, sp[s].items):
      excl[u].add(int(i))
  truth = [[] for _ in range(ds.num_users)]
  for u, i in zip(sp["test"].users, sp["test"].items):
    truth[u].append(int(i))
  ref = M.reference_evaluate(
    um,
    im,
    np.arange(ds.num_users),
    [np.unique(t) for t in truth],
    [np.array(sorted(e), int) for e in excl],
    (5,),
    ("recall", "ndcg"),
  )
  assert np.array_equal(got.users, ref["users"]) and got.users.size > 0
  np.testing.assert_allclose(got.per_user["ndcg@5"], ref["ndcg@5"], rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(got.topk_items, ref["topk"])
  out = export.write_topk(
    tmp_path / "top.tsv",
    ds.user_raw_ids()[got.users],
    ds.item_raw_ids(),
    got.topk_items,
    got.topk_scores,
  )
  rows = export.read_topk(out)
  assert len(rows) == got.users.size * 5
  assert rows[0][0] == str(ds.user_raw_ids()[got.users[0]])
