"""Train-step time vs catalogue size: sparse row updates keep it flat.

Measures ``Task.train_step`` of BPR-MF and the two-tower model at the same batch with a
small and a huge item table (default 1e5 and 1e7 rows, d=64, sparse Adam), plus dense
optax Adam on the small BPR-MF tables for contrast (whole-table gradients and moments).
The sizes of one model are measured interleaved (rounds of steps, alternating tables)
so load from other processes on a shared machine hits both alike; the first
``--warmup`` steps (compilation, first touch of freshly allocated pages) are not timed.

Every step draws a fresh batch (built on the host before the timer starts): users and
items from a power law over the WHOLE id space (log-uniform ranks, i.e. Zipf with
exponent ~1, mapped through a fixed random permutation of the ids), so a big catalogue
shows its real cost: the touched rows are spread over all of the table, never a handful
of reused batches. ``--row-modes`` compares the sparse step's row addressing
(``optimizer.sparse_rows``: ``unique`` sorts ids, ``dense`` updates the whole table where
touched; see mmrec_jax/optim/sparse.py); ``--unique jnp,sort_search`` compares, in the
same run, alternating, how the ``unique`` mode finds a batch's distinct ids.

  .venv/bin/python benchmarks/bench_step.py                       # 1 CPU device
  .venv/bin/python benchmarks/bench_step.py --devices 8           # 8 fake CPU devices
  .venv/bin/python benchmarks/bench_step.py --items 100000,1000000 --models bpr_mf

Prints one Markdown table (median / p90 ms per step, ratio big/small).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import sys
import time


def _args():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--items", default="100000,10000000")
  p.add_argument("--users", type=int, default=100_000)
  p.add_argument("--batch", type=int, default=4096)
  p.add_argument("--dim", type=int, default=64)
  p.add_argument("--negatives", type=int, default=1)
  p.add_argument("--feature-dim", type=int, default=16, help="two_tower text feature width")
  p.add_argument("--models", default="bpr_mf,two_tower")
  p.add_argument("--sparse", default="adam")
  p.add_argument("--warmup", type=int, default=20)
  p.add_argument("--rounds", type=int, default=6)
  p.add_argument("--steps", type=int, default=10, help="timed steps per round")
  p.add_argument("--devices", type=int, default=1)
  p.add_argument("--no-dense", action="store_true", help="skip the dense-optax contrast")
  p.add_argument(
    "--row-modes", default="auto", help="optimizer.sparse_rows values, e.g. unique,dense"
  )
  p.add_argument(
    "--unique",
    default="default",
    help="how a step finds its distinct ids (optim/sparse.py unique_ids), e.g. jnp,sort_search",
  )
  return p.parse_args()


ARGS = _args()
if ARGS.devices > 1:
  os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={ARGS.devices}"
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from mmrec_jax import config as config_lib  # noqa: E402
from mmrec_jax import sharding  # noqa: E402
from mmrec_jax.models import registry  # noqa: E402
from mmrec_jax.optim import sparse  # noqa: E402
from mmrec_jax.step import DataInfo, Task  # noqa: E402


class _PowerLaw:
  """Ids with a power-law (log-uniform rank) distribution over all of ``n`` ids."""

  def __init__(self, n, rng):
    self.n, self.rng = n, rng
    self.perm = rng.permutation(n).astype(np.int32)

  def draw(self, shape):
    rank = np.floor(np.exp(self.rng.random(shape) * np.log(self.n + 1.0))).astype(np.int64) - 1
    return self.perm[np.clip(rank, 0, self.n - 1)]


class _Batches:
  """A fresh global batch at every call (never reused)."""

  def __init__(self, mesh, num_items, seed=0):
    rng = np.random.default_rng(seed)
    self.mesh, self.users, self.items = mesh, _PowerLaw(ARGS.users, rng), _PowerLaw(num_items, rng)

  def __call__(self):
    return sharding.global_batch_from_local(
      self.mesh,
      {
        "user": self.users.draw(ARGS.batch),
        "pos": self.items.draw(ARGS.batch),
        "neg": self.items.draw((ARGS.batch, ARGS.negatives)),
      },
    )


class _Runner:
  """Holds a state and a step function; ``run(k)`` times k steps."""

  def __init__(self, label, step, state, batches):
    self.label, self.step, self.state, self.batches = label, step, state, batches
    self.times = []

  def run(self, k, record=True):
    for _ in range(k):
      batch = jax.block_until_ready(self.batches())
      t0 = time.perf_counter()
      self.state, metrics = self.step(self.state, batch)
      jax.block_until_ready(metrics)
      if record:
        self.times.append(time.perf_counter() - t0)


def _task_runner(model, num_items, mesh, row_mode="auto"):
  cfg = config_lib.base_config()
  cfg.optimizer.sparse_rows = row_mode
  cfg.model.name = model
  cfg.model.embed_dim = ARGS.dim
  cfg.model.hidden_dim = 128
  cfg.optimizer.sparse = ARGS.sparse
  cfg.data.modalities = ("text",)
  feats, masks = {}, {}
  if registry.get(model).uses_features:
    feats = {
      "text": np.random.default_rng(1).standard_normal(
        (num_items, ARGS.feature_dim), dtype=np.float32
      )
    }
    masks = {"text": np.ones(num_items, bool)}
  info = DataInfo(ARGS.users, num_items, feats, masks, np.ones(num_items, np.int64))
  task = Task(cfg, info, mesh)
  modes = task.regime.row_modes(ARGS.batch, 1 + ARGS.negatives)
  return _Runner(
    f"{model} sparse-{ARGS.sparse} rows={modes['items']}",
    task.train_step,
    task.init(0),
    _Batches(mesh, num_items),
  )


def _dense_runner(num_items, mesh):
  """BPR-MF with whole-table gradients and dense optax Adam (the slow baseline)."""
  rows = sharding.named_sharding(mesh, "items", "embed")
  n_dev = mesh.size
  nu, ni = -(-ARGS.users // n_dev) * n_dev, -(-num_items // n_dev) * n_dev
  tx = optax.adam(1e-3)

  def init(key):
    k1, k2 = jax.random.split(key)
    params = {
      "user": 0.1 * jax.random.normal(k1, (nu, ARGS.dim)),
      "item": 0.1 * jax.random.normal(k2, (ni, ARGS.dim)),
    }
    return {"params": params, "opt": tx.init(params)}

  abstract = jax.eval_shape(init, jax.random.PRNGKey(0))
  shardings = jax.tree.map(lambda a: rows if a.ndim == 2 else sharding.replicated(mesh), abstract)

  def step(state, batch):
    def loss_fn(p):
      u = p["user"][batch["user"]]
      s_pos = jnp.sum(u * p["item"][batch["pos"]], -1)
      s_neg = jnp.einsum("bd,bnd->bn", u, p["item"][batch["neg"]])
      return -jnp.mean(jax.nn.log_sigmoid(s_pos[:, None] - s_neg))

    loss, g = jax.value_and_grad(loss_fn)(state["params"])
    upd, opt = tx.update(g, state["opt"], state["params"])
    return {"params": optax.apply_updates(state["params"], upd), "opt": opt}, loss

  data = sharding.named_sharding(mesh, "batch")
  step_jit = jax.jit(
    step,
    donate_argnums=0,
    in_shardings=(shardings, data),
    out_shardings=(shardings, sharding.replicated(mesh)),
  )
  state = jax.jit(init, out_shardings=shardings)(jax.random.PRNGKey(0))
  return _Runner("bpr_mf dense optax-adam", step_jit, state, _Batches(mesh, num_items))


@contextlib.contextmanager
def _unique_method(method):
  """Steps traced inside use ``unique_ids(..., method=method)`` (``default``: as shipped)."""
  orig = sparse.unique_ids
  if method != "default":
    sparse.unique_ids = functools.partial(orig, method=method)  # row_index's lookup
  try:
    yield
  finally:
    sparse.unique_ids = orig


def _ms(times):
  t = np.asarray(times) * 1e3
  return float(np.median(t)), float(np.percentile(t, 90))


def main():
  mesh = sharding.make_mesh()
  sizes = [int(float(x)) for x in ARGS.items.split(",")]
  print(f"# load average before: {os.getloadavg()}", file=sys.stderr)
  print(
    f"# jax {jax.__version__}, {len(jax.devices())} x {jax.devices()[0].platform}, "
    f"batch {ARGS.batch}, negatives {ARGS.negatives}, d={ARGS.dim}, "
    f"users {ARGS.users}, {ARGS.rounds}x{ARGS.steps} timed steps after "
    f"{ARGS.warmup} warm-up",
    file=sys.stderr,
  )
  rows = []
  for model in ARGS.models.split(","):
    runners = []
    for method in ARGS.unique.split(","):
      for mode in ARGS.row_modes.split(","):
        for n in sizes:
          with _unique_method(method):  # the step is traced in its warm-up
            r = _task_runner(model, n, mesh, mode)
            r.run(ARGS.warmup, record=False)
          if method != "default":
            r.label += f" unique={method}"
          runners.append((n, r))
    for _ in range(ARGS.rounds):
      for _, r in runners:
        r.run(ARGS.steps)
    base = _ms(runners[0][1].times)[0]
    for n, r in runners:
      med, p90 = _ms(r.times)
      rows.append((r.label, n, med, p90, med / base))
    del runners
  if not ARGS.no_dense:
    r = _dense_runner(sizes[0], mesh)
    r.run(max(3, ARGS.warmup // 4), record=False)
    r.run(ARGS.steps)
    med, p90 = _ms(r.times)
    rows.append((r.label, sizes[0], med, p90, float("nan")))
  print(f"# load average after: {os.getloadavg()}", file=sys.stderr)
  print("| step | item rows | median ms | p90 ms | time / smallest table |")
  print("|---|---:|---:|---:|---:|")
  for label, n, med, p90, ratio in rows:
    print(
      f"| {label} | {n:.0e} | {med:.1f} | {p90:.1f} | {'' if np.isnan(ratio) else f'{ratio:.2f}'} |"
    )


if __name__ == "__main__":
  main()
