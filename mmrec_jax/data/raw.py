"""The in-memory form every raw source converges on, and the table readers they share.

Why a module of its own: the sources (sources.py) dispatch to the MovieLens reader
(movielens.py), and the MovieLens reader builds :class:`RawData` with the RecBole readers
(the RecBole 1.2.1 wheel ships MovieLens-100K as RecBole atomic files). Keeping what both
use here lets sources.py import movielens.py without movielens.py importing it back.
"""

from __future__ import annotations

import dataclasses
import pathlib
from collections.abc import Callable
from typing import Any

import numpy as np

from mmrec_jax.data import tables
from mmrec_jax.errors import DataError


@dataclasses.dataclass
class RawData:
  """Interactions with raw ids, before filtering/remapping/splitting."""

  source: str  # e.g. "movielens-100k", "recbole:ml-100k"
  users: np.ndarray  # raw ids: int64 or str, [n]
  items: np.ndarray  # raw ids: int64 or str, [n]
  timestamps: np.ndarray | None = None  # int64 [n] or None
  ratings: np.ndarray | None = None  # float32 [n] or None
  labels: np.ndarray | None = None  # int8 [n] 0/1/2: split given by the source
  item_info: dict[str, dict] | None = None  # str(raw item id) -> side info
  # modality -> (features [m, d] float32, raw item id of each row [m]); or a
  # ('npy', path) pair for MMRec files that feature code shards straight from disk.
  features: dict[str, Any] = dataclasses.field(default_factory=dict)
  item_universe: np.ndarray | None = None  # raw item ids kept even without interactions
  where_row: Callable[[int], str] | None = None  # "file:line" of row i (for messages)
  handcrafted_text: bool = False  # build 'text' from item_info (no text given)
  notes: list[str] = dataclasses.field(default_factory=list)


def stat(path: pathlib.Path) -> dict:
  """Identity of an input file for the fingerprint (size + mtime, no hashing of GBs)."""
  st = path.stat()
  return {"path": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


# ---------------------------------------------------------------- RecBole atomic files
# RecBole's conventional field names (its default USER_ID_FIELD etc.).
RECBOLE_FIELDS = {
  "user_id": "user",
  "item_id": "item",
  "rating": "rating",
  "timestamp": "timestamp",
}
RECBOLE_TYPES = ("token", "token_seq", "float", "float_seq")


def parse_recbole_header(header: list[str], where: str) -> list[tuple[str, str]]:
  fields = []
  for col in header:
    if ":" not in col:
      raise DataError(
        f"{where}:1",
        f"header field {col!r} is not 'name:type' (RecBole "
        f"atomic files type every column: {', '.join(RECBOLE_TYPES)})",
      )
    name, typ = col.rsplit(":", 1)
    if typ not in RECBOLE_TYPES:
      raise DataError(
        f"{where}:1",
        f"header field {col!r}: unknown type {typ!r} (valid: {', '.join(RECBOLE_TYPES)})",
      )
    fields.append((name, typ))
  return fields


def read_interaction_table(
  opener: tables.TextOpener, where: str, *, delimiter: str = "\t", recbole: bool | None = None
) -> tuple[dict, list[str]]:
  """Reads a headed TSV of interactions: RecBole typed header or plain names.

  Plain headers may name user_id|userID|user, item_id|itemID|item, rating, timestamp;
  other columns are read as strings and ignored. Returns (columns, header names).
  """
  header = tables.read_header(opener, where, delimiter)
  typed = any(":" in h for h in header) if recbole is None else recbole
  names = [n for n, _ in parse_recbole_header(header, where)] if typed else header
  aliases = {
    "user_id": "user",
    "userid": "user",
    "user": "user",
    "item_id": "item",
    "itemid": "item",
    "item": "item",
    "rating": "rating",
    "timestamp": "timestamp",
    "x_label": "x_label",
  }
  cols, seen = [], {}
  for j, n in enumerate(names):
    role = aliases.get(n.lower())
    if role in seen:
      raise DataError(f"{where}:1", f"columns {seen[role] + 1} and {j + 1} both name {role}")
    if role:
      seen[role] = j
    kind = {
      "user": "id",
      "item": "id",
      "rating": "float",
      "timestamp": "float",
      "x_label": "int",
      None: "str",
    }[role]
    cols.append(tables.Column(role or f"_extra{j}", kind))
  for role in ("user", "item"):
    if role not in seen:
      raise DataError(
        f"{where}:1",
        f"header {header} names no {role} column (expected {role}_id, {role}ID or {role})",
      )
  data = tables.read_columns(opener, where=where, delimiter=delimiter, columns=cols, skip_lines=1)
  return {k: v for k, v in data.items() if not k.startswith("_extra")}, header


def read_recbole_items(opener: tables.TextOpener, where: str) -> dict[str, dict]:
  """RecBole .item: title/genres/year from the usual field names; others ignored."""
  try:
    return _read_recbole_items(opener, where)
  except UnicodeDecodeError as e:
    raise tables.decode_error(opener, where, e) from None


def _read_recbole_items(opener: tables.TextOpener, where: str) -> dict[str, dict]:
  header = tables.read_header(opener, where, "\t")
  fields = parse_recbole_header(header, where)
  names = [n for n, _ in fields]
  if "item_id" not in names:
    raise DataError(f"{where}:1", "header names no item_id field")
  cols = [tables.Column(n, "str") for n in names]
  # Item files may have empty fields (unknown year): read leniently, row by row.
  info: dict[str, dict] = {}
  with opener() as f:
    for lineno, line in enumerate(f, 1):
      if lineno == 1 or not line.strip():
        continue
      parts = line.rstrip("\r\n").split("\t")
      if len(parts) != len(cols):
        raise DataError(
          f"{where}:{lineno}",
          f"expected {len(cols)} columns ({', '.join(names)}), found {len(parts)}",
        )
      row = dict(zip(names, parts))
      iid = row["item_id"].strip()
      if not iid:
        raise DataError(f"{where}:{lineno}", "item_id is empty")
      d = {}
      for key in ("movie_title", "title", "name"):
        if row.get(key, "").strip():
          d["title"] = row[key].strip()
          break
      for key in ("release_year", "year"):
        y = row.get(key, "").strip()
        if y:
          try:  # a token: RecBole's own ml-100k has 'unkonwn' -> unknown year
            d["year"] = int(float(y))
          except ValueError:
            pass
          break
      for key in ("class", "genre", "genres", "categories"):
        if row.get(key, "").strip():
          d["genres"] = row[key].split()
          break
      if row.get("tags", "").strip():
        d["tags"] = row["tags"].split()
      info[iid] = d
  return info
