r"""Classic baselines of mmrec_jax vs their reference implementations, on one ML-100K split.

Ours (registered models of the ``closed_form`` regime, fitted by the same jitted step the
trainer runs) against:
  * EASE    -- Cornac's ``cornac.models.EASE`` (``posB=False``: the paper's B; Cornac's
    default ``posB=True`` also clips negative weights) on the same binary train matrix;
  * iALS    -- implicit's ``AlternatingLeastSquares`` (CPU, ``cg`` solver, 3 CG steps, the
    same regularisation, factors and iterations); implicit weights a pair by its input value
    ``c`` (``(c - 1)`` in the normal equations), so it gets ``c = 1 + alpha`` with its own
    ``alpha=1``: the same objective as ours, different random initial factors;
  * ItemKNN -- RecBole's ``ComputeSimilarity`` formula (shrunk cosine, top-k per item)
    written with scipy/numpy here (RecBole itself is not installed);
  * MostPop -- ``numpy.bincount`` of the train items.
Every model is scored by mmrec_jax's evaluator (``evaluation.evaluate_split``: full ranking,
train items masked in validation, train + valid masked in test) from exported towers, so
only the fits differ. Each family is tuned on VALID ndcg@10 over a small grid, separately
for ours and theirs; the table shows test NDCG@10 / Recall@20 of each one's best-valid
setting. Fit times: at the chosen setting, ``--repeats`` fits alternating ours / theirs,
median and p25 (ours: the jitted step(s) after one compile; the first call, with
compilation, is reported apart), with the load average.

Data: the ``ml-100k.inter`` that ships inside the recbole 1.2.1 wheel
(``pip download --no-deps recbole==1.2.1``; unzip), read with ``data.source=recbole``,
split as ``experiments/ml100k.py`` (per-user temporal 80/10/10).

    .venv/bin/python benchmarks/bench_baselines.py --inter=/tmp/recbole/ml-100k.inter
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import pathlib
import time
from typing import Any

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
SHOWN = ("ndcg@10", "recall@20")

GRIDS: dict[str, list[dict[str, Any]]] = {
  "ease": [dict(reg=r) for r in (50.0, 100.0, 200.0, 500.0, 1000.0)],
  "ials": [
    dict(factors=f, reg=r, alpha=a)
    for f in (64, 128)
    for r in (0.1, 1.0, 10.0)
    for a in (0.0, 1.0, 10.0)
  ],
  "itemknn": [dict(k=k, shrink=s) for k in (50, 100, 200) for s in (0.0, 10.0)],
  "mostpop": [{}],
}
ITERATIONS = 15  # iALS sweeps, implicit's default
# Grid parameter -> our config key, per family; sweeps (steps) of each fit.
TO_CONFIG = {
  "ease": {"reg": "model.reg_weight"},
  "ials": {
    "factors": "model.embed_dim",
    "reg": "model.reg_weight",
    "alpha": "model.confidence_alpha",
  },
  "itemknn": {"k": "model.num_neighbors", "shrink": "model.shrink"},
  "mostpop": {},
}
SWEEPS = {"ials": ITERATIONS}


def load_config(inter: str, cache_dir: str):
  spec = importlib.util.spec_from_file_location("ml100k", ROOT / "experiments" / "ml100k.py")
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  c = mod.get_config("ease")
  c.unlock()
  c.data.source = "recbole"
  c.data.path = inter
  c.data.cache_dir = cache_dir
  c.train.progress_bar = False
  return c


# ------------------------------------------------------------------------------ ours
class Ours:
  """One Task per setting; ``fit`` runs the jitted closed-form step(s) on a fresh state."""

  def __init__(self, base, ds, family: str, p: dict[str, Any]):
    from mmrec_jax import sharding
    from mmrec_jax.loop.setup import build_data_info, make_mesh
    from mmrec_jax.step import Task

    c = base.copy_and_resolve_references()
    c.model.name = family
    for key, value in p.items():
      section, field = TO_CONFIG[family][key].split(".")
      c[section][field] = value
    self.steps = SWEEPS.get(family, 1)
    mesh = make_mesh(c)
    self.task = Task(c, build_data_info(ds, c, ()), mesh)
    b = int(mesh.shape["data"])
    self.batch = sharding.global_batch_from_local(mesh, {"user": np.zeros(b, np.int32)})
    self.first_s = self._time()  # includes compilation

  def _time(self, seed: int = 0) -> float:
    import jax

    state = jax.block_until_ready(self.task.init(seed))
    t0 = time.perf_counter()
    for _ in range(self.steps):
      state, _ = self.task.train_step(state, self.batch)
    jax.block_until_ready(state)
    self.state = state
    return time.perf_counter() - t0

  def fit(self, seed: int = 0) -> float:
    return self._time(seed)

  def towers(self, ds):
    u, i = (np.asarray(a) for a in self.task.eval_reprs(self.state))
    return u[: ds.num_users], i[: ds.num_items]


# ------------------------------------------------------------------------------ theirs
def train_csr(ds):
  import scipy.sparse as sp

  tr = ds.split("train")
  u, i = np.asarray(tr.users, np.int64), np.asarray(tr.items, np.int64)
  m = sp.csr_matrix((np.ones(u.size, np.float32), (u, i)), shape=(ds.num_users, ds.num_items))
  m.sum_duplicates()
  return m


def fit_cornac_ease(ds, p, seed):
  import cornac

  x = train_csr(ds)
  x.data[:] = 1.0
  u, i = x.nonzero()
  triples = list(zip(u.astype(str).tolist(), i.astype(str).tolist(), [1.0] * u.size))
  train_set = cornac.data.Dataset.build(triples, fmt="UIR", seed=seed)
  model = cornac.models.EASE(lamb=p["reg"], posB=False, verbose=False, seed=seed)
  t0 = time.perf_counter()
  model.fit(train_set)
  secs = time.perf_counter() - t0
  iid = np.array([int(r) for r in train_set.iid_map.keys()])
  iix = np.array(list(train_set.iid_map.values()))
  items = np.zeros((ds.num_items, ds.num_items), np.float32)  # unseen items score 0 (as ours)
  items[np.ix_(iid, iid)] = model.B[np.ix_(iix, iix)].T
  return x.toarray(), items, secs


def fit_implicit_als(ds, p, seed):
  from implicit.cpu.als import AlternatingLeastSquares
  from threadpoolctl import threadpool_limits

  x = train_csr(ds)
  x.data = 1.0 + p["alpha"] * x.data  # c = 1 + alpha * r, used as is (implicit alpha = 1)
  model = AlternatingLeastSquares(
    factors=p["factors"],
    regularization=p["reg"],
    alpha=1.0,
    iterations=ITERATIONS,
    use_cg=True,
    num_threads=0,
    random_state=seed,
  )
  t0 = time.perf_counter()
  with threadpool_limits(1, "blas"):  # what implicit asks for (its own threads do the work)
    model.fit(x, show_progress=False)
  secs = time.perf_counter() - t0
  return np.asarray(model.user_factors), np.asarray(model.item_factors), secs


def fit_recbole_itemknn(ds, p, seed):
  """RecBole's ComputeSimilarity(method='item', topk=k, shrink=s, normalize=True)."""
  del seed
  x = train_csr(ds)
  x.data[:] = 1.0
  t0 = time.perf_counter()
  norm = np.sqrt(np.asarray(x.power(2).sum(axis=0)).ravel())
  g = (x.T @ x).toarray()
  s = g / (norm[:, None] * norm[None, :] + p["shrink"] + 1e-6)
  np.fill_diagonal(s, 0.0)
  k = min(p["k"], s.shape[1])
  keep = np.argpartition(-s, k - 1, axis=1)[:, :k]
  items = np.zeros_like(s, dtype=np.float32)
  rows = np.arange(s.shape[0])[:, None]
  items[rows, keep] = s[rows, keep]
  secs = time.perf_counter() - t0
  return x.toarray(), items, secs


def fit_numpy_mostpop(ds, p, seed):
  del p, seed
  t0 = time.perf_counter()
  counts = np.bincount(np.asarray(ds.split("train").items), minlength=ds.num_items)
  secs = time.perf_counter() - t0
  return np.ones((ds.num_users, 1), np.float32), counts[:, None].astype(np.float32), secs


THEIRS = {
  "ease": ("Cornac EASE", fit_cornac_ease),
  "ials": ("implicit ALS", fit_implicit_als),
  "itemknn": ("RecBole ItemKNN formula (scipy)", fit_recbole_itemknn),
  "mostpop": ("numpy bincount", fit_numpy_mostpop),
}


def evaluate(users, items, ds, eval_cfg, mesh) -> dict:
  from mmrec_jax.evaluation import evaluate_split

  return {
    split: {
      k: float(v)
      for k, v in evaluate_split(
        users.astype(np.float32), items.astype(np.float32), ds, split, eval_cfg, mesh
      ).metrics.items()
    }
    for split in ("valid", "test")
  }


def q(xs, p):
  return float(np.percentile(np.asarray(xs), p))


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--inter", required=True, help="RecBole ml-100k.inter")
  ap.add_argument("--cache_dir", default="/tmp/bench_baselines_cache")
  ap.add_argument("--families", default="ease,ials,itemknn,mostpop")
  ap.add_argument("--repeats", type=int, default=5)
  ap.add_argument("--out", default=str(ROOT / "benchmarks" / "RESULTS_baselines.md"))
  args = ap.parse_args()

  from mmrec_jax.data.prepare import prepare
  from mmrec_jax.loop.setup import make_mesh

  base = load_config(args.inter, args.cache_dir)
  ds = prepare(base.data)
  mesh = make_mesh(base)
  rows, grid_rows = [], []
  for family in args.families.split(","):
    label, theirs = THEIRS[family]
    best = {"ours": None, "theirs": None}
    for p in GRIDS[family]:
      ours = Ours(base, ds, family, p)
      res_o = evaluate(*ours.towers(ds), ds, base.eval, mesh)
      u, i, _ = theirs(ds, p, 0)
      res_t = evaluate(u, i, ds, base.eval, mesh)
      for who, res, extra in (("ours", res_o, ours), ("theirs", res_t, None)):
        v = res["valid"]["ndcg@10"]
        if best[who] is None or v > best[who][1]["valid"]["ndcg@10"]:
          best[who] = (p, res, extra)
      grid_rows.append((family, p, res_o, res_t))
      print(family, p, "ours", res_o["test"]["ndcg@10"], "theirs", res_t["test"]["ndcg@10"])
    # Fit times at each one's chosen setting, alternating.
    p_o, res_o, ours = best["ours"]
    p_t, res_t, _ = best["theirs"]
    t_o, t_t, loads = [], [], []
    for r in range(args.repeats):
      t_o.append(ours.fit(seed=0))
      t_t.append(theirs(ds, p_t, r)[2])
      loads.append(os.getloadavg()[0])
    rows.append((family, label, p_o, res_o, p_t, res_t, t_o, t_t, ours.first_s, loads))
    print(family, "ours", np.median(t_o), "theirs", np.median(t_t))
  write(args, ds, rows, grid_rows)


def _fmt(p: dict) -> str:
  return ", ".join(f"{k}={v:g}" for k, v in p.items()) or "-"


def write(args, ds, rows, grid_rows) -> None:
  import jax

  lines = [
    "# Classic baselines: mmrec_jax vs reference implementations (ML-100K)",
    "",
    "Generated by `benchmarks/bench_baselines.py` (its docstring: protocol). "
    f"{ds.num_users} users, {ds.num_items} items, per-user temporal 80/10/10 split of "
    "RecBole's `ml-100k.inter`; test metrics with train + valid items masked; each "
    "implementation's best-VALID setting of the grid. "
    f"jax {jax.__version__} on {jax.devices()[0].platform} ({len(jax.devices())} device), "
    f"{os.cpu_count()} CPU cores shared with other jobs.",
    "",
    "| model | ours: setting | ours NDCG@10 | ours Recall@20 | reference | its setting "
    "| ref NDCG@10 | ref Recall@20 | ours fit s (median / p25) | ours 1st call s "
    "| ref fit s (median / p25) | load avg (1 min) |",
    "|---|---|---|---|---|---|---|---|---|---|---|---|",
  ]
  for family, label, p_o, res_o, p_t, res_t, t_o, t_t, first, loads in rows:
    lines.append(
      f"| {family} | {_fmt(p_o)} | {res_o['test']['ndcg@10']:.4f} "
      f"| {res_o['test']['recall@20']:.4f} | {label} | {_fmt(p_t)} "
      f"| {res_t['test']['ndcg@10']:.4f} | {res_t['test']['recall@20']:.4f} "
      f"| {np.median(t_o):.3f} / {q(t_o, 25):.3f} | {first:.2f} "
      f"| {np.median(t_t):.3f} / {q(t_t, 25):.3f} | {min(loads):.1f}-{max(loads):.1f} |"
    )
  lines += [
    "",
    "## Every grid point (same setting for both)",
    "",
    "| model | setting | ours valid NDCG@10 | ref valid NDCG@10 | ours test NDCG@10 "
    "| ref test NDCG@10 | ours test Recall@20 | ref test Recall@20 |",
    "|---|---|---|---|---|---|---|---|",
  ]
  for family, p, ro, rt in grid_rows:
    lines.append(
      f"| {family} | {_fmt(p)} | {ro['valid']['ndcg@10']:.4f} | {rt['valid']['ndcg@10']:.4f} "
      f"| {ro['test']['ndcg@10']:.4f} | {rt['test']['ndcg@10']:.4f} "
      f"| {ro['test']['recall@20']:.4f} | {rt['test']['recall@20']:.4f} |"
    )
  out = pathlib.Path(args.out)
  old = out.read_text() if out.exists() else ""
  marker = "<!-- notes: kept when the tables above are regenerated -->"
  notes = old[old.index(marker) :] if marker in old else marker + "\n"
  out.write_text("\n".join(lines) + "\n\n" + notes)
  print(out.read_text())


if __name__ == "__main__":
  main()
