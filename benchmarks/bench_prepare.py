"""Wall time and peak RSS of preparing the ML-25M-shaped synthetic dataset.

Run:  .venv/bin/python benchmarks/bench_prepare.py            # 162,541 x 59,047 x 25M
      .venv/bin/python benchmarks/bench_prepare.py --scale 0.1   # a quick smaller run

Generation (synthetic.py) + preparation (dedup, dense ids, temporal_ratio split, writing
arrays, items.jsonl, 'text'/'image' feature shards, sha256 of every file) in one process,
into a fresh temp cache dir; prints a Markdown table row. Peak RSS is ru_maxrss of this
process (the whole run happens in it).
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import tempfile
import time

from mmrec_jax.data import dataset, prepare, sources

_gen_seconds = []


def _timed_load(original):
  """Wraps the synthetic source's load to split generation time from preparation time."""

  def load(*args, **kwargs):
    t = time.perf_counter()
    out = original(*args, **kwargs)
    _gen_seconds.append(time.perf_counter() - t)
    return out

  return load


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--scale", type=float, default=1.0, help="fraction of the ML-25M shape")
  ap.add_argument("--split", default="temporal_ratio")
  ap.add_argument("--keep", action="store_true", help="keep the prepared dir")
  args = ap.parse_args()
  users, items, inter = (
    int(162_541 * args.scale),
    int(59_047 * args.scale),
    int(25_000_000 * args.scale),
  )
  cache = tempfile.mkdtemp(prefix="bench_prepare_")
  cfg = {
    "source": "synthetic",
    "num_users": users,
    "num_items": items,
    "num_interactions": inter,
    "latent_dim": 16,
    "text_dim": 64,
    "image_dim": 128,
    "split": args.split,
    "cache_dir": cache,
  }
  synthetic = sources.SOURCES["synthetic"]
  sources.SOURCES["synthetic"] = synthetic._replace(load=_timed_load(synthetic.load))
  t0, c0 = time.perf_counter(), time.process_time()
  ds = prepare.prepare(cfg, seed=0)
  wall, cpu = time.perf_counter() - t0, time.process_time() - c0
  rss_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # KiB -> GiB
  print(dataset.describe(ds))
  t1 = time.perf_counter()
  prepare.prepare(cfg, seed=0)
  reuse = time.perf_counter() - t1
  print()
  gen = _gen_seconds[0]
  print(
    "| shape (users x items x interactions) | split | wall s (generate + prepare) | "
    "CPU s | peak RSS GiB | reuse s | load avg (1 min) | machine |"
  )
  print("|---|---|---|---|---|---|---|---|")
  print(
    f"| {users:,} x {items:,} x {ds.manifest['num_interactions']:,} | {args.split} | "
    f"{wall:.1f} ({gen:.1f} + {wall - gen:.1f}) | {cpu:.1f} | {rss_gb:.2f} | {reuse:.2f} | "
    f"{os.getloadavg()[0]:.1f} | {os.cpu_count()} CPU, {platform.machine()} |"
  )
  if not args.keep:
    shutil.rmtree(cache, ignore_errors=True)
  else:
    print(f"kept {cache}")


if __name__ == "__main__":
  main()
