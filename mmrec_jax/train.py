"""The one training loop: init sharded, step, validate, checkpoint, resume, test.

``train_and_evaluate(config, workdir)`` is what ``main`` calls and what tests call. The
same call on the same workdir resumes: it restores the latest checkpoint (model,
optimizer, data-iterator and loop state) and continues exactly where the run stopped, so a
killed run and an uninterrupted one end with the same parameters and metrics.

Model selection uses the validation split only; the test split is scored once, on the
best-validation checkpoint, at the end. The parts live in ``mmrec_jax/loop/``: set-up,
early stopping, metric flushing, the final report, signals.

Crash safety (docs/architecture.md, "Reliability"): the workdir is locked for the run
(``workdir_lock``); every checkpoint carries the run fingerprint (``fingerprint``) and a
checksum of its arrays; a resume takes the newest intact checkpoint and the final report
restores the best model by the step the restored loop state names (``checkpointing``).
"""

from __future__ import annotations

import errno
import os
import pathlib
from collections.abc import Callable, Mapping
from typing import Any

import jax
import ml_collections
from absl import logging

from mmrec_jax import checkpointing, compile_cache, reporting, sharding
from mmrec_jax import config as config_lib
from mmrec_jax import fingerprint as fingerprint_lib
from mmrec_jax.data import pipeline as pipeline_lib  # noqa: F401  (tests patch these)
from mmrec_jax.data import prepare as prepare_lib  # noqa: F401
from mmrec_jax.errors import ConfigError
from mmrec_jax.evaluation import LOWER_IS_BETTER
from mmrec_jax.loop import report, signals
from mmrec_jax.loop.early_stopping import EarlyStopping
from mmrec_jax.loop.flush import MetricFlusher, NonFiniteLossError
from mmrec_jax.loop.setup import (
  build_data_info,
  check_batch_fits_mesh,
  make_mesh,
  resolve_modalities,
  set_up,
)
from mmrec_jax.step import DataInfo, Task
from mmrec_jax.workdir_lock import WorkdirLock

__all__ = [
  "DataInfo",
  "NonFiniteLossError",
  "Task",
  "build_data_info",
  "check_batch_fits_mesh",
  "make_mesh",
  "resolve_modalities",
  "train_and_evaluate",
]


def _check_workdir(workdir: pathlib.Path) -> None:
  """ConfigError (one line) unless ``workdir`` is, or can be made, a writable directory."""
  if workdir.exists() and not workdir.is_dir():
    raise ConfigError(f"--workdir={workdir}: exists and is not a directory")
  try:
    workdir.mkdir(parents=True, exist_ok=True)
    probe = workdir / f".write-test-{os.getpid()}"
    probe.touch()
    probe.unlink()
  except OSError as e:
    if e.errno == errno.ENOSPC:
      raise
    raise ConfigError(
      f"--workdir={workdir}: cannot write there ({e.strerror or type(e).__name__})"
    ) from None


def _next_event(step: int, run, config: ml_collections.ConfigDict) -> int:
  """The first step after ``step`` at which the loop logs, validates, saves or ends."""
  every = [config.train.log_every_steps, run.eval_every, config.train.checkpoint_every_steps]
  armed = [s for s in signals.armed_steps() if s > step]  # test hooks (signals.py)
  return min([run.total_steps, *armed] + [(step // e + 1) * e for e in every if e > 0])


def train_and_evaluate(
  config: ml_collections.ConfigDict,
  workdir: str | pathlib.Path,
  on_validation: Callable[[int, Mapping[str, float]], bool] | None = None,
) -> dict:
  """Trains (or resumes) the configured model in ``workdir``; returns final metrics.

  Returns ``{"valid": {...}, "test": {...}, "status": "finished"|"preempted", ...}``; the
  same dict is written to ``workdir/results.json`` when the run finishes.

  ``on_validation(step, valid_metrics)`` is called after every validation (and its
  checkpoint); returning True ends training there like an early stop, and the results
  carry ``"pruned": True`` (hyperparameter search prunes with it, ``mmrec_jax/tune.py``).

  Raises:
    ConfigError: a config value out of range, an unusable workdir, or a workdir whose
      checkpoints belong to another dataset/model.
    WorkdirBusyError: another live run holds the workdir.
    CheckpointError: the workdir has checkpoints but none is intact.
  """
  workdir = pathlib.Path(workdir)
  try:
    config_lib.validate(config)
  except ValueError as e:
    raise ConfigError(str(e)) from None
  _check_workdir(workdir)
  with WorkdirLock(workdir, enabled=jax.process_index() == 0):
    return _train_and_evaluate(config, workdir, on_validation)


def _train_and_evaluate(
  config: ml_collections.ConfigDict,
  workdir: pathlib.Path,
  on_validation: Callable[[int, Mapping[str, float]], bool] | None = None,
) -> dict:
  """The run itself, with the workdir locked."""
  is_main = jax.process_index() == 0
  logging.info("%s", compile_cache.enable(config))
  signals.fault_point("prepare", 0)
  run = set_up(config)
  task, steps, mesh = run.task, run.steps, run.mesh
  metric_name = config.train.selection_metric

  abstract_state = task.abstract_state()
  run_fingerprint = fingerprint_lib.run_fingerprint(config, run.ds, run.modalities, abstract_state)
  ckpt = checkpointing.RunCheckpointer(
    workdir, max_to_keep=config.train.max_checkpoints, fingerprint=run_fingerprint
  )
  stopping = EarlyStopping(patience=config.train.early_stopping_patience)
  if ckpt.has_checkpoints():
    state, data_state, loop = ckpt.restore_latest(abstract_state)
    stopping = EarlyStopping.from_dict(loop, config.train.early_stopping_patience)
    steps.set_state(data_state)
    logging.info("resumed from step %d in %s", int(state["step"]), workdir)
  else:
    state = task.init(config.seed)
  sharding.assert_tables_sharded(state, config.mesh.min_sharded_bytes)
  start_step = int(jax.device_get(state["step"]))
  writer = reporting.MetricsWriter(workdir, resume_step=start_step)
  if is_main:
    reporting.write_json_atomic(workdir / "config.json", config.to_dict())

  def save(step: int, best: bool = False) -> None:
    if ckpt.save(step, state, steps.get_state(), stopping.as_dict(), best=best):
      signals.fault_point("save", step)

  def validate(step: int) -> bool:
    """Runs validation, updates early stopping, saves; returns True to stop."""
    result = report.evaluate(task, state, run.ds, "valid", config, mesh)
    writer.write(step, "valid", result.metrics)
    signals.fault_point("validation", step)
    if metric_name not in result.metrics:
      raise ConfigError(
        f"config.train.selection_metric={metric_name!r} not among {sorted(result.metrics)}"
      )
    # Early stopping maximises: error metrics (MAE/RMSE) are compared negated.
    value = float(result.metrics[metric_name])
    improved = stopping.update(step, -value if metric_name in LOWER_IS_BETTER else value)
    save(step, best=improved)
    logging.info(
      "step %d valid %s=%.4f (best %.4f at %d)",
      step,
      metric_name,
      float(result.metrics[metric_name]),
      stopping.best_metric,
      stopping.best_step,
    )
    if on_validation is not None and on_validation(step, dict(result.metrics)):
      pruned.append(step)
      logging.info("step %d: on_validation asked to stop (pruned)", step)
      return True
    return stopping.stopped_early

  pruned: list[int] = []

  sync_every = 1 if jax.process_count() > 1 else max(1, config.train.log_every_steps)
  bar = None
  if is_main and config.train.progress_bar:
    from tqdm import tqdm  # noqa: PLC0415  (only with a progress bar)

    bar = tqdm(total=run.total_steps, initial=start_step, unit="step", dynamic_ncols=True)
  flusher = MetricFlusher(
    writer,
    bar,
    batch_size=config.input.batch_size,
    steps_per_epoch=run.steps_per_epoch,
    workdir=workdir,
    start_step=start_step,
  )
  status = "finished"
  step = start_step
  with signals.Preemption() as preempt:
    while step < run.total_steps and not stopping.stopped_early and not pruned:
      # A chunked source runs every step up to the next event in one call.
      state, metrics, n = steps.advance(task, state, _next_event(step, run, config))
      step += n
      signals.fault_point("step", step)
      flusher.add(metrics, n if steps.chunked else None)
      ckpt_due = bool(config.train.checkpoint_every_steps) and (
        step % config.train.checkpoint_every_steps == 0
      )
      # Losses are checked before anything is saved, so no checkpoint holds NaNs.
      if (
        steps.chunked
        or step % sync_every == 0
        or step == run.total_steps
        or step % run.eval_every == 0
        or ckpt_due
        or preempt.requested
      ):
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
        logging.warning(
          "SIGTERM: saved a checkpoint at step %d in %s; the same command resumes.", step, workdir
        )
        break
  if bar is not None:
    bar.close()
  steps.close()
  ckpt.wait()
  if status == "preempted":
    writer.close()
    ckpt.close()
    return {"status": status, "steps": step}

  # Final: best-validation model (model selection on valid only); test scored once. The
  # best step comes from the loop state restored/kept with the latest checkpoint, and
  # best/<that step> was complete before that checkpoint was written.
  if stopping.best_step >= 0:
    state = ckpt.restore_best(abstract_state, stopping.best_step)
  header: dict[str, Any] = {
    "status": status,
    "steps": step,
    "best_step": stopping.best_step,
    "train_seconds": round(stopping.train_seconds, 3),
    "steps_per_epoch": run.steps_per_epoch,
    # Wall time of one epoch of training steps (incl. input and logging, excl.
    # validation); what the comparison reports.
    "epoch_seconds": round(stopping.train_seconds * run.steps_per_epoch / max(step, 1), 3),
    "model": config.model.name,
    "modalities": list(run.modalities),
  }
  if pruned:
    header["pruned"] = True
  results = report.final_report(
    task=task,
    state=state,
    ds=run.ds,
    config=config,
    mesh=mesh,
    workdir=workdir,
    writer=writer,
    header=header,
    is_main=is_main,
  )
  writer.close()
  ckpt.close()
  if is_main:
    report.write_results(workdir, results, metric_name)
  return results
