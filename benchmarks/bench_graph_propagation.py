r"""Propagation methods of the user-item graph, and the XLA primitives behind the choice.

For each graph size: LightGCN propagation (2 layers, d=64) value + gradient of a loss on
all propagated rows, jitted, for every ``model.propagation`` method
(``mmrec_jax.graph.propagation``), plus the raw primitives of the segment path (the row
gather ``x[idx]`` and the ``segment_sum`` of the [edges, d] messages) and scipy's CSR
product on the host. Medians and 25th percentiles of ``--reps`` calls after two warm-up
calls; the 1-minute load average is printed beside each line.

    .venv/bin/python benchmarks/bench_graph_propagation.py            # ML-100K and ML-1M shapes
    .venv/bin/python benchmarks/bench_graph_propagation.py --sizes 943x1682x100000

Graphs are synthetic (log-normal user activity, Zipf-like item popularity, duplicates
removed), of the given users x items x sampled interactions.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse

from mmrec_jax.graph import propagation


def graph(nu: int, ni: int, n: int, seed: int = 0):
  rng = np.random.default_rng(seed)
  pu = rng.lognormal(0.0, 1.0, nu)
  pi = 1.0 / np.arange(1, ni + 1) ** 0.9
  u = rng.choice(nu, n, p=pu / pu.sum())
  i = rng.choice(ni, n, p=pi / pi.sum())
  return u, i


def timed(f, *args, reps: int) -> tuple[float, float]:
  for _ in range(2):
    jax.block_until_ready(f(*args))
  ts = []
  for _ in range(reps):
    t = time.perf_counter()
    jax.block_until_ready(f(*args))
    ts.append(time.perf_counter() - t)
  return 1000 * float(np.median(ts)), 1000 * float(np.percentile(ts, 25))


def run_size(size: str, methods: list[str], reps: int) -> None:
  nu, ni, n = map(int, size.split("x"))
  users, items = graph(nu, ni, n)
  rng = np.random.default_rng(1)
  d = 64
  u0 = jnp.asarray(rng.normal(size=(nu, d)), jnp.float32)
  i0 = jnp.asarray(rng.normal(size=(ni, d)), jnp.float32)
  gu = jnp.asarray(rng.normal(size=(nu, d)), jnp.float32)
  gi = jnp.asarray(rng.normal(size=(ni, d)), jnp.float32)

  def loss(u, i, g):
    pu, pi = propagation.lightgcn_propagate(u, i, g, 2)
    return jnp.sum(pu * gu) + jnp.sum(pi * gi)

  vg = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))
  ne = 0
  for method in methods:
    g = propagation.user_item_graph(users, items, nu, ni, method=method)
    ne = int(g.edges.src.shape[0])
    med, p25 = timed(vg, u0, i0, g, reps=reps)
    row = f"LightGCN 2 layers value+grad, {method}"
    print(f"| {size} | {ne} | {row} | {med:.1f} | {p25:.1f} | {os.getloadavg()[0]:.2f} |")
  g = propagation.user_item_graph(users, items, nu, ni)
  gather = jax.jit(lambda x, idx: x.at[idx].get(mode="promise_in_bounds"))
  msg = gather(i0, g.dst)
  seg = jax.jit(lambda m, s: jax.ops.segment_sum(m, s, num_segments=nu))
  r = scipy.sparse.csr_matrix(
    (np.asarray(g.weight), (np.asarray(g.src), np.asarray(g.dst))), shape=(nu, ni)
  )
  x = np.asarray(i0)
  for what, f, args in (
    ("XLA row gather x[dst] -> [edges, 64]", gather, (i0, g.dst)),
    ("XLA segment_sum [edges, 64] -> users", seg, (msg, g.src)),
    ("scipy CSR R @ x (host, 1 thread)", lambda x: r @ x, (x,)),
  ):
    med, p25 = timed(f, *args, reps=reps)
    print(f"| {size} | {ne} | {what} | {med:.2f} | {p25:.2f} | {os.getloadavg()[0]:.2f} |")


def main() -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--sizes", default="943x1682x100000,6040x3706x1000000")
  p.add_argument("--methods", default="segment,dense,host_csr")
  p.add_argument("--reps", type=int, default=10)
  a = p.parse_args()
  print(f"jax {jax.__version__}, {jax.devices()[0].platform}, {os.cpu_count()} cores")
  print("| graph | edges | what | ms median | p25 | load |")
  print("|---|---|---|---|---|---|")
  for size in a.sizes.split(","):
    run_size(size, a.methods.split(","), a.reps)
  return 0


if __name__ == "__main__":
  sys.exit(main())
