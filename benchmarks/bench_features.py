"""FeatureShards.gather throughput vs a plain numpy fancy-index copy, in one run.

Target (issue: pipeline hot path): gather >= 50% of the rate of ``table[ids]`` from one
in-memory array, for 384- and 2048-dim float32 rows, batches of 2048 random ids out of
~60k items. Shards live on local disk and are memory-mapped; after the warm-up the pages
are in the page cache, which is the steady state of a training run whose features fit
in host RAM.

Run:  .venv/bin/python benchmarks/bench_features.py [--items 60000] [--batch 2048]
Prints one Markdown table row per (dim, layout).
"""

from __future__ import annotations

import argparse
import pathlib
import tempfile
import time

import numpy as np

from mmrec_jax.data.feature_store import write_feature_shards


def _rates(fns, ids_list, nbytes, reps):
  """GB/s of each fn, median over reps; the fns are interleaved within every rep so
  that noise from other processes on the machine hits them alike."""
  for fn in fns:
    fn(ids_list[0])  # warm-up (page faults, allocator)
  times = [[] for _ in fns]
  for _ in range(reps):
    for k, fn in enumerate(fns):
      t = time.perf_counter()
      for ids in ids_list:
        fn(ids)
      times[k].append((time.perf_counter() - t) / len(ids_list))
  return [nbytes / float(np.median(t)) / 1e9 for t in times]


def main() -> None:
  ap = argparse.ArgumentParser()
  ap.add_argument("--items", type=int, default=60000)
  ap.add_argument("--batch", type=int, default=2048)
  ap.add_argument("--dims", type=int, nargs="+", default=[384, 2048])
  ap.add_argument("--reps", type=int, default=9)
  ap.add_argument("--batches", type=int, default=20)
  args = ap.parse_args()
  rng = np.random.default_rng(0)
  print(
    "| dim | layout | shards | numpy table[ids] GB/s | gather(out=) GB/s | ratio "
    "| gather GB/s | ratio |"
  )
  print("|---|---|---|---|---|---|---|---|")
  with tempfile.TemporaryDirectory() as tmp:
    for dim in args.dims:
      table = rng.standard_normal((args.items, dim), dtype=np.float32)
      ids_list = [rng.integers(0, args.items, args.batch) for _ in range(args.batches)]
      nbytes = args.batch * dim * 4
      for layout, rps in (("1 shard", 65536), ("8k-row shards", 8192)):
        fs = write_feature_shards(
          pathlib.Path(tmp) / f"d{dim}_{rps}", table, None, modality="bench", rows_per_shard=rps
        )
        for ids in ids_list[:3]:
          assert np.array_equal(fs.gather(ids), table[ids])
        for _ in range(2):  # touch every page once so both sides read from RAM
          fs.gather(np.arange(args.items))
        out = np.empty((args.batch, dim), np.float32)
        base, got, got_alloc = _rates(
          [lambda i: table[i], lambda i: fs.gather(i, out=out), fs.gather],  # noqa: B023, F821
          ids_list,
          nbytes,
          args.reps,
        )
        print(
          f"| {dim} | {layout} | {fs.num_shards} | {base:.2f} | {got:.2f} | "
          f"{got / base:.2f} | {got_alloc:.2f} | {got_alloc / base:.2f} |",
          flush=True,
        )
      del table


if __name__ == "__main__":
  main()
