r"""A/B of the in-place ordering (optim/sparse.py:order_after) on ML-100K device epochs.

Two Tasks in one process, one traced with ``order_after`` replaced by the identity (the
step before stop 15), the other as shipped; their epochs alternate, and the script
prints the medians and whether the two states are equal at the end (they must be: the
ordering changes no value). ML-100K from the recbole 1.2.1 wheel, as bench_bpr_peers.py.

  .venv/bin/python benchmarks/bench_inplace_ab.py --batch 1024 --negatives 4 --sparse sgd
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import types

import bench_bpr_peers as peers  # its ML-100K loader, config and device-epoch runner
import jax
import numpy as np

from mmrec_jax import sharding
from mmrec_jax.optim import sparse
from mmrec_jax.step import update


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--recbole-dir", default="/tmp/recbole_dl/recbole/dataset_example/ml-100k")
  p.add_argument("--batch", type=int, default=1024)
  p.add_argument("--negatives", type=int, default=4)
  p.add_argument("--sparse", default="sgd", help="optimizer.sparse")
  p.add_argument("--epochs", type=int, default=15, help="timed epochs per system")
  a = p.parse_args()
  args = types.SimpleNamespace(recbole_dir=a.recbole_dir, batch=a.batch)
  mesh = sharding.make_mesh()
  data, _ = peers.ml100k(args, tempfile.mkdtemp())
  shipped = sparse.order_after
  systems = {}
  for name, fn in (("unordered", lambda x, values: x), ("ordered", shipped)):
    update.order_after = sparse.order_after = fn  # looked up when the step is traced
    cfg = peers._our_config(args, 64, a.negatives, 100.0 if a.sparse == "sgd" else 1e-3, 4e-3)
    cfg.input.exclude_positives = True
    cfg.optimizer.sparse = a.sparse
    ours = peers.Ours(data, cfg, mesh)
    ours.epoch()  # compile
    ours.epoch()
    systems[name] = ours
  update.order_after = sparse.order_after = shipped
  times = {k: [] for k in systems}
  for _ in range(a.epochs):
    for k, ours in systems.items():
      times[k].append(ours.epoch())
  states = [jax.tree.leaves(jax.device_get(o.state)) for o in systems.values()]
  equal = all(np.array_equal(x, y) for x, y in zip(*states))
  print(f"batch {a.batch}, {a.negatives} neg, sparse {a.sparse}; states equal: {equal}")
  for k, ts in times.items():
    print(
      f"  {k}: median {np.median(ts) * 1e3:.1f} ms/epoch, p25 {np.percentile(ts, 25) * 1e3:.1f}"
    )
  return 0 if equal else 1


if __name__ == "__main__":
  sys.exit(main())
