"""SIGTERM as a flag checked between steps, and the test hooks that kill a run on cue.

The ``MMREC_FAULT_*`` variables are for tests only (``tests/test_faults.py``,
``benchmarks/random_kill.py``); a real run never sets them. They make crash tests
deterministic: a process is killed at a named point of the loop instead of at a random
moment, so each crash window (a half-written checkpoint, a best model saved without its
latest checkpoint, ...) is tested on every CI run.
"""

from __future__ import annotations

import os
import signal

# Named points of a run where MMREC_FAULT_KILL_AT / MMREC_FAULT_SIGTERM_AT can strike.
FAULT_POINTS = (
  "step",  # right after a train step was dispatched (device work in flight)
  "save",  # a checkpoint save started, its files being written in the background
  "best_save",  # best/<s> written, checkpoints/<s> not yet
  "validation",  # validation metrics computed and logged, nothing saved yet
  "final_eval",  # the final report: valid scored, test not yet
  "export",  # per-user metrics and exports written, results.json not yet
  "prepare",  # set-up: before the dataset is prepared
  "prepare_build",  # preparation: the temp dir built, not yet renamed into place
)


class Preemption:
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

  def _handle(self, signum, frame):
    del signum, frame
    self.requested = True

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)


def _matches(variable: str, point: str, step: int) -> bool:
  """True when ``$variable`` is ``<point>:<step>`` (or ``<point>`` alone: any step)."""
  value = os.environ.get(variable)
  if not value:
    return False
  name, _, at = value.partition(":")
  return name == point and (not at or int(at) == step)


def fault_point(point: str, step: int) -> None:
  """Test hook at a named point (``FAULT_POINTS``) of the run at step ``step``.

  MMREC_FAULT_KILL_AT=<point>[:<step>]: SIGKILL this process here (nothing flushed).
  MMREC_FAULT_SIGTERM_AT=<point>[:<step>]: send SIGTERM to this process here.
  """
  if _matches("MMREC_FAULT_KILL_AT", point, step):
    os.kill(os.getpid(), signal.SIGKILL)
  if _matches("MMREC_FAULT_SIGTERM_AT", point, step):
    os.kill(os.getpid(), signal.SIGTERM)


def fault_injection(step: int, ckpt) -> None:
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


def armed_steps() -> tuple[int, ...]:
  """Steps at which a test hook above strikes: a loop running many steps per call ends a
  call there, so the hook sees the state it would see between single steps."""
  out = []
  for var in ("MMREC_FAULT_KILL_AFTER_STEP", "MMREC_FAULT_SIGTERM_AT_STEP"):
    if os.environ.get(var):
      out.append(int(os.environ[var]))
  for var in ("MMREC_FAULT_KILL_AT", "MMREC_FAULT_SIGTERM_AT"):
    name, _, at = os.environ.get(var, "").partition(":")
    if name == "step" and at:
      out.append(int(at))
  return tuple(out)
