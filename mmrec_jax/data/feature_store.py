"""The feature-shard store: precomputed item features per modality, memory-mapped shards.

(Named feature_store, not features, so it is not confused with the ``mmrec_jax.features``
package, which computes features; this module only stores and reads them.)

Layout of a feature directory (format_version 1, see docs/architecture.md):

  <dir>/manifest.json    modality, num_items, dim, dtype, rows_per_shard, num_shards,
                         per-shard {"file", "rows", "sha256"}, num_present, imputation
  <dir>/shard-00000.npy  [rows, dim]; rows = rows_per_shard except the last shard
  <dir>/mask.npy         bool [num_items]: True where the item has this modality

Why shards: extractors stream rows (a 4096-d image feature of a million items does not
fit comfortably in host memory twice), readers memory-map them so a grain worker touches
only the pages of the rows it gathers, and a per-shard sha256 lets a corrupted file be
named exactly.

Imputation (documented decision): rows of items without the modality are stored as
zeros and their mask is False. The writer enforces this, whatever values the caller put
in masked rows (they may even be NaN: extractors use NaN for "failed"), so readers can
rely on missing rows being exactly zero.

bfloat16 shards are stored on disk as uint16 (``np.save`` cannot describe bfloat16) and
viewed as ``ml_dtypes.bfloat16`` when read; the manifest says "bfloat16".
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from mmrec_jax import io_utils
from mmrec_jax.errors import DataError

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
MASK_FILE = "mask.npy"
IMPUTATION = "zeros"
_REQUIRED_KEYS = (
  "format_version",
  "modality",
  "num_items",
  "dim",
  "dtype",
  "rows_per_shard",
  "num_shards",
  "shards",
  "num_present",
  "imputation",
)


def _storage_dtypes(name: str) -> tuple[np.dtype, np.dtype]:
  """Returns (logical dtype, on-disk dtype) for a manifest dtype name."""
  if name == "float32":
    return np.dtype(np.float32), np.dtype(np.float32)
  if name == "float16":
    return np.dtype(np.float16), np.dtype(np.float16)
  if name == "bfloat16":
    import ml_dtypes  # noqa: PLC0415  (ships with jax)

    return np.dtype(ml_dtypes.bfloat16), np.dtype(np.uint16)
  raise ValueError(f"unknown feature dtype {name!r}; valid: bfloat16, float16, float32")


def _shard_name(i: int) -> str:
  return f"shard-{i:05d}.npy"


class FeatureShards:
  """Read access to one modality's feature directory; shards are memory-mapped.

  Instances pickle as their path (grain sends them to worker processes), so a worker
  re-maps the files instead of receiving a copy of every shard.
  """

  path: pathlib.Path
  manifest: dict[str, Any]
  modality: str
  num_items: int
  dim: int
  dtype: np.dtype
  rows_per_shard: int
  num_shards: int
  num_present: int
  mask: np.ndarray

  def __init__(self, path: os.PathLike | str, *, verify: bool = False):
    """Use :meth:`open`; kept as a constructor so unpickling can re-open."""
    self._open(pathlib.Path(path), verify)

  @classmethod
  def open(cls, path: os.PathLike | str, *, verify: bool = False) -> FeatureShards:
    """Opens and validates a feature directory.

    Checks the manifest (keys, format_version, types), that every shard exists with the
    manifest's shape and dtype and is not truncated, and the mask length. With
    ``verify=True`` it also compares each shard's sha256 (reads every byte: slow).
    Raises DataError naming the file on any problem.
    """
    return cls(path, verify=verify)

  # -- opening -----------------------------------------------------------------------

  def _open(self, path: pathlib.Path, verify: bool) -> None:
    self.path = path
    mpath = path / MANIFEST
    if not mpath.is_file():
      raise DataError(str(mpath), "missing (not a feature shard directory)")
    manifest = io_utils.read_json(mpath)
    missing = [k for k in _REQUIRED_KEYS if k not in manifest]
    if missing:
      raise DataError(str(mpath), f"missing keys {missing}")
    if manifest["format_version"] != FORMAT_VERSION:
      raise DataError(
        str(mpath),
        f"format_version {manifest['format_version']!r} is not "
        f"supported (expected {FORMAT_VERSION})",
      )
    for key in ("num_items", "dim", "rows_per_shard", "num_shards", "num_present"):
      v = manifest[key]
      if not isinstance(v, int) or isinstance(v, bool) or v < 0:
        raise DataError(str(mpath), f"key {key!r} must be a non-negative int, got {v!r}")
    if manifest["rows_per_shard"] < 1:
      raise DataError(str(mpath), "key 'rows_per_shard' must be >= 1")
    try:
      self.dtype, disk_dtype = _storage_dtypes(manifest["dtype"])
    except ValueError as e:
      raise DataError(str(mpath), f"key 'dtype': {e}") from None
    self.manifest = manifest
    self.modality = str(manifest["modality"])
    self.num_items = manifest["num_items"]
    self.dim = manifest["dim"]
    self.rows_per_shard = manifest["rows_per_shard"]
    self.num_shards = manifest["num_shards"]
    self.num_present = manifest["num_present"]
    shards = manifest["shards"]
    expected_shards = -(-self.num_items // self.rows_per_shard)
    if not isinstance(shards, list) or len(shards) != self.num_shards:
      raise DataError(str(mpath), f"'shards' must list num_shards={self.num_shards} entries")
    if self.num_shards != expected_shards:
      raise DataError(
        str(mpath),
        f"num_shards={self.num_shards} but num_items="
        f"{self.num_items} / rows_per_shard={self.rows_per_shard} needs "
        f"{expected_shards}",
      )
    self._shards: list[np.ndarray] = []
    for i, entry in enumerate(shards):
      if not isinstance(entry, dict) or not {"file", "rows", "sha256"} <= entry.keys():
        raise DataError(str(mpath), f"shards[{i}] must have keys file, rows, sha256")
      want_rows = min(self.rows_per_shard, self.num_items - i * self.rows_per_shard)
      if entry["rows"] != want_rows:
        raise DataError(str(mpath), f"shards[{i}] has rows={entry['rows']}, expected {want_rows}")
      spath = path / entry["file"]
      if not spath.is_file():
        raise DataError(str(spath), f"missing shard {i} of {self.num_shards}")
      try:
        arr = np.load(spath, mmap_mode="r", allow_pickle=False)
      except (ValueError, OSError, EOFError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DataError(str(spath), f"unreadable or truncated shard ({first})") from None
      if arr.shape != (want_rows, self.dim) or arr.dtype != disk_dtype:
        raise DataError(
          str(spath),
          f"shape {arr.shape} dtype {arr.dtype}, manifest says "
          f"({want_rows}, {self.dim}) {disk_dtype}",
        )
      if verify and io_utils.sha256_file(spath) != entry["sha256"]:
        raise DataError(str(spath), "sha256 does not match the manifest (corrupted shard)")
      if disk_dtype != self.dtype:
        arr = arr.view(self.dtype)
      self._shards.append(arr)
    kpath = path / MASK_FILE
    if not kpath.is_file():
      raise DataError(str(kpath), "missing coverage mask")
    try:
      mask = np.load(kpath, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
      raise DataError(str(kpath), f"unreadable mask ({str(e).splitlines()[0]})") from None
    if mask.dtype != np.bool_ or mask.shape != (self.num_items,):
      raise DataError(
        str(kpath), f"mask must be bool [{self.num_items}], got {mask.dtype} {mask.shape}"
      )
    if int(mask.sum()) != self.num_present:
      raise DataError(
        str(kpath), f"{int(mask.sum())} items present but manifest num_present={self.num_present}"
      )
    self.mask = mask

  def __getstate__(self) -> dict[str, Any]:
    return {"path": str(self.path)}

  def __setstate__(self, state: dict[str, Any]) -> None:
    self._open(pathlib.Path(state["path"]), False)

  def __repr__(self) -> str:
    return (
      f"FeatureShards({str(self.path)!r}, modality={self.modality!r}, "
      f"num_items={self.num_items}, dim={self.dim}, dtype={self.dtype}, "
      f"num_shards={self.num_shards}, num_present={self.num_present})"
    )

  # -- reading -----------------------------------------------------------------------

  def _check_ids(self, item_ids: Any) -> np.ndarray:
    ids = np.asarray(item_ids)
    if ids.dtype.kind not in "iu":
      if ids.size == 0:
        return ids.astype(np.int64)
      raise DataError(f"features/{self.modality}", f"item ids must be integers, got {ids.dtype}")
    if ids.size:
      lo, hi = int(ids.min()), int(ids.max())
      if lo < 0 or hi >= self.num_items:
        bad = lo if lo < 0 else hi
        raise DataError(
          f"features/{self.modality}", f"item id {bad} out of range [0, {self.num_items})"
        )
    if ids.dtype == np.uint64:
      ids = ids.astype(np.int64)
    return ids

  def gather(self, item_ids: Any, out: np.ndarray | None = None) -> np.ndarray:
    """Rows for ``item_ids`` (any shape) -> ``[*item_ids.shape, dim]``.

    Vectorised: ids are grouped by shard with one stable argsort, each memory-mapped
    shard is fancy-indexed once, and rows are scattered back. With one shard (the
    common case up to 65536 items) it is a single ``np.take`` into the output. ``out``
    (C-contiguous, right shape and dtype) lets the pipeline reuse a buffer.
    """
    ids = self._check_ids(item_ids)
    shape = ids.shape + (self.dim,)
    if out is None:
      out = np.empty(shape, self.dtype)
    elif out.shape != shape or out.dtype != self.dtype or not out.flags.c_contiguous:
      raise ValueError(
        f"out must be C-contiguous {self.dtype} {shape}, got {out.dtype} {out.shape}"
      )
    flat = ids.reshape(-1)
    out2 = out.reshape(-1, self.dim)
    if flat.size == 0:
      return out
    # mode="clip": ids are already range-checked, and np.take buffers its output with
    # the default mode="raise" (measured ~2x slower for 2048-d rows).
    if self.num_shards == 1:
      np.take(self._shards[0], flat, axis=0, out=out2, mode="clip")
      return out
    rps = self.rows_per_shard
    shard_of = flat // rps
    first = int(shard_of[0])
    if (shard_of == first).all():  # all ids in one shard: no permutation needed
      np.take(self._shards[first], flat - first * rps, axis=0, out=out2, mode="clip")
      return out
    # Several shards: gather each shard's rows (in shard order) into one contiguous
    # buffer, then put them back in request order with a single take. Two copies, but
    # both are numpy's fast row-gather; a row scatter (out[sel] = rows) is slower.
    order = np.argsort(shard_of, kind="stable")
    counts = np.bincount(shard_of, minlength=self.num_shards)
    ends = np.cumsum(counts)
    sorted_local = flat[order] - shard_of[order] * rps
    buf = np.empty_like(out2)
    start = 0
    for s in np.flatnonzero(counts):
      end = int(ends[s])
      np.take(self._shards[s], sorted_local[start:end], axis=0, out=buf[start:end], mode="clip")
      start = end
    inverse = np.empty_like(order)
    inverse[order] = np.arange(order.size)
    np.take(buf, inverse, axis=0, out=out2, mode="clip")
    return out

  def mask_of(self, item_ids: Any) -> np.ndarray:
    """Bool coverage for ``item_ids`` (any shape): True where the item has the modality."""
    ids = self._check_ids(item_ids)
    return self.mask[ids]

  def check_finite(self, item_names: Any = None) -> None:
    """DataError naming modality, shard and row if any stored value is NaN or infinite.

    Preparation refuses such rows, so this finds files changed after preparation (a
    hand-edited or bit-rotted shard). Training checks it before the first step: a NaN
    row would otherwise surface as a "diverging" loss, or -- for an item seen only in
    the test split -- as an item that silently never ranks. Reads every shard once.

    Args:
      item_names: optional raw item ids (indexable by internal id) for the message.
    """
    for i, shard in enumerate(self._shards):
      start = i * self.rows_per_shard
      for a in range(0, shard.shape[0], 1 << 16):
        block = np.asarray(shard[a : a + (1 << 16)], dtype=np.float32)
        finite = np.isfinite(block).all(axis=1)
        if not finite.all():
          r = a + int(np.flatnonzero(~finite)[0])
          item = start + r
          name = f" (raw id {item_names[item]})" if item_names is not None else ""
          raise DataError(
            str(self.path / self.manifest["shards"][i]["file"]),
            f"modality '{self.modality}': row {r} = item {item}{name} has a "
            "NaN or infinite value; re-create the features (prepare again "
            "or rerun the extraction)",
          )

  def to_array(self) -> np.ndarray:
    """All rows as one in-memory ``[num_items, dim]`` array (loads everything)."""
    if not self._shards:
      return np.zeros((0, self.dim), self.dtype)
    return np.concatenate([np.asarray(s) for s in self._shards], axis=0)

  def rows(self) -> RowView:
    """The rows as a lazy ``[num_items, dim]`` array-like (see :class:`RowView`)."""
    return RowView(self)


class RowView:
  """A ``[num_items, dim]`` array-like over feature shards that reads rows on demand.

  Why: code written for "a feature table" (the trainer's chunked evaluation when
  ``input.stream_features`` is on) needs ``shape``, ``dtype`` and row ranges, but must not
  load every row of a modality that is streamed precisely because it is too big to hold.
  A contiguous row slice gives another view (nothing is read); any other index, or
  ``np.asarray(view)``, reads just those rows from the memory-mapped shards.
  """

  ndim = 2

  def __init__(self, shards: FeatureShards, start: int = 0, stop: int | None = None):
    self._shards = shards
    self._start = start
    self._stop = shards.num_items if stop is None else stop

  @property
  def shape(self) -> tuple[int, int]:
    return (self._stop - self._start, int(self._shards.dim))

  @property
  def dtype(self) -> np.dtype:
    return np.dtype(self._shards.dtype)

  def __len__(self) -> int:
    return self._stop - self._start

  def __repr__(self) -> str:
    return (
      f"RowView({self._shards.path}, rows [{self._start}, {self._stop}), dim={self._shards.dim})"
    )

  def __getitem__(self, index: Any) -> RowView | np.ndarray:
    rows, rest = (index[0], tuple(index[1:])) if isinstance(index, tuple) else (index, ())
    if isinstance(rows, slice) and rows.step in (None, 1) and not rest:
      start, stop, _ = rows.indices(len(self))
      return RowView(self._shards, self._start + start, self._start + max(start, stop))
    ids = np.arange(self._start, self._stop)[rows]  # numpy's rules (negatives, bounds)
    out = self._shards.gather(ids)
    return out[(slice(None),) * ids.ndim + rest] if rest else out

  def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
    del copy  # always a fresh array
    out = self._shards.gather(np.arange(self._start, self._stop))
    return out if dtype is None else out.astype(dtype)


# -- writing ---------------------------------------------------------------------------


def _chunks_of(features: np.ndarray | Iterable[np.ndarray], step: int) -> Iterator[Any]:
  if isinstance(features, np.ndarray):
    if features.ndim != 2:
      raise DataError("features", f"expected a 2-D [items, dim] array, got shape {features.shape}")
    for a in range(0, features.shape[0], step):
      yield features[a : a + step]
  else:
    yield from features


def write_feature_shards(
  out_dir: os.PathLike | str,
  features: np.ndarray | Iterable[np.ndarray],
  mask: np.ndarray | None,
  *,
  modality: str,
  rows_per_shard: int = 65536,
  num_items: int | None = None,
  dtype: str = "float32",
) -> FeatureShards:
  """Writes a feature directory atomically and returns it opened.

  Args:
    out_dir: destination directory; built in a temp dir beside it and renamed into
      place, so readers never see a half-written directory and an existing one is
      replaced only once the new one is complete.
    features: ``[n, d]`` array, or an iterable of ``[k, d]`` row chunks in item order
      (lets extractors stream without holding every row).
    mask: bool ``[n]`` coverage (None: every item has the modality). Rows where it is
      False are written as zeros whatever their values (NaN allowed there).
    modality: name stored in the manifest (used in error messages).
    rows_per_shard: rows per shard file; the last shard may be shorter.
    num_items: if given, the number of rows must equal it.
    dtype: storage dtype: float32, float16 or bfloat16.

  Raises:
    DataError: non-finite values in present rows (naming modality and first bad row),
      chunks of different widths, mask length != rows, rows != num_items.
  """
  out_dir = pathlib.Path(out_dir)
  where = f"features[{modality}]"
  if rows_per_shard < 1:
    raise ValueError(f"rows_per_shard must be >= 1, got {rows_per_shard}")
  try:
    logical, disk = _storage_dtypes(dtype)
  except ValueError as e:
    raise DataError(where, str(e)) from None
  if mask is not None:
    mask = np.asarray(mask)
    if mask.ndim != 1:
      raise DataError(where, f"mask must be 1-D, got shape {mask.shape}")
    mask = mask.astype(bool)
    if num_items is not None and mask.shape[0] != num_items:
      raise DataError(where, f"mask has {mask.shape[0]} entries but num_items={num_items}")
  out_dir.parent.mkdir(parents=True, exist_ok=True)
  tmp = pathlib.Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.tmp-"))
  try:
    shards: list[dict[str, Any]] = []
    dim: int | None = None
    buf: np.ndarray | None = None
    fill = 0
    rows = 0
    num_present = 0

    def flush(n: int) -> None:
      name = _shard_name(len(shards))
      data = buf[:n] if disk == logical else buf[:n].view(disk)
      np.save(tmp / name, data, allow_pickle=False)
      shards.append({"file": name, "rows": n, "sha256": io_utils.sha256_file(tmp / name)})

    for chunk in _chunks_of(features, rows_per_shard):
      chunk = np.asarray(chunk)
      if chunk.ndim != 2:
        raise DataError(where, f"chunk starting at row {rows} must be 2-D, got shape {chunk.shape}")
      if dim is None:
        dim = int(chunk.shape[1])
        buf = np.empty((rows_per_shard, dim), logical)
      elif chunk.shape[1] != dim:
        raise DataError(
          where,
          f"chunk starting at row {rows} has dim {chunk.shape[1]}, earlier rows have dim {dim}",
        )
      k = chunk.shape[0]
      if num_items is not None and rows + k > num_items:
        raise DataError(where, f"more rows than num_items={num_items}")
      if mask is not None and rows + k > mask.shape[0]:
        raise DataError(
          where,
          f"mask has {mask.shape[0]} entries but features have more rows (at least {rows + k})",
        )
      present = np.ones(k, bool) if mask is None else mask[rows : rows + k]
      num_present += int(present.sum())
      if chunk.dtype.kind not in "fiub":
        raise DataError(where, f"features must be numeric, got dtype {chunk.dtype}")
      pos = 0
      while pos < k:
        take = min(k - pos, rows_per_shard - fill)
        dst = buf[fill : fill + take]
        src = chunk[pos : pos + take]
        keep = present[pos : pos + take]
        with np.errstate(over="ignore", invalid="ignore"):
          dst[...] = src
        dst[~keep] = 0
        finite = np.isfinite(dst.astype(np.float32, copy=False)).all(axis=1)
        if not finite.all():
          r = int(np.flatnonzero(~finite)[0])
          src_ok = np.isfinite(np.asarray(src[r], np.float64)).all()
          what = f"overflows {dtype}" if src_ok else "has a NaN or infinite value"
          raise DataError(where, f"row {rows + pos + r} {what}")
        fill += take
        pos += take
        if fill == rows_per_shard:
          flush(fill)
          fill = 0
      rows += k
    if dim is None:
      raise DataError(where, "no feature rows given (cannot infer dim)")
    if fill:
      flush(fill)
    if num_items is not None and rows != num_items:
      raise DataError(where, f"{rows} feature rows but num_items={num_items}")
    if mask is not None and mask.shape[0] != rows:
      raise DataError(where, f"mask has {mask.shape[0]} entries but features have {rows} rows")
    full_mask = np.ones(rows, bool) if mask is None else mask
    np.save(tmp / MASK_FILE, full_mask, allow_pickle=False)
    manifest = {
      "format_version": FORMAT_VERSION,
      "modality": modality,
      "num_items": rows,
      "dim": dim,
      "dtype": dtype,
      "rows_per_shard": rows_per_shard,
      "num_shards": len(shards),
      "shards": shards,
      "num_present": num_present,
      "imputation": IMPUTATION,
    }
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    io_utils.replace_dir(tmp, out_dir)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return FeatureShards.open(out_dir)


def write_from_npy(
  out_dir: os.PathLike | str,
  npy_path: os.PathLike | str,
  *,
  modality: str,
  num_items: int,
  item_index: np.ndarray | None = None,
  zero_rows_missing: bool = False,
  drop_unmapped: bool = False,
  rows_per_shard: int = 65536,
  dtype: str = "float32",
) -> FeatureShards:
  """Shards a ``[rows, dim]`` .npy file (read memory-mapped, streamed shard by shard).

  Args:
    item_index: int ``[rows]``: row i of the file belongs to internal item
      ``item_index[i]``. Items no row maps to get mask False (zeros). Without it, row i
      is item i and the file must have exactly ``num_items`` rows.
    zero_rows_missing: treat all-zero rows as "item has no such feature" (mask False).
    drop_unmapped: skip rows whose ``item_index`` is negative (items removed by
      filtering) instead of raising.

  Raises:
    DataError naming the file (and row): not 2-D, wrong row count, a row mapped to an
    unknown item (out of range, or negative without ``drop_unmapped``), two rows mapped
    to one item, non-finite values.
  """
  npy_path = pathlib.Path(npy_path)
  try:
    src = np.load(npy_path, mmap_mode="r", allow_pickle=False)
  except (ValueError, OSError, EOFError) as e:
    msg = str(e).splitlines()[0] if str(e) else type(e).__name__
    raise DataError(str(npy_path), f"unreadable .npy ({msg})") from None
  if src.ndim != 2:
    raise DataError(str(npy_path), f"expected a 2-D [rows, dim] array, got shape {src.shape}")
  n_src = src.shape[0]
  if item_index is None:
    if n_src != num_items:
      raise DataError(
        str(npy_path),
        f"{n_src} rows but num_items={num_items} (pass item_index to map rows to items)",
      )
    source_row = np.arange(num_items)
  else:
    idx = np.asarray(item_index)
    if idx.shape != (n_src,) or idx.dtype.kind not in "iu":
      raise DataError(
        str(npy_path),
        f"item_index must be int [{n_src}] (one per row), got {idx.dtype} {idx.shape}",
      )
    bad = (idx >= num_items) | ((idx < 0) & (not drop_unmapped))
    if bad.any():
      r = int(np.flatnonzero(bad)[0])
      raise DataError(
        f"{npy_path} row {r}", f"maps to unknown item {int(idx[r])} (num_items={num_items})"
      )
    keep_rows = np.flatnonzero(idx >= 0)
    source_row = np.full(num_items, -1, np.int64)
    source_row[idx[keep_rows]] = keep_rows
    if np.count_nonzero(source_row >= 0) != keep_rows.size:
      _, first_rows = np.unique(idx[keep_rows], return_index=True)
      dup = np.setdiff1d(np.arange(keep_rows.size), first_rows)[0]
      r = int(keep_rows[dup])
      raise DataError(f"{npy_path} row {r}", f"item {int(idx[r])} already has an earlier row")
  mask = source_row >= 0
  if zero_rows_missing:
    for a in range(0, num_items, rows_per_shard):
      rows_here = source_row[a : a + rows_per_shard]
      have = rows_here >= 0
      block = src[rows_here[have]]
      sub = mask[a : a + rows_per_shard]
      sub[have] = np.any(block != 0, axis=1)

  def chunks() -> Iterator[np.ndarray]:
    for a in range(0, num_items, rows_per_shard):
      rows_here = source_row[a : a + rows_per_shard]
      if item_index is None:
        yield src[a : a + rows_per_shard]
        continue
      block = np.zeros((rows_here.size, src.shape[1]), src.dtype)
      have = rows_here >= 0
      block[have] = src[rows_here[have]]
      yield block

  try:
    return write_feature_shards(
      out_dir,
      chunks(),
      mask,
      modality=modality,
      rows_per_shard=rows_per_shard,
      num_items=num_items,
      dtype=dtype,
    )
  except DataError as e:
    raise DataError(f"{npy_path} ({e.where})", e.problem) from None


# MMRec (enoche/MMRec) ships per-dataset image_feat.npy (4096-d VGG) and text_feat.npy
# (384-d sentence-transformers), row i = MMRec item id i.
MMREC_FILES = {"image": "image_feat.npy", "text": "text_feat.npy"}


def write_from_mmrec(
  dataset_dir: os.PathLike | str,
  out_root: os.PathLike | str,
  num_items: int,
  *,
  item_index: np.ndarray | None = None,
  drop_unmapped: bool = False,
  rows_per_shard: int = 65536,
  dtype: str = "float32",
) -> dict[str, FeatureShards]:
  """Shards MMRec's ``image_feat.npy`` / ``text_feat.npy`` into ``out_root/<modality>``.

  Decision: an all-zero row in an MMRec feature file means the item has no such
  feature (MMRec fills missing images/texts with zeros), so its mask is False rather
  than the model learning from a zero vector labelled "present".

  ``item_index`` maps MMRec item id (file row) -> internal item id when preparation
  re-indexed items; see :func:`write_from_npy`. Returns the written modalities.
  """
  dataset_dir = pathlib.Path(dataset_dir)
  out_root = pathlib.Path(out_root)
  found = {m: dataset_dir / f for m, f in MMREC_FILES.items() if (dataset_dir / f).is_file()}
  if not found:
    raise DataError(
      str(dataset_dir), f"no MMRec feature file (looked for {sorted(MMREC_FILES.values())})"
    )
  return {
    m: write_from_npy(
      out_root / m,
      p,
      modality=m,
      num_items=num_items,
      item_index=item_index,
      zero_rows_missing=True,
      drop_unmapped=drop_unmapped,
      rows_per_shard=rows_per_shard,
      dtype=dtype,
    )
    for m, p in sorted(found.items())
  }
