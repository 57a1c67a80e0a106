r"""ML-100K quality over three split protocols x seeds, mmrec_jax vs peers (issue #13 item 6).

One prepared split per (protocol, seed) -- ``mmrec_jax.data.prepare.prepare`` on the
``ml-100k.inter`` shipped in the recbole 1.2.1 wheel (``data.source=recbole``) -- and
every model on that very split:

  * protocols (``data.split``, all with a validation part): ``temporal`` = per-user
    temporal 80/10/10 (``temporal_ratio``, what experiments/ml100k.py uses); ``loo`` =
    leave-last-out (``leave_last_out``); ``random`` = per-user random 80/10/10
    (``random_ratio``, ``data.seed`` = the seed). For the two temporal protocols the
    split is fixed and the seed only changes initialisation / sampling;
  * ours: ``experiments/ml100k.py`` (its default, CEASE + text since it was chosen by
    validation; ``ours_two_tower`` is the former default), ``:two_tower``, ``:bpr_mf``,
    ``:ease``, ``:ials`` and ``:cease``, trained by
    ``mmrec_jax.train.train_and_evaluate`` (early stopping on valid ndcg@10, the
    best-valid checkpoint scored on test);
  * peers, with the best-valid settings of benchmarks/RESULTS_ml100k.md and
    RESULTS_baselines.md (no test-set tuning): Cornac BPR, Cornac EASE, implicit ALS,
    implicit BPR, and RecBole 1.2.1 BPR / LightGCN in their own venv (a subprocess fed
    the same split as benchmark files ``<name>.{train,valid,test}.inter``, its own early
    stopping on valid ndcg@10, bounded epochs; it dumps its user/item embedding matrices
    -- LightGCN: the propagated ones -- which are mapped back to our indices).
Every peer is scored by OUR evaluator (``evaluation.evaluate_split``, full ranking, train
items masked in valid, train + valid masked in test) from ``users @ items.T``, exactly as
benchmarks/bench_baselines.py does. Ablation: two_tower with IDs only, + handcrafted text,
+ MiniLM text.

Rows are appended to ``--jsonl`` (one per (protocol, seed, family); finished keys are
skipped on a rerun) and the Markdown report ``--out`` is regenerated from that file after
every row (``--report-only`` regenerates it alone).

    .venv/bin/python benchmarks/bench_protocols.py            # everything, resumable
    .venv/bin/python benchmarks/bench_protocols.py --protocols temporal --seeds 0 \
        --max-epochs 2 --jsonl /tmp/smoke.jsonl --out /tmp/smoke.md   # end-to-end check
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import pathlib
import platform
import subprocess
import sys
import time
from typing import Any

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
INTER = "/tmp/recbole_dl/recbole/dataset_example/ml-100k/ml-100k.inter"
SHOWN = ("ndcg@10", "recall@20", "ndcg@20", "recall@10")
PROTOCOLS = {
  "temporal": "temporal_ratio",
  "loo": "leave_last_out",
  "random": "random_ratio",
  # Not one of the three protocols the defaults were selected on (benchmarks/
  # bench_cease_grid.py): the split "nobody tuned on" of issue #13's target.
  "global": "global_temporal",
}
PROTOCOL_LABEL = {
  "temporal": "per-user temporal 80/10/10",
  "loo": "leave-last-out",
  "random": "per-user random 80/10/10",
  "global": "global temporal 80/10/10 (never used for selection)",
}
# Peer settings: the best-valid rows of RESULTS_ml100k.md / RESULTS_baselines.md.
CORNAC_BPR = dict(k=128, learning_rate=0.05, lambda_reg=0.01, max_iter=100)
CORNAC_EASE = dict(lamb=100.0, posB=False)
IMPLICIT_ALS = dict(factors=128, regularization=10.0, alpha=1.0, iterations=15)
IMPLICIT_BPR = dict(factors=128, learning_rate=0.01, regularization=0.01, iterations=100)
# RecBole: its defaults (d=64, Adam 1e-3, batch 2048, 1 uniform negative; LightGCN 2
# layers, reg_weight 1e-5) with bounded epochs (see --recbole-epochs).
RECBOLE = dict(embedding_size=64, learning_rate=1e-3, train_batch_size=2048)
PEER_THREADS = 2

LABELS = {
  "ours_default": "mmrec_jax default of experiments/ml100k.py (CEASE + text, chosen by validation)",
  "ours_two_tower": "mmrec_jax two_tower + MiniLM text (the former default, :two_tower)",
  "ours_bpr_mf": "mmrec_jax BPR-MF (:bpr_mf)",
  "ours_ease": "mmrec_jax EASE (:ease)",
  "ours_ials": "mmrec_jax iALS (:ials)",
  "ours_cease": "mmrec_jax CEASE (:cease)",
  "cornac_bpr": "Cornac BPR",
  "cornac_ease": "Cornac EASE",
  "implicit_als": "implicit ALS",
  "implicit_bpr": "implicit BPR",
  "recbole_bpr": "RecBole BPR",
  "recbole_lightgcn": "RecBole LightGCN",
  "abl_ids": "two_tower IDs only",
  "abl_handcrafted": "two_tower + handcrafted text",
  "abl_minilm": "two_tower + MiniLM text",
}
OURS_VARIANT = {"ours_default": "", "ours_bpr_mf": "bpr_mf", "ours_ease": "ease"}
OURS_VARIANT["ours_two_tower"] = "two_tower"
OURS_VARIANT.update({"ours_ials": "ials", "ours_cease": "cease"})
ABLATION = {
  "abl_ids": {"data.modalities": ()},
  "abl_handcrafted": {"data.modalities": ("text",), "data.text_features": "handcrafted"},
  "abl_minilm": {"data.modalities": ("text",), "data.text_features": "minilm"},
}
MAIN_FAMILIES = (
  "ours_default",
  "ours_two_tower",
  "ours_bpr_mf",
  "ours_ease",
  "ours_ials",
  "ours_cease",
  "cornac_bpr",
  "cornac_ease",
  "implicit_als",
  "implicit_bpr",
  "recbole_bpr",
  "recbole_lightgcn",
)
NOTES_MARKER = "<!-- notes: kept when the tables above are regenerated -->"


def load() -> list[float]:
  return [round(x, 2) for x in os.getloadavg()]


# ------------------------------------------------------------------------------ configs
def base_config(variant: str, protocol: str, seed: int, args):
  """``experiments/ml100k.py[:variant]`` on the wheel's .inter, for this protocol/seed."""
  spec = importlib.util.spec_from_file_location("ml100k", ROOT / "experiments" / "ml100k.py")
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  c = mod.get_config(variant or None)
  c.unlock()
  c.data.source = "recbole"
  c.data.path = args.inter
  c.data.cache_dir = args.cache_dir
  c.data.split = PROTOCOLS[protocol]
  c.data.split_ratios = (0.8, 0.1, 0.1)
  c.data.seed = seed if protocol == "random" else 0
  c.seed = seed
  c.train.progress_bar = False
  if args.max_epochs:
    c.train.num_epochs = min(c.train.num_epochs, args.max_epochs)
    c.train.eval_every_epochs = min(c.train.eval_every_epochs, args.max_epochs)
  return c


def set_dotted(c, dotted: str, value) -> None:
  node = c
  *path, leaf = dotted.split(".")
  for name in path:
    node = node[name]
  node[leaf] = value


# ------------------------------------------------------------------------------ ours
def run_ours(family: str, protocol: str, seed: int, args) -> dict:
  from mmrec_jax.train import train_and_evaluate

  if family in ABLATION:
    c = base_config("two_tower", protocol, seed, args)
    for k, v in ABLATION[family].items():
      set_dotted(c, k, v)
  else:
    c = base_config(OURS_VARIANT[family], protocol, seed, args)
  workdir = pathlib.Path(args.workdir) / "ours" / protocol / f"seed{seed}" / family
  t0 = time.perf_counter()
  res = train_and_evaluate(c, workdir)
  return {
    "valid": {k: float(res["valid"][k]) for k in SHOWN},
    "test": {k: float(res["test"][k]) for k in SHOWN},
    "train_s": float(res["train_seconds"]),
    "wall_s": time.perf_counter() - t0,
    "extra": {
      "best_step": res.get("best_step"),
      "steps": res.get("steps"),
      "modalities": list(res.get("modalities", [])),
    },
  }


# ------------------------------------------------------------------------------ peers
def split_pairs(ds, split: str) -> tuple[np.ndarray, np.ndarray]:
  s = ds.split(split)
  return np.asarray(s.users, np.int64), np.asarray(s.items, np.int64)


def train_csr(ds):
  import scipy.sparse as sp

  u, i = split_pairs(ds, "train")
  m = sp.csr_matrix((np.ones(u.size, np.float32), (u, i)), shape=(ds.num_users, ds.num_items))
  m.sum_duplicates()
  m.data[:] = 1.0
  return m


def _cornac_train_set(ds, seed: int):
  import cornac

  x = train_csr(ds)
  u, i = x.nonzero()
  triples = list(zip(u.astype(str).tolist(), i.astype(str).tolist(), [1.0] * u.size))
  return cornac.data.Dataset.build(triples, fmt="UIR", seed=seed)


def _maps(id_map) -> tuple[np.ndarray, np.ndarray]:
  return np.array([int(r) for r in id_map.keys()]), np.array(list(id_map.values()))


def fit_cornac_bpr(ds, seed: int, args):
  """[p_u, 1] . [q_i, b_i]; items with no train row rank last (bias -1e4)."""
  import cornac

  ts = _cornac_train_set(ds, seed)
  p = dict(CORNAC_BPR)
  if args.max_epochs:
    p["max_iter"] = min(p["max_iter"], args.max_epochs)
  model = cornac.models.BPR(**p, num_threads=PEER_THREADS, seed=seed, verbose=False)
  t0 = time.perf_counter()
  model.fit(ts)
  secs = time.perf_counter() - t0
  k = p["k"]
  users = np.zeros((ds.num_users, k + 1), np.float32)
  items = np.zeros((ds.num_items, k + 1), np.float32)
  items[:, k] = -1e4
  uid, uix = _maps(ts.uid_map)
  iid, iix = _maps(ts.iid_map)
  users[uid, :k] = model.u_factors[uix]
  users[:, k] = 1.0
  items[iid, :k] = model.i_factors[iix]
  items[iid, k] = model.i_biases[iix]
  return users, items, secs, {"params": p}


def fit_cornac_ease(ds, seed: int, args):
  """users = binary train rows, items = B^T; items with no train row score 0."""
  import cornac

  del args
  ts = _cornac_train_set(ds, seed)
  model = cornac.models.EASE(**CORNAC_EASE, verbose=False, seed=seed)
  t0 = time.perf_counter()
  model.fit(ts)
  secs = time.perf_counter() - t0
  iid, iix = _maps(ts.iid_map)
  items = np.zeros((ds.num_items, ds.num_items), np.float32)
  items[np.ix_(iid, iid)] = model.B[np.ix_(iix, iix)].T
  return train_csr(ds).toarray(), items, secs, {"params": CORNAC_EASE}


def fit_implicit_als(ds, seed: int, args):
  from implicit.cpu.als import AlternatingLeastSquares
  from threadpoolctl import threadpool_limits

  del args
  model = AlternatingLeastSquares(**IMPLICIT_ALS, num_threads=PEER_THREADS, random_state=seed)
  x = train_csr(ds)
  t0 = time.perf_counter()
  with threadpool_limits(1, "blas"):  # what implicit asks for
    model.fit(x, show_progress=False)
  secs = time.perf_counter() - t0
  return np.asarray(model.user_factors), np.asarray(model.item_factors), secs, {}


def fit_implicit_bpr(ds, seed: int, args):
  """implicit keeps the item bias as a factor column; items with no train row keep init."""
  from implicit.cpu.bpr import BayesianPersonalizedRanking

  p = dict(IMPLICIT_BPR)
  if args.max_epochs:
    p["iterations"] = min(p["iterations"], args.max_epochs)
  model = BayesianPersonalizedRanking(**p, num_threads=PEER_THREADS, random_state=seed)
  x = train_csr(ds)
  t0 = time.perf_counter()
  model.fit(x, show_progress=False)
  secs = time.perf_counter() - t0
  return np.asarray(model.user_factors), np.asarray(model.item_factors), secs, {"params": p}


# ------------------------------------------------------------------------------ RecBole
RECBOLE_DRIVER = r"""
import json, logging, sys, time
args = json.loads(sys.argv[1])
import numpy as np
import torch
torch.set_num_threads(args["threads"])
from recbole.config import Config
from recbole.data import create_dataset, data_preparation
from recbole.utils import get_model, get_trainer, init_seed
cfg = dict(args["cfg"])
config = Config(model=args["model"], dataset=args["dataset"], config_dict=cfg)
init_seed(config["seed"], config["reproducibility"])
logging.getLogger().setLevel(logging.ERROR)
dataset = create_dataset(config)
train_data, valid_data, test_data = data_preparation(config, dataset)
init_seed(config["seed"], config["reproducibility"])
model = get_model(config["model"])(config, train_data.dataset).to(config["device"])
trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
t0 = time.perf_counter()
best_score, best_valid = trainer.fit(train_data, valid_data, saved=True, show_progress=False)
train_s = time.perf_counter() - t0
test = trainer.evaluate(test_data, load_best_model=True, show_progress=False)
model = trainer.model
model.eval()
with torch.no_grad():
  if hasattr(model, "restore_user_e"):  # graph models: the propagated embeddings
    users, items = model.forward()
  else:
    users, items = model.user_embedding.weight, model.item_embedding.weight
out = args["out"]
np.save(out + "_users.npy", users.detach().cpu().numpy().astype(np.float32))
np.save(out + "_items.npy", items.detach().cpu().numpy().astype(np.float32))
tok = {f: [str(t) for t in dataset.field2id_token[f]] for f in ("user_id", "item_id")}
with open(out + "_tokens.json", "w") as f:
  json.dump(tok, f)
print(json.dumps({"train_s": train_s, "best_valid": {k: float(v) for k, v in best_valid.items()},
                  "recbole_test": {k: float(v) for k, v in test.items()},
                  "threads": torch.get_num_threads(),
                  "epochs_run": len(getattr(trainer, "train_loss_dict", {}))}), flush=True)
"""


def recbole_files(ds, name: str, root: pathlib.Path) -> pathlib.Path:
  """<root>/<name>/<name>.{train,valid,test}.inter with our user/item indices as tokens."""
  d = root / name
  d.mkdir(parents=True, exist_ok=True)
  for split in ("train", "valid", "test"):
    u, i = split_pairs(ds, split)
    lines = ["user_id:token\titem_id:token"] + [f"{a}\t{b}" for a, b in zip(u, i)]
    (d / f"{name}.{split}.inter").write_text("\n".join(lines) + "\n")
  return d


def fit_recbole(model_name: str, ds, protocol: str, seed: int, args):
  """RecBole trains on the same split; its embeddings come back in our index order.

  Items/users that RecBole never saw in any file get a zero vector (score 0); those seen
  only in valid/test keep RecBole's untrained initial vectors (its own convention).
  """
  work = pathlib.Path(args.workdir) / "recbole"
  name = f"mlp_{protocol}" + (f"_s{seed}" if protocol == "random" else "")
  d = recbole_files(ds, name, work / "data")
  epochs = args.recbole_epochs[model_name]
  if args.max_epochs:
    epochs = min(epochs, args.max_epochs)
  cfg = dict(
    RECBOLE,
    data_path=str(d.parent),
    use_gpu=False,
    benchmark_filename=["train", "valid", "test"],
    load_col={"inter": ["user_id", "item_id"]},
    eval_args={
      "split": {"RS": [0.8, 0.1, 0.1]},
      "order": "RO",
      "group_by": "user",
      "mode": "full",
    },
    metrics=["Recall", "NDCG"],
    topk=[10, 20],
    valid_metric="NDCG@10",
    epochs=epochs,
    eval_step=min(5, epochs),
    stopping_step=3,
    train_neg_sample_args={"distribution": "uniform", "sample_num": 1},
    seed=seed,
    reproducibility=True,
    checkpoint_dir=str(work / "ckpt" / f"{name}_{model_name}_{seed}"),
    show_progress=False,
    log_wandb=False,
    worker=0,
    state="ERROR",
  )
  driver = work / "driver.py"
  driver.write_text(RECBOLE_DRIVER)
  out = str(work / f"{name}_{model_name}_{seed}")
  call = dict(cfg=cfg, model=model_name, dataset=name, out=out, threads=args.recbole_threads)
  env = dict(os.environ, TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD="1")
  env.pop("XLA_FLAGS", None)
  t0 = time.perf_counter()
  r = subprocess.run(
    [args.recbole_python, str(driver), json.dumps(call)],
    check=False,
    capture_output=True,
    text=True,
    cwd=work,
    env=env,
    timeout=3600,
  )
  wall = time.perf_counter() - t0
  info = None
  for line in r.stdout.splitlines():
    if line.startswith("{"):
      info = json.loads(line)
  if r.returncode or info is None:
    raise RuntimeError(f"RecBole {model_name} failed (rc {r.returncode}):\n{r.stderr[-3000:]}")
  u_emb, i_emb = np.load(out + "_users.npy"), np.load(out + "_items.npy")
  tok = json.loads(pathlib.Path(out + "_tokens.json").read_text())
  users = np.zeros((ds.num_users, u_emb.shape[1]), np.float32)
  items = np.zeros((ds.num_items, i_emb.shape[1]), np.float32)
  for emb, toks, dst in ((u_emb, tok["user_id"], users), (i_emb, tok["item_id"], items)):
    rid = np.array([k for k, t in enumerate(toks) if t != "[PAD]"])
    ours = np.array([int(toks[k]) for k in rid])
    dst[ours] = emb[rid]
  info.update(epochs_cap=epochs, wall_with_startup_s=wall)
  return users, items, info.pop("train_s"), info


PEERS = {
  "cornac_bpr": fit_cornac_bpr,
  "cornac_ease": fit_cornac_ease,
  "implicit_als": fit_implicit_als,
  "implicit_bpr": fit_implicit_bpr,
  "recbole_bpr": lambda ds, seed, args, p: fit_recbole("BPR", ds, p, seed, args),
  "recbole_lightgcn": lambda ds, seed, args, p: fit_recbole("LightGCN", ds, p, seed, args),
}


def evaluate(users, items, ds, eval_cfg, mesh) -> dict:
  """Our evaluator on exported matrices (benchmarks/bench_baselines.py ``evaluate``)."""
  from mmrec_jax.evaluation import evaluate_split

  out = {}
  for split in ("valid", "test"):
    res = evaluate_split(
      users.astype(np.float32), items.astype(np.float32), ds, split, eval_cfg, mesh
    )
    out[split] = {k: float(res.metrics[k]) for k in SHOWN}
  return out


def run_peer(family: str, ds, protocol: str, seed: int, cfg, mesh, args) -> dict:
  fit = PEERS[family]
  t0 = time.perf_counter()
  if family.startswith("recbole"):
    users, items, secs, extra = fit(ds, seed, args, protocol)
  else:
    users, items, secs, extra = fit(ds, seed, args)
  wall = time.perf_counter() - t0
  return {**evaluate(users, items, ds, cfg.eval, mesh), "train_s": secs, "wall_s": wall}, extra


# ------------------------------------------------------------------------------ driver
def read_rows(path: pathlib.Path) -> list[dict]:
  if not path.exists():
    return []
  return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def families_for(seed: int, args) -> list[str]:

  fams = [f for f in MAIN_FAMILIES if f in args.families]
  if seed not in args.lightgcn_seeds and "recbole_lightgcn" in fams:
    fams.remove("recbole_lightgcn")
  if seed in args.ablation_seeds:
    fams += [f for f in ABLATION if f in args.families]
  return fams


def _minilm_alias(jsonl: pathlib.Path, protocol: str, seed: int) -> dict | None:
  """The default run when it already used MiniLM ('auto' -> 'minilm'): the same config."""
  for r in read_rows(jsonl):
    key = (r["protocol"], r["seed"], r["family"])
    if key == (protocol, seed, "ours_two_tower") and r["extra"].get("modalities") == [
      "text_minilm"
    ]:
      keep = ("valid", "test", "train_s", "wall_s")
      return {**{k: r[k] for k in keep}, "extra": {**r["extra"], "alias_of": "ours_two_tower"}}
  return None


def main() -> None:
  args = parse_args()
  jsonl = pathlib.Path(args.jsonl)
  if args.report_only:
    write_report(read_rows(jsonl), args)
    return
  from mmrec_jax.data.prepare import prepare
  from mmrec_jax.loop.setup import make_mesh

  done = {(r["protocol"], r["seed"], r["family"]) for r in read_rows(jsonl)}
  # Pass 1: the main comparison, protocol by protocol; pass 2: the text ablation, seed by
  # seed (so a run cut short has every protocol at the same seeds).
  passes = [(p, s, False) for p in args.protocols for s in args.seeds]
  passes += [(p, s, True) for s in args.seeds for p in args.protocols]
  for protocol, seed, ablation in passes:
    fams = [
      f
      for f in families_for(seed, args)
      if (protocol, seed, f) not in done and (f in ABLATION) == ablation
    ]
    if not fams:
      continue
    cfg = base_config("two_tower", protocol, seed, args)  # the split the peers read
    ds = prepare(cfg.data)
    mesh = make_mesh(cfg)
    print(
      f"[{protocol} seed {seed}] {ds.num_users} users x {ds.num_items} items, "
      f"train/valid/test {[len(ds.split(s).users) for s in ('train', 'valid', 'test')]}",
      flush=True,
    )
    for family in fams:
      t0 = time.time()
      extra: dict[str, Any] = {}
      try:
        alias = _minilm_alias(jsonl, protocol, seed) if family == "abl_minilm" else None
        if alias is not None:
          row = alias
        elif family.startswith(("ours_", "abl_")):
          row = run_ours(family, protocol, seed, args)
        else:
          row, extra = run_peer(family, ds, protocol, seed, cfg, mesh, args)
      except Exception as e:  # one failed family must not end the run
        print(f"  {family}: FAILED {type(e).__name__}: {str(e)[-2000:]}", flush=True)
        continue
      row = {
        "protocol": protocol,
        "seed": seed,
        "family": family,
        **row,
        "extra": {**row.get("extra", {}), **extra},
        "load": load(),
        "finished_utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
      }
      with jsonl.open("a") as f:
        f.write(json.dumps(row) + "\n")
      print(
        f"  {protocol} s{seed} {family:18s} valid ndcg@10 {row['valid']['ndcg@10']:.4f} "
        f"test ndcg@10 {row['test']['ndcg@10']:.4f} recall@20 {row['test']['recall@20']:.4f}"
        f" train {row['train_s']:.1f}s wall {time.time() - t0:.1f}s load {row['load']}",
        flush=True,
      )
      write_report(read_rows(jsonl), args)


def parse_args():
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--inter", default=INTER, help="RecBole's ml-100k.inter (recbole 1.2.1 wheel)")
  ap.add_argument("--protocols", default="temporal,loo,random")
  ap.add_argument("--seeds", default="0,1,2,3,4")
  ap.add_argument("--lightgcn-seeds", default="0,1,2,3,4", help="seeds RecBole LightGCN runs")
  ap.add_argument("--ablation-seeds", default="0,1,2,3,4", help="seeds of the text ablation")
  ap.add_argument("--families", default=",".join(MAIN_FAMILIES + tuple(ABLATION)))
  ap.add_argument("--max-epochs", type=int, default=0, help="cap every model's epochs (checks)")
  ap.add_argument("--recbole-bpr-epochs", type=int, default=100)
  ap.add_argument("--recbole-lightgcn-epochs", type=int, default=60)
  ap.add_argument("--recbole-python", default="/work/recbole_venv/bin/python")
  ap.add_argument("--recbole-threads", type=int, default=1)
  ap.add_argument("--workdir", default="/work/scratch/protocols")
  ap.add_argument("--cache_dir", default="/work/scratch/protocols/cache")
  ap.add_argument("--jsonl", default=str(ROOT / "benchmarks" / "protocols_runs.jsonl"))
  ap.add_argument("--out", default=str(ROOT / "benchmarks" / "RESULTS_protocols.md"))
  ap.add_argument("--report-only", action="store_true")
  a = ap.parse_args()
  a.protocols = [p for p in a.protocols.split(",") if p]
  for p in a.protocols:
    if p not in PROTOCOLS:
      sys.exit(f"--protocols: {p!r} is not one of {list(PROTOCOLS)}")
  a.seeds = [int(s) for s in a.seeds.split(",") if s]
  a.lightgcn_seeds = {int(s) for s in a.lightgcn_seeds.split(",") if s}
  a.ablation_seeds = {int(s) for s in a.ablation_seeds.split(",") if s}
  a.families = set(a.families.split(","))
  unknown = a.families - set(LABELS)
  if unknown:
    sys.exit(f"--families: {sorted(unknown)} not in {sorted(LABELS)}")
  a.recbole_epochs = {"BPR": a.recbole_bpr_epochs, "LightGCN": a.recbole_lightgcn_epochs}
  return a


# ------------------------------------------------------------------------------ report
def _ms(xs: list[float]) -> str:
  if len(xs) == 1:
    return f"{xs[0]:.4f}"
  return f"{np.mean(xs):.4f} ± {np.std(xs, ddof=1):.4f}"


def _by(rows, protocol, family) -> dict[int, dict]:
  return {r["seed"]: r for r in rows if r["protocol"] == protocol and r["family"] == family}


def _paired(a: list[float], b: list[float]) -> str:
  """Paired t-test and Wilcoxon signed-rank (two-sided) of a - b."""
  from scipy import stats

  d = np.asarray(a) - np.asarray(b)
  if d.size < 2:
    return f"n={d.size}: too few pairs"
  if np.allclose(d, d[0]):
    t = "t: constant difference"
  else:
    t = f"t p={stats.ttest_rel(a, b).pvalue:.3g}"
  if np.all(d == 0):
    w = "Wilcoxon: all ties"
  else:
    w = f"Wilcoxon p={stats.wilcoxon(a, b).pvalue:.3g}"
  wins = int(np.sum(d > 0))
  return f"n={d.size}, mean diff {d.mean():+.5f}, {wins}/{d.size} wins; {t}; {w}"


def _best(rows, protocol, fams) -> str | None:
  """The family with the highest MEAN VALID ndcg@10 (selection never looks at test)."""
  scored = []
  for f in fams:
    by = _by(rows, protocol, f)
    if by:
      scored.append((np.mean([r["valid"]["ndcg@10"] for r in by.values()]), f))
  return max(scored)[1] if scored else None


def write_report(rows: list[dict], args) -> None:
  import jax

  protocols = [p for p in PROTOCOLS if any(r["protocol"] == p for r in rows)]
  ours = [f for f in MAIN_FAMILIES if f.startswith("ours_")]
  peers = [f for f in MAIN_FAMILIES if not f.startswith("ours_")]
  loads = [r["load"][0] for r in rows]
  dates = sorted(r["finished_utc"] for r in rows)
  cmd = "python benchmarks/bench_protocols.py " + " ".join(sys.argv[1:])
  lines = [
    "# ML-100K over three split protocols x seeds: mmrec_jax vs peers (bench_protocols.py)",
    "",
    f"Generated by `benchmarks/bench_protocols.py` (its docstring: protocol) from "
    f"`{pathlib.Path(args.jsonl).name}`; last regenerated by `{cmd.strip()}`.",
    f"Machine: {platform.machine()} {os.cpu_count()} CPU cores shared with other jobs, "
    f"jax {jax.__version__} on {jax.devices()[0].platform}; rows finished "
    f"{dates[0] if dates else '-'} .. {dates[-1] if dates else '-'} (UTC); 1-minute load "
    f"average at the end of each row {min(loads, default=0):.1f}-{max(loads, default=0):.1f} "
    "(every row's load is in the jsonl). Data: `ml-100k.inter` of the recbole 1.2.1 wheel "
    "(`data.source=recbole`). Scores: our evaluator (full ranking; train masked in valid, "
    "train + valid masked in test) for every model.",
    "",
  ]
  for p in protocols:
    lines += [
      f"## {p}: {PROTOCOL_LABEL[p]}",
      "",
      "| model | seeds | valid NDCG@10 | test NDCG@10 | test Recall@20 | train s (mean) "
      "| load (1 min) |",
      "|---|---:|---:|---:|---:|---:|---|",
    ]
    for f in list(MAIN_FAMILIES) + list(ABLATION):
      by = _by(rows, p, f)
      if not by:
        continue
      rs = [by[s] for s in sorted(by)]
      ld = [r["load"][0] for r in rs]
      lines.append(
        f"| {LABELS[f]} | {','.join(str(s) for s in sorted(by))} "
        f"| {_ms([r['valid']['ndcg@10'] for r in rs])} "
        f"| {_ms([r['test']['ndcg@10'] for r in rs])} "
        f"| {_ms([r['test']['recall@20'] for r in rs])} "
        f"| {np.mean([r['train_s'] for r in rs]):.1f} | {min(ld):.1f}-{max(ld):.1f} |"
      )
    lines.append("")
  # Paired tests: best ours (by mean valid) and the default vs the best peer (by mean valid).
  lines += [
    "## Paired tests on test NDCG@10 (best = highest mean VALID NDCG@10 of its group)",
    "",
    "Two-sided `scipy.stats.ttest_rel` and `wilcoxon` over the seeds (with 5 pairs the "
    "smallest possible Wilcoxon p is 0.0625, so only the pooled rows can reach 0.05 with "
    "it). Pooled rows pair each protocol-seed of ours with the best peer of that protocol: "
    "once over the three protocols of the brief (temporal, loo, random: up to 15 pairs), "
    "once with `global` too. `t: constant difference` = both sides deterministic (the same "
    "difference at every seed), where the t statistic is undefined.",
    "",
    "| protocol | ours | best peer | test NDCG@10 ours - peer |",
    "|---|---|---|---|",
  ]
  tags = (("best", None), ("default", "ours_default"), ("two_tower", "ours_two_tower"))
  pooled = {(t, three): ([], []) for t, _ in tags for three in (True, False)}
  for p in protocols:
    peer = _best(rows, p, peers)
    best = _best(rows, p, ours)
    if peer is None or best is None:
      continue
    bp = _by(rows, p, peer)
    for tag, fam in tags:
      fam = fam or best
      bo = _by(rows, p, fam)
      seeds = sorted(set(bo) & set(bp))
      if not seeds:
        continue
      a = [bo[s]["test"]["ndcg@10"] for s in seeds]
      b = [bp[s]["test"]["ndcg@10"] for s in seeds]
      for three in (True, False):
        if three and p == "global":
          continue
        pooled[tag, three][0].extend(a)
        pooled[tag, three][1].extend(b)
      lines.append(f"| {p} | {LABELS[fam]} ({tag}) | {LABELS[peer]} | {_paired(a, b)} |")
  for three in (True, False):
    what = "temporal+loo+random" if three else "all four protocols"
    for tag, _ in tags:
      a, b = pooled[tag, three]
      lines.append(f"| {what}, pooled | ours {tag} | best peer of each | {_paired(a, b)} |")
  out = pathlib.Path(args.out)
  old = out.read_text() if out.exists() else ""
  notes = old[old.index(NOTES_MARKER) :] if NOTES_MARKER in old else NOTES_MARKER + "\n"
  out.write_text("\n".join(lines) + "\n\n" + notes)


if __name__ == "__main__":
  main()
