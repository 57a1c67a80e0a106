"""Model selection on the validation split: the best metric so far and the patience.

Its fields are the loop state saved in every checkpoint (``checkpointing``), so a resumed
run continues early stopping exactly where it stopped; ``as_dict``/``from_dict`` keep
the checkpoint layout of earlier versions (a plain dict with these keys).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any


@dataclasses.dataclass
class EarlyStopping:
  """Best validation value, its step, evaluations without improvement, train time."""

  patience: int = 0
  best_metric: float = -math.inf
  best_step: int = -1
  bad_evals: int = 0
  stopped_early: bool = False
  train_seconds: float = 0.0

  def update(self, step: int, value: float) -> bool:
    """Records a validation value; returns True when it is a new best."""
    improved = value > self.best_metric
    if improved:
      self.best_metric, self.best_step, self.bad_evals = value, step, 0
    else:
      self.bad_evals += 1
    self.stopped_early = bool(0 < self.patience <= self.bad_evals)
    return improved

  def as_dict(self) -> dict[str, Any]:
    """The loop state as checkpointed."""
    return {
      "best_metric": self.best_metric,
      "best_step": self.best_step,
      "bad_evals": self.bad_evals,
      "stopped_early": self.stopped_early,
      "train_seconds": self.train_seconds,
    }

  @classmethod
  def from_dict(cls, loop: dict[str, Any], patience: int) -> EarlyStopping:
    return cls(
      patience=patience,
      best_metric=loop["best_metric"],
      best_step=loop["best_step"],
      bad_evals=loop["bad_evals"],
      stopped_early=loop["stopped_early"],
      train_seconds=loop["train_seconds"],
    )
