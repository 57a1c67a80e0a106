r"""Cornac's RecSys'21 tutorial table (notebook 01) reproduced next to Cornac, same split.

What it shows: a researcher rerunning Cornac's protocol here gets Cornac's numbers for the
same model. In ONE process it

  1. loads MovieLens-100K through ``mmrec_jax.data.sources`` (the rows preparation sees,
     in file order) and gives the same (user, item, rating) triples to Cornac 3.0.1's
     ``RatioSplit(test_size=0.2, rating_threshold=4.0, exclude_unknowns=True, seed=123)``;
  2. prepares the dataset of ``experiments/ml100k_cornac.py`` (``data.split=global_random``,
     ``exclude_unknowns``, seed 123) and checks that its train and test sets EQUAL Cornac's
     (set equality of (raw user, raw item, rating) rows) -- the split is built in mmrec_jax,
     not imported;
  3. trains Cornac's MF / PMF / BPR with the tutorial's settings (k=10) and ours (mf, pmf,
     bpr_mf, k=10, through ``train_and_evaluate``), and prints, for every metric of the
     tutorial's table (MAE, RMSE, AUC, MAP, NDCG@10, Precision@10, Recall@10), Cornac's
     value, ours, and ours relative to Cornac;
  4. scores OUR trained factors with Cornac's own evaluator (``RatioSplit.evaluate`` over a
     Recommender that returns our dot products) and reports the largest difference from
     our evaluator's numbers: both evaluators agree on the same scores.

    .venv/bin/pip install -e '.[bench]'
    .venv/bin/python benchmarks/bench_cornac_tutorial.py [--models mf,pmf,bpr] [--out FILE]

MAE/RMSE of BPR are printed as both libraries compute them, but a ranking model's scores
are not ratings, so those two cells compare nothing.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import pathlib
import tempfile
import time
from typing import Any

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
SEED = 123
METRICS = ("MAE", "RMSE", "AUC", "MAP", "NDCG@10", "Precision@10", "Recall@10")
OURS_NAME = {
  "MAE": "mae",
  "RMSE": "rmse",
  "AUC": "auc",
  "MAP": "map",
  "NDCG@10": "ndcg@10",
  "Precision@10": "precision@10",
  "Recall@10": "recall@10",
}
LOWER_IS_BETTER = ("MAE", "RMSE")
# The tutorial's models (cornac/tutorials, notebook 01) and our registry names.
CORNAC_MODELS = {
  "mf": (
    "MF",
    dict(k=10, max_iter=25, learning_rate=0.01, lambda_reg=0.02, use_bias=True, seed=SEED),
  ),
  "pmf": ("PMF", dict(k=10, max_iter=100, learning_rate=0.001, lambda_reg=0.001, seed=SEED)),
  "bpr": ("BPR", dict(k=10, max_iter=200, learning_rate=0.001, lambda_reg=0.01, seed=SEED)),
}
OUR_MODEL = {"mf": "mf", "pmf": "pmf", "bpr": "bpr_mf"}


def load_experiment(arg: str):
  path = ROOT / "experiments" / "ml100k_cornac.py"
  spec = importlib.util.spec_from_file_location("ml100k_cornac", path)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod.get_config(arg)


def raw_triples(config) -> list[tuple[str, str, float]]:
  """ML-100K (user, item, rating) rows in file order, as preparation reads them."""
  from mmrec_jax.data import sources
  from mmrec_jax.data.cache import cache_dir_of

  cache = cache_dir_of(config.data)
  locate, load = sources.SOURCES[config.data.source]
  raw = load(config.data, locate(config.data, cache), config.seed, cache)
  return [
    (str(u), str(i), float(r))
    for u, i, r in zip(raw.users.tolist(), raw.items.tolist(), raw.ratings.tolist())
  ]


def split_rows(ds, name: str) -> set[tuple[str, str, float]]:
  sp = ds.split(name)
  u, i = ds.user_raw_ids(), ds.item_raw_ids()
  return {
    (str(u[a]), str(i[b]), float(r))
    for a, b, r in zip(np.asarray(sp.users), np.asarray(sp.items), np.asarray(sp.ratings))
  }


def cornac_rows(dataset) -> set[tuple[str, str, float]]:
  uid = {v: k for k, v in dataset.uid_map.items()}
  iid = {v: k for k, v in dataset.iid_map.items()}
  u, i, r = dataset.uir_tuple
  return {(str(uid[a]), str(iid[b]), float(c)) for a, b, c in zip(u, i, r)}


def our_scorer(user_matrix: np.ndarray, item_matrix: np.ndarray, ds, eval_cfg):
  """A Cornac Recommender whose scores are our trained dot products.

  Ranking uses the dot products; a rating prediction (MAE/RMSE) maps the dot product
  through our ``eval.rating_link`` (the identity, or Cornac PMF's logistic), as our
  evaluator does.
  """
  from mmrec_jax.evaluation import rating as rating_lib

  link = str(eval_cfg.rating_link)
  lo, hi = rating_lib.check_link(link, eval_cfg.rating_range)
  import cornac

  class Ours(cornac.models.Recommender):
    def __init__(self):
      super().__init__(name="ours-scored-by-cornac", trainable=True)

    def fit(self, train_set, val_set=None):
      super().fit(train_set, val_set)
      u_ours = {str(r): k for k, r in enumerate(ds.user_raw_ids())}
      i_ours = {str(r): k for k, r in enumerate(ds.item_raw_ids())}

      # Cornac's maps also hold the test-only users/items that exclude_unknowns dropped
      # (ids >= num_users/num_items); they are never scored, so they get zero rows.
      def rows(mapping, ours, matrix):
        out = np.zeros((max(mapping.values()) + 1, matrix.shape[1]))
        for raw, idx in mapping.items():
          if str(raw) in ours:
            out[idx] = matrix[ours[str(raw)]]
        return out

      self.scores = (
        rows(train_set.uid_map, u_ours, user_matrix)
        @ rows(train_set.iid_map, i_ours, item_matrix).T
      )
      return self

    def score(self, user_idx, item_idx=None):
      if item_idx is None:
        return self.scores[user_idx]
      return rating_lib.apply_link(self.scores[user_idx, item_idx], link, lo, hi)

  return Ours()


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--models", default="mf,pmf,bpr")
  p.add_argument("--out", default="", help="also write the table (Markdown) here")
  p.add_argument("--workdir", default="", help="our runs' workdirs ('' = a temp dir)")
  args = p.parse_args()
  import cornac
  import jax
  from cornac.eval_methods import RatioSplit
  from cornac.metrics import AUC, MAE, MAP, NDCG, RMSE, Precision, Recall

  from mmrec_jax import train
  from mmrec_jax.data import prepare as prepare_lib
  from mmrec_jax.loop.setup import set_up

  models = [m for m in args.models.split(",") if m]
  base = load_experiment(OUR_MODEL[models[0]])
  triples = raw_triples(base)
  rs = RatioSplit(
    data=triples,
    test_size=0.2,
    rating_threshold=4.0,
    exclude_unknowns=True,
    seed=SEED,
    verbose=False,
  )
  ds = prepare_lib.prepare(base.data)  # exactly what training prepares
  same_train = split_rows(ds, "train") == cornac_rows(rs.train_set)
  same_test = split_rows(ds, "test") == cornac_rows(rs.test_set)
  print(
    f"split: {len(triples)} rows; ours train {len(split_rows(ds, 'train'))} / test "
    f"{len(split_rows(ds, 'test'))}; Cornac train {rs.train_set.num_ratings} / test "
    f"{rs.test_set.num_ratings}; train sets equal: {same_train}; test sets equal: "
    f"{same_test}"
  )
  if not (same_train and same_test):
    raise SystemExit("the splits differ: the comparison would not be on the same data")

  metrics = [MAE(), RMSE(), AUC(), MAP(), NDCG(k=10), Precision(k=10), Recall(k=10)]
  rows: dict[str, dict[str, Any]] = {}
  workroot = pathlib.Path(args.workdir or tempfile.mkdtemp(prefix="cornac_tutorial_"))
  for m in models:
    cls_name, kwargs = CORNAC_MODELS[m]
    model = getattr(cornac.models, cls_name)(**kwargs)
    t0 = time.time()
    # rs.evaluate is what cornac.Experiment runs per model (fit, then the test metrics),
    # without the Experiment's log file in the working directory.
    cornac_res = dict(rs.evaluate(model, metrics, user_based=True)[0].metric_avg_results)
    cornac_s = time.time() - t0

    config = load_experiment(OUR_MODEL[m])
    config.train.progress_bar = False
    workdir = workroot / OUR_MODEL[m]
    t0 = time.time()
    res = train.train_and_evaluate(config, workdir)
    ours_s = time.time() - t0
    # Our trained factors scored by Cornac's evaluator (same split, same scores).
    run = set_up(config)
    if run.ds.path != ds.path:  # the run trained on the very split checked above
      raise SystemExit(f"our run used {run.ds.path}, not the checked split {ds.path}")
    from mmrec_jax import checkpointing

    ckpt = checkpointing.RunCheckpointer(workdir, max_to_keep=config.train.max_checkpoints)
    state, _, _ = ckpt.restore_latest(run.task.abstract_state())
    users, items = run.task.eval_reprs(state)
    um = np.asarray(jax.device_get(users))[: run.task.num_users]
    im = np.asarray(jax.device_get(items))[: run.task.num_items]
    ckpt.close()
    cross = rs.evaluate(our_scorer(um, im, run.ds, config.eval), metrics, user_based=True)[0]
    cross_res = dict(cross.metric_avg_results)
    rows[m] = {
      "cornac": cornac_res,
      "ours": res["test"],
      "cornac_on_ours": cross_res,
      "cornac_seconds": round(cornac_s, 1),
      "ours_seconds": round(ours_s, 1),
    }

  lines = [
    "| model | metric | Cornac 3.0.1 | mmrec_jax | ours / Cornac | Cornac's evaluator "
    "on our scores |",
    "|---|---|---|---|---|---|",
  ]
  worst = 0.0
  for m, r in rows.items():
    for name in METRICS:
      c, o = float(r["cornac"][name]), float(r["ours"][OURS_NAME[name]])
      x = float(r["cornac_on_ours"][name])
      worst = max(worst, abs(x - o))
      ratio = o / c if c else float("nan")
      lines.append(f"| {m} | {name} | {c:.4f} | {o:.4f} | {ratio:.3f} | {x:.4f} |")
  lines.append("")
  lines.append(f"Largest |our evaluator - Cornac's evaluator| on the same scores: {worst:.2e}")
  lines.append(
    "Training + evaluation seconds: "
    + ", ".join(
      f"{m}: Cornac {r['cornac_seconds']} s, ours {r['ours_seconds']} s" for m, r in rows.items()
    )
  )
  lines.append(
    f"jax {jax.__version__} on {jax.devices()[0].platform}, {jax.device_count()} "
    f"device(s); cornac {cornac.__version__}"
  )
  table = "\n".join(lines)
  print(table)
  if args.out:
    pathlib.Path(args.out).write_text(table + "\n")
    (pathlib.Path(args.out).with_suffix(".json")).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
  main()
