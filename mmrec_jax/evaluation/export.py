"""Top-K recommendation lists as TSV, with raw ids, written atomically.

Format (one header line, then one line per recommendation, users in the given order and
ranks ascending)::

    user_id<TAB>item_id<TAB>rank<TAB>score
    u42<TAB>i7<TAB>1<TAB>3.2518

``rank`` is 1-based; ``score`` is the model score with 9 significant digits (float32 round
trip). Positions whose score is ``-inf`` (the user had fewer than K rankable items left after
exclusion) are not written, so a user may have fewer than K lines. Raw ids must not contain
tabs or newlines (they come from the prepared dataset, one per line, so they cannot).
The file is written to a temp file beside it and renamed into place (io_utils.atomic_path):
readers never see half of it.
"""

from __future__ import annotations

import os
import pathlib

import numpy as np

from mmrec_jax.errors import DataError
from mmrec_jax.io_utils import atomic_path


def write_topk(
  path: str | os.PathLike,
  users_raw: np.ndarray,
  items_raw: np.ndarray,
  topk_items: np.ndarray,
  topk_scores: np.ndarray,
  *,
  rows_per_write: int = 65536,
) -> pathlib.Path:
  """Writes the TSV described in the module docstring.

  Args:
    path: output file.
    users_raw: raw user id per row of ``topk_items`` ([n_users], str-convertible).
    items_raw: raw item id per internal item id ([num_items]).
    topk_items: int [n_users, K] internal item ids, best first.
    topk_scores: float [n_users, K] their scores.
    rows_per_write: users formatted per write (bounds memory for big exports).

  Returns:
    The path written.
  """
  path = pathlib.Path(path)
  topk_items = np.asarray(topk_items)
  topk_scores = np.asarray(topk_scores)
  users_raw = np.asarray(users_raw).astype(str)
  items_raw = np.asarray(items_raw).astype(str)
  if topk_items.shape != topk_scores.shape or topk_items.ndim != 2:
    raise DataError(
      str(path),
      f"top-k items {topk_items.shape} and scores {topk_scores.shape} "
      "must be the same [users, K] shape",
    )
  if users_raw.shape != (topk_items.shape[0],):
    raise DataError(str(path), f"{users_raw.size} user ids for {topk_items.shape[0]} rows")
  if topk_items.size and (topk_items.min() < 0 or topk_items.max() >= items_raw.size):
    raise DataError(str(path), f"item id outside the {items_raw.size} raw item ids")
  path.parent.mkdir(parents=True, exist_ok=True)
  k = topk_items.shape[1]
  with atomic_path(path) as tmp:
    with open(tmp, "x", encoding="utf-8", newline="\n") as f:
      f.write("user_id\titem_id\trank\tscore\n")
      for s in range(0, topk_items.shape[0], rows_per_write):
        it = topk_items[s : s + rows_per_write]
        sc = topk_scores[s : s + rows_per_write]
        ok = np.isfinite(sc)
        u = np.repeat(users_raw[s : s + rows_per_write], k).reshape(it.shape)[ok]
        r = np.broadcast_to(np.arange(1, k + 1), it.shape)[ok]
        lines = [
          f"{a}\t{b}\t{c}\t{d:.9g}\n"
          for a, b, c, d in zip(u, items_raw[it[ok]], r, sc[ok].tolist())
        ]
        f.write("".join(lines))
  return path


def read_topk(path: str | os.PathLike) -> list[tuple[str, str, int, float]]:
  """Reads a file written by :func:`write_topk` (tests, small files)."""
  out = []
  with open(path, encoding="utf-8") as f:
    header = f.readline().rstrip("\n")
    if header != "user_id\titem_id\trank\tscore":
      raise DataError(str(path), f"line 1: unexpected header {header!r}")
    for n, line in enumerate(f, start=2):
      parts = line.rstrip("\n").split("\t")
      if len(parts) != 4:
        raise DataError(str(path), f"line {n}: expected 4 tab-separated fields")
      out.append((parts[0], parts[1], int(parts[2]), float(parts[3])))
  return out
