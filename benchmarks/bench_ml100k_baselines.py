r"""Quality benchmark on MovieLens-100K: mmrec_jax models vs Cornac and `implicit` baselines.

Every model is trained on the SAME prepared split (per-user temporal 80/10/10 of
``experiments/ml100k.py``) and scored by the SAME evaluator (``mmrec_jax.evaluation.
evaluate_split``: full ranking, train items masked at validation, train + valid items
masked at test), so only the models differ. Baselines export factor matrices which are
scored as ``user_matrix @ item_matrix.T``:

  * Cornac BPR: ``[p_u, 1] . [q_i, b_i]`` (its item bias as an extra column);
  * implicit BPR: its own factors (implicit already stores the item bias as a column);
  * implicit ALS: ``x_u . y_i``.

Each family is tuned on the VALID split over a small grid (one seed per setting); the
table reports valid and test metrics of the best-valid setting (ndcg@10) and its training
time. Our models train through :func:`mmrec_jax.train.train_and_evaluate` (early stopping
on valid ndcg@10, best-valid checkpoint), with config overrides per grid point.

    .venv/bin/pip install -e '.[bench]'        # cornac, implicit, psutil
    .venv/bin/python benchmarks/bench_ml100k_baselines.py            # all families
    .venv/bin/python benchmarks/bench_ml100k_baselines.py --families cornac_bpr,ours_bpr_mf

Finished grid points are appended to ``<workdir>/runs.jsonl`` and skipped on a rerun, so
an interrupted benchmark resumes; the Markdown report (``--out``) is rewritten from that
file after every grid point.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import pathlib
import platform
import time
from collections.abc import Callable
from typing import Any

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
KS = (10, 20)
SHOWN = tuple(f"{m}@{k}" for m in ("recall", "ndcg") for k in KS)
SELECT = "ndcg@10"
NOTES_MARKER = "<!-- notes: kept when the tables above are regenerated -->"

# ------------------------------------------------------------------------------ the grids
# Small on purpose (2 shared CPU cores): main hyper-parameters of each family.
_OURS = {
  "optimizer.sparse": "sgd",
  "optimizer.sparse_learning_rate": 50.0,
  "input.num_negatives": 4,
  "model.embed_dim": 128,
  "train.num_epochs": 100,
  "train.eval_every_epochs": 5,
  "train.early_stopping_patience": 3,
}
GRIDS: dict[str, list[dict[str, Any]]] = {
  "most_pop": [{}],  # sanity floor: train popularity, same for every user
  "cornac_bpr": [
    dict(k=k, learning_rate=lr, lambda_reg=reg, max_iter=it)
    for k in (32, 64, 128)
    for lr in (0.01, 0.05)
    for reg in (0.01,)
    for it in (100, 300)
  ],
  "implicit_bpr": [
    dict(factors=f, learning_rate=lr, regularization=reg, iterations=it)
    for f in (32, 64, 128)
    for lr in (0.01, 0.05)
    for reg in (0.01,)
    for it in (100, 300)
  ],
  "implicit_als": [
    dict(factors=f, regularization=reg, alpha=a, iterations=15)
    for f in (32, 64, 128)
    for reg in (0.1, 1.0, 10.0)
    for a in (1.0, 10.0)
  ],
  # Ours: config overrides (dotted keys) of experiments/ml100k.py:<variant>. Tables by
  # row-wise SGD (the step's loss is a batch MEAN, so lr 50 at batch 1024 is ~0.05 per
  # example, Cornac's best), 4 uniform negatives, early stopping on valid ndcg@10.
  "ours_bpr_mf": [{**_OURS, "loss.l2": l2} for l2 in (1e-3, 2e-3, 5e-3, 1e-2)]
  + [{**_OURS, "loss.l2": l2, "model.item_bias": True} for l2 in (2e-3, 5e-3)],
  "ours_vbpr": [
    {
      **_OURS,
      "loss.l2": l2,
      "data.modalities": mods,
      "data.text_features": tf,
      "optimizer.learning_rate": 1e-3,
    }
    for mods, tf, l2 in (
      (("text_minilm",), "minilm", 5e-3),
      (("text",), "handcrafted", 5e-3),
      (("text",), "handcrafted", 2e-3),
    )
  ],
  # ~4x the step cost of BPR-MF here; not in the default --families.
  "ours_two_tower": [
    {
      **_OURS,
      "loss.l2": 5e-3,
      "data.modalities": ("text_minilm",),
      "data.text_features": "minilm",
      "train.num_epochs": 80,
    }
  ],
}
LABELS = {
  "most_pop": "MostPop (train counts)",
  "cornac_bpr": "Cornac BPR",
  "implicit_bpr": "implicit BPR",
  "implicit_als": "implicit ALS",
  "ours_bpr_mf": "mmrec_jax BPR-MF",
  "ours_vbpr": "mmrec_jax VBPR (IDs + text)",
  "ours_two_tower": "mmrec_jax two-tower (IDs + text)",
}


def load_config(variant: str, cache_dir: str):
  """``experiments/ml100k.py:<variant>`` (locked ConfigDict)."""
  spec = importlib.util.spec_from_file_location("ml100k", ROOT / "experiments" / "ml100k.py")
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  c = mod.get_config(variant)
  if cache_dir:
    c.data.cache_dir = cache_dir
  c.train.progress_bar = False
  return c


def setting_key(family: str, params: dict[str, Any], seed: int = 0) -> str:
  return family + " " + json.dumps(params, sort_keys=True) + (f" seed={seed}" if seed else "")


# ------------------------------------------------------------------------------ baselines


def train_interactions(ds) -> tuple[np.ndarray, np.ndarray]:
  tr = ds.split("train")
  return np.asarray(tr.users, np.int64), np.asarray(tr.items, np.int64)


def fit_cornac_bpr(ds, p: dict[str, Any], seed: int, threads: int):
  import cornac

  u, i = train_interactions(ds)
  triples = list(zip(u.astype(str).tolist(), i.astype(str).tolist(), [1.0] * u.size))
  train_set = cornac.data.Dataset.build(triples, fmt="UIR", seed=seed)
  model = cornac.models.BPR(
    k=p["k"],
    max_iter=p["max_iter"],
    learning_rate=p["learning_rate"],
    lambda_reg=p["lambda_reg"],
    num_threads=threads,
    seed=seed,
    verbose=False,
  )
  t0 = time.perf_counter()
  model.fit(train_set)
  secs = time.perf_counter() - t0
  k = p["k"]
  users = np.zeros((ds.num_users, k + 1), np.float32)
  items = np.zeros((ds.num_items, k + 1), np.float32)
  # Items Cornac never saw (not in train) cannot be scored by it: rank them last.
  items[:, k] = -1e4
  uid = np.array([int(r) for r in train_set.uid_map.keys()])
  uix = np.array(list(train_set.uid_map.values()))
  iid = np.array([int(r) for r in train_set.iid_map.keys()])
  iix = np.array(list(train_set.iid_map.values()))
  users[uid, :k] = model.u_factors[uix]
  users[:, k] = 1.0
  items[iid, :k] = model.i_factors[iix]
  items[iid, k] = model.i_biases[iix]
  return users, items, secs


def _train_csr(ds):
  import scipy.sparse as sp

  u, i = train_interactions(ds)
  m = sp.csr_matrix((np.ones(u.size, np.float32), (u, i)), shape=(ds.num_users, ds.num_items))
  m.sum_duplicates()
  m.data[:] = 1.0
  return m


def fit_implicit_bpr(ds, p: dict[str, Any], seed: int, threads: int):
  from implicit.cpu.bpr import BayesianPersonalizedRanking

  model = BayesianPersonalizedRanking(
    factors=p["factors"],
    learning_rate=p["learning_rate"],
    regularization=p["regularization"],
    iterations=p["iterations"],
    num_threads=threads,
    random_state=seed,
  )
  csr = _train_csr(ds)
  t0 = time.perf_counter()
  model.fit(csr, show_progress=False)
  secs = time.perf_counter() - t0
  return np.asarray(model.user_factors), np.asarray(model.item_factors), secs


def fit_implicit_als(ds, p: dict[str, Any], seed: int, threads: int):
  from implicit.cpu.als import AlternatingLeastSquares

  model = AlternatingLeastSquares(
    factors=p["factors"],
    regularization=p["regularization"],
    alpha=p["alpha"],
    iterations=p["iterations"],
    num_threads=threads,
    random_state=seed,
  )
  csr = _train_csr(ds)
  from threadpoolctl import threadpool_limits

  t0 = time.perf_counter()
  with threadpool_limits(1, "blas"):  # what implicit asks for (its own threads do the work)
    model.fit(csr, show_progress=False)
  secs = time.perf_counter() - t0
  return np.asarray(model.user_factors), np.asarray(model.item_factors), secs


def fit_most_pop(ds, p: dict[str, Any], seed: int, threads: int):
  del p, seed, threads
  _, i = train_interactions(ds)
  counts = np.bincount(i, minlength=ds.num_items).astype(np.float32)
  return np.ones((ds.num_users, 1), np.float32), counts[:, None], 0.0


FITTERS: dict[str, Callable] = {
  "most_pop": fit_most_pop,
  "cornac_bpr": fit_cornac_bpr,
  "implicit_bpr": fit_implicit_bpr,
  "implicit_als": fit_implicit_als,
}


def evaluate_factors(users: np.ndarray, items: np.ndarray, ds, eval_cfg, mesh) -> dict:
  """Our evaluator on exported factors: the exact protocol our own models get."""
  from mmrec_jax.evaluation import evaluate_split

  out = {}
  for split in ("valid", "test"):
    res = evaluate_split(
      users.astype(np.float32), items.astype(np.float32), ds, split, eval_cfg, mesh
    )
    out[split] = {k: float(v) for k, v in res.metrics.items()}
  return out


# ------------------------------------------------------------------------------ ours


def run_ours(family: str, p: dict[str, Any], args, seed: int) -> dict:
  from mmrec_jax.train import train_and_evaluate

  variant = family.removeprefix("ours_")
  c = load_config(variant, args.cache_dir)
  c.seed = seed
  for dotted, value in p.items():
    node = c
    *path, leaf = dotted.split(".")
    for name in path:
      node = node[name]
    node[leaf] = value
  name = variant + "_" + "_".join(f"{k.split('.')[-1]}={v}" for k, v in sorted(p.items()))
  name = "".join(ch if ch.isalnum() or ch in "._=-" else "" for ch in name)
  workdir = pathlib.Path(args.workdir) / "ours" / (name + (f"_seed{seed}" if seed else ""))
  t0 = time.perf_counter()
  res = train_and_evaluate(c, workdir)
  wall = time.perf_counter() - t0
  return {
    "valid": res["valid"],
    "test": res["test"],
    "train_s": res["train_seconds"],
    "wall_s": wall,
    "best_step": res["best_step"],
    "steps": res["steps"],
  }


# ------------------------------------------------------------------------------ report


def read_runs(path: pathlib.Path) -> list[dict]:
  if not path.exists():
    return []
  return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _fmt_params(p: dict[str, Any]) -> str:
  return ", ".join(f"{k.split('.')[-1]}={v}" for k, v in sorted(p.items()))


def write_report(runs: list[dict], out: pathlib.Path, header: str) -> str:
  """Best-valid table per family + every grid point (valid only, test hidden)."""
  current = {setting_key(f, p) for f, grid in GRIDS.items() for p in grid}
  seeded = [r for r in runs if r.get("seed", 0)]
  runs = [
    r for r in runs if not r.get("seed", 0) and setting_key(r["family"], r["params"]) in current
  ]
  fams = [f for f in GRIDS if any(r["family"] == f for r in runs)]
  lines = [
    header,
    "",
    "## Best-valid setting per model (selection: valid ndcg@10)",
    "",
    "| model | setting | "
    + " | ".join(f"valid {m}" for m in SHOWN)
    + " | "
    + " | ".join(f"test {m}" for m in SHOWN)
    + " | train s |",
    "|---|---|" + "---:|" * (2 * len(SHOWN) + 1),
  ]
  for f in fams:
    rs = [r for r in runs if r["family"] == f]
    best = max(rs, key=lambda r: r["valid"][SELECT])
    lines.append(
      f"| {LABELS[f]} | {_fmt_params(best['params'])} | "
      + " | ".join(f"{best['valid'][m]:.4f}" for m in SHOWN)
      + " | "
      + " | ".join(f"{best['test'][m]:.4f}" for m in SHOWN)
      + f" | {best['train_s']:.1f} |"
    )
  lines += [
    "",
    "## All grid points (valid split only)",
    "",
    "| model | setting | " + " | ".join(f"valid {m}" for m in SHOWN) + " | train s | notes |",
    "|---|---|" + "---:|" * (len(SHOWN) + 1) + "---|",
  ]
  for f in fams:
    for r in [r for r in runs if r["family"] == f]:
      note = f"best step {r['best_step']} of {r['steps']}" if "best_step" in r else ""
      lines.append(
        f"| {LABELS[f]} | {_fmt_params(r['params'])} | "
        + " | ".join(f"{r['valid'][m]:.4f}" for m in SHOWN)
        + f" | {r['train_s']:.1f} | {note} |"
      )
  lines += _seed_table(runs, seeded, fams)
  text = "\n".join(lines) + "\n"
  # Hand-written notes below the marker (commands, findings) survive regeneration.
  if out.exists() and NOTES_MARKER in out.read_text():
    text += "\n" + NOTES_MARKER + out.read_text().split(NOTES_MARKER, 1)[1]
  out.parent.mkdir(parents=True, exist_ok=True)
  tmp = out.with_suffix(".tmp")
  tmp.write_text(text)
  os.replace(tmp, out)
  return text


def _seed_table(runs: list[dict], seeded: list[dict], fams: list[str]) -> list[str]:
  """Mean +- std over seeds of each family's best-valid setting (seed 0 = the grid run)."""
  rows = []
  for f in fams:
    best = max((r for r in runs if r["family"] == f), key=lambda r: r["valid"][SELECT])
    same = [best] + [r for r in seeded if r["family"] == f and r["params"] == best["params"]]
    if len(same) < 2:
      continue
    cell = lambda split, m, same=same: (
      f"{np.mean([r[split][m] for r in same]):.4f} "
      f"± {np.std([r[split][m] for r in same], ddof=1):.4f}"
    )
    rows.append(
      f"| {LABELS[f]} | {len(same)} | "
      + " | ".join(cell(split, m) for split in ("valid", "test") for m in ("ndcg@10", "recall@20"))
      + f" | {np.mean([r['train_s'] for r in same]):.1f} |"
    )
  if not rows:
    return []
  return [
    "",
    "## Best-valid setting of each model over seeds (mean ± sample std)",
    "",
    "Seeds change the initialisation and the sampled negatives/batch order (ours), "
    "or the libraries' `seed`/`random_state`; the split is fixed.",
    "",
    "| model | seeds | valid ndcg@10 | valid recall@20 | test ndcg@10 | test recall@20 | train s |",
    "|---|---:|---:|---:|---:|---:|---:|",
  ] + rows


def machine_note(threads: int) -> str:
  import jax

  try:
    import cornac
    import implicit

    versions = f"cornac {cornac.__version__}, implicit {implicit.__version__}, "
  except ImportError:
    versions = ""
  return (
    f"Machine: {platform.machine()} {os.cpu_count()} CPU cores, shared with other jobs "
    f"(times are noisy); {versions}jax {jax.__version__} on "
    f"{jax.devices()[0].platform}; baselines use num_threads={threads}."
  )


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument(
    "--families",
    default=",".join(f for f in GRIDS if f != "ours_two_tower"),
    help=f"comma-separated subset of {list(GRIDS)}",
  )
  parser.add_argument("--workdir", default="runs/bench_ml100k")
  parser.add_argument("--out", default=str(ROOT / "benchmarks" / "RESULTS_ml100k.md"))
  parser.add_argument("--cache_dir", default="", help="'' = the experiment's default")
  parser.add_argument(
    "--seeds",
    type=int,
    default=1,
    help="> 1: rerun each family's best-valid setting with seeds 1..N-1",
  )
  parser.add_argument("--threads", type=int, default=2, help="baselines' num_threads")
  parser.add_argument(
    "--max_points",
    type=int,
    default=0,
    help="> 0: at most this many NEW grid points per family (quick look)",
  )
  args = parser.parse_args()
  families = [f for f in args.families.split(",") if f]
  unknown = sorted(set(families) - set(GRIDS))
  if unknown:
    raise SystemExit(f"--families: unknown {unknown}; known: {list(GRIDS)}")

  import jax
  import ml_collections

  from mmrec_jax import sharding
  from mmrec_jax.data.prepare import prepare

  base = load_config("bpr_mf", args.cache_dir)
  ds = prepare(base.data)
  eval_cfg = ml_collections.ConfigDict(base.eval.to_dict())
  eval_cfg.ks = KS
  eval_cfg.slices = False
  eval_cfg.export_topk = 0
  mesh = sharding.make_mesh(1, 1, devices=jax.devices()[:1])
  tr = ds.split("train")
  print(
    f"dataset {ds.path}: {ds.num_users} users, {ds.num_items} items, "
    f"train/valid/test {len(tr.users)}/{len(ds.split('valid').users)}/"
    f"{len(ds.split('test').users)}",
    flush=True,
  )

  workdir = pathlib.Path(args.workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  log = workdir / "runs.jsonl"
  done = {setting_key(r["family"], r["params"], r.get("seed", 0)) for r in read_runs(log)}
  header = (
    "# MovieLens-100K quality: mmrec_jax vs Cornac / implicit "
    "(benchmarks/bench_ml100k_baselines.py)\n\n"
    f"Split: per-user temporal 80/10/10 ({ds.num_users} users, {ds.num_items} items, "
    f"{len(tr.users)} train interactions); full ranking over all items by our "
    "evaluator, train items masked (train + valid at test). Grid: one seed (0) per "
    "setting; the best-valid setting of each model is then rerun with more seeds "
    "(last table).\n\n" + machine_note(args.threads)
  )

  def run_point(family: str, params: dict[str, Any], seed: int) -> None:
    if family.startswith("ours_"):
      rec = run_ours(family, params, args, seed)
    else:
      users, items, secs = FITTERS[family](ds, params, seed, args.threads)
      rec = {**evaluate_factors(users, items, ds, eval_cfg, mesh), "train_s": secs}
    rec.update(family=family, params=params, seed=seed)
    with open(log, "a") as f:
      f.write(json.dumps(rec) + "\n")
    done.add(setting_key(family, params, seed))
    print(
      f"{LABELS[family]:32s} {_fmt_params(params):60s} seed {seed} valid ndcg@10 "
      f"{rec['valid'][SELECT]:.4f} recall@20 {rec['valid']['recall@20']:.4f} "
      f"({rec['train_s']:.1f}s)",
      flush=True,
    )
    write_report(read_runs(log), pathlib.Path(args.out), header)

  for family in families:
    new = 0
    for params in GRIDS[family]:
      key = setting_key(family, params)
      if key in done:
        continue
      if args.max_points and new >= args.max_points:
        break
      new += 1
      run_point(family, params, 0)
  # Seed stage: the best-valid setting of each family again with other seeds.
  for family in families:
    runs = [r for r in read_runs(log) if r["family"] == family and not r.get("seed", 0)]
    if args.seeds < 2 or not runs:
      continue
    best = max(runs, key=lambda r: r["valid"][SELECT])["params"]
    for seed in range(1, args.seeds):
      if setting_key(family, best, seed) not in done:
        run_point(family, best, seed)
  print(write_report(read_runs(log), pathlib.Path(args.out), header))


if __name__ == "__main__":
  main()
