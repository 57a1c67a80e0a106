"""Two stages in one run: retrieval top-K re-ordered by a ranker, on the full-ranking protocol.

On a small fake MovieLens-1M: both stages train on the same prepared split; the
retrieval-alone metrics recomputed from its candidate lists equal the evaluator's (the
module checks it, and they equal the retrieval run's own results.json); re-ranking only
permutes the candidates, so the two-stage recall at K = candidates equals the candidates'
recall; the ranker's own run reports AUC / GAUC / LogLoss, and its labelled splits export
to Parquet and TSV and import back through the presplit source; and re-ranking by a ranker that scores the relevant items highest gives perfect
lists where the candidates hold them.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_pointwise_step import _write_ml1m
from test_train import load_config, run_main

from mmrec_jax import two_stage
from mmrec_jax.data import labelled, prepare
from mmrec_jax.errors import ConfigError
from mmrec_jax.evaluation import metrics_from_hits


def test_two_stage_run_on_the_full_ranking_protocol(tmp_path):
  _write_ml1m(tmp_path / "raw")
  ranker = load_config(
    "ml100k_ranking",
    "smoke,1m,dcn_v2",
    **{
      "data.path": str(tmp_path / "raw"),
      "data.cache_dir": str(tmp_path / "cache"),
      "input.batch_size": 64,
    },
  )
  out = two_stage.run(
    ranker,
    tmp_path / "run",
    candidates=20,
    retrieval_overrides={"train.max_steps": 4, "input.batch_size": 64, "model.embed_dim": 8},
  )
  saved = json.loads((tmp_path / "run" / "two_stage.json").read_text())
  assert saved["retrieval_model"] == "bpr_mf" and saved["ranker_model"] == "dcn_v2"
  # The ranker's own run: labelled-row metrics in results.json and the learning curve.
  res = json.loads((tmp_path / "run" / "ranker" / "results.json").read_text())
  assert res["model"] == "dcn_v2" and set(res["test"]) >= {"auc", "gauc", "logloss"}
  assert 0.0 <= res["test"]["auc"] <= 1.0 and res["test"]["logloss"] > 0 and res["test"]["rows"] > 0
  assert (tmp_path / "run" / "ranker" / "learning_curve.png").is_file()
  assert saved["users"] > 0
  for name, v in out["retrieval"].items():
    assert v == pytest.approx(out["retrieval_run_test"][name], abs=1e-6)

  # Same candidate set, different order: at K = candidates recall cannot change.
  assert out["two_stage"]["recall@10"] <= out["candidate_recall"] + 1e-9
  assert (
    set(out["two_stage"]) == set(out["retrieval"]) == {"recall@5", "recall@10", "ndcg@5", "ndcg@10"}
  )

  # Parquet and TSV exports of the labelled splits read back identically.
  ds = prepare.prepare(ranker.data)
  pq, tsv = (
    labelled.export_splits(ds, tmp_path / f"out{s}", 3.0, s)[2] for s in (".parquet", ".tsv")
  )
  a, b = labelled.read_rows(pq), labelled.read_rows(tsv)
  for k in a:
    np.testing.assert_array_equal(a[k], b[k])
  test = ds.split("test")
  np.testing.assert_array_equal(a["label"], (np.asarray(test.ratings) > 3).astype(np.int8))
  assert a["user_id"][0] == ds.user_raw_ids()[test.users[0]]
  # Parquet as input: the exported splits read back through the presplit source.
  exported = tmp_path / "out.parquet"
  data = ranker.data.to_dict()
  data.update(
    source="presplit",
    train=str(exported / "train.parquet"),
    valid=str(exported / "valid.parquet"),
    test=str(exported / "test.parquet"),
    path="",
    split="temporal_ratio",
    valid_of_train=0.0,
    side_features=(),
  )
  again = prepare.prepare(data)
  for name in ("train", "valid", "test"):
    sp, sp2 = ds.split(name), again.split(name)
    rows = lambda d, x: sorted(
      zip(d.user_raw_ids()[x.users], d.item_raw_ids()[x.items], np.asarray(x.ratings))
    )
    assert rows(ds, sp) == rows(again, sp2), name


def test_two_stages_in_the_main_command(tmp_path):
  """``python -m mmrec_jax.main --config=...:two_stage`` as a user types it."""
  _write_ml1m(tmp_path / "raw")
  args = (
    f"--config.data.path={tmp_path / 'raw'}",
    f"--config.data.cache_dir={tmp_path / 'cache'}",
  )
  r = run_main(tmp_path / "run", "experiments/ml100k_ranking.py:smoke,1m,two_stage", *args)
  assert r.returncode == 0, r.stderr[-3000:]
  saved = json.loads((tmp_path / "run" / "two_stage.json").read_text())
  assert saved["retrieval_model"] == "bpr_mf" and saved["ranker_model"] == "mlp_ranker"
  assert saved["candidates"] == 20
  assert "re-ranked by mlp_ranker" in r.stdout and "two_stage.json" in r.stdout
  for name, v in saved["retrieval"].items():
    assert v == pytest.approx(saved["retrieval_run_test"][name], abs=1e-6)
  assert (tmp_path / "run" / "retrieval" / "results.json").is_file()
  # A finished run: the same command redoes nothing but the report.
  again = run_main(tmp_path / "run", "experiments/ml100k_ranking.py:smoke,1m,two_stage", *args)
  assert again.returncode == 0 and json.loads((tmp_path / "run" / "two_stage.json").read_text())[
    "retrieval"
  ] == pytest.approx(saved["retrieval"])
  # A dot-product model cannot be the second stage.
  bad = run_main(
    tmp_path / "bad",
    "experiments/ml100k_ranking.py:smoke,1m",
    *args,
    "--config.two_stage.candidates=20",
    "--config.model.name=bpr_mf",
  )
  assert bad.returncode != 0 and "not a pointwise ranker" in bad.stderr


def test_relevance_threshold_matches_the_label_rule_and_bad_models_fail():
  t = two_stage.relevance_threshold(3.0)
  ratings = np.array([3.0, 3.5, 4.0], np.float32)
  assert list(ratings >= t) == list(ratings > 3.0)
  with pytest.raises(ConfigError, match="explicit labels"):
    two_stage.relevance_threshold(-1.0)
  ranker = load_config("ml100k_ranking", "smoke")
  with pytest.raises(ConfigError, match="pointwise ranker"):
    two_stage.retrieval_config(ranker, {"model.name": "dlrm"})


def test_perfect_reranker_sorts_relevant_candidates_first():
  lists = np.array([[5, 1, 7, 2], [3, 9, 4, 8]])
  truth = (np.array([0, 2, 3]), np.array([1, 2, 8]))  # user 0: {1, 2}; user 1: {8}
  users = np.array([0, 1])
  hits, n = two_stage._hits(lists, users, truth)
  logits = hits.astype(np.float32)  # the oracle ranker
  order = np.argsort(-logits, axis=1, kind="stable")
  r_hits, _ = two_stage._hits(np.take_along_axis(lists, order, 1), users, truth)
  m = two_stage._mean(metrics_from_hits(r_hits, n, (2,), ("recall", "ndcg")), n)
  assert m == {"recall@2": 1.0, "ndcg@2": 1.0}
  assert np.take_along_axis(lists, order, 1)[0].tolist() == [1, 2, 5, 7]  # ties keep order
