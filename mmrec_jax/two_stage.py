r"""Two stages in one run: a retrieval model proposes top-K, a pointwise ranker re-orders.

  python -m mmrec_jax.main --config=experiments/ml100k_ranking.py:two_stage --workdir=runs/2stage
      (``config.two_stage.candidates`` > 0; ``config.two_stage.retrieval_model``)
  python -m mmrec_jax.two_stage --config=experiments/ml100k_ranking.py --workdir=runs/2stage \
      [--candidates=100] [--retrieval_model=bpr_mf] [--retrieval=train.num_epochs=30 ...]
      (the same, with overrides of the retrieval run's settings)

Why: a ranker that reads side features and an MLP cannot score a whole catalogue per user
at scale, so production systems (Merlin, TorchRec, RecML) retrieve candidates with a
dot-product model and re-score only those. This module trains both on the SAME prepared
dataset and split -- the retrieval model (default BPR-MF, every train row an interaction)
into ``workdir/retrieval``, the ranker of the config into ``workdir/ranker`` -- and
reports on the existing full-ranking protocol (``evaluation.evaluate_split``):

  * relevant = the test rows with rating > ``data.label_threshold`` (the ranker's label;
    ``eval.relevance_threshold`` is set just above it), excluded = the user's train and
    valid rows that are relevant (Cornac's rule, the protocol's default here);
  * ``retrieval``: Recall/NDCG@K of the retrieval model's full ranking (what its own
    run reports); ``candidates``: the recall of the top-``candidates`` list (the ceiling
    any re-ranking can reach); ``two_stage``: the same top-``candidates`` lists re-ordered
    by the ranker's p(label = 1) (ties keep the retrieval order), cut at each K;
    ``two_stage_product``: re-ordered by ``log sigmoid(retrieval score) + log
    sigmoid(ranker logit)``, i.e. p(interaction) x p(label | interaction). The ranker
    learned p(like | rated) from rated rows only; on candidates nobody rated it cannot
    tell "unseen" from "seen", which the retrieval score carries.

Results go to ``workdir/two_stage.json``. The retrieval-alone numbers are recomputed from
its top-``candidates`` lists with the same metric code and must equal the evaluator's
(checked; a mismatch raises).
"""

from __future__ import annotations

import argparse
import ast
import copy
import importlib.util
import json
import pathlib
from typing import Any

import jax
import ml_collections
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from mmrec_jax import checkpointing, reporting, sharding
from mmrec_jax.data import prepare as prepare_lib
from mmrec_jax.errors import ConfigError
from mmrec_jax.evaluation import evaluate_split, metrics_from_hits
from mmrec_jax.evaluation.ranking import split_csr
from mmrec_jax.loop.setup import build_data_info, resolve_modalities
from mmrec_jax.models import registry
from mmrec_jax.serving.recommender import _restore, config_from_json
from mmrec_jax.step import Task
from mmrec_jax.step.pointwise import PointwiseRegime

METRICS = ("recall", "ndcg")
# Retrieval defaults: BPR-MF as tuned on ML-100K (benchmarks/RESULTS_ml100k.md).
RETRIEVAL_DEFAULTS = {
  "model.name": "bpr_mf",
  "model.embed_dim": 128,
  "loss.name": "bpr",
  "loss.l2": 2e-3,
  "optimizer.sparse": "sgd",
  "optimizer.sparse_learning_rate": 50.0,
  "input.batch_size": 1024,
  "input.num_negatives": 4,
  "input.negative_sampler": "uniform",
  "train.num_epochs": 60,
  "train.eval_every_epochs": 5,
  "train.early_stopping_patience": 3,
  "train.selection_metric": "ndcg@10",
}


def relevance_threshold(label_threshold: float) -> float:
  """The protocol's ``rating >= t`` equal to the ranker's ``rating > label_threshold``."""
  if label_threshold < 0:
    raise ConfigError("two-stage evaluation needs explicit labels: data.label_threshold >= 0")
  return float(np.nextafter(np.float32(label_threshold), np.float32(np.inf)))


def retrieval_config(
  ranker: ml_collections.ConfigDict, overrides: dict[str, Any] | None = None
) -> ml_collections.ConfigDict:
  """The retrieval run's config: the ranker's data and protocol, a retrieval model."""
  c = copy.deepcopy(ranker)
  c.unlock()
  for key, value in {**RETRIEVAL_DEFAULTS, **(overrides or {})}.items():
    section, field = key.split(".")
    c[section][field] = value
  if registry.get(c.model.name).regime == "pointwise":
    raise ConfigError(f"retrieval model {c.model.name!r} is a pointwise ranker")
  c.data.modalities = registry.model_modalities(c.model.name, c.data.modalities)
  c.eval.relevance_threshold = relevance_threshold(float(ranker.data.label_threshold))
  c.eval.slices = False
  c.two_stage.candidates = 0  # the retrieval run is one stage
  c.lock()
  return c


def load_run(workdir: pathlib.Path) -> tuple[ml_collections.ConfigDict, Any, Task, Any]:
  """(config, dataset, task, best-validation state) of a finished training run."""
  config = config_from_json(workdir / "config.json")
  mesh = sharding.make_mesh(-1, 1)
  ds = prepare_lib.prepare(config.data)
  ds, modalities = resolve_modalities(ds, config)
  task = Task(config, build_data_info(ds, config, modalities), mesh)
  ckpt = checkpointing.RunCheckpointer(
    workdir, max_to_keep=config.train.max_checkpoints, use_async=False
  )
  try:
    state, _, _ = _restore(ckpt, task.abstract_state(), "best", workdir)
  finally:
    ckpt.close()
  return config, ds, task, state


def _hits(lists: np.ndarray, users: np.ndarray, truth) -> tuple[np.ndarray, np.ndarray]:
  indptr, indices = truth
  hits = np.zeros(lists.shape, bool)
  n = np.zeros(users.shape[0], np.int64)
  for r, u in enumerate(users):
    t = indices[indptr[u] : indptr[u + 1]]
    n[r] = t.size
    hits[r] = np.isin(lists[r], t)
  return hits, n


def _mean(per_user: dict[str, np.ndarray], n: np.ndarray) -> dict[str, float]:
  keep = n > 0
  return {k: float(np.mean(v[keep])) for k, v in per_user.items()}


def rerank_scores(task: Task, state: Any, users: np.ndarray, lists: np.ndarray) -> np.ndarray:
  """The ranker's logits of every (user, candidate) pair, ``[len(users), K]``."""
  if not isinstance(task.regime, PointwiseRegime):
    raise ConfigError(f"model {task.config.model.name!r} is not a pointwise ranker")
  mesh = task.mesh
  u = np.repeat(users.astype(np.int32), lists.shape[1])
  it = lists.reshape(-1).astype(np.int32)
  chunk = max(mesh.size, (65536 // mesh.size) * mesh.size)
  out = np.empty(u.shape[0], np.float32)
  sh = NamedSharding(mesh, P(sharding.DATA))
  for s in range(0, u.shape[0], chunk):
    e = min(s + chunk, u.shape[0])
    pad = chunk - (e - s)
    uu = np.concatenate([u[s:e], np.zeros(pad, np.int32)])
    ii = np.concatenate([it[s:e], np.zeros(pad, np.int32)])
    z = task.regime.score_rows(state["params"], jax.device_put(uu, sh), jax.device_put(ii, sh))
    out[s:e] = np.asarray(jax.device_get(z))[: e - s]
  return out.reshape(lists.shape)


def evaluate_two_stage(
  retrieval_dir: pathlib.Path, ranker_dir: pathlib.Path, candidates: int, ks: tuple[int, ...]
) -> dict[str, Any]:
  """Retrieval alone vs retrieval + ranker on the test split (module doc)."""
  r_cfg, r_ds, r_task, r_state = load_run(retrieval_dir)
  k_cfg, k_ds, k_task, k_state = load_run(ranker_dir)
  if pathlib.Path(r_ds.path) != pathlib.Path(k_ds.path):
    raise ConfigError(
      f"the retrieval run ({r_ds.path}) and the ranker run ({k_ds.path}) were trained on "
      "different prepared datasets"
    )
  if max(ks) > candidates:
    raise ConfigError(f"cut-offs {ks} exceed the {candidates} candidates")
  eval_cfg = copy.deepcopy(r_cfg.eval)
  eval_cfg.unlock()
  eval_cfg.ks = tuple(sorted(set(ks) | {candidates}))
  eval_cfg.metrics = METRICS
  eval_cfg.export_topk = candidates
  eval_cfg.beyond = ()
  eval_cfg.full_metrics = ()
  eval_cfg.rating_metrics = ()
  eval_cfg.sampled = ""
  eval_cfg.slices = False
  users_m, items_m = r_task.eval_reprs(r_state)
  res = evaluate_split(
    users_m[: r_task.num_users], items_m[: r_task.num_items], r_ds, "test", eval_cfg, r_task.mesh
  )
  users, lists = np.asarray(res.users), np.asarray(res.topk_items)[:, :candidates]
  truth = split_csr(r_ds, "test", float(eval_cfg.relevance_threshold))
  hits, n = _hits(lists, users, truth)
  retrieval = _mean(metrics_from_hits(hits, n, ks, METRICS), n)
  for name, v in retrieval.items():
    if abs(v - res.metrics[name]) > 1e-5:
      raise AssertionError(f"retrieval {name}: recomputed {v} != evaluator {res.metrics[name]}")
  logits = rerank_scores(k_task, k_state, users, lists)
  # Descending score; a stable sort keeps the retrieval order among ties.
  order = np.argsort(-logits, axis=1, kind="stable")
  reranked = np.take_along_axis(lists, order, axis=1)
  r_hits, _ = _hits(reranked, users, truth)
  two = _mean(metrics_from_hits(r_hits, n, ks, METRICS), n)
  # p(relevant) = p(interaction) x p(label = 1 | interaction): the retrieval score as the
  # logit of the first factor, the ranker's logit of the second (module doc).
  ret_scores = np.asarray(res.topk_scores, np.float64)[:, :candidates]
  both = -np.logaddexp(0, -ret_scores) - np.logaddexp(0, -logits.astype(np.float64))
  order = np.argsort(-both, axis=1, kind="stable")
  p_hits, _ = _hits(np.take_along_axis(lists, order, axis=1), users, truth)
  product = _mean(metrics_from_hits(p_hits, n, ks, METRICS), n)
  return {
    "retrieval_model": r_cfg.model.name,
    "ranker_model": k_cfg.model.name,
    "candidates": candidates,
    "users": int(np.sum(n > 0)),
    "relevance_threshold": float(eval_cfg.relevance_threshold),
    "retrieval": retrieval,
    "candidate_recall": float(res.metrics[f"recall@{candidates}"]),
    "two_stage": two,
    "two_stage_product": product,
    "retrieval_run_test": {
      k: v
      for k, v in json.loads((retrieval_dir / "results.json").read_text())["test"].items()
      if k in retrieval
    },
    "ranker_run_test": json.loads((ranker_dir / "results.json").read_text())["test"],
  }


def run(
  ranker: ml_collections.ConfigDict,
  workdir: str | pathlib.Path,
  *,
  candidates: int = 100,
  retrieval_overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
  """Trains (or resumes) both stages in ``workdir`` and writes ``two_stage.json``."""
  from mmrec_jax.train import train_and_evaluate  # noqa: PLC0415

  workdir = pathlib.Path(workdir)
  if registry.get(ranker.model.name).regime != "pointwise":
    raise ConfigError(f"model.name={ranker.model.name!r} is not a pointwise ranker")
  retrieval = retrieval_config(ranker, retrieval_overrides)
  ranker = copy.deepcopy(ranker)
  ranker.unlock()
  ranker.two_stage.candidates = 0  # the ranker's own run is one stage
  ranker.lock()
  for name, cfg in (("retrieval", retrieval), ("ranker", ranker)):
    result = train_and_evaluate(cfg, workdir / name)
    if result.get("status") != "finished":  # preempted: the same command resumes
      return {"status": result.get("status"), "stage": name, "steps": result.get("steps")}
  out = evaluate_two_stage(
    workdir / "retrieval", workdir / "ranker", candidates, tuple(int(k) for k in ranker.eval.ks)
  )
  reporting.write_json_atomic(workdir / "two_stage.json", out)
  return {"status": "finished", **out}


def summary(out: dict[str, Any]) -> str:
  """The table the commands print: retrieval alone vs re-ranked, per metric."""
  names = list(out["retrieval"])
  rows = [f"{'ordering':<34}" + "".join(f"{n:>11}" for n in names)]
  for key, label in (
    ("retrieval", f"retrieval alone ({out['retrieval_model']})"),
    ("two_stage", f"re-ranked by {out['ranker_model']}"),
    ("two_stage_product", "re-ranked by p(interaction) x p(like)"),
  ):
    rows.append(f"{label:<34}" + "".join(f"{out[key][n]:>11.4f}" for n in names))
  rows.append(f"recall@{out['candidates']} of the candidates: {out['candidate_recall']:.4f}")
  return "\n".join(rows)


def run_from_main(config: ml_collections.ConfigDict, workdir: str | pathlib.Path) -> int:
  """``python -m mmrec_jax.main`` with ``two_stage.candidates > 0``: both stages, a table."""
  out = run(
    config,
    workdir,
    candidates=int(config.two_stage.candidates),
    retrieval_overrides={
      "model.name": config.two_stage.retrieval_model,
      "input.batch_size": int(config.two_stage.retrieval_batch_size),
    },
  )
  if out["status"] != "finished":
    print(f"run {out['status']} in the {out['stage']} stage; rerun the same command to resume")
    return 0
  print(f"\ntwo stages, test split, {out['users']} users:\n{summary(out)}")
  print(f"results: {workdir}/two_stage.json")
  return 0


def _load_config(spec: str) -> ml_collections.ConfigDict:
  path, _, arg = spec.partition(":")
  mod_spec = importlib.util.spec_from_file_location("experiment", path)
  module = importlib.util.module_from_spec(mod_spec)
  mod_spec.loader.exec_module(module)
  return module.get_config(arg or None)


def main(argv: list[str] | None = None) -> dict[str, Any]:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--config", required=True, help="ranker experiment file[:variants]")
  p.add_argument("--workdir", required=True)
  p.add_argument("--candidates", type=int, default=100)
  p.add_argument("--retrieval_model", default="bpr_mf")
  p.add_argument(
    "--retrieval",
    action="append",
    default=[],
    metavar="KEY=VALUE",
    help="retrieval config override, e.g. train.num_epochs=20 (repeatable)",
  )
  a = p.parse_args(argv)
  overrides = {"model.name": a.retrieval_model}
  for item in a.retrieval:
    key, sep, value = item.partition("=")
    if not sep or key.count(".") != 1:
      raise ConfigError(f"--retrieval={item!r}: expected section.field=value")
    overrides[key] = ast.literal_eval(value) if value[:1] in "0123456789-.(['\"" else value
  out = run(
    _load_config(a.config),
    a.workdir,
    candidates=a.candidates,
    retrieval_overrides=overrides,
  )
  if out["status"] == "finished":
    print(summary(out))
  return out


if __name__ == "__main__":
  main()
