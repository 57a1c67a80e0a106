r"""LightGCN and BPR per-epoch time, ours vs RecBole 1.2.1, in one script, alternating (#12).

Workloads (the same interactions for both sides, read from RecBole atomic files):
  * ``ml100k``: the real MovieLens-100K shipped inside the RecBole wheel
    (``recbole/dataset_example/ml-100k/ml-100k.inter``; ours reads it with
    ``data.source=recbole``), copied under another dataset name (RecBole special-cases
    ``ml-100k``);
  * ``ml1m-shaped``: a synthetic set of ML-1M's shape (6,040 users x 3,706 items x 1M
    distinct interactions, log-normal user activity, Zipf-like item popularity, random
    timestamps), written to an .inter file by this script (seeded).
Both sides: per-user temporal 80/10/10 split (RecBole ``RS`` + ``TO`` + ``group_by
user``), LightGCN d=64, 2 layers, reg_weight 1e-4, BPR with 1 uniform negative, batch 2048,
Adam lr 1e-3, CPU. ``--models`` adds plain BPR matrix factorisation at the same settings
(RecBole's ``BPR`` model, which has no regularisation term, against our ``bpr_mf`` with
``loss.l2=0``; ours updates the touched rows with row-wise lazy Adam, optim/sparse.py,
RecBole the whole tables with ``torch.optim.Adam``: each library's own way to train it). Ours trains through the trainer's own step source
(``loop.steps.make_step_source``: on one CPU device, epochs made on device, one jitted
call per ML-100K epoch; the grain pipeline and ``Task.train_step`` where 'auto' picks it;
the table's notes say which); RecBole through its own dataloader, ``calculate_loss``,
backward and Adam step (the body of ``Trainer._train_epoch``), in a subprocess of its
own venv.

Timing: rounds alternate ours / RecBole. ``ml100k`` times whole epochs. ``ml1m-shaped``
times ``--ml1m-steps`` steps per round after warm-up steps and extrapolates to an epoch
(steps per epoch x step time: ours the mean of the run of steps, one call on device
epochs; RecBole the median of its per-step times; an ML-1M-sized epoch of the baseline
is ~2 min on this 2-core CPU); the table says which. Medians and 25th percentiles over all timed
epochs (or extrapolations); the 1-minute load average is printed with every round.
FREEDOM (text features; on ``ml1m-shaped`` the synthetic source of
``experiments/synthetic.py`` at the same shape, text+image, since the .inter file has no
item features) is timed beside ours the same way.

Setup (RecBole needs its own venv; see benchmarks/RESULTS_graph_peers.md):

    python3 -m venv /work/recbole_venv
    /work/recbole_venv/bin/pip install numpy==1.23.5 pandas==2.0.3 scipy==1.10.1 \
        scikit-learn==1.3.2 'setuptools<81' torch==2.13.0   # the CPU build of torch
    pip download --no-deps recbole==1.2.1 -d /tmp/recbole_dl
    /work/recbole_venv/bin/pip install --no-deps /tmp/recbole_dl/recbole-1.2.1-*.whl \
        pyyaml colorlog colorama texttable tqdm tabulate thop tensorboard protobuf absl-py
    .venv/bin/python benchmarks/bench_graph_peers.py \
        --recbole-wheel /tmp/recbole_dl/recbole-1.2.1-py3-none-any.whl

Options: ``--workloads ml100k``, ``--models lightgcn,bpr`` (the RecBole pairs timed), ``--ours-methods host_csr,segment,dense`` (model.propagation
values timed for LightGCN), ``--freedom-methods``, ``--rounds``, ``--no-recbole``,
``--no-freedom``.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time
import zipfile

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
EMBED, LAYERS, BATCH, LR, REG = 64, 2, 2048, 1e-3, 1e-4
# --models value -> (RecBole model class, our model, our_config overrides, timed per
# --ours-methods with FREEDOM beside it). RecBole's BPR has no regularisation term.
PAIRS = {
  "lightgcn": ("LightGCN", "lightgcn", {"reg_weight": REG}, True),
  "bpr": ("BPR", "bpr_mf", {"l2": 0.0}, False),
}

RECBOLE_DRIVER = r"""
import json, sys, time, logging
args = json.loads(sys.argv[1])
import torch
if args["threads"] > 0:
  torch.set_num_threads(args["threads"])
from recbole.config import Config
from recbole.data import create_dataset, data_preparation
from recbole.utils import get_model
from recbole.utils import init_seed
cfg = {
  "data_path": args["data_path"], "dataset": args["dataset"], "use_gpu": False,
  "embedding_size": args["embed"], "n_layers": args["layers"], "reg_weight": args["reg"],
  "train_batch_size": args["batch"], "learner": "adam", "learning_rate": args["lr"],
  "train_neg_sample_args": {"distribution": "uniform", "sample_num": 1},
  "eval_args": {"split": {"RS": [0.8, 0.1, 0.1]}, "order": "TO", "group_by": "user",
                "mode": "full"},
  "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
  "epochs": 1, "show_progress": False, "seed": 0, "reproducibility": True,
  "checkpoint_dir": args["tmp"], "log_wandb": False, "worker": 0,
}
config = Config(model=args["model"], dataset=args["dataset"], config_dict=cfg)
logging.getLogger().setLevel(logging.ERROR)
init_seed(config["seed"], config["reproducibility"])
dataset = create_dataset(config)
train_data, _, _ = data_preparation(config, dataset)
model = get_model(args["model"])(config, train_data.dataset).to(config["device"])
opt = torch.optim.Adam(model.parameters(), lr=args["lr"])
steps_per_epoch = len(train_data)
print(json.dumps({"threads": torch.get_num_threads(), "steps_per_epoch": steps_per_epoch,
                  "train_rows": len(train_data.dataset)}), flush=True)

def step(inter):
  opt.zero_grad()
  loss = model.calculate_loss(inter)
  loss.backward()
  opt.step()

model.train()
if args["mode"] == "epochs":
  for ep in range(args["epochs"] + 1):  # the first epoch warms up
    t = time.perf_counter()
    for inter in train_data:
      step(inter)
    dt = time.perf_counter() - t
    if ep:
      print(json.dumps({"epoch_s": dt}), flush=True)
else:
  times, it = [], iter(train_data)
  for k in range(args["warmup"] + args["steps"]):
    t = time.perf_counter()
    step(next(it))
    if k >= args["warmup"]:
      times.append(time.perf_counter() - t)
  print(json.dumps({"step_s": times}), flush=True)
"""


def _args():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--workloads", default="ml100k,ml1m-shaped")
  p.add_argument("--models", default="lightgcn,bpr", help="RecBole pairs: lightgcn, bpr")
  p.add_argument("--recbole-python", default="/work/recbole_venv/bin/python")
  p.add_argument("--recbole-wheel", default="", help="recbole-1.2.1 wheel (for ml-100k.inter)")
  p.add_argument("--ml100k-inter", default="", help="or the ml-100k.inter file itself")
  p.add_argument("--ours-methods", default="host_csr,segment,dense")
  p.add_argument("--freedom-methods", default="auto", help="model.propagation values for FREEDOM")
  p.add_argument("--rounds", type=int, default=3)
  p.add_argument("--ml100k-epochs", type=int, default=2, help="timed epochs per round")
  p.add_argument("--ml1m-steps", type=int, default=8, help="timed steps per round")
  p.add_argument("--warmup", type=int, default=2)
  p.add_argument("--recbole-threads", type=int, default=0, help="torch threads (0 = default)")
  p.add_argument("--no-recbole", action="store_true")
  p.add_argument("--no-freedom", action="store_true")
  p.add_argument("--workdir", default="")
  return p.parse_args()


def load() -> float:
  return os.getloadavg()[0]


def stats(xs: list[float]) -> tuple[float, float]:
  return float(np.median(xs)), float(np.percentile(xs, 25))


# ------------------------------------------------------------------------------ data
def ml100k_files(a, work: pathlib.Path) -> pathlib.Path:
  """<work>/ml100k_bench/ml100k_bench.{inter,item}: RecBole's ML-100K, renamed."""
  out = work / "ml100k_bench"
  out.mkdir(parents=True, exist_ok=True)
  if a.ml100k_inter:
    src = pathlib.Path(a.ml100k_inter)
    for suffix in (".inter", ".item"):
      if src.with_suffix(suffix).is_file():
        (out / f"ml100k_bench{suffix}").write_bytes(src.with_suffix(suffix).read_bytes())
  elif a.recbole_wheel:
    with zipfile.ZipFile(a.recbole_wheel) as z:
      for suffix in (".inter", ".item"):
        data = z.read(f"recbole/dataset_example/ml-100k/ml-100k{suffix}")
        (out / f"ml100k_bench{suffix}").write_bytes(data)
  else:
    sys.exit("give --recbole-wheel or --ml100k-inter (see the module doc)")
  return out


def synthetic_files(work: pathlib.Path, seed: int = 0) -> pathlib.Path:
  """An ML-1M-shaped .inter: 6,040 x 3,706, 1,000,000 distinct (user, item) pairs."""
  out = work / "synth1m_bench"
  inter = out / "synth1m_bench.inter"
  if inter.is_file():
    return out
  out.mkdir(parents=True, exist_ok=True)
  nu, ni, n = 6040, 3706, 1_000_000
  rng = np.random.default_rng(seed)
  pu = rng.lognormal(0.0, 1.0, nu)
  pi = 1.0 / np.arange(1, ni + 1) ** 0.9
  pu, pi = pu / pu.sum(), rng.permutation(pi / pi.sum())
  keys = np.zeros(0, np.int64)
  while keys.size < n:
    u = rng.choice(nu, 2 * n, p=pu)
    i = rng.choice(ni, 2 * n, p=pi)
    keys = np.unique(np.concatenate([keys, u.astype(np.int64) * ni + i]))
  keys = rng.permutation(keys)[:n]
  ts = rng.integers(9.5e8, 1.0e9, n)
  with open(inter, "w") as f:
    f.write("user_id:token\titem_id:token\trating:float\ttimestamp:float\n")
    for u, i, t in zip(keys // ni, keys % ni, ts):
      f.write(f"u{u}\ti{i}\t1\t{t}\n")
  return out


# ------------------------------------------------------------------------------ ours
class Ours:
  """A compiled Task and the trainer's own step source, timed by whole epochs or by steps.

  The steps come from ``loop.steps.make_step_source``, as in ``train.py``: epochs made on
  device when ``input.device_epochs='auto'`` picks them (one jitted call per epoch at
  ML-100K), else the grain pipeline one step per call. ``path`` says which ran.
  """

  def __init__(self, config):
    import jax

    from mmrec_jax import sharding, train
    from mmrec_jax.data import pipeline as pipeline_lib
    from mmrec_jax.data import prepare as prepare_lib
    from mmrec_jax.loop.steps import make_step_source
    from mmrec_jax.step import Task

    self.jax = jax
    ds = prepare_lib.prepare(config.data)
    ds, modalities = train.resolve_modalities(ds, config)
    self.mesh = sharding.make_mesh(config.mesh.data, config.mesh.model)
    info = train.build_data_info(ds, config, modalities)
    self.task = Task(config, info, self.mesh)
    graph = self.task.frozen.get("graph")
    self.method = graph["ui"].method if graph else "-"
    self.state = self.task.init(0)
    pipe = pipeline_lib.make_train_pipeline(
      ds.split("train"), ds.num_users, ds.num_items, config.input, seed=0
    )
    self.source = make_step_source(config, self.task, pipe, self.mesh)
    self.path = "device epochs" if self.source.chunked else "grain"
    self.steps_per_epoch = self.source.steps_per_epoch
    self.train_rows = len(info.train_users)
    self.sizes = (ds.num_users, ds.num_items)
    self.done = 0  # steps run so far (the source's position)

  def steps(self, n: int) -> float:
    """Runs ``n`` steps (as few calls as the source allows) and returns the seconds."""
    t = time.perf_counter()
    end = self.done + n
    while self.done < end:
      self.state, metrics, k = self.source.advance(self.task, self.state, end)
      self.done += k
    self.jax.block_until_ready((self.state, metrics))
    return time.perf_counter() - t

  def step(self) -> float:
    return self.steps(1)

  def epoch(self) -> float:
    """The rest of the current epoch (a whole one when called at an epoch boundary)."""
    return self.steps(self.steps_per_epoch - self.done % self.steps_per_epoch)


def our_config(
  model: str,
  data_dir: pathlib.Path | None,
  method: str,
  cache: str,
  reg_weight: float | None = None,
  l2: float | None = None,
):
  """``reg_weight``: the LightGCN runs pass RecBole's value; others keep their paper's.

  ``l2``: ``loss.l2`` (PAIRS).
  """
  from mmrec_jax import config as config_lib
  from mmrec_jax.models import registry

  if data_dir is None:  # FREEDOM on ml1m-shaped: the synthetic source, same shape
    spec = __import__("importlib.util").util.spec_from_file_location(
      "syn", ROOT / "experiments" / "synthetic.py"
    )
    mod = __import__("importlib.util").util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    c = mod.get_config(model)
    c.unlock()
  else:
    c = config_lib.base_config()
    c.data.source = "recbole"
    c.data.path = str(data_dir)
    c.data.split = "temporal_ratio"
    c.data.split_ratios = (0.8, 0.1, 0.1)
    c.data.modalities = ("text",) if registry.get(model).uses_features else ()
    c.data.text_features = "handcrafted"
  c.data.cache_dir = cache
  c.model.name = model
  c.model.embed_dim = EMBED
  c.model.num_layers = LAYERS
  c.model.propagation = method
  if reg_weight is not None:
    c.model.reg_weight = reg_weight
  c.input.batch_size = BATCH
  c.input.num_negatives = 1
  c.loss.name = "bpr"
  if l2 is not None:
    c.loss.l2 = l2
  c.optimizer.name = c.optimizer.sparse = "adam"
  c.optimizer.learning_rate = c.optimizer.sparse_learning_rate = LR
  c.train.progress_bar = False
  c.mesh.min_sharded_bytes = 1 << 16
  return config_lib.finalize(c)


def _our_runs(pair: str, a, methods, data_dir, wl: str, cache: str):
  """(name, config) of our runs timed against RecBole's model of ``pair`` (PAIRS)."""
  _, model, overrides, per_method = PAIRS[pair]
  if not per_method:
    return [(f"ours {model}", our_config(model, data_dir, "auto", cache, **overrides))]
  runs = [
    (f"ours {model} ({m})", our_config(model, data_dir, m, cache, **overrides)) for m in methods
  ]
  if not a.no_freedom:  # FREEDOM beside LightGCN (RecBole has no FREEDOM)
    fdir = data_dir if wl == "ml100k" else None
    runs += [
      (f"ours freedom ({m})", our_config("freedom", fdir, m, cache))
      for m in a.freedom_methods.split(",")
    ]
  return runs


# ------------------------------------------------------------------------------ RecBole
def recbole_run(a, data_dir: pathlib.Path, mode: str, work: pathlib.Path, **kw) -> dict:
  driver = work / "recbole_driver.py"
  driver.write_text(RECBOLE_DRIVER)
  args = dict(
    data_path=str(data_dir.parent),
    dataset=data_dir.name,
    embed=EMBED,
    layers=LAYERS,
    reg=REG,
    batch=BATCH,
    lr=LR,
    tmp=str(work / "recbole_ckpt"),
    mode=mode,
    threads=a.recbole_threads,
    **kw,
  )
  env = dict(os.environ, TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD="1")
  env.pop("XLA_FLAGS", None)
  r = subprocess.run(
    [a.recbole_python, str(driver), json.dumps(args)],
    check=False,
    capture_output=True,
    text=True,
    cwd=work,
    env=env,
    timeout=3600,
  )
  out = {}
  for line in r.stdout.splitlines():
    if line.startswith("{"):
      d = json.loads(line)
      for k, v in d.items():
        if k in ("epoch_s",):
          out.setdefault(k, []).append(v)
        else:
          out[k] = v
  if r.returncode or not out:
    sys.exit(f"RecBole failed (rc {r.returncode}):\n{r.stderr[-3000:]}")
  return out


# ------------------------------------------------------------------------------ main
def main() -> int:
  a = _args()
  work = pathlib.Path(a.workdir or tempfile.mkdtemp(prefix="bench_graph_peers_"))
  work.mkdir(parents=True, exist_ok=True)
  cache = str(work / "cache")
  methods = [m for m in a.ours_methods.split(",") if m]
  import jax

  print(
    f"jax {jax.__version__}, {jax.device_count()} x {jax.devices()[0].platform}, "
    f"{os.cpu_count()} cores; workdir {work}",
    flush=True,
  )
  models = [m for m in a.models.split(",") if m]
  unknown = set(models) - set(PAIRS)
  if unknown:
    sys.exit(f"--models: unknown {sorted(unknown)}; choose from {sorted(PAIRS)}")
  rows = []
  for wl in a.workloads.split(","):
    data_dir = ml100k_files(a, work) if wl == "ml100k" else synthetic_files(work)
    by_epoch = wl == "ml100k"
    # name -> (ours, the RecBole run it is compared with)
    contenders: dict[str, tuple[Ours, str]] = {}
    for pair in models:
      for name, cfg in _our_runs(pair, a, methods, data_dir, wl, cache):
        contenders[name] = (Ours(cfg), f"recbole {pair}")
    # run name -> RecBole model class
    peers = {} if a.no_recbole else {f"recbole {m}": PAIRS[m][0] for m in models}
    times: dict[str, list[float]] = {k: [] for k in contenders}
    times.update({p: [] for p in peers})
    info: dict[str, str] = {}
    for name, (o, _) in contenders.items():
      o.steps(a.warmup)  # compilation
      if by_epoch:
        o.epoch()  # the rest of the first epoch: the timed ones start at a boundary
      info[name] = (
        f"{o.sizes[0]} x {o.sizes[1]}, {o.train_rows} train rows, "
        f"{o.steps_per_epoch} steps/epoch, propagation {o.method}, input {o.path}"
      )
    for r in range(a.rounds):
      for name, (o, _) in contenders.items():
        if by_epoch:
          times[name] += [o.epoch() for _ in range(a.ml100k_epochs)]
        else:
          # One timed run of --ml1m-steps steps (one call on device epochs), never
          # across an epoch's end: per-step mean x steps per epoch.
          left = o.steps_per_epoch - o.done % o.steps_per_epoch
          if left < a.ml1m_steps:
            o.steps(left)
          times[name].append(o.steps_per_epoch * o.steps(a.ml1m_steps) / a.ml1m_steps)
        print(
          f"  [{wl} round {r}] {name}: {times[name][-1]:.3f} s/epoch (load {load():.2f})",
          flush=True,
        )
      for peer, model in peers.items():
        if by_epoch:
          out = recbole_run(a, data_dir, "epochs", work, model=model, epochs=a.ml100k_epochs)
          times[peer] += out["epoch_s"]
        else:
          out = recbole_run(
            a, data_dir, "steps", work, model=model, steps=a.ml1m_steps, warmup=a.warmup
          )
          times[peer].append(out["steps_per_epoch"] * float(np.median(out["step_s"])))
        info[peer] = (
          f"{out['train_rows']} train rows, {out['steps_per_epoch']} steps/epoch, "
          f"torch threads {out['threads']}"
        )
        print(
          f"  [{wl} round {r}] {peer}: {times[peer][-1]:.3f} s/epoch (load {load():.2f})",
          flush=True,
        )
    for name, ts in times.items():
      if not ts:
        continue
      med, p25 = stats(ts)
      ref = times.get(contenders[name][1], []) if name in contenders else []
      ratio = f"{np.median(ref) / med:.2f}" if ref else "-"
      vs = contenders[name][1] if ref else ""
      rows.append(
        (
          wl,
          name,
          "whole epochs" if by_epoch else "steps, extrapolated",
          len(ts),
          med,
          p25,
          f"{ratio} ({vs})" if vs else ratio,
          info.get(name, ""),
        )
      )
  print(f"\nload average at the end: {os.getloadavg()}")
  print("| workload | run | timed | n | s/epoch median | p25 | RecBole / this (which) | notes |")
  print("|---|---|---|---|---|---|---|---|")
  for wl, name, how, n, med, p25, ratio, note in rows:
    print(f"| {wl} | {name} | {how} | {n} | {med:.3f} | {p25:.3f} | {ratio} | {note} |")
  return 0


if __name__ == "__main__":
  sys.exit(main())
