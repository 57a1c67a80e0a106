"""The one training loop: init sharded, step, validate, checkpoint, resume, test.

``train_and_evaluate(config, workdir)`` is what ``main`` calls and what tests call. The
same call on the same workdir resumes: it restores the latest checkpoint (model,
optimizer, data-iterator and loop state) and continues exactly where the run stopped, so a
killed run and an uninterrupted one end with the same parameters and metrics.

Model selection uses the validation split only; the test split is scored once, on the
best-validation checkpoint, at the end. The parts live in ``mmrec_jax/loop/``: set-up,
early stopping, metric flushing, the final report, signals.
"""

from __future__ import annotations

import pathlib
from typing import Any

import jax
import ml_collections
from absl import logging

from mmrec_jax import checkpointing, reporting, sharding
from mmrec_jax.data import pipeline as pipeline_lib  # noqa: F401  (tests patch these)
from mmrec_jax.data import prepare as prepare_lib  # noqa: F401
from mmrec_jax.errors import ConfigError
from mmrec_jax.loop import report, signals
from mmrec_jax.loop.early_stopping import EarlyStopping
from mmrec_jax.loop.flush import MetricFlusher, NonFiniteLossError
from mmrec_jax.loop.setup import (build_data_info, check_batch_fits_mesh, make_mesh,
                                  resolve_modalities, set_up)
from mmrec_jax.step import DataInfo, Task

__all__ = ["DataInfo", "NonFiniteLossError", "Task", "build_data_info",
           "check_batch_fits_mesh", "make_mesh", "resolve_modalities", "train_and_evaluate"]


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | pathlib.Path) -> dict:
  """Trains (or resumes) the configured model in ``workdir``; returns final metrics.

  Returns ``{"valid": {...}, "test": {...}, "status": "finished"|"preempted", ...}``; the
  same dict is written to ``workdir/results.json`` when the run finishes.
  """
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  is_main = jax.process_index() == 0
  run = set_up(config)
  task, pipe, mesh = run.task, run.pipe, run.mesh
  metric_name = config.train.selection_metric

  ckpt = checkpointing.RunCheckpointer(workdir, max_to_keep=config.train.max_checkpoints)
  stopping = EarlyStopping(patience=config.train.early_stopping_patience)
  if ckpt.latest_step() is not None:
    state, data_state, loop = ckpt.restore_latest(task.abstract_state())
    stopping = EarlyStopping.from_dict(loop, config.train.early_stopping_patience)
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
    ckpt.save(step, state, pipe.get_state(), stopping.as_dict(), best=best)

  def validate(step: int) -> bool:
    """Runs validation, updates early stopping, saves; returns True to stop."""
    result = report.evaluate(task, state, run.ds, "valid", config, mesh)
    writer.write(step, "valid", result.metrics)
    if metric_name not in result.metrics:
      raise ConfigError(f"config.train.selection_metric={metric_name!r} not among "
                        f"{sorted(result.metrics)}")
    improved = stopping.update(step, float(result.metrics[metric_name]))
    save(step, best=improved)
    logging.info("step %d valid %s=%.4f (best %.4f at %d)", step, metric_name,
                 float(result.metrics[metric_name]), stopping.best_metric, stopping.best_step)
    return stopping.stopped_early

  sync_every = 1 if jax.process_count() > 1 else max(1, config.train.log_every_steps)
  bar = None
  if is_main and config.train.progress_bar:
    from tqdm import tqdm  # noqa: PLC0415  (only with a progress bar)
    bar = tqdm(total=run.total_steps, initial=start_step, unit="step", dynamic_ncols=True)
  flusher = MetricFlusher(writer, bar, batch_size=config.input.batch_size,
                          steps_per_epoch=run.steps_per_epoch, workdir=workdir,
                          start_step=start_step)
  status = "finished"
  it = iter(pipe)
  step = start_step
  with signals.Preemption() as preempt:
    while step < run.total_steps and not stopping.stopped_early:
      batch = sharding.global_batch_from_local(mesh, next(it))
      state, metrics = task.train_step(state, batch)
      step += 1
      flusher.add(metrics)
      ckpt_due = bool(config.train.checkpoint_every_steps) and (
          step % config.train.checkpoint_every_steps == 0)
      # Losses are checked before anything is saved, so no checkpoint holds NaNs.
      if (step % sync_every == 0 or step == run.total_steps or step % run.eval_every == 0
          or ckpt_due or preempt.requested):
        stopping.train_seconds += flusher.flush(step)
      if step % run.eval_every == 0 or step == run.total_steps:
        if validate(step):
          logging.info("early stopping at step %d", step)
        flusher.restart_clock()
      elif ckpt_due:
        save(step)
      signals.fault_injection(step, ckpt)
      if preempt.requested:
        save(step)
        status = "preempted"
        logging.warning("SIGTERM: saved a checkpoint at step %d in %s; the same command "
                        "resumes.", step, workdir)
        break
  if bar is not None:
    bar.close()
  ckpt.wait()
  if status == "preempted":
    writer.close()
    ckpt.close()
    return {"status": status, "steps": step}

  # Final: best-validation model (model selection on valid only); test scored once.
  if ckpt.has_best():
    state, _, _ = ckpt.restore_best(task.abstract_state())
  header: dict[str, Any] = {
      "status": status, "steps": step, "best_step": stopping.best_step,
      "train_seconds": round(stopping.train_seconds, 3),
      "steps_per_epoch": run.steps_per_epoch,
      # Wall time of one epoch of training steps (incl. input and logging, excl.
      # validation); what the comparison reports.
      "epoch_seconds": round(stopping.train_seconds * run.steps_per_epoch / max(step, 1), 3),
      "model": config.model.name, "modalities": list(run.modalities)}
  results = report.final_report(task=task, state=state, ds=run.ds, config=config, mesh=mesh,
                                workdir=workdir, writer=writer, header=header,
                                is_main=is_main)
  writer.close()
  ckpt.close()
  if is_main:
    report.write_results(workdir, results, metric_name)
  return results
