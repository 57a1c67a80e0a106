"""One run per workdir: an exclusive lock held for the whole run.

Why: two runs on one workdir (a second terminal, a job scheduled twice) used to both
train; the second died with dozens of Orbax tracebacks and ``metrics.jsonl`` ended up
interleaved, with steps going backwards. Now the second fails at once with one line
naming the holder.

The lock is ``fcntl.flock`` on ``<workdir>/.lock``: the kernel drops it when its process
dies, however it dies (kill -9 included), so a lock left by a crashed run is never in the
way -- that is the stale-lock detection, done by the operating system and not by
guessing from PIDs (which may be reused, or belong to another host). The file also holds
the holder's host, PID and start time, for the message only.

Only process 0 of a multi-process run takes it (the others share its workdir). On file
systems without ``flock`` (some network mounts) the run goes on with a warning.
"""

from __future__ import annotations

import datetime
import errno
import fcntl
import json
import os
import pathlib
import socket

from absl import logging

from mmrec_jax.errors import WorkdirBusyError

LOCK_NAME = ".lock"


class WorkdirLock:
  """Context manager: holds ``<workdir>/.lock`` exclusively, or raises WorkdirBusyError."""

  def __init__(self, workdir: str | pathlib.Path, enabled: bool = True):
    self.path = pathlib.Path(workdir) / LOCK_NAME
    self.enabled = enabled
    self._fd: int | None = None

  def acquire(self) -> None:
    if not self.enabled or self._fd is not None:
      return
    fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
      if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
        holder = _read_holder(fd)
        os.close(fd)
        raise WorkdirBusyError(
          f"{self.path.parent}: another run is using this workdir ({holder}); wait for "
          "it to finish or use another --workdir"
        ) from None
      os.close(fd)
      if e.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
        logging.warning(
          "%s: file locking unsupported here (%s); not guarding against a "
          "second run on this workdir",
          self.path,
          e.strerror,
        )
        return
      raise
    info = {
      "host": socket.gethostname(),
      "pid": os.getpid(),
      "started": datetime.datetime.now().isoformat(timespec="seconds"),
    }
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
    self._fd = fd

  def release(self) -> None:
    if self._fd is None:
      return
    try:
      os.ftruncate(self._fd, 0)
    except OSError:
      pass
    fcntl.flock(self._fd, fcntl.LOCK_UN)
    os.close(self._fd)
    self._fd = None

  def __enter__(self) -> WorkdirLock:
    self.acquire()
    return self

  def __exit__(self, *exc) -> None:
    self.release()


def _read_holder(fd: int) -> str:
  try:
    info = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    return f"pid {info['pid']} on {info['host']}, started {info['started']}"
  except (OSError, ValueError, KeyError, TypeError):
    return "holder unknown"
