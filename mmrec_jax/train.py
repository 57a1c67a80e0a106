"""The one training loop: init sharded, step, validate, checkpoint, resume, test.

``train_and_evaluate(config, workdir)`` is what ``main`` calls and what tests call. The
same call on the same workdir resumes: it restores the latest checkpoint (model,
optimizer, data-iterator and loop state) and continues exactly where the run stopped, so a
killed run and an uninterrupted one end with the same parameters and metrics.

Model selection uses the validation split only; the test split is scored once, on the
best-validation checkpoint, at the end.
"""

from __future__ import annotations

import math
import os
import pathlib
import signal
import time
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging

from mmrec_jax import checkpointing
from mmrec_jax import reporting
from mmrec_jax import sharding
from mmrec_jax.data import pipeline as pipeline_lib
from mmrec_jax.data import prepare as prepare_lib
from mmrec_jax.data.dataset import PreparedDataset
from mmrec_jax.errors import ConfigError, MmrecError
from mmrec_jax.evaluation import evaluate_split
from mmrec_jax.step import DataInfo, Task


class NonFiniteLossError(MmrecError):
  """The training loss became NaN/inf; the last good checkpoint is kept."""


class _Preemption:
  """Turns SIGTERM (a preempted cloud VM) into a flag checked between steps."""

  def __init__(self):
    self.requested = False
    self._previous = None

  def __enter__(self):
    try:
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    except ValueError:  # not the main thread (e.g. called from a worker thread)
      self._previous = None
    return self

  def _handle(self, signum, frame):  # pylint: disable=unused-argument
    self.requested = True

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)


def _fault_injection(step: int, ckpt: checkpointing.RunCheckpointer) -> None:
  """Test hooks that make kill/preemption tests deterministic (never set in real runs).

  MMREC_FAULT_KILL_AFTER_STEP=N: SIGKILL this process after step N (its saves finished).
  MMREC_FAULT_SIGTERM_AT_STEP=N: send SIGTERM to this process at step N.
  """
  kill_at = os.environ.get("MMREC_FAULT_KILL_AFTER_STEP")
  if kill_at and step == int(kill_at):
    ckpt.wait()
    os.kill(os.getpid(), signal.SIGKILL)
  term_at = os.environ.get("MMREC_FAULT_SIGTERM_AT_STEP")
  if term_at and step == int(term_at):
    os.kill(os.getpid(), signal.SIGTERM)


def build_data_info(ds: PreparedDataset, config: ml_collections.ConfigDict,
                    modalities: tuple[str, ...]) -> DataInfo:
  """Loads what the model keeps on device: feature tables (unless streamed), counts."""
  train = ds.split("train")
  item_counts = np.bincount(np.asarray(train.items), minlength=ds.num_items).astype(np.int64)
  features, masks = {}, {}
  for m in modalities:
    shards = ds.features(m)
    masks[m] = np.asarray(shards.mask, dtype=bool)
    if not config.input.stream_features:
      features[m] = shards.to_array().astype(np.float32)
    else:
      # Streamed: batches carry the rows. The model still needs [num_items, dim] for its
      # dims and for chunked evaluation, which reads rows through this lazy view.
      features[m] = shards.rows()
  # Train-split edges: graph models build their user-item graph from these only.
  return DataInfo(num_users=ds.num_users, num_items=ds.num_items, features=features,
                  feature_masks=masks, item_counts=item_counts,
                  train_users=np.asarray(train.users), train_items=np.asarray(train.items),
                  modalities=tuple(modalities))


def resolve_modalities(ds: PreparedDataset, config: ml_collections.ConfigDict
                       ) -> tuple[PreparedDataset, tuple[str, ...]]:
  """The dataset (reopened if features were added) and the modality names to use."""
  wanted = tuple(config.data.modalities)
  if config.model.name == "bpr_mf":
    return ds, ()
  from mmrec_jax.features.auto import ensure_modalities  # pylint: disable=g-import-not-at-top
  ds, wanted = ensure_modalities(ds, config.data, wanted)
  missing = [m for m in wanted if m not in ds.modalities]
  if missing:
    raise ConfigError(f"config.data.modalities: {missing} not in the dataset at {ds.path} "
                      f"(it has {list(ds.modalities)})")
  return ds, wanted


def make_mesh(config: ml_collections.ConfigDict):
  """The ('data', 'model') mesh of ``config.mesh``; a bad shape is a one-line ConfigError."""
  try:
    return sharding.make_mesh(config.mesh.data, config.mesh.model)
  except ValueError as e:
    raise ConfigError(f"config.mesh: {e}") from None


def check_batch_fits_mesh(batch_size: int, mesh: Any, *, process_index: int | None = None,
                          process_count: int | None = None) -> None:
  """ConfigError unless the GLOBAL batch splits evenly over the mesh's 'data' axis.

  Each process builds ``batch_size / process_count`` rows and
  ``sharding.global_batch_from_local`` lays them over the 'data' rows of the mesh that
  its devices hold. A size that does not divide would only fail inside the first train
  step, as an XLA shape error, after the data was prepared and the model initialised;
  this says which setting to change before any of that.

  Args:
    batch_size: ``config.input.batch_size`` (global, over all processes).
    mesh: the training mesh (``shape`` and ``devices`` are used).
    process_index, process_count: default ``jax.process_index()/process_count()``.
  """
  pid = jax.process_index() if process_index is None else process_index
  nproc = jax.process_count() if process_count is None else process_count
  data = int(mesh.shape[sharding.DATA])
  devices = np.asarray(mesh.devices)
  if batch_size <= 0 or batch_size % data:
    lower, upper = batch_size // data * data, (batch_size // data + 1) * data
    fix = f"{lower} or {upper}" if lower > 0 else f"{upper}"
    raise ConfigError(f"input.batch_size={batch_size} does not divide over the mesh's "
                      f"'data' axis of size {data} ({devices.size} devices, mesh.model="
                      f"{mesh.shape[sharding.MODEL]}): use a multiple of {data}, e.g. {fix}")
  # The 'data' rows (mesh.devices[i]) holding a device of this process: it feeds exactly
  # those rows, batch_size / data examples each, from its batch_size / nproc examples.
  rows = sum(1 for row in devices if any(d.process_index == pid for d in row.ravel()))
  if rows * nproc != data:
    raise ConfigError(f"mesh.model={mesh.shape[sharding.MODEL]}: process {pid} of {nproc} "
                      f"holds {rows} of the {data} rows of the mesh's 'data' axis, but each "
                      f"process feeds its own input.batch_size/{nproc} examples, which "
                      f"needs {data / nproc:g} rows; "
                      "keep the 'model' axis within a process (lower mesh.model)")
  # Now batch_size / nproc = rows * (batch_size / data): this process's rows divide evenly.


def _evaluate(task: Task, state: Any, ds: PreparedDataset, split: str,
              config: ml_collections.ConfigDict, mesh) -> Any:
  users, items = task.eval_reprs(state)
  # Tables are padded to a multiple of the device count; padding rows are not users/items.
  return evaluate_split(users[:task.num_users], items[:task.num_items], ds, split,
                        config.eval, mesh)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | pathlib.Path) -> dict:
  """Trains (or resumes) the configured model in ``workdir``; returns final metrics.

  Returns ``{"valid": {...}, "test": {...}, "status": "finished"|"preempted", ...}``; the
  same dict is written to ``workdir/results.json`` when the run finishes.
  """
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  is_main = jax.process_index() == 0

  # Mesh and batch-size checks first: a config that cannot run fails in a second, before
  # the data is prepared.
  mesh = make_mesh(config)
  check_batch_fits_mesh(int(config.input.batch_size), mesh)
  logging.info("mesh %s over %d devices (%d processes)", dict(mesh.shape),
               jax.device_count(), jax.process_count())
  ds = prepare_lib.prepare(config.data)
  ds, modalities = resolve_modalities(ds, config)
  info = build_data_info(ds, config, modalities)
  task = Task(config, info, mesh)
  features = expected_dims = None
  if config.input.stream_features:
    features = {m: ds.features(m) for m in modalities}
    # The feature width each modality's tower was built for: the pipeline streams exactly
    # these modalities and checks the shards against them when it is built.
    expected_dims = {m: int(info.features[m].shape[1]) for m in task.modalities}
  pipe = pipeline_lib.make_train_pipeline(
      ds.split("train"), ds.num_users, ds.num_items, config.input, seed=config.seed,
      features=features, expected_dims=expected_dims, process_index=jax.process_index(),
      process_count=jax.process_count())
  steps_per_epoch = pipe.steps_per_epoch
  total_steps = steps_per_epoch * config.train.num_epochs
  if config.train.max_steps > 0:
    total_steps = min(total_steps, config.train.max_steps)
  eval_every = max(1, steps_per_epoch * config.train.eval_every_epochs)
  metric_name = config.train.selection_metric

  ckpt = checkpointing.RunCheckpointer(workdir, max_to_keep=config.train.max_checkpoints)
  loop = {"best_metric": -math.inf, "best_step": -1, "bad_evals": 0, "stopped_early": False,
          "train_seconds": 0.0}
  if ckpt.latest_step() is not None:
    state, data_state, loop = ckpt.restore_latest(task.abstract_state())
    pipe.set_state(data_state)
    logging.info("resumed from step %d in %s", int(state["step"]), workdir)
  else:
    state = task.init(config.seed)
  sharding.assert_tables_sharded(state, config.mesh.min_sharded_bytes)
  start_step = int(jax.device_get(state["step"]))
  writer = reporting.MetricsWriter(workdir, resume_step=start_step)
  if is_main:
    reporting.write_json_atomic(workdir / "config.json", config.to_dict())

  def save(step: int, best: bool = False) -> None:
    ckpt.save(step, state, pipe.get_state(), loop, best=best)

  def validate(step: int) -> bool:
    """Runs validation, updates early stopping; returns True to stop."""
    result = _evaluate(task, state, ds, "valid", config, mesh)
    writer.write(step, "valid", result.metrics)
    if metric_name not in result.metrics:
      raise ConfigError(f"config.train.selection_metric={metric_name!r} not among "
                        f"{sorted(result.metrics)}")
    value = float(result.metrics[metric_name])
    improved = value > loop["best_metric"]
    if improved:
      loop.update(best_metric=value, best_step=step, bad_evals=0)
    else:
      loop["bad_evals"] += 1
    save(step, best=improved)
    logging.info("step %d valid %s=%.4f (best %.4f at %d)", step, metric_name, value,
                 loop["best_metric"], loop["best_step"])
    stop = 0 < config.train.early_stopping_patience <= loop["bad_evals"]
    loop["stopped_early"] = bool(stop)
    return stop

  sync_every = 1 if jax.process_count() > 1 else max(1, config.train.log_every_steps)
  bar = None
  if is_main and config.train.progress_bar:
    from tqdm import tqdm  # pylint: disable=g-import-not-at-top
    bar = tqdm(total=total_steps, initial=start_step, unit="step", dynamic_ncols=True)
  status = "finished"
  it = iter(pipe)
  step = start_step
  t_last, n_last, pending = time.time(), step, []
  with _Preemption() as preempt:
    while step < total_steps and not loop["stopped_early"]:
      batch = sharding.global_batch_from_local(mesh, next(it))
      state, metrics = task.train_step(state, batch)
      step += 1
      pending.append(metrics)
      ckpt_due = bool(config.train.checkpoint_every_steps) and (
          step % config.train.checkpoint_every_steps == 0)
      # Losses are checked before anything is saved, so no checkpoint holds NaNs.
      if (step % sync_every == 0 or step == total_steps or step % eval_every == 0
          or ckpt_due or preempt.requested):
        fetched = jax.device_get(pending)
        pending = []
        losses = np.array([float(m["loss"]) for m in fetched])
        if not np.all(np.isfinite(losses)):
          raise NonFiniteLossError(
              f"training loss became {losses[~np.isfinite(losses)][0]} at or before step "
              f"{step}; stopped. The last good checkpoint in {workdir / 'checkpoints'} is "
              "intact (lower optimizer.learning_rate or set optimizer.grad_clip).")
        now = time.time()
        ex_s = (step - n_last) * config.input.batch_size / max(now - t_last, 1e-9)
        loop["train_seconds"] += now - t_last
        t_last, n_last = now, step
        row = {k: float(v) for k, v in fetched[-1].items()}
        row["loss"] = float(losses.mean())
        row["examples_per_s"] = ex_s
        row["epoch"] = step / steps_per_epoch
        writer.write(step, "train", row)
        if bar is not None:
          bar.update(step - bar.n)
          bar.set_postfix(loss=f"{row['loss']:.4f}", ex_s=f"{ex_s:,.0f}")
      if step % eval_every == 0 or step == total_steps:
        if validate(step):
          logging.info("early stopping at step %d", step)
        t_last = time.time()
      elif ckpt_due:
        save(step)
      _fault_injection(step, ckpt)
      if preempt.requested:
        save(step)
        status = "preempted"
        logging.warning("SIGTERM: saved a checkpoint at step %d in %s; the same command "
                        "resumes.", step, workdir)
        break
  if bar is not None:
    bar.close()
  ckpt.wait()
  writer_results = {"status": status, "steps": step}
  if status == "preempted":
    writer.close()
    ckpt.close()
    return writer_results

  # Final: best-validation model (model selection on valid only); test scored once.
  if ckpt.has_best():
    state, _, _ = ckpt.restore_best(task.abstract_state())
  results: dict[str, Any] = {"status": status, "steps": step,
                             "best_step": loop["best_step"],
                             "train_seconds": round(loop["train_seconds"], 3),
                             "steps_per_epoch": steps_per_epoch,
                             # Wall time of one epoch of training steps (incl. input and
                             # logging, excl. validation); what the comparison reports.
                             "epoch_seconds": round(loop["train_seconds"] * steps_per_epoch
                                                    / max(step, 1), 3),
                             "model": config.model.name,
                             "modalities": list(modalities)}
  for split in ("valid", "test"):
    res = _evaluate(task, state, ds, split, config, mesh)
    results[split] = {k: float(v) for k, v in res.metrics.items()}
    if config.eval.slices and getattr(res, "slices", None):
      results[f"{split}_slices"] = res.slices
    if config.eval.export_topk and is_main:
      from mmrec_jax.evaluation import export  # pylint: disable=g-import-not-at-top
      export.write_topk(workdir / f"topk_{split}.tsv", ds.user_raw_ids()[res.users],
                        ds.item_raw_ids(), res.topk_items, res.topk_scores)
    if is_main:
      np.savez(workdir / f"per_user_{split}.npz", users=res.users,
               **{k: v for k, v in res.per_user.items()})
  writer.write(step, "final_valid", results["valid"])
  writer.write(step, "final_test", results["test"])
  writer.close()
  ckpt.close()
  if is_main:
    reporting.write_json_atomic(workdir / "results.json", results)
    reporting.plot_learning_curves(workdir / "metrics.jsonl", workdir / "learning_curve.png",
                                   metric_name)
  return results
