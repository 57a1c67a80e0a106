"""Fetching step metrics from the device in groups: one host sync per ``log_every_steps``.

Metrics of every step stay on device until a flush; then they are fetched together, the
losses are checked for NaN/inf (before anything is saved, so no checkpoint holds NaNs),
and one row (mean loss, examples/s, epoch) goes to the metrics writer and progress bar.
A chunk of steps run in one call (``data/device_epoch.py``) adds its metrics as one
buffer of stacked values with the number of valid leading entries.
"""

from __future__ import annotations

import pathlib
import time
from typing import Any

import jax
import numpy as np

from mmrec_jax.errors import MmrecError


class NonFiniteLossError(MmrecError):
  """The training loss became NaN/inf; the last good checkpoint is kept."""


class MetricFlusher:
  """Collects device metrics and writes one row per flush."""

  def __init__(
    self,
    writer,
    bar,
    *,
    batch_size: int,
    steps_per_epoch: int,
    workdir: pathlib.Path,
    start_step: int,
  ):
    self.writer = writer
    self.bar = bar
    self.batch_size = batch_size
    self.steps_per_epoch = steps_per_epoch
    self.workdir = workdir
    self.pending: list[Any] = []
    self.t_last, self.n_last = time.time(), start_step

  def add(self, metrics: Any, count: int | None = None) -> None:
    """One step's metrics, or ``count`` steps' stacked along a leading axis."""
    self.pending.append((metrics, count))

  def restart_clock(self) -> None:
    """Excludes the time since the last flush (validation) from training time."""
    self.t_last = time.time()

  def flush(self, step: int) -> float:
    """Fetches pending metrics, checks losses, writes a row; returns the seconds trained."""
    fetched = jax.device_get([m for m, _ in self.pending])
    counts = [c for _, c in self.pending]
    self.pending = []
    losses = np.concatenate(
      [np.atleast_1d(np.asarray(m["loss"], np.float64))[: c or 1] for m, c in zip(fetched, counts)]
    )
    if not np.all(np.isfinite(losses)):
      raise NonFiniteLossError(
        f"training loss became {losses[~np.isfinite(losses)][0]} at or before step "
        f"{step}; stopped. The last good checkpoint in {self.workdir / 'checkpoints'} is "
        "intact (lower optimizer.learning_rate or set optimizer.grad_clip)."
      )
    now = time.time()
    ex_s = (step - self.n_last) * self.batch_size / max(now - self.t_last, 1e-9)
    elapsed = now - self.t_last
    self.t_last, self.n_last = now, step
    last, count = fetched[-1], counts[-1]
    row = {k: float(v if count is None else v[count - 1]) for k, v in last.items()}
    row["loss"] = float(losses.mean())
    row["examples_per_s"] = ex_s
    row["epoch"] = step / self.steps_per_epoch
    self.writer.write(step, "train", row)
    if self.bar is not None:
      self.bar.update(step - self.bar.n)
      self.bar.set_postfix(loss=f"{row['loss']:.4f}", ex_s=f"{ex_s:,.0f}")
    return elapsed
