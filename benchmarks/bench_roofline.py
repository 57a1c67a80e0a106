r"""Embedding-bound training on an accelerator: examples/s and the memory roofline.

Why: a BPR-MF step does almost no arithmetic (a few dot products per example); its cost
is moving embedding and optimizer rows through memory. So the honest figure of merit on
a GPU or TPU is the fraction of the chip's memory bandwidth that the training loop
turns into useful row traffic, next to examples/s.

What runs (on whatever ``JAX_PLATFORMS`` selects; the default backend otherwise):

1. The ceiling: a streaming ``y = x + 1`` over ``--copy-gib`` GiB of float32 (reads and
   writes every byte once), median of 10 after warm-up. Bytes counted: read + written.
2. The trainer's own path: device epochs (data/device_epoch.py: shuffling, negative
   sampling and many steps per jitted call on device) of BPR-MF with sparse Adam, d=64,
   1 negative, on the ML-25M-shaped synthetic set of bench_bpr_peers.py (162,541 users x
   59,047 items x 20.1M power-law train interactions) and on the same interactions over a
   1e7-row item table (ids spread by a fixed permutation). One whole epoch per
   ``--batches`` value is timed after a warm-up epoch.

The roofline counts the **minimum** bytes a step must move, whatever the implementation:

* forward: every example reads its user, positive and negative rows (3 x d floats);
* update: every distinct row of the batch is read and written once in the table
  (d floats) and once in the Adam moments ([mu | nu | count]: 2d + 1 floats).

Distinct rows per batch are counted on the host from the same distributions (the epoch's
shuffled interactions; negatives uniform over the items), averaged over 20 batches. The
fraction reported is (minimum bytes per step / step time) / measured copy bandwidth, so
it is a lower bound on how well the memory system is used: the sort, the gradient
accumulation and the dense-mode table sweeps (``optimizer.sparse_rows=auto`` streams a
small table whole, see optim/sparse.py) are extra traffic the ratio does not credit.

  JAX_PLATFORMS=cuda python benchmarks/bench_roofline.py          # on the GPU machine
  .venv/bin/python benchmarks/bench_roofline.py --batches 65536 --copy-gib 0.5  # CPU

Prints Markdown tables.
"""

from __future__ import annotations

import argparse
import functools
import os
import pathlib
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def _args():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--batches", default="65536,262144,1048576")
  p.add_argument("--items", default="59047,10000000", help="item table sizes")
  p.add_argument("--interactions", type=int, default=20_100_000)
  p.add_argument("--copy-gib", type=float, default=4.0)
  p.add_argument("--sparse-rows", default="auto", help="optimizer.sparse_rows")
  p.add_argument(
    "--unique",
    default="default",
    choices=("default", "jnp", "sort_search"),
    help="how a step finds its distinct ids (optim/sparse.py unique_ids), for an A/B",
  )
  return p.parse_args()


def copy_bandwidth(gib: float) -> float:
  """Bytes/s of a streaming read+write (the achievable ceiling) on the default device."""
  n = int(gib * (1 << 30)) // 4
  x = jnp.zeros((n,), jnp.float32)
  f = jax.jit(lambda a: a + 1.0)
  y = f(x)
  y.block_until_ready()
  times = []
  for _ in range(10):
    t0 = time.perf_counter()
    y = f(x)
    y.block_until_ready()
    times.append(time.perf_counter() - t0)
  del x, y
  med = float(np.median(times))
  bw = 2 * n * 4 / med
  print(f"copy: {gib:.1f} GiB read + written, median {med * 1e3:.2f} ms = {bw / 1e12:.2f} TB/s")
  return bw


def distinct_rows(users, items, num_items, batch, rng, draws=20):
  """Mean distinct user rows and item rows (positives + uniform negatives) per batch."""
  nu, ni = [], []
  n = users.size
  for _ in range(draws):
    idx = rng.integers(0, n, batch)  # a shuffled epoch's batch: a uniform sample of rows
    nu.append(np.unique(users[idx]).size)
    neg = rng.integers(0, num_items, batch)
    ni.append(np.unique(np.concatenate([items[idx], neg])).size)
  return float(np.mean(nu)), float(np.mean(ni))


def main():
  args = _args()
  import bench_bpr_peers as peers  # its data shapes, config and runner (beside this file)

  from mmrec_jax import sharding

  if args.unique != "default":
    from mmrec_jax.optim import sparse

    sparse.unique_ids = functools.partial(sparse.unique_ids, method=args.unique)
  dev = jax.devices()[0]
  print(
    f"# jax {jax.__version__}, {len(jax.devices())} x {dev.platform} "
    f"({getattr(dev, 'device_kind', '?')}), {os.cpu_count()} cpus, distinct ids: {args.unique}"
  )
  bw = copy_bandwidth(args.copy_gib)
  mesh = sharding.make_mesh()
  rng = np.random.default_rng(0)
  nu, ni0, n = 162_541, 59_047, args.interactions
  u, ranks = peers.log_uniform_ranks(rng, nu, n), peers.log_uniform_ranks(rng, ni0, n)
  users = rng.permutation(nu)[u].astype(np.int32)
  del u
  d, row_b, mom_b = 64, 64 * 4, (2 * 64 + 1) * 4
  rows = []
  for num_items in [int(x) for x in args.items.split(",")]:
    # The same power-law item ranks, spread over the table by a fixed permutation.
    items = rng.permutation(num_items)[:ni0][ranks].astype(np.int32)
    data = peers._Data(users, items, nu, num_items)
    for batch in [int(x) for x in args.batches.split(",")]:
      ns = argparse.Namespace(batch=batch)
      cfg = peers._our_config(ns, d, 1, 1e-3, 0.0)
      cfg.optimizer.sparse = "adam"
      cfg.optimizer.sparse_rows = args.sparse_rows
      cfg.train.log_every_steps = 1 << 20  # one call per epoch
      t0 = time.perf_counter()
      ours = peers.Ours(data, cfg, mesh)
      spe = ours.epochs.steps_per_epoch
      while ours.epochs.step < spe:  # epoch 0: compile + warm-up
        ours.state, m, _ = ours.epochs.advance(ours.task, ours.state, spe)
      jax.block_until_ready((ours.state, m))
      setup = time.perf_counter() - t0
      t1 = time.perf_counter()
      while ours.epochs.step < 2 * spe:
        ours.state, m, _ = ours.epochs.advance(ours.task, ours.state, 2 * spe)
      jax.block_until_ready((ours.state, m))
      secs = time.perf_counter() - t1
      du, di = distinct_rows(users, items, num_items, batch, rng)
      step_bytes = 3 * batch * row_b + (du + di) * 2 * (row_b + mom_b)
      step_s = secs / spe
      frac = step_bytes / step_s / bw
      rows.append(
        f"| {num_items:,} | {batch:,} | {spe} | {secs:.3f} | {spe * batch / secs / 1e6:.1f} | "
        f"{step_s * 1e3:.2f} | {du:,.0f} + {di:,.0f} | {step_bytes / 1e6:.1f} | "
        f"{step_bytes / step_s / 1e12:.3f} | {frac:.1%} | {setup:.1f} | "
        f"{float(m['loss'][0]):.4f} |"
      )
      print(rows[-1], flush=True)
      del ours
  print(f"\ncopy bandwidth (ceiling) {bw / 1e12:.2f} TB/s")
  print(
    "| item rows | batch | steps/epoch | epoch s | M ex/s | ms/step | distinct rows u + i "
    "| min MB/step | min TB/s | of ceiling | set-up + epoch 0 s | loss |"
  )
  print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
  print("\n".join(rows))


if __name__ == "__main__":
  main()
