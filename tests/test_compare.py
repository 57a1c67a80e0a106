"""The comparison runner end to end: runs, table, paired tests, plots, reuse of finished runs."""

import csv
import json

import numpy as np
import pytest

from mmrec_jax import compare
from tests.test_train import load_config


def test_parse_run_specs():
  assert compare.parse_run("two_tower:text+image", ("text",)) == (
    "two_tower-text+image",
    "two_tower",
    ("text", "image"),
  )
  assert compare.parse_run("two_tower:", ("text",)) == ("two_tower-ids", "two_tower", ())
  assert compare.parse_run("vbpr", ("text",)) == ("vbpr-text", "vbpr", ("text",))
  assert compare.parse_run("bpr_mf:text", ("text",)) == ("bpr_mf-ids", "bpr_mf", ())
  with pytest.raises(ValueError, match="empty model"):
    compare.parse_run(":text", ())


def test_comparison_table_plots_and_reuse(tmp_path):
  config = load_config(
    "synthetic",
    "smoke",
    **{"data.cache_dir": str(tmp_path / "cache"), "data.modalities": ("text",)},
  )
  work = tmp_path / "cmp"
  specs = ["bpr_mf", "two_tower:", "two_tower:text"]
  md = compare.run_comparison(config, specs, work, baseline="bpr_mf")
  text = md.read_text()
  assert "baseline bpr_mf-ids" in text
  with open(work / "comparison.csv") as f:
    rows = list(csv.reader(f))
  header, body = rows[0], rows[1:]
  assert [r[0] for r in body] == ["bpr_mf-ids", "two_tower-ids", "two_tower-text"]
  col = {h: j for j, h in enumerate(header)}
  # Table means are the runs' own test metrics.
  for r in body:
    res = json.loads((work / r[0] / "results.json").read_text())
    assert float(r[col["ndcg@10"]]) == pytest.approx(res["test"]["ndcg@10"])
    assert float(r[col["epoch_s"]]) > 0
  assert body[0][col["p_ttest(ndcg@10)"]] == "-"
  for r in body[1:]:
    for test in ("p_ttest(ndcg@10)", "p_wilcoxon(ndcg@10)"):
      p = float(r[col[test]])
      assert np.isnan(p) or 0.0 <= p <= 1.0
  for png in ("metrics.png", "curves.png"):
    assert (work / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  # A second call reuses the finished runs (no retraining) and gives the same table.
  stamps = {
    s: (work / s / "results.json").stat().st_mtime_ns
    for s in ("bpr_mf-ids", "two_tower-ids", "two_tower-text")
  }
  compare.run_comparison(config, specs, work, baseline="bpr_mf")
  assert md.read_text() == text
  assert stamps == {s: (work / s / "results.json").stat().st_mtime_ns for s in stamps}
  with pytest.raises(ValueError, match="baseline"):
    compare.run_comparison(config, specs, work, baseline="lightgcn")
