"""Random-row update cost: a table and its Adam moments split, or in one row-major array.

The question (issue #12, the 1e7 vs 1e5 step ratio): would the sparse Adam step touch
big tables faster if a row's parameters ``[64]`` and moments ``[mu | nu | count] = [129]``
sat in one ``[N, 193]`` array (one random access per row instead of two)? Each call
gathers ``--rows`` distinct power-law rows (log-uniform ranks through a fixed random
permutation of the ids, fresh every call), does an Adam-like elementwise update and
scatters them back in place (donated buffers), as ``optim/sparse.py`` does. The two
layouts alternate call by call; medians over ``--rounds`` x ``--calls`` calls.

  .venv/bin/python benchmarks/bench_row_layout.py [--sizes 100000,10000000]

Prints a Markdown table. Result (stop 16): the one-array layout is not faster.
"""

from __future__ import annotations

import argparse
import functools
import os
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax
import jax.numpy as jnp
import numpy as np

DIM, STATE = 64, 2 * 64 + 1


@functools.partial(jax.jit, donate_argnums=(0, 1))
def split_step(table, moments, ids):
  rows, state = table[ids], moments[ids]
  new_rows = rows * 0.999 + state[:, :DIM] * 1e-3
  new_state = state * 0.9 + 0.1
  return table.at[ids].set(new_rows, mode="drop"), moments.at[ids].set(new_state, mode="drop")


@functools.partial(jax.jit, donate_argnums=(0,))
def fused_step(both, ids):
  r = both[ids]
  new_rows = r[:, :DIM] * 0.999 + r[:, DIM : 2 * DIM] * 1e-3
  new_state = r[:, DIM:] * 0.9 + 0.1
  return both.at[ids].set(jnp.concatenate([new_rows, new_state], 1), mode="drop")


def _ids(rng, perm, k):
  """``k`` distinct power-law ids (a fixed shape: padded with the first id)."""
  n = perm.size
  rank = np.floor(np.exp(rng.random(2 * k) * np.log(n + 1.0))).astype(np.int64) - 1
  u = np.unique(perm[np.clip(rank, 0, n - 1)])[:k]
  return jnp.asarray(np.concatenate([u, np.full(k - u.size, u[0])]).astype(np.int32))


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--sizes", default="100000,10000000")
  p.add_argument("--rows", type=int, default=6000)
  p.add_argument("--rounds", type=int, default=5)
  p.add_argument("--calls", type=int, default=35)
  a = p.parse_args()
  rng = np.random.default_rng(0)
  print(f"load average before: {os.getloadavg()}")
  print("| rows in the table | split table + moments ms | one [N, 193] array ms |")
  print("|---:|---:|---:|")
  for n in (int(float(x)) for x in a.sizes.split(",")):
    perm = rng.permutation(n)
    table, moments = jnp.ones((n, DIM)), jnp.ones((n, STATE))
    both = jnp.ones((n, DIM + STATE))
    for _ in range(5):  # compile and touch
      ids = _ids(rng, perm, a.rows)
      table, moments = split_step(table, moments, ids)
      both = fused_step(both, ids)
    split, fused = [], []
    for _ in range(a.rounds * a.calls):
      ids = jax.block_until_ready(_ids(rng, perm, a.rows))
      t = time.perf_counter()
      table, moments = jax.block_until_ready(split_step(table, moments, ids))
      split.append(time.perf_counter() - t)
      t = time.perf_counter()
      both = jax.block_until_ready(fused_step(both, ids))
      fused.append(time.perf_counter() - t)
    print(f"| {n:.0e} | {np.median(split) * 1e3:.2f} | {np.median(fused) * 1e3:.2f} |", flush=True)
    del table, moments, both
  print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
  main()
