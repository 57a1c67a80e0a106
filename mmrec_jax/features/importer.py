"""Bring-your-own item features: vectors computed elsewhere -> a modality of a dataset.

Why: many users already have item vectors -- from Ducho (the multimodal feature
extraction framework), a production embedding table, a notebook with a model mmrec_jax
does not implement -- and need them as feature shards keyed by the prepared dataset's
internal item ids, with the coverage mask, registered so ``data.modalities`` can use
them. This module is that one step; it never computes features.

Command line (see __main__.py for ``--config`` / ``--dataset``)::

  python -m mmrec_jax.features import --dataset=DIR --modality=image --from=ducho_out/
  python -m mmrec_jax.features import --dataset=DIR --modality=image \\
      --from=vectors.npy --ids=ids.txt
  python -m mmrec_jax.features import --config=experiments/x.py --modality=text_e5 \\
      --from=items.parquet --id_column=item_id [--vector_column=embedding]
  (all: [--name=NAME] [--dim=N] [--overwrite] [--rows_per_shard=65536])

Library: :func:`import_features` (same arguments; returns an :class:`ImportReport`).

Sources (``--from``), told apart by what the path is:
  * a directory: Ducho's layout, one ``<item_id>.npy`` per item holding a vector of
    shape ``[dim]`` or ``[1, dim]``; the file name without ``.npy`` is the raw item id.
    Other files (and hidden ones) are skipped and counted;
  * a ``.npy`` file ``[rows, dim]`` with ``--ids``: a text file with one raw item id per
    line (line i names row i), or a 1-D ``.npy`` of ids (integers or strings). For rows
    already in the dataset's internal order pass the dataset's own ``item_ids.txt``;
  * a ``.parquet`` / ``.pq`` file with ``--id_column`` and the vectors either in one
    list column (``--vector_column``; found on its own when it is the only list column)
    or, with no list column, in all other columns, one numeric column per dimension in
    file order. Needs pyarrow (the ``test`` and ``serve`` extras have it).

Mapping and imputation (documented decisions):
  * ids are matched as strings against ``item_ids.txt`` (line i = internal item i).
    Integer ids (npy/Parquet) are written in decimal; float ids that are whole numbers
    (pandas turns an int column with gaps into floats) as integers, so ``12.0`` is ``12``;
  * items no vector names get a zero row and mask False (the feature store's imputation:
    kept, never dropped). An all-zero vector that *is* given counts as present;
  * vectors whose id is not an item of the dataset (filtered away by preparation, or of
    another catalogue) are skipped, counted and reported with examples -- an error only
    when no id at all matches, which means the ids are of another kind;
  * an id given twice fails, naming both places.

Checks, each failing with one line (DataError) naming the file and the row or id:
non-numeric values, a vector that is not 1-D (or ``[1, dim]``), dims that differ between
vectors or from ``--dim``, NaN or infinite values, values that overflow float32 (the
stored dtype), unreadable files, an ids list whose length differs from the rows.

Writing: vectors are scattered, as they are read, into a memory-mapped ``[num_items,
dim]`` float32 scratch file under ``<dataset>/features/.import-<name>-*`` (so neither a
Parquet file in arbitrary order nor a million Ducho files has to fit in memory), which
:func:`mmrec_jax.data.feature_store.write_feature_shards` then turns into
``<dataset>/features/<name>/`` atomically (temp dir + rename). The name is registered in
the dataset's ``manifest.json`` as extract.py does, so ``--config.data.modalities=
"('<name>',)"`` uses it. An existing modality of that name is only replaced with
``overwrite``; 'text' always exists (preparation writes the handcrafted features), so
imported text vectors need another name (e.g. ``text_e5``). A failure leaves the
dataset as it was.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
from absl import logging

from mmrec_jax import io_utils
from mmrec_jax.data import feature_store
from mmrec_jax.errors import ConfigError, DataError
from mmrec_jax.features import extract

PARQUET_SUFFIXES = (".parquet", ".pq")
SCRATCH_PREFIX = ".import-"
FILES_PER_BATCH = 4096  # Ducho files read per batch
PARQUET_BATCH_ROWS = 2048
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_FLOAT32_MAX = float(np.finfo(np.float32).max)


@dataclasses.dataclass(frozen=True)
class ImportReport:
  """What an import did; ``shards`` is the written modality."""

  modality: str
  source: str
  num_items: int  # items in the dataset
  num_present: int  # items that got a vector (mask True)
  num_vectors: int  # vectors read from the source
  num_unknown: int  # vectors whose id is not an item of the dataset (skipped)
  unknown_examples: tuple[str, ...]
  num_skipped_files: int  # Ducho directory: files that are not <id>.npy
  dim: int
  shards: feature_store.FeatureShards

  def summary(self) -> str:
    """One line for the command's output."""
    line = (
      f"{self.modality}: {self.num_present}/{self.num_items} items have a vector "
      f"(dim {self.dim}) from {self.num_vectors} vectors in {self.source}"
    )
    if self.num_unknown:
      line += (
        f"; {self.num_unknown} vectors skipped, their ids are not items of the "
        f"dataset (e.g. {', '.join(map(repr, self.unknown_examples))})"
      )
    if self.num_skipped_files:
      line += f"; {self.num_skipped_files} non-.npy files ignored"
    return line


@dataclasses.dataclass
class _Batch:
  """Vectors read from the source, with their raw ids and how to name row j."""

  ids: list[str]
  vectors: np.ndarray  # [k, dim] or, for Ducho files, one array per file
  where: Callable[[int], str]


def _id_str(v: Any) -> str:
  """A raw id as item_ids.txt writes it (module docstring: ints in decimal)."""
  if isinstance(v, bytes):
    return v.decode("utf-8", "replace")
  if isinstance(v, (bool, np.bool_)):
    return str(v)
  if isinstance(v, (int, np.integer)):
    return str(int(v))
  if isinstance(v, (float, np.floating)) and float(v).is_integer():
    return str(int(v))
  return str(v).strip()


def _check_vectors(arr: np.ndarray, where: Callable[[int], str], dim: int | None) -> np.ndarray:
  """``arr [k, d]`` as float32 after the checks of the module docstring."""
  if arr.dtype.kind not in "fiu":
    raise DataError(where(0), f"values are {arr.dtype}, not numbers")
  if arr.ndim != 2:
    raise DataError(where(0), f"expected [rows, dim] vectors, got shape {arr.shape}")
  if arr.shape[1] == 0:
    raise DataError(where(0), "vectors have dim 0")
  if dim is not None and arr.shape[1] != dim:
    raise DataError(where(0), f"vector dim {arr.shape[1]}, expected {dim}")
  if arr.dtype.kind == "f":
    finite = np.isfinite(arr).all(axis=1)
    if not finite.all():
      r = int(np.flatnonzero(~finite)[0])
      raise DataError(where(r), "vector has a NaN or infinite value")
    if arr.dtype.itemsize > 4:
      big = (np.abs(arr) > _FLOAT32_MAX).any(axis=1)
      if big.any():
        r = int(np.flatnonzero(big)[0])
        raise DataError(where(r), "vector has a value that overflows float32")
  return arr.astype(np.float32)


# -- sources ---------------------------------------------------------------------------


def _load_npy(path: pathlib.Path, mmap: bool = False) -> np.ndarray:
  try:
    return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
  except (ValueError, OSError, EOFError) as e:
    msg = str(e).splitlines()[0] if str(e) else type(e).__name__
    raise DataError(str(path), f"unreadable .npy ({msg})") from None


class _DuchoDir:
  """A directory of ``<item_id>.npy`` vectors."""

  def __init__(self, path: pathlib.Path):
    self.path = path
    entries = sorted(os.scandir(path), key=lambda e: e.name)
    self.files = [
      e.name
      for e in entries
      if e.name.endswith(".npy") and not e.name.startswith(".") and e.is_file()
    ]
    self.skipped = len(entries) - len(self.files)
    if not self.files:
      raise DataError(str(path), "no <item_id>.npy files in the directory")

  def batches(self) -> Iterator[_Batch]:
    for a in range(0, len(self.files), FILES_PER_BATCH):
      names = self.files[a : a + FILES_PER_BATCH]
      rows, dim0 = [], None
      for name in names:
        f = self.path / name
        v = _load_npy(f)
        if v.ndim == 2 and v.shape[0] == 1:
          v = v[0]
        if v.ndim != 1:
          raise DataError(str(f), f"shape {v.shape}: expected a vector [dim] or [1, dim]")
        if v.dtype.kind not in "fiu":
          raise DataError(str(f), f"values are {v.dtype}, not numbers")
        if dim0 is None:
          dim0, first = v.shape[0], f
        elif v.shape[0] != dim0:
          raise DataError(str(f), f"vector dim {v.shape[0]}, but {first.name} has dim {dim0}")
        rows.append(v)
      yield _Batch(
        [n[: -len(".npy")] for n in names],
        np.stack(rows),
        lambda j, names=names: str(self.path / names[j]),
      )


class _NpyWithIds:
  """One ``[rows, dim]`` .npy file plus a list of raw ids, one per row."""

  def __init__(self, path: pathlib.Path, ids_path: pathlib.Path):
    self.path = path
    self.src = _load_npy(path, mmap=True)
    if self.src.ndim != 2:
      raise DataError(str(path), f"expected a 2-D [rows, dim] array, got shape {self.src.shape}")
    self.ids = _read_ids(ids_path)
    if len(self.ids) != self.src.shape[0]:
      raise DataError(
        str(ids_path),
        f"{len(self.ids)} ids but {path.name} has {self.src.shape[0]} rows (one id per row)",
      )
    self.skipped = 0

  def batches(self) -> Iterator[_Batch]:
    step = max(1, (1 << 26) // max(1, self.src.shape[1] * 8))  # ~64 MiB per read at 8 bytes a value
    for a in range(0, self.src.shape[0], step):
      ids = self.ids[a : a + step]
      yield _Batch(
        ids,
        np.asarray(self.src[a : a + step]),
        lambda j, a=a, ids=ids: f"{self.path} row {a + j} (id {ids[j]!r})",
      )


def _read_ids(path: pathlib.Path) -> list[str]:
  """Raw ids from a text file (one per line) or a 1-D .npy."""
  if not path.is_file():
    raise DataError(str(path), "ids file not found")
  if path.suffix == ".npy":
    arr = _load_npy(path)
    if arr.ndim != 1 or arr.dtype.kind not in "iuUSf":
      raise DataError(
        str(path), f"ids must be a 1-D array of integers or strings, got {arr.dtype} {arr.shape}"
      )
    return [_id_str(v) for v in arr.tolist()]
  try:
    lines = path.read_text(encoding="utf-8").splitlines()
  except UnicodeDecodeError as e:
    raise DataError(str(path), f"not UTF-8 text ({e})") from None
  ids = [line.strip() for line in lines]
  for i, v in enumerate(ids):
    if not v:
      raise DataError(f"{path}:{i + 1}", "empty id")
  return ids


class _Parquet:
  """A Parquet file with an id column and a list column or per-dimension columns."""

  def __init__(self, path: pathlib.Path, id_column: str | None, vector_column: str | None):
    try:
      import pyarrow as pa  # noqa: PLC0415
      import pyarrow.compute as pc  # noqa: PLC0415
      import pyarrow.parquet as pq  # noqa: PLC0415
    except ImportError:
      raise ConfigError(
        "reading Parquet needs pyarrow: pip install pyarrow (or the 'mmrec_jax[serve]' extra)"
      ) from None
    self.pc, self.path, self.skipped = pc, path, 0
    try:
      self.file = pq.ParquetFile(path)
    except (OSError, pa.ArrowException) as e:
      raise DataError(str(path), f"unreadable Parquet file ({e})") from None
    schema = self.file.schema_arrow
    names = list(schema.names)
    if not id_column:
      raise ConfigError(
        f"features import: --id_column is required for a Parquet file "
        f"(columns of {path.name}: {names})"
      )
    if id_column not in names:
      raise DataError(str(path), f"no id column {id_column!r} (columns: {names})")
    is_list = lambda t: (
      pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)
    )
    if vector_column:
      if vector_column not in names:
        raise DataError(str(path), f"no vector column {vector_column!r} (columns: {names})")
      if not is_list(schema.field(vector_column).type):
        raise DataError(
          str(path),
          f"column {vector_column!r} is {schema.field(vector_column).type}, not a list of numbers",
        )
      self.vector_columns = [vector_column]
      self.list_column = True
    else:
      lists = [n for n in names if n != id_column and is_list(schema.field(n).type)]
      if len(lists) > 1:
        raise ConfigError(
          f"features import: {path.name} has several list columns "
          f"{lists}; pick the vectors with --vector_column"
        )
      self.list_column = bool(lists)
      self.vector_columns = lists or [n for n in names if n != id_column]
      if not self.vector_columns:
        raise DataError(str(path), f"no vector column besides {id_column!r}")
    for n in self.vector_columns:
      t = schema.field(n).type
      value_type = t.value_type if self.list_column else t
      if not (pa.types.is_integer(value_type) or pa.types.is_floating(value_type)):
        raise DataError(str(path), f"column {n!r} holds {t}, not numbers")
    self.id_column = id_column

  def batches(self) -> Iterator[_Batch]:
    start = 0
    for rb in self.file.iter_batches(
      batch_size=PARQUET_BATCH_ROWS, columns=[self.id_column] + self.vector_columns
    ):
      k = rb.num_rows
      raw_ids = rb.column(self.id_column)
      ids = [None if v is None else _id_str(v) for v in raw_ids.to_pylist()]
      where = lambda j, a=start, ids=ids: f"{self.path} row {a + j} (id {ids[j]!r})"
      for j, v in enumerate(ids):
        if v is None or not v:
          raise DataError(where(j), f"missing id in column {self.id_column!r}")
      if self.list_column:
        col = rb.column(self.vector_columns[0])
        if col.null_count:
          j = int(np.flatnonzero(np.asarray(col.is_null()))[0])
          raise DataError(where(j), f"null vector in column {self.vector_columns[0]!r}")
        lengths = np.asarray(self.pc.list_value_length(col))
        if k and (lengths != lengths[0]).any():
          j = int(np.flatnonzero(lengths != lengths[0])[0])
          raise DataError(
            where(j),
            f"vector of length {lengths[j]}, row {start} has {lengths[0]} (ragged vectors)",
          )
        flat = col.flatten().to_numpy(zero_copy_only=False)
        vectors = np.asarray(flat).reshape(k, int(lengths[0]) if k else 0)
      else:
        vectors = np.stack(
          [rb.column(n).to_numpy(zero_copy_only=False) for n in self.vector_columns], axis=1
        )
      if vectors.dtype == object:  # nulls inside lists of ints
        vectors = np.asarray(vectors.tolist(), dtype=np.float64)
      yield _Batch(ids, vectors, where)
      start += k


def _open_source(
  source: pathlib.Path,
  ids: os.PathLike | str | None,
  id_column: str | None,
  vector_column: str | None,
):
  if source.is_dir():
    if ids or id_column or vector_column:
      raise ConfigError(
        "features import: a directory of <item_id>.npy files takes its "
        "ids from the file names; drop --ids/--id_column/--vector_column"
      )
    return _DuchoDir(source)
  if not source.is_file():
    raise DataError(
      str(source),
      "not found (--from takes a directory of <item_id>.npy, "
      "a .npy file with --ids, or a .parquet file with --id_column)",
    )
  if source.suffix.lower() in PARQUET_SUFFIXES:
    if ids:
      raise ConfigError(
        "features import: --ids is for a .npy file; a Parquet file names "
        "its id column with --id_column"
      )
    return _Parquet(source, id_column, vector_column)
  if source.suffix.lower() == ".npy":
    if not ids:
      raise ConfigError(
        "features import: a .npy file needs --ids=<file> with one raw item "
        "id per row (the dataset's item_ids.txt if the rows are in its "
        "internal item order)"
      )
    if id_column or vector_column:
      raise ConfigError("features import: --id_column/--vector_column are for Parquet")
    return _NpyWithIds(source, pathlib.Path(ids))
  raise DataError(
    str(source),
    "unknown kind of file: expected .npy or .parquet (or a directory of <item_id>.npy files)",
  )


# -- import ----------------------------------------------------------------------------


def _raise_duplicate(
  batch: _Batch, known: np.ndarray, targets: np.ndarray, given_at: np.ndarray, offset: int
) -> None:
  """DataError for the first vector of ``batch`` whose item already has one.

  Only row sources (npy, Parquet) can repeat an id (file names in a directory are
  unique), so the earlier place is its row number.
  """
  seen: dict[int, int] = {}
  for j, t in zip(known.tolist(), targets.tolist()):
    if given_at[t] >= 0:
      first = int(given_at[t])
    elif t in seen:
      first = offset + seen[t]
    else:
      seen[t] = j
      continue
    raise DataError(
      batch.where(j), f"item id {batch.ids[j]!r} is given twice (first at row {first})"
    )


def _item_ids(dataset_dir: pathlib.Path, num_items: int) -> dict[str, int]:
  path = dataset_dir / "item_ids.txt"
  if not path.is_file():
    raise DataError(str(path), "missing (the raw item ids of the prepared dataset)")
  raw = path.read_text(encoding="utf-8").splitlines()
  if len(raw) != num_items:
    raise DataError(str(path), f"{len(raw)} lines but manifest num_items={num_items}")
  return {r: i for i, r in enumerate(raw)}


def import_features(
  dataset_dir: os.PathLike | str,
  name: str,
  source: os.PathLike | str,
  *,
  ids: os.PathLike | str | None = None,
  id_column: str | None = None,
  vector_column: str | None = None,
  dim: int | None = None,
  overwrite: bool = False,
  rows_per_shard: int = 65536,
) -> ImportReport:
  """Imports item vectors from ``source`` as modality ``name`` (module docstring).

  Args:
    dataset_dir: prepared dataset directory (manifest.json, item_ids.txt).
    name: the modality name: directory ``features/<name>`` and manifest key, what
      ``data.modalities`` lists. Letters, digits, '_', '.', '-'.
    source: a directory of ``<item_id>.npy``, a ``.npy`` file (with ``ids``) or a
      Parquet file (with ``id_column``).
    ids: for a ``.npy`` source: text file (one raw id per line) or 1-D ``.npy`` of ids.
    id_column: for a Parquet source: the column of raw item ids.
    vector_column: for a Parquet source: the list column of vectors (default: the only
      list column, else every column but the id column, one per dimension).
    dim: the vector dim every vector must have (default: the first vector's).
    overwrite: replace an existing modality ``name``.
    rows_per_shard: rows per output shard file.

  Returns:
    An :class:`ImportReport` (``summary()`` is the command's output line).

  Raises:
    ConfigError: bad or conflicting arguments, ``name`` exists without ``overwrite``.
    DataError: a bad source (one line naming the file and row or id), or no id of the
      source is an item of the dataset.
  """
  if not _NAME_RE.fullmatch(name or ""):
    raise ConfigError(
      f"features import: modality name {name!r} must be letters, digits, "
      "'_', '.' or '-' (and not start with '.', '_' or '-')"
    )
  if dim is not None and dim < 1:
    raise ConfigError(f"features import: --dim={dim} must be >= 1")
  if rows_per_shard < 1:
    raise ConfigError(f"features import: --rows_per_shard={rows_per_shard} must be >= 1")
  dataset_dir = pathlib.Path(dataset_dir)
  source = pathlib.Path(source)
  manifest = io_utils.read_json(dataset_dir / "manifest.json")
  try:
    num_items = int(manifest["num_items"])
  except (KeyError, TypeError, ValueError):
    raise DataError(str(dataset_dir / "manifest.json"), "missing or bad 'num_items'") from None
  if name in (manifest.get("modalities") or {}) and not overwrite:
    raise ConfigError(
      f"features import: modality {name!r} already exists in "
      f"{dataset_dir} ({manifest['modalities'][name]}); pass --overwrite "
      "to replace it or --name=<another name>"
    )
  index = _item_ids(dataset_dir, num_items)
  reader = _open_source(source, ids, id_column, vector_column)

  features_dir = dataset_dir / "features"
  made_features_dir = not features_dir.exists()
  features_dir.mkdir(parents=True, exist_ok=True)
  scratch = pathlib.Path(tempfile.mkdtemp(dir=features_dir, prefix=f"{SCRATCH_PREFIX}{name}-"))
  try:
    rows: np.ndarray | None = None
    mask = np.zeros(num_items, bool)
    given_at = np.full(num_items, -1, np.int64)  # source row that set each item
    num_vectors = num_unknown = 0
    unknown_examples: list[str] = []
    for batch in reader.batches():
      vecs = _check_vectors(
        np.asarray(batch.vectors), batch.where, dim if rows is None else rows.shape[1]
      )
      if rows is None:
        rows = np.lib.format.open_memmap(
          scratch / "rows.npy", mode="w+", dtype=np.float32, shape=(num_items, vecs.shape[1])
        )
      item = np.array([index.get(i, -1) for i in batch.ids], np.int64)
      known = np.flatnonzero(item >= 0)
      unknown = len(batch.ids) - known.size
      if unknown:
        num_unknown += unknown
        unknown_examples += [batch.ids[j] for j in np.flatnonzero(item < 0)[:5]]
        unknown_examples = unknown_examples[:5]
      targets = item[known]
      if np.unique(targets).size != targets.size or mask[targets].any():
        _raise_duplicate(batch, known, targets, given_at, num_vectors)
      rows[targets] = vecs[known]
      mask[targets] = True
      given_at[targets] = num_vectors + known
      num_vectors += len(batch.ids)
    if rows is None:
      raise DataError(str(source), "no vectors in the source")
    if not mask.any():
      raise DataError(
        str(source),
        f"none of the {num_vectors} ids matches an item id of "
        f"the dataset (e.g. {unknown_examples[:3]}; item_ids.txt has "
        f"{list(index)[:3]})",
      )
    rows.flush()
    out_dim = int(rows.shape[1])

    def chunks() -> Iterator[np.ndarray]:
      for a in range(0, num_items, rows_per_shard):
        yield np.asarray(rows[a : a + rows_per_shard])

    rel = f"features/{name}"
    shards = feature_store.write_feature_shards(
      dataset_dir / rel,
      chunks(),
      mask,
      modality=name,
      num_items=num_items,
      rows_per_shard=rows_per_shard,
      dtype="float32",
    )
    extract.register_modality(dataset_dir, name, rel)
  except BaseException:
    if made_features_dir:  # leave the dataset as it was
      shutil.rmtree(features_dir, ignore_errors=True)
    raise
  finally:
    shutil.rmtree(scratch, ignore_errors=True)
  report = ImportReport(
    modality=name,
    source=str(source),
    num_items=num_items,
    num_present=int(mask.sum()),
    num_vectors=num_vectors,
    num_unknown=num_unknown,
    unknown_examples=tuple(unknown_examples),
    num_skipped_files=reader.skipped,
    dim=out_dim,
    shards=shards,
  )
  logging.info("%s", report.summary())
  return report
