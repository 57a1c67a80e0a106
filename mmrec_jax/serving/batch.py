"""Batch top-K for every user (or a list) to Parquet or TSV, sharded over devices and hosts.

Why not the evaluator's export: that writes only users with ground truth in a split and
only on process 0. Here every process takes a contiguous slice of the users
(``process_index`` of ``process_count``), ranks it on its own devices (the catalogue is
row-sharded over them, ``serving.topk``) and writes its own part file, so hosts never wait
on each other and the output scales with the number of hosts::

    OUT/part-00000-of-00002.parquet   columns user_id, item_id, rank (1-based), score
    OUT/part-00001-of-00002.parquet

(``.tsv`` with the header of ``evaluation/export.py`` when ``fmt='tsv'``). Positions with
nothing rankable left are not written, as in ``topk_<split>.tsv``. Each part is written to
a temporary name and renamed, so a reader never sees half a file.
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Sequence

import jax
import numpy as np

from mmrec_jax.errors import ConfigError
from mmrec_jax.serving.recommender import Recommender


def user_slice(num_users: int, process_index: int, process_count: int) -> slice:
  """The contiguous block of users process ``process_index`` of ``process_count`` ranks."""
  per = -(-num_users // process_count)
  return slice(min(num_users, process_index * per), min(num_users, (process_index + 1) * per))


def write_topk(
  rec: Recommender,
  out_dir: str | os.PathLike,
  k: int = 100,
  *,
  user_ids: Sequence[str] | None = None,
  fmt: str = "parquet",
  exclude_seen: bool = True,
  chunk: int = 4096,
  process_index: int | None = None,
  process_count: int | None = None,
) -> pathlib.Path:
  """Writes this process's part of the top-``k`` lists; returns its path."""
  if fmt not in ("parquet", "tsv"):
    raise ConfigError(f"format={fmt!r} is not one of ['parquet', 'tsv']")
  pid = jax.process_index() if process_index is None else process_index
  nproc = jax.process_count() if process_count is None else process_count
  users = rec.user_raw if user_ids is None else np.asarray(user_ids).astype(str)
  mine = users[user_slice(len(users), pid, nproc)]
  out = pathlib.Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  path = out / f"part-{pid:05d}-of-{nproc:05d}.{fmt}"
  tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
  cols = {"user_id": [], "item_id": [], "rank": [], "score": []}
  try:
    with open(tmp, "w", encoding="utf-8", newline="\n") if fmt == "tsv" else _Null() as f:
      if fmt == "tsv":
        f.write("user_id\titem_id\trank\tscore\n")
      for s in range(0, len(mine), chunk):
        part = mine[s : s + chunk]
        res = rec.recommend(part, k=k, exclude_seen=exclude_seen)
        ok = np.isfinite(res.scores)
        u = np.repeat(part, k).reshape(ok.shape)[ok]
        it = res.item_ids[ok]
        r = np.broadcast_to(np.arange(1, k + 1), ok.shape)[ok]
        sc = res.scores[ok]
        if fmt == "tsv":
          f.write(
            "".join(
              f"{a}\t{b}\t{c}\t{d:.9g}\n" for a, b, c, d in zip(u, it, r.tolist(), sc.tolist())
            )
          )
        else:
          cols["user_id"].append(u)
          cols["item_id"].append(it)
          cols["rank"].append(r.astype(np.int32))
          cols["score"].append(sc.astype(np.float32))
    if fmt == "parquet":
      import pyarrow as pa  # noqa: PLC0415
      import pyarrow.parquet as pq  # noqa: PLC0415

      cat = {
        c: (
          np.concatenate(v)
          if v
          else np.zeros(0, np.float32 if c == "score" else (np.int32 if c == "rank" else str))
        )
        for c, v in cols.items()
      }
      table = pa.table(
        {
          "user_id": pa.array(cat["user_id"].astype(str)),
          "item_id": pa.array(cat["item_id"].astype(str)),
          "rank": pa.array(cat["rank"].astype(np.int32)),
          "score": pa.array(cat["score"].astype(np.float32)),
        }
      )
      pq.write_table(table, tmp)
    os.replace(tmp, path)
  except BaseException:
    tmp.unlink(missing_ok=True)
    raise
  return path


class _Null:
  def __enter__(self):
    return None

  def __exit__(self, *exc):
    return False
