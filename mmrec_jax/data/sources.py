"""Raw data sources, all converging on one in-memory form (:class:`RawData`).

Each source has two steps, so preparation can fingerprint the inputs before parsing them:

* ``locate(cfg, cache_dir) -> dict``  finds (and for MovieLens downloads) the raw files;
  returns a JSON-able description of exactly what will be read (paths, sizes, mtimes,
  archive checksums) -- it goes into the prepared dataset's fingerprint;
* ``load(cfg, located, seed, cache_dir) -> RawData``  parses them.

Sources (:data:`SOURCES`, the registry ``data.source`` is checked against): ``movielens``
(movielens.py), ``recbole`` (atomic .inter/.item files), ``mmrec`` (MMRec's x_label
.inter + *_feat.npy), ``presplit`` (given train/valid/test files -- TSV, RecBole .inter
or Parquet -- kept exactly as given),
``synthetic`` (synthetic.py). ``data.source`` may also be :data:`PREPARED`: an already
prepared directory, opened as it is (prepare.py). :class:`RawData` and the readers shared
with movielens.py live in raw.py (re-exported here).
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from mmrec_jax.data import movielens, synthetic, tables
from mmrec_jax.data.labelled import read_parquet_interactions
from mmrec_jax.data.raw import (
  RECBOLE_FIELDS,
  RECBOLE_TYPES,
  RawData,
  parse_recbole_header,
  read_interaction_table,
  read_recbole_items,
  stat,
)
from mmrec_jax.errors import ConfigError, DataError

__all__ = [
  "PREPARED",
  "RECBOLE_FIELDS",
  "RECBOLE_TYPES",
  "SOURCES",
  "RawData",
  "Source",
  "parse_recbole_header",
  "read_interaction_table",
  "read_plain_items",
  "read_recbole_items",
  "require_file",
  "stat",
]


def require_file(path, key: str) -> pathlib.Path:
  if not path:
    raise ConfigError(f"{key} is empty: set it to the file to read")
  p = pathlib.Path(os.path.expanduser(str(path)))
  if not p.exists():
    raise DataError(str(p), f"file not found ({key})")
  if not p.is_file():
    raise DataError(str(p), f"not a file ({key})")
  return p


# ---------------------------------------------------------------- RecBole atomic files
def _timestamps(col: np.ndarray | None) -> np.ndarray | None:
  return None if col is None else np.floor(col).astype(np.int64)


def _ratings(col: np.ndarray | None) -> np.ndarray | None:
  return None if col is None else col.astype(np.float32)


def recbole_paths(cfg) -> tuple[pathlib.Path, pathlib.Path | None]:
  """data.path = a .inter file, or a directory holding <data.name or dir name>.inter."""
  if not cfg.path:
    raise ConfigError("data.path is empty: set it to a RecBole .inter file or its directory")
  p = pathlib.Path(os.path.expanduser(cfg.path))
  if p.is_dir():
    name = cfg.name or p.name
    inter = p / f"{name}.inter"
  else:
    inter = p
  inter = require_file(inter, "data.path")
  item = inter.with_suffix(".item")
  return inter, (item if item.is_file() else None)


def locate_recbole(cfg, cache_dir) -> dict:
  inter, item = recbole_paths(cfg)
  return {"inter": stat(inter), "item": stat(item) if item else None}


def load_recbole(cfg, located, seed, cache_dir=None) -> RawData:
  inter, item = recbole_paths(cfg)
  where = str(inter)
  opener = tables.opener_for_path(inter)
  cols, _ = read_interaction_table(opener, where, recbole=True)
  return RawData(
    source=f"recbole:{inter.stem}",
    users=cols["user"],
    items=cols["item"],
    timestamps=_timestamps(cols.get("timestamp")),
    ratings=_ratings(cols.get("rating")),
    item_info=read_recbole_items(tables.opener_for_path(item), str(item)) if item else None,
    where_row=lambda r: f"{where}:{tables.line_of_row(opener, r, 1)}",
    handcrafted_text=item is not None,
  )


# ---------------------------------------------------------------- pre-split files
def _presplit_paths(cfg) -> dict[str, pathlib.Path]:
  out = {s: require_file(cfg[s], f"data.{s}") for s in ("train", "valid", "test")}
  if cfg.items_file:
    out["items"] = require_file(cfg.items_file, "data.items_file")
  return out


def locate_presplit(cfg, cache_dir) -> dict:
  return {k: stat(p) for k, p in _presplit_paths(cfg).items()}


def _concat(parts: list[dict], where: list[str], key: str, kind: str):
  have = [key in p for p in parts]
  if not any(have):
    return None
  if not all(have):
    missing = [w for w, h in zip(where, have) if not h][0]
    raise DataError(f"{missing}:1", f"has no {key} column but another split file has one")
  cols = [p[key] for p in parts]
  if kind == "id" and len({c.dtype.kind for c in cols}) > 1:
    cols = [c.astype(str) for c in cols]
  return np.concatenate(cols)


def load_presplit(cfg, located, seed, cache_dir=None) -> RawData:
  paths = _presplit_paths(cfg)
  parts, openers, wheres = [], [], []
  for s in ("train", "valid", "test"):
    if paths[s].suffix.lower() == ".parquet":  # Parquet split files (data/labelled.py)
      opener, cols = None, read_parquet_interactions(paths[s])
    else:
      opener = tables.opener_for_path(paths[s])
      cols, _ = read_interaction_table(opener, str(paths[s]))
    parts.append(cols)
    openers.append(opener)
    wheres.append(str(paths[s]))
  sizes = np.array([p["user"].shape[0] for p in parts])
  bounds = np.cumsum(sizes)

  def where_row(r: int) -> str:
    k = int(np.searchsorted(bounds, r, side="right"))
    local = r - (bounds[k - 1] if k else 0)
    if openers[k] is None:
      return f"{wheres[k]}: row {int(local) + 1}"
    return f"{wheres[k]}:{tables.line_of_row(openers[k], int(local), 1)}"

  item_info = None
  if "items" in paths:
    p = paths["items"]
    header = tables.read_header(tables.opener_for_path(p), str(p), "\t")
    if any(":" in h for h in header):
      item_info = read_recbole_items(tables.opener_for_path(p), str(p))
    else:
      item_info = read_plain_items(p)
  return RawData(
    source="presplit",
    users=_concat(parts, wheres, "user", "id"),
    items=_concat(parts, wheres, "item", "id"),
    timestamps=_timestamps(_concat(parts, wheres, "timestamp", "float")),
    ratings=_ratings(_concat(parts, wheres, "rating", "float")),
    labels=np.repeat(np.arange(3, dtype=np.int8), sizes),
    item_info=item_info,
    where_row=where_row,
    handcrafted_text=item_info is not None,
  )


def read_plain_items(p: pathlib.Path) -> dict[str, dict]:
  """TSV with header item_id (or itemID/item) and any of title, genres ('|' or space
  separated), year, tags, image, text."""
  header = tables.read_header(tables.opener_for_path(p), str(p), "\t")
  low = [h.lower() for h in header]
  idcol = next((j for j, h in enumerate(low) if h in ("item_id", "itemid", "item")), None)
  if idcol is None:
    raise DataError(f"{p}:1", f"header {header} names no item_id column")
  opener = tables.opener_for_path(p)
  try:
    return _plain_items_rows(opener, p, header, low, idcol)
  except UnicodeDecodeError as e:
    raise tables.decode_error(opener, str(p), e) from None


def _plain_items_rows(
  opener, p: pathlib.Path, header: list[str], low: list[str], idcol: int
) -> dict[str, dict]:
  info = {}
  with opener() as f:
    for lineno, line in enumerate(f, 1):
      if lineno == 1 or not line.strip():
        continue
      parts = line.rstrip("\r\n").split("\t")
      if len(parts) != len(header):
        raise DataError(f"{p}:{lineno}", f"expected {len(header)} columns, found {len(parts)}")
      row = dict(zip(low, parts))
      d: dict[str, Any] = {}
      if row.get("title"):
        d["title"] = row["title"]
      if row.get("genres"):
        d["genres"] = [g for g in row["genres"].replace("|", " ").split() if g]
      if row.get("tags"):
        d["tags"] = [g for g in row["tags"].replace("|", " ").split() if g]
      if row.get("year"):
        try:
          d["year"] = int(row["year"])
        except ValueError:
          raise DataError(f"{p}:{lineno}", f"year {row['year']!r} is not an integer") from None
      for key in ("image", "text"):
        if row.get(key):
          d[key] = row[key]
      info[parts[idcol].strip()] = d
  return info


# ---------------------------------------------------------------- MMRec
def _mmrec_paths(cfg) -> tuple[pathlib.Path, pathlib.Path]:
  if not cfg.path:
    raise ConfigError("data.path is empty: set it to the MMRec dataset directory")
  d = pathlib.Path(os.path.expanduser(cfg.path))
  if not d.is_dir():
    raise DataError(str(d), "MMRec dataset directory not found (data.path)")
  name = cfg.name or d.name
  return d, require_file(d / f"{name}.inter", "data.path/data.name")


def locate_mmrec(cfg, cache_dir) -> dict:
  d, inter = _mmrec_paths(cfg)
  feats = {
    m: stat(d / f)
    for m, f in (("image", "image_feat.npy"), ("text", "text_feat.npy"))
    if (d / f).is_file()
  }
  return {"inter": stat(inter), "features": feats}


def load_mmrec(cfg, located, seed, cache_dir=None) -> RawData:
  d, inter = _mmrec_paths(cfg)
  where = str(inter)
  opener = tables.opener_for_path(inter)
  cols, header = read_interaction_table(opener, where, recbole=False)
  if "x_label" not in cols:
    raise DataError(
      f"{where}:1", f"header {header} has no x_label column (0 train, 1 valid, 2 test)"
    )

  def where_row(r: int) -> str:
    return f"{where}:{tables.line_of_row(opener, r, 1)}"

  for role in ("user", "item"):
    ids = cols[role]
    if ids.dtype.kind != "i" or (ids < 0).any():
      if ids.dtype.kind == "i":
        bad = int(np.flatnonzero(ids < 0)[0])
      else:  # the first token that is not a canonical non-negative int64
        bad = next(
          r
          for r, v in enumerate(ids.tolist())
          if not (tables.canonical_int(v) and not v.startswith("-"))
        )
      raise DataError(
        where_row(bad), f"{role} id {str(ids[bad])!r}: MMRec ids must be 0-based integers"
      )
  labels = cols["x_label"]
  bad = np.flatnonzero((labels < 0) | (labels > 2))
  if bad.size:
    raise DataError(
      where_row(int(bad[0])),
      f"x_label {int(labels[bad[0]])} is not 0 (train), 1 (valid) or 2 (test)",
    )
  feats = {
    m: ("npy", d / f)
    for m, f in (("image", "image_feat.npy"), ("text", "text_feat.npy"))
    if (d / f).is_file()
  }
  n_items = _mmrec_num_items(cols["item"], feats, where_row)
  return RawData(
    source=f"mmrec:{inter.stem}",
    users=cols["user"],
    items=cols["item"],
    timestamps=_timestamps(cols.get("timestamp")),
    ratings=_ratings(cols.get("rating")),
    labels=labels.astype(np.int8),
    features=feats,
    item_universe=np.arange(n_items, dtype=np.int64),
    where_row=where_row,
  )


def _mmrec_num_items(items: np.ndarray, feats: dict, where_row) -> int:
  """The item count (ids 0..n-1), checked before anything of that size is allocated.

  MMRec ids are dense and 0-based, and a feature file has one row per item id. An id
  beyond the feature rows, or (without features) one far beyond the distinct items seen,
  is a typo or a non-MMRec file: it would otherwise allocate tables of ``max id + 1`` rows
  (10^12 rows: terabytes).
  """
  top = int(np.argmax(items))
  n_items = int(items[top]) + 1
  distinct = int(np.unique(items).size)
  if n_items <= np.iinfo(np.int32).max and n_items <= 100 * distinct + 10_000:
    return n_items  # plausible; feature files are checked row by row when written
  for _, path in feats.values():
    try:
      rows = int(np.load(path, mmap_mode="r").shape[0])
    except (OSError, ValueError) as e:
      raise DataError(str(path), f"not a readable .npy array ({e})") from None
    if n_items > rows:
      raise DataError(
        where_row(top),
        f"item id {n_items - 1} has no row in {path.name} "
        f"({rows} rows, one per item id 0..{rows - 1})",
      )
  if n_items > np.iinfo(np.int32).max or not feats:
    raise DataError(
      where_row(top),
      f"item id {n_items - 1}: MMRec item ids are dense "
      f"0-based integers, but only {distinct} distinct items occur (this id "
      f"would mean {n_items} items)",
    )
  return n_items


# ---------------------------------------------------------------- synthetic
def locate_synthetic(cfg, cache_dir) -> dict:
  return {}  # everything is in the config (and the seed)


def load_synthetic(cfg, located, seed, cache_dir=None) -> RawData:
  s = synthetic.generate(
    num_users=cfg.num_users,
    num_items=cfg.num_items,
    num_interactions=cfg.num_interactions,
    latent_dim=cfg.latent_dim,
    text_dim=cfg.text_dim,
    image_dim=cfg.image_dim,
    popularity_exponent=cfg.popularity_exponent,
    seed=seed,
  )
  ids = np.arange(cfg.num_items, dtype=np.int64)
  info = {
    str(i): {"title": f"synthetic item {i}", "genres": [f"topic{t}"]}
    for i, t in enumerate(s.item_topic.tolist())
  }
  return RawData(
    source="synthetic",
    users=s.users,
    items=s.items,
    timestamps=s.timestamps,
    ratings=s.ratings,
    item_info=info,
    features={"text": (s.text, ids), "image": (s.image, ids)},
    notes=["synthetic data with planted structure (not real interactions)"],
  )


class Source(NamedTuple):
  """The two steps of a source (module docstring)."""

  locate: Callable[..., dict]  # (cfg, cache_dir) -> JSON-able description
  load: Callable[..., RawData]  # (cfg, located, seed, cache_dir) -> RawData


# data.source -> its implementation.
SOURCES: dict[str, Source] = {
  "movielens": Source(movielens.locate, movielens.load),
  "recbole": Source(locate_recbole, load_recbole),
  "mmrec": Source(locate_mmrec, load_mmrec),
  "presplit": Source(locate_presplit, load_presplit),
  "synthetic": Source(locate_synthetic, load_synthetic),
}
# data.source for a directory prepared earlier: nothing to locate or load (prepare.py).
PREPARED = "prepared"
