"""Throughput of the grain training pipeline (mmrec_jax.data.pipeline).

Measures, for each worker count:
  (a) ID batches (user, pos, 1 uniform negative): examples/s;
  (b) the same with two streamed feature modalities joined (default 384 and 2048 float32
      dims, pos and neg rows): GB/s of feature rows delivered, against a plain numpy
      fancy-index copy (``table[ids]`` from in-memory tables) of the same rows timed in the
      same run.
Synthetic interactions and random feature values (this measures data movement only).
Worker start-up is excluded: timing starts after the first batch.

  .venv/bin/python benchmarks/bench_pipeline.py --workers 0,2
"""

from __future__ import annotations

import argparse
import collections
import os
import pathlib
import tempfile
import time

import numpy as np

from mmrec_jax.config import base_config
from mmrec_jax.data.feature_store import write_feature_shards
from mmrec_jax.data.pipeline import make_train_pipeline

Split = collections.namedtuple("Split", "users items")


def _time_pipeline(p, batches: int) -> tuple[float, list[tuple[np.ndarray, ...]]]:
  """Seconds for `batches` batches after the first, and the ids of those batches."""
  for _ in range(2 + 2 * p.worker_count):  # start-up (worker spawn, permutation): untimed
    next(p)
  ids = []
  t = time.perf_counter()
  for _ in range(batches):
    b = next(p)
    ids.append((b["pos"], b.get("neg")))
  dt = time.perf_counter() - t
  return dt, ids


def _time_numpy_copy(tables, ids) -> float:
  """Seconds for plain ``table[ids]`` copies of the same pos/neg rows (in-memory tables)."""
  t = time.perf_counter()
  for pos, neg in ids:
    for tab in tables.values():
      tab[pos]
      tab[neg]
  return time.perf_counter() - t


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--num_items", type=int, default=60_000)
  ap.add_argument("--num_users", type=int, default=200_000)
  ap.add_argument("--num_train", type=int, default=4_000_000)
  ap.add_argument("--batch_size", type=int, default=8192)
  ap.add_argument("--id_batches", type=int, default=300)
  ap.add_argument("--feat_batches", type=int, default=20)
  ap.add_argument("--trials", type=int, default=3)
  ap.add_argument("--dims", default="384,2048")
  ap.add_argument("--workers", default="0,2")
  ap.add_argument("--num_threads", type=int, default=1)
  ap.add_argument("--prefetch", type=int, default=2)
  ap.add_argument("--tmp", default="")
  args = ap.parse_args()

  rng = np.random.default_rng(0)
  # Popularity-skewed items, like real interaction logs.
  items = np.minimum(rng.zipf(1.3, args.num_train) - 1, args.num_items - 1)
  split = Split(
    rng.integers(0, args.num_users, args.num_train).astype(np.int32),
    rng.permutation(args.num_items)[items].astype(np.int32),
  )
  dims = [int(d) for d in args.dims.split(",")]
  workers = [int(w) for w in args.workers.split(",")]
  rows = []

  def cfg(w, stream, sampler="uniform", num_negatives=1, exclude=False):
    c = base_config().input
    c.batch_size, c.num_negatives, c.negative_sampler = args.batch_size, num_negatives, sampler
    c.exclude_positives = exclude
    c.worker_count, c.prefetch, c.stream_features = w, args.prefetch, stream
    return c

  id_cases = [
    ("(a) ids + 1 uniform neg", {}),
    (
      "(a2) ids + 4 popularity negs, exclude_positives",
      dict(sampler="popularity", num_negatives=4, exclude=True),
    ),
  ]
  for label, kw in id_cases:
    for w in workers:
      p = make_train_pipeline(
        split,
        args.num_users,
        args.num_items,
        cfg(w, False, **kw),
        seed=0,
        process_index=0,
        process_count=1,
        num_threads=args.num_threads,
      )
      rates = [
        args.id_batches * args.batch_size / _time_pipeline(p, args.id_batches)[0]
        for _ in range(args.trials)
      ]
      p.close()
      rows.append(
        f"| {label} | {w} | {args.batch_size} | {np.median(rates) / 1e6:.2f} M "
        f"examples/s (best {max(rates) / 1e6:.2f}) | - | - |"
      )
      print(rows[-1], flush=True)

  with tempfile.TemporaryDirectory(dir=args.tmp or None) as tmp:
    feats, tables = {}, {}
    for k, d in enumerate(dims):
      m = f"m{k}_{d}"
      tab = rng.standard_normal((args.num_items, d), dtype=np.float32)
      feats[m] = write_feature_shards(pathlib.Path(tmp) / m, tab, None, modality=m)
      tables[m] = tab
    for w in workers:
      p = make_train_pipeline(
        split,
        args.num_users,
        args.num_items,
        cfg(w, True),
        seed=0,
        process_index=0,
        process_count=1,
        features=feats,
        num_threads=args.num_threads,
      )
      nbytes = sum(
        int(np.prod(shape)) * dtype.itemsize
        for k, (shape, dtype) in p.element_spec.items()
        if k.startswith("feat_")
      )
      # The host is shared and noisy: alternate pipeline and numpy-copy trials on the
      # same rows and report medians.
      pipe, ref = [], []
      for _ in range(args.trials):
        dt, ids = _time_pipeline(p, args.feat_batches)
        pipe.append(len(ids) * nbytes / dt / 1e9)
        ref.append(len(ids) * nbytes / _time_numpy_copy(tables, ids) / 1e9)
      p.close()
      gbs, refs = float(np.median(pipe)), float(np.median(ref))
      rows.append(
        f"| (b) + features {args.dims} (pos+neg) | {w} | {args.batch_size} | "
        f"{gbs * 1e9 / nbytes * args.batch_size / 1e3:.0f} k examples/s | "
        f"{gbs:.2f} GB/s (best {max(pipe):.2f}) | {refs:.2f} GB/s "
        f"(best {max(ref):.2f}); median ratio {100 * gbs / refs:.0f}% |"
      )
      print(rows[-1], flush=True)

  print()
  print(
    f"host: {os.cpu_count()} cores; num_items={args.num_items} "
    f"num_train={args.num_train} batch={args.batch_size}"
  )
  print(
    "| pipeline | workers | batch | throughput (median of trials) | feature GB/s | numpy copy GB/s; pipeline/copy |"
  )
  print("|---|---|---|---|---|---|")
  print("\n".join(rows))


if __name__ == "__main__":
  main()
