"""Reader of prepared dataset directories (format_version 1, docs/architecture.md).

A prepared directory is the one hand-off between preparation (``prepare.py``, any source)
and everything downstream (input pipeline, models, evaluation). Opening it checks what is
cheap to check -- manifest keys and version, array dtypes/shapes/id ranges, id-map and
items.jsonl line counts, feature-shard manifests -- so a truncated or hand-edited
directory fails here, with the file named, instead of as a shape error inside a jitted
step. ``verify=True`` also re-hashes every file against the manifest's sha256 sums.

Split arrays are memory-mapped: ML-25M's 25M rows cost nothing until touched. Rows of
each split are ordered by (user, timestamp, original row order).
"""

from __future__ import annotations

import json
import pathlib
from typing import NamedTuple

import numpy as np

from mmrec_jax.data.feature_store import FeatureShards
from mmrec_jax.errors import ConfigError, DataError
from mmrec_jax.io_utils import read_json, sha256_file

FORMAT_VERSION = 1
SPLIT_NAMES = ("train", "valid", "test")
# file stem -> dtype, for each <split>/<stem>.npy
ARRAYS = {"user": np.int32, "item": np.int32, "timestamp": np.int64, "rating": np.float32}
ITEM_INFO_KEYS = ("title", "genres", "year", "tags", "image", "text")
_REQUIRED = {
  "format_version": int,
  "source": str,
  "num_users": int,
  "num_items": int,
  "num_interactions": int,
  "has_timestamp": bool,
  "has_rating": bool,
  "splits": dict,
  "modalities": dict,
  "checksums": dict,
  "prep_config": dict,
  "fingerprint": str,
  "created": str,
}


class Split(NamedTuple):
  users: np.ndarray  # int32 [n], internal user ids
  items: np.ndarray  # int32 [n], internal item ids
  timestamps: np.ndarray  # int64 [n] (zeros when manifest has_timestamp is False)
  ratings: np.ndarray  # float32 [n] (ones when manifest has_rating is False)


def _count_lines(path: pathlib.Path) -> int:
  n, last = 0, b"\n"
  with open(path, "rb") as f:
    while block := f.read(1 << 22):
      n += block.count(b"\n")
      last = block[-1:]
  return n + (last != b"\n")


class PreparedDataset:
  """An opened prepared dataset directory. Use :meth:`open`."""

  path: pathlib.Path
  manifest: dict
  num_users: int
  num_items: int

  def __init__(self, path: pathlib.Path, manifest: dict):
    self.path = path
    self.manifest = manifest
    self.num_users = int(manifest["num_users"])
    self.num_items = int(manifest["num_items"])
    self._splits: dict[str, Split] = {}
    self._features: dict[str, FeatureShards] = {}

  # Pickles as its path (grain workers reopen it; mmaps do not pickle).
  def __getstate__(self):
    return {"path": str(self.path)}

  def __setstate__(self, state):
    other = PreparedDataset.open(state["path"])
    self.__dict__.update(other.__dict__)

  def __repr__(self) -> str:
    return (
      f"PreparedDataset({str(self.path)!r}, users={self.num_users}, "
      f"items={self.num_items}, interactions={self.manifest['num_interactions']})"
    )

  @classmethod
  def open(cls, path, *, verify: bool = False) -> PreparedDataset:
    """Opens and validates ``path``; DataError naming the file and problem otherwise."""
    path = pathlib.Path(path)
    mpath = path / "manifest.json"
    if not mpath.is_file():
      raise DataError(str(path), "not a prepared dataset directory (no manifest.json)")
    manifest = read_json(mpath)
    for key, typ in _REQUIRED.items():
      if key not in manifest:
        raise DataError(str(mpath), f"missing key '{key}'")
      ok = isinstance(manifest[key], typ) and not (typ is int and isinstance(manifest[key], bool))
      if not ok:
        raise DataError(
          str(mpath), f"key '{key}' must be {typ.__name__}, got {type(manifest[key]).__name__}"
        )
    if manifest["format_version"] != FORMAT_VERSION:
      raise DataError(
        str(mpath),
        f"format_version {manifest['format_version']} is not "
        f"supported (this reader reads {FORMAT_VERSION}); prepare it again",
      )
    ds = cls(path, manifest)
    ds._validate()
    if verify:
      ds.verify()
    return ds

  def _validate(self) -> None:
    m, path = self.manifest, self.path
    total = 0
    for name in SPLIT_NAMES:
      if name not in m["splits"] or "interactions" not in m["splits"][name]:
        raise DataError(str(path / "manifest.json"), f"splits.{name}.interactions missing")
      n = m["splits"][name]["interactions"]
      sp = self.split(name)
      for stem, arr in zip(ARRAYS, sp):
        f = path / name / f"{stem}.npy"
        if arr.ndim != 1 or arr.shape[0] != n:
          raise DataError(str(f), f"shape {arr.shape}, manifest says ({n},)")
      for arr, limit, what, stem in (
        (sp.users, self.num_users, "num_users", "user"),
        (sp.items, self.num_items, "num_items", "item"),
      ):
        if n and (int(arr.min()) < 0 or int(arr.max()) >= limit):
          bad = int(np.flatnonzero((arr < 0) | (arr >= limit))[0])
          raise DataError(
            f"{path / name / (stem + '.npy')} row {bad}",
            f"id {int(arr[bad])} outside [0, {what}={limit})",
          )
      total += n
    if total != m["num_interactions"]:
      raise DataError(
        str(path / "manifest.json"),
        f"splits hold {total} interactions, num_interactions says {m['num_interactions']}",
      )
    for fname, want in (
      ("user_ids.txt", self.num_users),
      ("item_ids.txt", self.num_items),
      ("items.jsonl", self.num_items),
    ):
      f = path / fname
      if not f.is_file():
        raise DataError(str(f), "missing")
      got = _count_lines(f)
      if got != want:
        raise DataError(str(f), f"{got} lines, expected {want}")
    for rel in m["checksums"]:
      if not (path / rel).is_file():
        raise DataError(str(path / rel), "listed in manifest checksums but missing")
    for modality in m["modalities"]:
      fs = self.features(modality)
      if fs.num_items != self.num_items:
        raise DataError(
          str(path / m["modalities"][modality]),
          f"{fs.num_items} feature rows, dataset has {self.num_items} items",
        )

  def verify(self) -> None:
    """Re-hashes every file listed in the manifest (slow for big datasets)."""
    for rel, want in self.manifest["checksums"].items():
      got = sha256_file(self.path / rel)
      if got != want:
        raise DataError(
          str(self.path / rel),
          f"sha256 {got[:12]}... does not match the "
          f"manifest ({want[:12]}...): the file changed or is corrupt",
        )

  def split(self, name: str) -> Split:
    """Memory-mapped arrays of split ``name`` (train | valid | test)."""
    if name not in SPLIT_NAMES:
      raise ConfigError(f"split {name!r} is not one of {list(SPLIT_NAMES)}")
    if name not in self._splits:
      arrays = []
      for stem, dtype in ARRAYS.items():
        f = self.path / name / f"{stem}.npy"
        if not f.is_file():
          raise DataError(str(f), "missing")
        try:
          a = np.load(f, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError, EOFError) as e:
          raise DataError(str(f), f"unreadable or truncated .npy ({e})") from None
        if a.dtype != dtype:
          raise DataError(str(f), f"dtype {a.dtype}, expected {np.dtype(dtype)}")
        arrays.append(a)
      self._splits[name] = Split(*arrays)
    return self._splits[name]

  def user_raw_ids(self) -> np.ndarray:
    return _read_lines(self.path / "user_ids.txt")

  def item_raw_ids(self) -> np.ndarray:
    return _read_lines(self.path / "item_ids.txt")

  def item_info(self) -> list[dict]:
    out = []
    f = self.path / "items.jsonl"
    with open(f, encoding="utf-8") as fh:
      for lineno, line in enumerate(fh, 1):
        try:
          out.append(json.loads(line))
        except ValueError as e:
          raise DataError(f"{f}:{lineno}", f"not valid JSON ({e})") from None
    return out

  @property
  def modalities(self) -> tuple[str, ...]:
    return tuple(sorted(self.manifest["modalities"]))

  def features(self, modality: str) -> FeatureShards:
    """The :class:`FeatureShards` of ``modality``."""
    if modality not in self.manifest["modalities"]:
      raise ConfigError(
        f"modality {modality!r} is not in the dataset at {self.path} (has {list(self.modalities)})"
      )
    if modality not in self._features:
      self._features[modality] = FeatureShards.open(
        self.path / self.manifest["modalities"][modality]
      )
    return self._features[modality]


def _read_lines(f: pathlib.Path) -> np.ndarray:
  with open(f, encoding="utf-8") as fh:
    return np.asarray(fh.read().splitlines(), dtype=str)


def describe(ds: PreparedDataset) -> str:
  """Human-readable statistics: sizes, per-split counts, density, modality coverage."""
  m = ds.manifest
  n = m["num_interactions"]
  density = n / max(1, ds.num_users * ds.num_items)
  lines = [
    f"dataset {m['source']} at {ds.path} (fingerprint {m['fingerprint'][:12]})",
    f"  users {ds.num_users:,}  items {ds.num_items:,}  interactions {n:,}  density {density:.4%}",
    f"  timestamps: {'yes' if m['has_timestamp'] else 'no'}  "
    f"ratings: {'yes' if m['has_rating'] else 'no'}  "
    f"split: {m['prep_config'].get('split', '?')}",
  ]
  lines.append("  split        interactions     users     items  cold users  cold items")
  for name in SPLIT_NAMES:
    s = m["splits"][name]
    lines.append(
      f"  {name:<8} {s['interactions']:>16,} {s.get('users', 0):>9,} "
      f"{s.get('items', 0):>9,} {s.get('cold_users', 0):>11,} "
      f"{s.get('cold_items', 0):>11,}"
    )
  if ds.modalities:
    for mod in ds.modalities:
      fs = ds.features(mod)
      cov = float(np.mean(fs.mask)) if ds.num_items else 0.0
      lines.append(
        f"  modality {mod:<8} dim {fs.dim:<6} coverage {cov:.1%} "
        f"({int(np.sum(fs.mask)):,}/{ds.num_items:,} items)"
      )
  else:
    lines.append("  modalities: none")
  return "\n".join(lines)
