r"""Item cold start on real data: ML-100K with 10% of the items held out of training.

Why: issue #13 asks that content features score items without training interactions,
and that the multimodal default's recall@20 on those items be well above popularity's.
``data.cold_items=0.1`` moves every train row of a seeded 10% of the items to valid/test
(``data/splits.py:cold_items``), on the per-user temporal 80/10/10 split of
``experiments/ml100k.py``; the test metrics and the ``cold_items`` slice (ground truth
restricted to those items, ranked against the whole catalogue) come from each run's
results.json. Models: MostPop (what popularity gives: cold items have count 0), EASE,
the default CEASE (content term), and two-tower + text with ID dropout (DropoutNet: the
item ID embedding is dropped for a fraction of the training rows, so the content tower
alone must score; untrained items are scored without their ID) with negatives drawn only
from trained items.

    .venv/bin/python benchmarks/bench_cold_start.py --seeds 0,1,2
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import bench_protocols  # noqa: E402  (the same data and split)

INTER = bench_protocols.INTER
RUNS = {
  "mostpop": ("mostpop", {}),
  "ease": ("ease", {}),
  "cease (default)": ("", {}),
  "cease without cold neighbours (the stop-12 default)": (
    "cease",
    {"model.reg_weight": 200.0, "model.content_weight": 100.0, "model.cold_neighbors": 0},
  ),
  "two_tower + text, id_dropout 0.5": (
    "two_tower",
    {
      "model.id_dropout": 0.5,
      "input.negative_sampler": "trained_uniform",
      "data.text_features": "handcrafted",
    },
  ),
}


def config(variant: str, over: dict, seed: int, args):
  """The temporal split of bench_protocols.py with ``data.cold_items=0.1`` (seeded)."""
  c = bench_protocols.base_config(variant, "temporal", seed, args)
  c.data.cold_items = 0.1
  c.data.seed = seed  # which items go cold
  c.eval.slices = True
  for key, value in over.items():
    section, field = key.split(".")
    c[section][field] = value
  return c


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--inter", default=INTER)
  ap.add_argument("--cache_dir", default="/work/scratch/cold/cache")
  ap.add_argument("--workdir", default="/work/scratch/cold")
  ap.add_argument("--seeds", default="0,1,2")
  ap.add_argument("--jsonl", default=str(ROOT / "benchmarks" / "cold_start_runs.jsonl"))
  args = ap.parse_args()
  args.max_epochs = 0  # bench_protocols.base_config reads it
  from mmrec_jax.train import train_and_evaluate

  jsonl = pathlib.Path(args.jsonl)
  done = set()
  if jsonl.exists():
    done = {(r["model"], r["seed"]) for r in map(json.loads, jsonl.read_text().splitlines())}
  for seed in (int(s) for s in args.seeds.split(",")):
    for name, (variant, over) in RUNS.items():
      if (name, seed) in done:
        continue
      res = train_and_evaluate(config(variant, over, seed, args), f"{args.workdir}/{seed}/{name}")
      cold = res["test_slices"]["cold_items"]
      row = {
        "model": name,
        "seed": seed,
        "test": {k: res["test"][k] for k in ("ndcg@10", "recall@20")},
        "cold": {k: cold[k] for k in cold if k in ("recall@20", "ndcg@10", "users")},
        "load": os.getloadavg()[0],
      }
      print(json.dumps(row), flush=True)
      with jsonl.open("a") as f:
        f.write(json.dumps(row) + "\n")
  rows = [json.loads(line) for line in jsonl.read_text().splitlines()]
  print("| model | seeds | test ndcg@10 | test recall@20 | cold-item recall@20 | cold ndcg@10 |")
  print("|---|---|---|---|---|---|")
  for name in RUNS:
    rs = [r for r in rows if r["model"] == name]
    if not rs:
      continue

    def ms(get, rs=rs):
      xs = np.array([get(r) for r in rs], float)
      return f"{xs.mean():.4f} ± {xs.std():.4f}"

    print(
      f"| {name} | {len(rs)} | {ms(lambda r: r['test']['ndcg@10'])} | "
      f"{ms(lambda r: r['test']['recall@20'])} | {ms(lambda r: r['cold']['recall@20'])} | "
      f"{ms(lambda r: r['cold']['ndcg@10'])} |"
    )


if __name__ == "__main__":
  main()
