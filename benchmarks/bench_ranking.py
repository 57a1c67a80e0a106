"""Pointwise rankers: ML-100K quality (+ plain-PyTorch MLP), ML-25M-shaped speed, memory.

Sub-commands (results are appended as JSON lines to ``--out`` so a long run can be read
while it goes; ``report`` turns them into the Markdown tables of RESULTS_ranking.md):

  quality    ML-100K, label rating > 3, global random 80/20 (seed 42; 10% of train as
             validation), experiments/ml100k_ranking.py; per seed, for each ranker with
             and without the handcrafted content features, our run through
             ``train_and_evaluate``, then the same MLP in plain PyTorch on the same rows
             (same inputs, widths, init scales, Adam 1e-3, batch, epochs, early stopping
             on valid AUC), alternating ours and theirs.
  speed      DLRM train steps/s on ML-25M-shaped synthetic data with planted labels
             (162,541 users x 59,047 items, 20 genres, a 64-d frozen item table; label =
             Bernoulli(sigmoid(planted user . item + genre effect))), batch 8192 on one
             CPU device; then the held-out AUC every ``--eval-every`` steps -> PNG.
  memory     per-device bytes of the compiled DLRM step (compile only, abstract inputs)
             at ML-25M shape with 2048-d + 1024-d frozen tables, for 1..64 fake devices.
  two_stage  see mmrec_jax/two_stage.py (retrieval alone vs retrieval + ranker).

  .venv/bin/python benchmarks/bench_ranking.py quality --seeds 0,1,2,3,4
  .venv/bin/python benchmarks/bench_ranking.py speed
  .venv/bin/python benchmarks/bench_ranking.py memory
  .venv/bin/python benchmarks/bench_ranking.py report
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import pathlib
import sys
import tempfile
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "ranking_results.jsonl"
# The ranker the plain-PyTorch peer re-implements (the notebooks' MLP).
TORCH_PEER = "mlp_ranker"


def _load(name: str):
  spec = importlib.util.spec_from_file_location(name, ROOT / "experiments" / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _load_avg() -> float:
  return round(os.getloadavg()[0], 2)


def _append(out: pathlib.Path, row: dict) -> None:
  row = {**row, "load": _load_avg(), "time": time.strftime("%H:%M:%S")}
  print(json.dumps(row), flush=True)
  with open(out, "a", encoding="utf-8") as f:
    f.write(json.dumps(row) + "\n")


# ----------------------------------------------------------------------------- quality
def _config(model: str, content: bool, seed: int):
  arg = ",".join([model] + ([] if content else ["ids"]))
  c = _load("ml100k_ranking").get_config(arg)
  c.unlock()
  c.seed = seed
  c.train.progress_bar = False
  c.lock()
  return c


def ours(model: str, content: bool, seed: int) -> dict:
  from mmrec_jax.train import train_and_evaluate

  with tempfile.TemporaryDirectory() as d:
    t0 = time.time()
    r = train_and_evaluate(_config(model, content, seed), d)
    return {
      "impl": "ours",
      "model": model,
      "content": content,
      "seed": seed,
      "test_auc": r["test"]["auc"],
      "test_gauc": r["test"]["gauc"],
      "test_logloss": r["test"]["logloss"],
      "valid_auc": r["valid"]["auc"],
      "best_step": r["best_step"],
      "wall_s": round(time.time() - t0, 1),
    }


class RowAdam:
  """Lazy Adam with a per-row step count, as ``mmrec_jax.optim.sparse`` (plain torch).

  Only the rows a batch used are updated; bias correction uses how often the row was
  updated. (torch's SparseAdam corrects with the tensor's global step instead.)
  """

  def __init__(self, params, lr, b1=0.9, b2=0.999, eps=1e-8):
    import torch

    self.params, self.lr, self.b1, self.b2, self.eps = list(params), lr, b1, b2, eps
    self.m = [torch.zeros_like(p) for p in self.params]
    self.v = [torch.zeros_like(p) for p in self.params]
    self.c = [torch.zeros(p.shape[0]) for p in self.params]

  def zero_grad(self):
    for p in self.params:
      p.grad = None

  def step(self, rows_per_param):
    import torch

    with torch.no_grad():
      for p, m, v, c, rows in zip(self.params, self.m, self.v, self.c, rows_per_param):
        g = p.grad[rows]
        m[rows] = self.b1 * m[rows] + (1 - self.b1) * g
        v[rows] = self.b2 * v[rows] + (1 - self.b2) * g * g
        c[rows] += 1
        cc = c[rows][:, None]
        m_hat = m[rows] / (1 - self.b1**cc)
        v_hat = v[rows] / (1 - self.b2**cc)
        p[rows] -= self.lr * m_hat / (v_hat.sqrt() + self.eps)


def torch_mlp(content: bool, seed: int, opt: str = "row_adam") -> dict:
  """The notebooks' MLP in plain PyTorch on the rows our run trains/evaluates on.

  ``opt``: 'row_adam' (ID and side tables by :class:`RowAdam`, the optimizer our run
  uses) or 'sparse_adam' (torch.optim.SparseAdam for the ID tables, dense Adam for the
  side tables); MLP layers by torch.optim.Adam either way.
  """
  import torch
  from sklearn.metrics import roc_auc_score

  from mmrec_jax.data import prepare
  from mmrec_jax.data.labelled import labelled_rows
  from mmrec_jax.data.side_features import build_side_features

  torch.set_num_threads(1)  # 2 threads under a loaded 2-core machine spun 5x slower
  torch.manual_seed(seed)
  cfg = _config(TORCH_PEER, content, seed)
  ds = prepare.prepare(cfg.data)
  thr = float(cfg.data.label_threshold)
  rows = {
    s: labelled_rows(ds.split(s), thr, num_items=ds.num_items) for s in ("train", "valid", "test")
  }
  side = build_side_features(ds, cfg.data, tuple(cfg.data.side_features))
  fields = side.fields
  feats = ds.features("text").to_array().astype(np.float32) if content else None
  d, h = int(cfg.model.embed_dim), int(cfg.model.hidden_dim)

  class Net(torch.nn.Module):
    def __init__(self):
      super().__init__()
      self.user = torch.nn.Embedding(ds.num_users, d, sparse=opt == "sparse_adam")
      self.item = torch.nn.Embedding(ds.num_items, d, sparse=opt == "sparse_adam")
      self.side = torch.nn.ModuleDict({f: torch.nn.Embedding(side.vocab[f], d) for f in fields})
      for e in [self.user, self.item, *self.side.values()]:
        torch.nn.init.normal_(e.weight, std=0.1)
      in_dim = (2 + len(fields)) * d + (feats.shape[1] if content else 0)
      layers, prev = [], in_dim
      for _ in range(int(cfg.model.num_layers)):
        layers += [torch.nn.Linear(prev, h), torch.nn.ReLU()]
        prev = h
      layers.append(torch.nn.Linear(prev, 1))
      for m in layers:
        if isinstance(m, torch.nn.Linear):  # lecun normal (truncated), zero bias: as flax
          torch.nn.init.trunc_normal_(m.weight, std=(1 / m.in_features) ** 0.5 / 0.8796)
          torch.nn.init.zeros_(m.bias)
      self.mlp = torch.nn.Sequential(*layers)

    def forward(self, u, i):
      parts = [self.user(u), self.item(i)]
      for f in fields:
        bag = bags[f][u if side.kinds[f] == "users" else i]  # [n, L], -1 = empty slot
        w = (bag >= 0).float()[..., None]
        parts.append((self.side[f].weight[bag.clamp(min=0)] * w).sum(1))  # sum pooling
      if content:
        parts.append(feat_t[i])
      return self.mlp(torch.cat(parts, 1))[:, 0]

  bags = {f: torch.from_numpy(np.asarray(side.bags[f], np.int64)) for f in fields}
  feat_t = torch.from_numpy(feats) if content else None
  net = Net()
  sparse = [net.user.weight, net.item.weight]
  side_params = [e.weight for e in net.side.values()]
  table_lr = float(cfg.optimizer.sparse_learning_rate)
  if opt == "sparse_adam":
    opt_sparse = torch.optim.SparseAdam(sparse, lr=table_lr)
    dense_params = list(net.mlp.parameters()) + side_params
  else:
    opt_sparse = RowAdam(sparse + side_params, lr=table_lr)
    dense_params = list(net.mlp.parameters())
  opt_dense = torch.optim.Adam(dense_params, lr=float(cfg.optimizer.learning_rate))

  def touched(u, i):
    """Rows of each RowAdam table the batch used (users, items, then side fields)."""
    rows = [torch.unique(u), torch.unique(i)]
    for f in fields:
      bag = bags[f][u if side.kinds[f] == "users" else i]
      rows.append(torch.unique(bag[bag >= 0]))
    return rows

  tr = rows["train"]
  u_all = torch.from_numpy(tr.users.astype(np.int64))
  i_all = torch.from_numpy(tr.items.astype(np.int64))
  y_all = torch.from_numpy(tr.labels)
  bs = int(cfg.input.batch_size)
  gen = torch.Generator().manual_seed(seed)

  def auc(split):
    r = rows[split]
    with torch.no_grad():
      z = net(
        torch.from_numpy(r.users.astype(np.int64)), torch.from_numpy(r.items.astype(np.int64))
      )
    return float(roc_auc_score(r.labels, z.numpy())), z

  best, best_test, bad, t0, steps = -1.0, None, 0, time.time(), 0
  for _ in range(int(cfg.train.num_epochs)):
    perm = torch.randperm(len(tr), generator=gen)
    for s in range(0, len(tr) - bs + 1, bs):  # full batches only, like our pipeline
      idx = perm[s : s + bs]
      loss = torch.nn.functional.binary_cross_entropy_with_logits(
        net(u_all[idx], i_all[idx]), y_all[idx]
      )
      opt_sparse.zero_grad()
      opt_dense.zero_grad()
      loss.backward()
      if opt == "sparse_adam":
        opt_sparse.step()
      else:
        opt_sparse.step(touched(u_all[idx], i_all[idx]))
      opt_dense.step()
      steps += 1
    v, _ = auc("valid")
    if v > best:
      best, bad, best_step = v, 0, steps
      best_test = auc("test")[0]
    else:
      bad += 1
      if bad >= int(cfg.train.early_stopping_patience):
        break
  return {
    "impl": "torch" if opt == "row_adam" else "torch_sparseadam",
    "opt": opt,
    "model": TORCH_PEER,
    "content": content,
    "seed": seed,
    "test_auc": best_test,
    "valid_auc": best,
    "best_step": best_step,
    "wall_s": round(time.time() - t0, 1),
  }


def quality(args) -> None:
  models = args.models.split(",")
  for seed in [int(s) for s in args.seeds.split(",")]:
    for content in (True, False):
      for model in models:
        _append(args.out, ours(model, content, seed))
        if model == TORCH_PEER and not args.no_torch:
          _append(args.out, torch_mlp(content, seed, args.torch_opt))


def torch_only(args) -> None:
  for seed in [int(s) for s in args.seeds.split(",")]:
    for content in (True, False):
      _append(args.out, torch_mlp(content, seed, args.torch_opt))


# ----------------------------------------------------------------------------- speed
ML25M_USERS, ML25M_ITEMS, GENRES = 162_541, 59_047, 20


def planted(num_rows: int, seed: int, dense_dim: int = 64):
  """ML-25M-shaped rows with planted labels (module doc); returns arrays and the truth."""
  rng = np.random.default_rng(seed)
  latent = 8
  uf = rng.normal(size=(ML25M_USERS, latent)).astype(np.float32)
  vf = rng.normal(size=(ML25M_ITEMS, latent)).astype(np.float32)
  genre = np.full((ML25M_ITEMS, 3), -1, np.int32)
  k = rng.integers(1, 4, ML25M_ITEMS)
  for j in range(3):
    genre[:, j] = np.where(j < k, rng.integers(0, GENRES, ML25M_ITEMS), -1)
  g_eff = rng.normal(size=GENRES).astype(np.float32)
  # The frozen item table carries the item factors (plus noise), so content helps.
  proj = rng.normal(size=(latent, dense_dim)).astype(np.float32) / np.sqrt(latent)
  feats = (vf @ proj + 0.5 * rng.normal(size=(ML25M_ITEMS, dense_dim))).astype(np.float32)
  pop = rng.zipf(1.3, ML25M_ITEMS * 4) % ML25M_ITEMS
  users = rng.integers(0, ML25M_USERS, num_rows).astype(np.int32)
  items = pop[rng.integers(0, pop.shape[0], num_rows)].astype(np.int32)
  ge = np.where(genre[items] >= 0, g_eff[np.maximum(genre[items], 0)], 0).sum(1)
  logit = np.sum(uf[users] * vf[items], 1) / np.sqrt(latent) * 2.0 + ge
  labels = (rng.random(num_rows) < 1 / (1 + np.exp(-logit))).astype(np.float32)
  return users, items, labels, genre, feats, logit.astype(np.float32)


def speed(args) -> None:
  """DLRM examples/s on ML-25M-shaped planted data, then the held-out AUC curve (PNG)."""
  import dataclasses

  import jax

  from mmrec_jax import config as config_lib
  from mmrec_jax import sharding
  from mmrec_jax.data.side_features import SideFeatures
  from mmrec_jax.evaluation.pointwise import pointwise_metrics
  from mmrec_jax.step import DataInfo, Task

  b = int(args.batch)
  n_train = b * args.steps
  users, items, labels, genre, feats, truth = planted(n_train + 200_000, 0)
  from sklearn.metrics import roc_auc_score

  # The ceiling: the AUC of the planted logits themselves on the held-out rows.
  oracle = float(roc_auc_score(labels[n_train:], truth[n_train:]))
  tu, ti, ty = users[:n_train], items[:n_train], labels[:n_train]
  hu, hi, hy = users[n_train:], items[n_train:], labels[n_train:]
  order = np.argsort(hu, kind="stable")  # held-out rows grouped by user
  hu, hi, hy = hu[order], hi[order], hy[order]
  c = config_lib.base_config()
  c.model.name = args.model
  c.model.embed_dim = 16
  c.model.hidden_dim = 128
  c.model.num_layers = 2
  c.data.label_threshold = 0.5  # the batch's "rating" carries the 0/1 label
  c.data.modalities = ("image",)
  c.input.batch_size = b
  c.train.compute_dtype = args.dtype
  info = DataInfo(
    num_users=ML25M_USERS,
    num_items=ML25M_ITEMS,
    features={"image": feats},
    feature_masks={"image": np.ones(ML25M_ITEMS, bool)},
    item_counts=np.ones(ML25M_ITEMS, np.int64),
  )
  side = SideFeatures({"genre": "items"}, {"genre": genre}, {"genre": GENRES}, {"genre": []})
  info = dataclasses.replace(info, side=side)
  mesh = sharding.make_mesh()
  task = Task(c, info, mesh)
  state = task.init(0)
  neg = np.zeros((b, 1), np.int32)

  def batch(k):
    s = slice(k * b, (k + 1) * b)
    return sharding.global_batch_from_local(
      mesh, {"user": tu[s], "pos": ti[s], "neg": neg, "rating": ty[s]}
    )

  score = lambda u, i: task.regime.score_rows(state["params"], u, i)
  curve = [{"step": 0, "auc": pointwise_metrics(score, hu, hi, hy, mesh, chunk=1 << 16)["auc"]}]
  if args.input == "device":
    # What the trainer runs on one device (loop/steps.py): the train rows on device, a
    # keyed shuffle per epoch, ``eval_every`` steps per jitted call.
    from mmrec_jax.data.device_epoch import DeviceEpochs
    from mmrec_jax.data.negatives import NegativeSampler

    epochs = DeviceEpochs(
      users=tu,
      items=ti,
      ratings=ty,
      num_items=ML25M_ITEMS,
      batch_size=b,
      num_negatives=1,
      sampler=NegativeSampler("uniform", ML25M_ITEMS),
      logq=None,
      seed=0,
      mesh=mesh,
      max_chunk=args.eval_every,
    )

    def run(state, start, limit):
      del start  # the epochs object knows where it is
      while epochs.step < limit:
        state, metrics, n = epochs.advance(task, state, limit)
      return state, jax.tree.map(lambda x: x[n - 1], metrics)

  else:

    def run(state, start, limit):
      for k in range(start, limit):  # host numpy batches, one dispatch a step
        state, m = task.train_step(state, batch(k))
      return state, m

  state, m = run(state, 0, 5)  # warm-up / compile (not timed)
  jax.block_until_ready(m)
  t0, step, timed = time.perf_counter(), 5, 0.0
  while step < args.steps:
    t = time.perf_counter()
    limit = min(args.steps, (step // args.eval_every + 1) * args.eval_every + 5)
    state, m = run(state, step, limit)
    step = limit
    jax.block_until_ready(m)
    timed += time.perf_counter() - t
    res = pointwise_metrics(score, hu, hi, hy, mesh, chunk=1 << 16)
    curve.append({"step": step, "auc": res["auc"], "loss": float(m["loss"])})
    print(curve[-1], flush=True)
  ex_s = (step - 5) * b / timed
  _append(
    args.out,
    {
      "impl": "speed",
      "model": args.model,
      "batch": b,
      "dtype": args.dtype,
      "input": args.input,
      "devices": jax.device_count(),
      "cpu_count": os.cpu_count(),
      "train_steps_timed": step - 5,
      "examples_per_s": round(ex_s),
      "oracle_auc": round(oracle, 4),
      "curve": curve,
      "wall_s": round(time.perf_counter() - t0, 1),
    },
  )
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, ax = plt.subplots(figsize=(6, 3.5))
  ax.plot([r["step"] for r in curve], [r["auc"] for r in curve], marker="o", label=args.model)
  ax.axhline(oracle, color="gray", linestyle="--", label="planted logits (ceiling)")
  ax.legend()
  ax.set(
    xlabel="step",
    ylabel="held-out AUC",
    title=f"{args.model}, ML-25M-shaped planted labels, batch {b}",
  )
  fig.tight_layout()
  fig.savefig(args.png, dpi=100)
  print(f"{ex_s:,.0f} examples/s; curve -> {args.png}")


# ----------------------------------------------------------------------------- memory
def memory_probe(n_devices: int, model: str) -> dict:
  """Per-device bytes of the compiled step (compile only) on ``n_devices`` devices."""
  import jax

  from mmrec_jax import sharding
  from mmrec_jax.data.side_features import SideFeatures
  from mmrec_jax.step import DataInfo, Task

  c = _load("ml25m_ranking").get_config(model)
  c.unlock()
  c.data.modalities = ("image", "text")
  c.lock()
  mesh = sharding.make_mesh(devices=jax.devices()[:n_devices])
  genre = np.zeros((ML25M_ITEMS, 3), np.int32)
  info = DataInfo(
    num_users=ML25M_USERS,
    num_items=ML25M_ITEMS,
    features={
      "image": np.zeros((ML25M_ITEMS, 2048), np.float32),
      "text": np.zeros((ML25M_ITEMS, 1024), np.float32),
    },
    feature_masks={m: np.ones(ML25M_ITEMS, bool) for m in ("image", "text")},
    item_counts=np.ones(ML25M_ITEMS, np.int64),
    side=SideFeatures({"genre": "items"}, {"genre": genre}, {"genre": GENRES}, {"genre": []}),
  )
  task = Task(c, info, mesh)
  compiled = task.lower_train_step(c.input.batch_size, c.input.num_negatives).compile()
  mem = compiled.memory_analysis()
  state = task.abstract_state()
  per_dev_state = sum(
    int(np.prod(a.sharding.shard_shape(a.shape))) * np.dtype(a.dtype).itemsize
    for a in jax.tree.leaves(state)
  )
  frozen = sum(
    int(np.prod(a.sharding.shard_shape(a.shape))) * a.dtype.itemsize
    for a in jax.tree.leaves(task.regime.frozen)
  )
  return {
    "impl": "memory",
    "model": c.model.name,
    "devices": n_devices,
    "batch": int(c.input.batch_size),
    "state_bytes_per_device": per_dev_state,
    "frozen_bytes_per_device": frozen,
    "argument_bytes": int(mem.argument_size_in_bytes),
    "output_bytes": int(mem.output_size_in_bytes),
    "temp_bytes": int(mem.temp_size_in_bytes),
    "alias_bytes": int(mem.alias_size_in_bytes),
  }


def memory(args) -> None:
  import subprocess

  counts = [int(n) for n in args.devices.split(",")]
  for n in counts:
    env = {
      **os.environ,
      "JAX_PLATFORMS": "cpu",
      "XLA_FLAGS": f"--xla_force_host_platform_device_count={max(counts)}",
    }
    code = (
      f"import sys, json; sys.path.insert(0, {str(ROOT)!r}); sys.path.insert(0, {str(ROOT / 'benchmarks')!r});"
      f"import bench_ranking as b; print('PROBE', json.dumps(b.memory_probe({n}, {args.model!r})))"
    )
    r = subprocess.run(
      [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False
    )
    line = [x for x in r.stdout.splitlines() if x.startswith("PROBE ")]
    if not line:
      raise SystemExit(r.stderr[-3000:])
    _append(args.out, json.loads(line[0][6:]))


# ----------------------------------------------------------------------------- report
def report(args) -> None:
  rows = [json.loads(line) for line in open(args.out, encoding="utf-8")]
  for r in rows:  # rows written before the optimizer was recorded used SparseAdam
    if r.get("impl") == "torch" and "opt" not in r:
      r["impl"] = "torch_sparseadam"
  q = [r for r in rows if r.get("impl") in ("ours", "torch", "torch_sparseadam")]
  groups = {}
  for r in q:
    groups.setdefault((r["impl"], r["model"], r["content"]), []).append(r)
  print(
    "| implementation | model | content features | seeds | test AUC mean ± std | test GAUC | test LogLoss |"
  )
  print("|---|---|---|---|---|---|---|")
  for (impl, model, content), rs in sorted(groups.items()):
    a = np.array([r["test_auc"] for r in rs])
    g = [r.get("test_gauc") for r in rs if r.get("test_gauc") is not None]
    ll = [r.get("test_logloss") for r in rs if r.get("test_logloss") is not None]
    print(
      f"| {impl} | {model} | {'yes' if content else 'no'} | {len(rs)} | "
      f"{a.mean():.4f} ± {a.std(ddof=1) if len(a) > 1 else 0:.4f} | "
      f"{np.mean(g):.4f} | {np.mean(ll):.4f} |"
      if g
      else f"| {impl} | {model} | {'yes' if content else 'no'} | {len(rs)} | "
      f"{a.mean():.4f} ± {a.std(ddof=1) if len(a) > 1 else 0:.4f} | - | - |"
    )
  print()
  print("| model | lift of content features (test AUC, paired by seed) |")
  print("|---|---|")
  for model in sorted({r["model"] for r in q if r["impl"] == "ours"}):
    by = {}
    for r in q:
      if r["impl"] == "ours" and r["model"] == model:
        by.setdefault(r["seed"], {})[r["content"]] = r["test_auc"]
    d = [v[True] - v[False] for v in by.values() if True in v and False in v]
    if d:
      print(
        f"| {model} | {np.mean(d):+.4f} ± {np.std(d, ddof=1) if len(d) > 1 else 0:.4f} ({len(d)} seeds) |"
      )
  print()
  for peer in ("torch", "torch_sparseadam"):
    for content in (True, False):
      o = {
        r["seed"]: r["test_auc"]
        for r in q
        if r["impl"] == "ours" and r["model"] == TORCH_PEER and r["content"] == content
      }
      t = {r["seed"]: r["test_auc"] for r in q if r["impl"] == peer and r["content"] == content}
      common = sorted(set(o) & set(t))
      if common:
        d = np.array([o[k] - t[k] for k in common])
        print(
          f"MLP content={content}: ours - {peer} test AUC over {len(common)} seeds: mean "
          f"{d.mean():+.4f}, per seed {', '.join(f'{x:+.4f}' for x in d)}"
        )


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("command", choices=("quality", "torch", "speed", "memory", "report"))
  p.add_argument("--seeds", default="0,1,2,3,4")
  p.add_argument("--models", default="mlp_ranker,dlrm,dcn_v2")
  p.add_argument("--no-torch", action="store_true")
  p.add_argument("--torch-opt", default="row_adam", choices=("row_adam", "sparse_adam"))
  p.add_argument("--out", type=pathlib.Path, default=OUT)
  p.add_argument("--steps", type=int, default=300)
  p.add_argument("--batch", type=int, default=8192)
  p.add_argument("--eval-every", type=int, default=100)
  p.add_argument("--devices", default="1,2,4,8,16,32,64")
  p.add_argument("--model", default="dlrm")
  p.add_argument("--dtype", default="float32")
  p.add_argument(
    "--input",
    default="device",
    choices=("device", "host"),
    help="speed: epochs on device (the trainer's path on one device) or host batches",
  )
  p.add_argument("--png", type=pathlib.Path, default=ROOT / "benchmarks" / "ranking_auc_curve.png")
  args = p.parse_args()
  commands = {"quality": quality, "torch": torch_only, "report": report, "speed": speed}
  {**commands, "memory": memory}[args.command](args)


if __name__ == "__main__":
  sys.path.insert(0, str(ROOT))
  main()
