"""File hashing, atomic writes, directory swaps and JSON manifests: the one copy of each.

Why one module: the prepared dataset, its feature shards, extraction work chunks and run
results are all written by "temp file beside the target, then rename", and read back by
"parse a JSON object, fail naming the file". Each of those had grown its own copy with its
own corner cases (one fsynced, one did not; one removed its temp file on failure, one left
it behind). Here they are written once:

* :func:`sha256_file` -- hex sha256 of a file, read in 4 MiB blocks (GB-sized files never
  sit in memory);
* :func:`atomic_write_bytes` / :func:`atomic_write_text` / :func:`atomic_write_json` and,
  for writers that stream (``np.save``, ``savefig``, a TSV written line by line),
  :func:`atomic_path` -- the data goes to a temp file in the target's directory (so the
  rename never crosses a file system), is fsynced, and ``os.replace`` puts it in place:
  a reader sees the old file or the new one, never half of one, and a failure mid-write
  leaves the old file untouched and no temp file behind. Files get the usual permissions
  (the umask's), as a plain ``open(path, "w")`` would give them;
* :func:`replace_dir` -- the same for a directory built completely in a temp dir: the old
  directory is first renamed aside to ``.<name>.old-<pid>-<hex>`` (so an interrupted swap
  can be undone: data/prepare.py looks for that name), the new one renamed into place
  (the old one renamed back if that fails), and only then is the old one deleted;
* :func:`read_json` -- a JSON object from a file (manifests, model ``config.json``), with a
  one-line DataError naming the file when it is missing, unreadable, not JSON, or not an
  object.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pathlib
import secrets
import shutil
from collections.abc import Iterator
from typing import Any

from mmrec_jax.errors import DataError

_BLOCK = 1 << 22  # 4 MiB reads when hashing


def sha256_file(path: os.PathLike | str, chunk: int = _BLOCK) -> str:
  """Hex sha256 of the file at ``path``, read ``chunk`` bytes at a time."""
  h = hashlib.sha256()
  with open(path, "rb") as f:
    while block := f.read(chunk):
      h.update(block)
  return h.hexdigest()


def _temp_name(path: pathlib.Path) -> pathlib.Path:
  # The suffix stays last: np.save and savefig choose the format from it.
  return path.with_name(f".{path.stem}.tmp-{os.getpid()}-{secrets.token_hex(4)}{path.suffix}")


def _fsync(path: pathlib.Path) -> None:
  fd = os.open(path, os.O_RDONLY)
  try:
    os.fsync(fd)
  finally:
    os.close(fd)


@contextlib.contextmanager
def atomic_path(path: os.PathLike | str) -> Iterator[pathlib.Path]:
  """Yields a temp path beside ``path``; on success it is fsynced and renamed to ``path``.

  For writers that want a file name (``np.save``, ``fig.savefig``: the temp name keeps
  ``path``'s suffix) or write in pieces. On an exception the temp file is removed and
  ``path`` is left as it was (a caller that wrote nothing gets FileNotFoundError).
  """
  path = pathlib.Path(path)
  tmp = _temp_name(path)
  try:
    yield tmp
    _fsync(tmp)
    os.replace(tmp, path)
  except BaseException:
    tmp.unlink(missing_ok=True)
    raise


def atomic_write_bytes(path: os.PathLike | str, data: bytes) -> None:
  """Writes ``data`` to ``path`` atomically (temp file + fsync + rename)."""
  with atomic_path(path) as tmp:
    with open(tmp, "xb") as f:
      f.write(data)


def atomic_write_text(path: os.PathLike | str, text: str, encoding: str = "utf-8") -> None:
  """Writes ``text`` to ``path`` atomically (temp file + fsync + rename)."""
  atomic_write_bytes(path, text.encode(encoding))


def atomic_write_json(
  path: os.PathLike | str, obj: Any, *, indent: int | None = 1, sort_keys: bool = False
) -> None:
  """Writes ``obj`` as JSON plus a final newline to ``path`` atomically."""
  atomic_write_text(path, json.dumps(obj, indent=indent, sort_keys=sort_keys) + "\n")


def replace_dir(tmp: os.PathLike | str, target: os.PathLike | str) -> None:
  """Moves the complete directory ``tmp`` to ``target``; an old ``target`` goes only after.

  Without an existing ``target`` this is one rename (whose OSError, e.g. a concurrent
  writer that got there first, reaches the caller). Otherwise the old directory is renamed
  to ``.<name>.old-<pid>-<hex>`` beside it, ``tmp`` is renamed into place -- on failure the
  old directory is renamed back and the error raised -- and the old one is deleted.
  A process killed between the two renames leaves no ``target`` but the ``.old-`` copy,
  which a caller may restore (data/prepare.py does).
  """
  tmp, target = pathlib.Path(tmp), pathlib.Path(target)
  if not target.exists():
    os.rename(tmp, target)
    return
  old = target.parent / f".{target.name}.old-{os.getpid()}-{secrets.token_hex(4)}"
  os.rename(target, old)
  try:
    os.rename(tmp, target)
  except BaseException:
    os.rename(old, target)
    raise
  shutil.rmtree(old, ignore_errors=True)


def _first_line(e: BaseException) -> str:
  text = str(e).strip()
  return text.splitlines()[0] if text else type(e).__name__


def read_json(path: os.PathLike | str) -> dict[str, Any]:
  """The JSON object in ``path`` (a manifest, a model's config.json).

  Raises:
    DataError: one line naming the file: not found, unreadable, not valid JSON, or not
      a JSON object.
  """
  path = pathlib.Path(path)
  try:
    with open(path, encoding="utf-8") as f:
      obj = json.load(f)
  except FileNotFoundError:
    raise DataError(str(path), "file not found") from None
  except OSError as e:
    raise DataError(str(path), f"unreadable ({_first_line(e)})") from None
  except ValueError as e:  # JSONDecodeError, UnicodeDecodeError
    raise DataError(str(path), f"not valid JSON ({_first_line(e)})") from None
  if not isinstance(obj, dict):
    raise DataError(str(path), f"expected a JSON object, got {type(obj).__name__}")
  return obj
