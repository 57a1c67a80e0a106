"""Full-ranking evaluation at ML-25M shape: mmrec_jax (chunked, sharded) vs plain numpy/BLAS.

Problem (random, NOT MovieLens data -- only its shape): 162,541 users x 59,047 items,
d = 64 float32 embeddings, ~20M train interactions (masked) and ~2.5M test interactions
(ground truth), drawn with skewed user activity and Zipf item popularity, train and test
disjoint. Every method runs in its own child process so its peak RSS (``ru_maxrss``) is its
own; data generation (same seed; cached in ``--cache_dir`` after the first run, so "data
gen s" is then the load time) is timed separately from evaluation. "eval CPU s" is the
process CPU time of the evaluation (all threads): on a shared machine it varies less than
wall time.

    .venv/bin/python benchmarks/bench_eval.py                      # full size, all methods
    .venv/bin/python benchmarks/bench_eval.py --users 20000 --methods jax   # quick look

Prints one Markdown table row per method.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np


def _csr_from_sorted_keys(key: np.ndarray, num_users: int, num_items: int):
  """CSR from sorted unique ``user * num_items + item`` keys (no second sort)."""
  u, i = np.divmod(key, num_items)
  indptr = np.zeros(num_users + 1, np.int64)
  np.cumsum(np.bincount(u, minlength=num_users), out=indptr[1:])
  return indptr, i.astype(np.int32)


def make_problem(num_users: int, num_items: int, dim: int, n_train: int, n_test: int, seed: int):
  """Random embeddings and disjoint train/test CSRs, vectorised.

  Pairs are drawn with log-normal user activity and Zipf(0.9) item popularity, de-duplicated
  (topped up until ``n_train + n_test`` distinct pairs exist), and each pair goes to test with
  probability ``n_test / (n_train + n_test)``; keys stay sorted, so the CSRs need no sort.
  """
  rng = np.random.default_rng(seed)
  user_cdf = np.cumsum(rng.lognormal(0.0, 1.0, num_users))
  item_w = 1.0 / np.arange(1, num_items + 1) ** 0.9
  rng.shuffle(item_w)
  item_cdf = np.cumsum(item_w)
  need = n_train + n_test
  key = np.zeros(0, np.int64)
  while key.size < need:
    draw = int((need - key.size) * 1.15) + 1000
    u = np.searchsorted(user_cdf, rng.random(draw) * user_cdf[-1]).astype(np.int64)
    i = np.searchsorted(item_cdf, rng.random(draw) * item_cdf[-1]).astype(np.int64)
    key = np.union1d(key, np.minimum(u, num_users - 1) * num_items + np.minimum(i, num_items - 1))
    del u, i
  key = np.sort(rng.choice(key, need, replace=False))
  is_test = rng.random(need) < n_test / need
  train = _csr_from_sorted_keys(key[~is_test], num_users, num_items)
  test = _csr_from_sorted_keys(key[is_test], num_users, num_items)
  del key, is_test
  um = (rng.standard_normal((num_users, dim), np.float32) / np.sqrt(dim)).astype(np.float32)
  im = rng.standard_normal((num_items, dim), np.float32)
  return um, im, train, test


def cached_problem(args):
  """``make_problem`` once per shape and seed, kept in ``--cache_dir`` for the other methods.

  Generation takes minutes at full size on 2 cores; every method must see the same data
  anyway, so the first child writes it (temp file, then rename) and the next ones load it.
  """
  key = f"{args.users}_{args.items}_{args.dim}_{args.train}_{args.test}_{args.seed}"
  path = os.path.join(args.cache_dir, f"eval_problem_{key}.npz") if args.cache_dir else ""
  if path and os.path.exists(path):
    z = np.load(path)
    return (z["um"], z["im"], (z["tr_ptr"], z["tr_idx"]), (z["te_ptr"], z["te_idx"]))
  um, im, train, test = make_problem(
    args.users, args.items, args.dim, args.train, args.test, args.seed
  )
  if path:
    os.makedirs(args.cache_dir, exist_ok=True)
    tmp = path + ".tmp.npz"
    np.savez(tmp, um=um, im=im, tr_ptr=train[0], tr_idx=train[1], te_ptr=test[0], te_idx=test[1])
    os.replace(tmp, path)
  return um, im, train, test


def numpy_eval(um, im, train, test, ks, metrics, chunk):
  """Plain numpy/BLAS chunked scorer: matmul, -inf on train items, argpartition top-k."""
  from mmrec_jax.evaluation.metrics import metrics_from_hits

  kmax = max(ks)
  n_truth = np.diff(test[0])
  users = np.nonzero(n_truth > 0)[0]
  sums = {}
  for s in range(0, users.size, chunk):
    ids = users[s : s + chunk]
    scores = um[ids] @ im.T
    lens = np.diff(train[0])[ids]
    rows = np.repeat(np.arange(ids.size), lens)
    cols = np.concatenate([train[1][train[0][u] : train[0][u + 1]] for u in ids])
    scores[rows, cols] = -np.inf
    part = np.argpartition(-scores, kmax, axis=1)[:, :kmax]
    ps = np.take_along_axis(scores, part, axis=1)
    order = np.lexsort((part, -ps), axis=1)
    top = np.take_along_axis(part, order, axis=1)
    tlen = n_truth[ids]
    trow = np.repeat(np.arange(ids.size), tlen)
    tcols = np.concatenate([test[1][test[0][u] : test[0][u + 1]] for u in ids])
    key_truth = np.sort(trow.astype(np.int64) * im.shape[0] + tcols)
    key_top = np.arange(ids.size)[:, None].astype(np.int64) * im.shape[0] + top
    pos = np.minimum(np.searchsorted(key_truth, key_top), key_truth.size - 1)
    hits = key_truth[pos] == key_top
    vals = metrics_from_hits(hits, tlen, ks, metrics)
    for k, v in vals.items():
      sums[k] = sums.get(k, 0.0) + float(v.sum(dtype=np.float64))
  return {k: v / users.size for k, v in sums.items()}


def child(args) -> None:
  if args.method.startswith("jax"):
    os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={args.devices}"
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
  t0 = time.perf_counter()
  um, im, train, test = cached_problem(args)
  t_data = time.perf_counter() - t0
  rss_data = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
  ks, metrics = (10, 20), ("recall", "ndcg", "precision", "hit", "mrr", "map")
  t0, c0 = time.perf_counter(), time.process_time()
  if args.method == "numpy":
    means = numpy_eval(um, im, train, test, ks, metrics, args.chunk)
  else:
    import jax

    from mmrec_jax.evaluation.ranking import evaluate_embeddings
    from mmrec_jax.sharding import make_mesh

    mesh = make_mesh(data=args.devices // args.model, model=args.model)
    users = np.arange(args.users)
    res = evaluate_embeddings(
      jax.numpy.asarray(um),
      jax.numpy.asarray(im),
      users=users,
      truth=test,
      exclude=train,
      ks=ks,
      metrics=metrics,
      mesh=mesh,
      user_chunk=args.chunk,
      item_chunk=args.item_chunk,
    )
    means = res.metrics
  t_eval, c_eval = time.perf_counter() - t0, time.process_time() - c0
  rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
  print(
    json.dumps(
      {
        "method": args.method,
        "t_data": t_data,
        "t_eval": t_eval,
        "cpu_eval": c_eval,
        "rss_data_mb": rss_data,
        "rss_mb": rss,
        "metrics": means,
        "nnz_train": int(train[1].size),
        "nnz_test": int(test[1].size),
        "users_eval": int((np.diff(test[0]) > 0).sum()),
      }
    )
  )


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--users", type=int, default=162_541)
  p.add_argument("--items", type=int, default=59_047)
  p.add_argument("--dim", type=int, default=64)
  p.add_argument("--train", type=int, default=20_000_000)
  p.add_argument("--test", type=int, default=2_500_000)
  p.add_argument("--chunk", type=int, default=1024)
  p.add_argument("--item_chunk", type=int, default=0)
  p.add_argument("--devices", type=int, default=1, help="fake CPU devices for the jax run")
  p.add_argument("--model", type=int, default=1, help="size of the mesh 'model' axis")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--methods", default="jax,numpy")
  p.add_argument(
    "--cache_dir",
    default="runs/bench_eval_cache",
    help="where the generated problem is kept between methods/runs ('' = off)",
  )
  p.add_argument("--method", default="", help=argparse.SUPPRESS)  # child mode
  args = p.parse_args()
  if args.method:
    child(args)
    return
  scale = args.users / 162_541
  if scale < 1 and args.train == 20_000_000:
    args.train, args.test = int(20_000_000 * scale), int(2_500_000 * scale)
  rows = []
  for method in args.methods.split(","):
    cmd = [sys.executable, __file__, "--method", method] + [
      f"--{k}={getattr(args, k)}"
      for k in (
        "users",
        "items",
        "dim",
        "train",
        "test",
        "chunk",
        "item_chunk",
        "devices",
        "model",
        "seed",
        "cache_dir",
      )
    ]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
  print(
    f"\nusers={args.users} items={args.items} d={args.dim} train_nnz={rows[0]['nnz_train']} "
    f"test_nnz={rows[0]['nnz_test']} evaluated_users={rows[0]['users_eval']} "
    f"chunk={args.chunk} jax mesh=({args.devices // args.model},{args.model}) "
    f"cpu_cores={os.cpu_count()}\n"
  )
  print(
    "| method | eval wall s | eval CPU s | peak RSS MB | RSS after data MB | data gen s "
    "| recall@20 | ndcg@20 |"
  )
  print("|---|---|---|---|---|---|---|---|")
  for r in rows:
    name = (
      "mmrec_jax evaluate_embeddings"
      if r["method"] == "jax"
      else "numpy/BLAS chunked + argpartition"
    )
    print(
      f"| {name} | {r['t_eval']:.1f} | {r['cpu_eval']:.1f} | {r['rss_mb']:.0f} | {r['rss_data_mb']:.0f} | "
      f"{r['t_data']:.1f} | {r['metrics']['recall@20']:.5f} | {r['metrics']['ndcg@20']:.5f} |"
    )
  if len(rows) > 1:
    diff = max(abs(rows[0]["metrics"][k] - rows[1]["metrics"][k]) for k in rows[0]["metrics"])
    print(f"\nmax |metric difference| between methods: {diff:.2e}")


if __name__ == "__main__":
  main()
