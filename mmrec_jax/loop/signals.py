"""SIGTERM as a flag checked between steps, and the test hooks that kill a run on cue."""

from __future__ import annotations

import os
import signal


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
