"""Raw source -> prepared dataset directory (format in docs/architecture.md).

Steps, in order (each vectorised numpy, so ML-25M-sized data prepares in about a minute):

1. implicit conversion: with ``data.rating_threshold >= 0`` keep rows with
   rating >= threshold (< 0 keeps every row);
2. de-duplication (``data.dedup``): one row per (user, item), the earliest (smallest
   timestamp; equal timestamps -> the first in the file). ``dedup=False`` keeps repeats
   as repeated interactions (re-watches/re-purchases);
3. k-core filtering (``data.user_core``/``data.item_core``), repeated until stable;
4. dense ids 0..n-1 in sorted raw-id order (numeric order for integer ids), the raw ids
   written to user_ids.txt / item_ids.txt;
5. splits (``splits.py``), then the optional validation carve (``data.valid_of_train``)
   and Cornac's ``exclude_unknowns`` (``data.exclude_unknowns``: valid/test rows of users
   or items without a train row are dropped and ids made dense again); rows of each split
   ordered by (user, time, file order);
6. items.jsonl, feature shards (given features, or a handcrafted 'text' modality from
   item side info), manifest with counts, split statistics, sha256 of every file and a
   fingerprint of (prep config + the exact input files).

Pre-split sources (``presplit``, ``mmrec``) are kept EXACTLY as given: no threshold, no
k-core (asking for either is a ConfigError), no re-splitting; users/items that appear only
in valid/test are kept (cold start; their counts are in the manifest's split statistics).
Since rows cannot be dropped there, a repeated (user, item) pair is a DataError naming
both lines while ``data.dedup`` is True; ``dedup=False`` keeps repeats.

Atomicity: the directory is built in ``.<name>.tmp-<pid>-<rand>`` beside the target and
renamed into place at the end; a failed or killed run leaves the earlier prepared dataset
untouched (an interrupted swap is undone on the next run). A target whose manifest
fingerprint matches is reused without reading the raw data again.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import pathlib
import secrets
import shutil
from typing import Any

import ml_collections
import numpy as np
from absl import logging

from mmrec_jax import config as config_lib
from mmrec_jax import io_utils
from mmrec_jax.data import feature_store, sources, splits
from mmrec_jax.data.cache import cache_dir_of  # re-exported: prepare.cache_dir_of
from mmrec_jax.data.dataset import FORMAT_VERSION, SPLIT_NAMES, PreparedDataset
from mmrec_jax.errors import ConfigError, DataError
from mmrec_jax.features.handcrafted import handcrafted_text_features
from mmrec_jax.io_utils import sha256_file
from mmrec_jax.loop import signals

PREP_VERSION = 1  # bump when the same inputs would prepare differently
_COMMON_KEYS = (
  "source",
  "rating_threshold",
  "dedup",
  "user_core",
  "item_core",
  "split",
  "split_ratios",
  "global_cut",
  "rows_per_shard",
)
_SOURCE_KEYS = {
  "movielens": ("variant", "path"),
  "recbole": ("path", "name"),
  "mmrec": ("path", "name"),
  "presplit": ("train", "valid", "test", "items_file"),
  "synthetic": (
    "num_users",
    "num_items",
    "num_interactions",
    "latent_dim",
    "text_dim",
    "image_dim",
    "popularity_exponent",
  ),
}
_GIVEN_SPLIT = ("presplit", "mmrec")
_SEEDED_SPLITS = ("random_ratio", "global_random", "kfold")
_PROTOCOL_DEFAULTS = {"exclude_unknowns": False, "valid_of_train": 0.0, "cold_items": 0.0}
# Test hook: called with the temp dir after the split arrays are written (atomicity tests).
_after_partial_write = None


def _resolve(cfg, seed):
  """Accepts the whole config (uses cfg.seed) or its data section (+ seed=)."""
  if isinstance(cfg, dict):
    cfg = ml_collections.ConfigDict(cfg)
  if "data" in cfg and isinstance(cfg["data"], (ml_collections.ConfigDict, dict)):
    seed = cfg.get("seed", 0) if seed is None else seed
    cfg = cfg["data"]
    if isinstance(cfg, dict):
      cfg = ml_collections.ConfigDict(cfg)
  defaults = config_lib.base_config().data
  unknown = sorted(set(cfg.keys()) - set(defaults.keys()))
  if unknown:
    raise ConfigError(f"data.{unknown[0]}: unknown key (valid: {', '.join(sorted(defaults))})")
  data = ml_collections.ConfigDict(defaults.to_dict())
  for key, value in cfg.to_dict().items():
    try:
      data[key] = value
    except TypeError:
      raise ConfigError(
        f"data.{key}={value!r}: expected type {type(defaults[key]).__name__}"
      ) from None
  if int(data.seed) >= 0:  # the data section's own seed wins (config.data.seed)
    seed = int(data.seed)
  return data, int(seed or 0)


def validate(data) -> None:
  """ConfigError for bad values, before any file is read."""
  names = (*sources.SOURCES, sources.PREPARED)
  if data.source not in names:
    raise ConfigError(f"data.source={data.source!r} is not one of {list(names)}")
  if data.source == sources.PREPARED:
    return
  try:
    thr = float(data.rating_threshold)
  except (TypeError, ValueError):
    raise ConfigError(f"data.rating_threshold={data.rating_threshold!r}: not a number") from None
  if not np.isfinite(thr):
    raise ConfigError(f"data.rating_threshold={data.rating_threshold!r}: must be finite")
  for key in ("user_core", "item_core"):
    v = data[key]
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
      raise ConfigError(f"data.{key}={v!r}: must be an integer >= 0")
  if (
    isinstance(data.rows_per_shard, bool)
    or not isinstance(data.rows_per_shard, int)
    or data.rows_per_shard < 1
  ):
    raise ConfigError(f"data.rows_per_shard={data.rows_per_shard!r}: must be an integer >= 1")
  if data.source in _GIVEN_SPLIT:
    if thr >= 0 or data.user_core or data.item_core:
      raise ConfigError(
        f"data.source={data.source!r} is kept exactly as given: "
        "data.rating_threshold must be < 0 and data.user_core/item_core 0"
      )
    return
  if data.split not in splits.SPLITS:
    raise ConfigError(f"data.split={data.split!r} is not one of {list(splits.SPLITS)}")
  if data.split in ("temporal_ratio", "random_ratio"):
    splits.check_ratios(data.split_ratios)
  if data.split == "global_temporal":
    splits.check_global_cut(data.global_cut)
  if data.split == "global_random":
    splits.check_ratios(data.split_ratios)
  if not 0.0 <= float(data.valid_of_train) < 1.0:
    raise ConfigError(f"data.valid_of_train={data.valid_of_train!r}: must be in [0, 1)")
  if not 0.0 <= float(data.cold_items) < 1.0:
    raise ConfigError(f"data.cold_items={data.cold_items!r}: must be in [0, 1)")
  if float(data.cold_items) > 0 and data.exclude_unknowns:
    raise ConfigError(
      "data.cold_items > 0 with data.exclude_unknowns=True would drop every cold item's "
      "valid/test row: set one of them"
    )


def prep_config(data, seed: int) -> dict:
  """The config fields that change the prepared output (-> fingerprint)."""
  keys = _COMMON_KEYS + _SOURCE_KEYS[data.source]
  out = {k: (list(data[k]) if isinstance(data[k], tuple) else data[k]) for k in keys}
  if data.source in _GIVEN_SPLIT:
    out["split"] = "given"
    for k in ("split_ratios", "global_cut"):
      out.pop(k)
  # Keys added with the Cornac/Elliot protocols enter the fingerprint only when they
  # change the output, so datasets prepared before them keep their fingerprints.
  for key, default in _PROTOCOL_DEFAULTS.items():
    if data.source not in _GIVEN_SPLIT and data[key] != default:
      out[key] = data[key]
  if data.source not in _GIVEN_SPLIT and data.split == "kfold":
    out["num_folds"], out["fold"] = data.num_folds, data.fold
  if (
    data.source == "synthetic"
    or out.get("split") in _SEEDED_SPLITS
    or out.get("valid_of_train")
    or out.get("cold_items")
  ):
    out["seed"] = seed
  return out


def prepare(cfg, *, seed: int | None = None) -> PreparedDataset:
  """Prepares (or reuses) the dataset described by ``cfg`` and opens it.

  Args:
    cfg: the whole config (``config.data`` and ``config.seed`` are used) or its data
      section (a ConfigDict or dict; missing keys take base_config() defaults).
    seed: seed when ``cfg`` is the data section (random_ratio split, synthetic source).
  """
  data, seed = _resolve(cfg, seed)
  validate(data)
  if data.source == sources.PREPARED:
    if not data.path:
      raise ConfigError("data.path is empty: set it to a prepared dataset directory")
    return PreparedDataset.open(os.path.expanduser(data.path))
  cache_dir = cache_dir_of(data)
  locate, load = sources.SOURCES[data.source]
  located = locate(data, cache_dir)
  pc = prep_config(data, seed)
  fingerprint = hashlib.sha256(
    json.dumps(
      {
        "prep_version": PREP_VERSION,
        "format_version": FORMAT_VERSION,
        "prep_config": pc,
        "inputs": located,
      },
      sort_keys=True,
      default=str,
    ).encode()
  ).hexdigest()
  if data.prepared_dir:
    target = pathlib.Path(os.path.expanduser(data.prepared_dir))
  else:
    label = data.source + (f"-{data.variant}" if data.source == "movielens" else "")
    target = cache_dir / "prepared" / f"{label}-{fingerprint[:16]}"
  target = target.absolute()
  target.parent.mkdir(parents=True, exist_ok=True)
  _clean_leftovers(target)
  if target.exists():
    existing = _manifest_fingerprint(target)
    if existing is None and any(target.iterdir()):
      raise ConfigError(
        f"data.prepared_dir={str(target)!r} exists and is not a prepared "
        "dataset; refusing to overwrite it"
      )
    if existing == fingerprint:
      try:
        ds = PreparedDataset.open(target)
        logging.info("reusing prepared dataset %s", target)
        return ds
      except DataError as e:
        logging.warning("prepared dataset %s is damaged (%s): preparing it again", target, e)
  raw = load(data, located, seed, cache_dir)
  tmp = target.parent / f".{target.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
  tmp.mkdir()
  try:
    build(raw, data, seed, tmp, fingerprint=fingerprint, prep_cfg=pc)
    signals.fault_point("prepare_build", 0)  # test hook: a complete temp dir, not installed
    _install(tmp, target, fingerprint)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  logging.info("prepared %s", target)
  return PreparedDataset.open(target)


def _manifest_fingerprint(path: pathlib.Path) -> str | None:
  try:
    return io_utils.read_json(path / "manifest.json").get("fingerprint")
  except DataError:
    return None


def _pid_alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


def _clean_leftovers(target: pathlib.Path) -> None:
  """Removes temp dirs of dead runs; undoes a swap interrupted between its two renames."""
  for p in target.parent.glob(f".{target.name}.tmp-*"):
    try:
      pid = int(p.name.rsplit(".tmp-", 1)[1].split("-")[0])
    except (IndexError, ValueError):
      continue
    if pid == os.getpid() or not _pid_alive(pid):
      shutil.rmtree(p, ignore_errors=True)
  olds = sorted(target.parent.glob(f".{target.name}.old-*"), key=lambda p: p.stat().st_mtime)
  if olds and not target.exists():
    logging.warning("restoring %s from an interrupted replacement", target)
    os.rename(olds[-1], target)
    olds = olds[:-1]
  for p in olds:
    shutil.rmtree(p, ignore_errors=True)


def _install(tmp: pathlib.Path, target: pathlib.Path, fingerprint: str) -> None:
  # The old target is renamed to .<name>.old-*, which _clean_leftovers restores if the
  # swap is interrupted (io_utils.replace_dir).
  replacing = target.exists()
  try:
    io_utils.replace_dir(tmp, target)
  except OSError:
    # A plain rename that lost to a concurrent twin preparing the same data is fine.
    if replacing or _manifest_fingerprint(target) != fingerprint:
      raise


# ---------------------------------------------------------------- the build
def factorize(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(sorted unique values, int64 inverse); a sort, not numpy's slower hash path."""
  order = np.argsort(x, kind="stable")
  xs = x[order]
  new = np.empty(xs.shape[0], bool)
  if xs.shape[0]:
    new[0] = True
    np.not_equal(xs[1:], xs[:-1], out=new[1:])
  inv = np.empty(x.shape[0], np.int64)
  inv[order] = np.cumsum(new) - 1
  return xs[new], inv


def _check_lengths(raw: sources.RawData) -> None:
  n = raw.users.shape[0]
  for name in ("items", "timestamps", "ratings", "labels"):
    a = getattr(raw, name)
    if a is not None and a.shape[0] != n:
      raise DataError(raw.source, f"{name} has {a.shape[0]} rows, users has {n}")
  if n == 0:
    raise DataError(raw.source, "no interactions")


def build(
  raw: sources.RawData, data, seed: int, out: pathlib.Path, *, fingerprint: str, prep_cfg: dict
) -> None:
  """Writes the prepared dataset for ``raw`` into the (empty) directory ``out``."""
  _check_lengths(raw)
  has_ts, has_rating = raw.timestamps is not None, raw.ratings is not None
  rows = np.arange(raw.users.shape[0], dtype=np.int64)  # surviving source rows
  if float(data.rating_threshold) >= 0:
    if not has_rating:
      raise ConfigError(
        f"data.rating_threshold={data.rating_threshold}: source "
        f"{raw.source} has no ratings (set it < 0)"
      )
    rows = np.flatnonzero(raw.ratings >= float(data.rating_threshold))
    if rows.size == 0:
      raise DataError(raw.source, f"no rating >= data.rating_threshold={data.rating_threshold}")
  user_raw, u = factorize(raw.users[rows])
  if raw.item_universe is not None:
    both = np.concatenate([raw.item_universe.astype(raw.items.dtype), raw.items[rows]])
    item_raw, inv = factorize(both)
    i = inv[raw.item_universe.shape[0] :]
  else:
    item_raw, i = factorize(raw.items[rows])
  ts = raw.timestamps[rows] if has_ts else np.zeros(rows.shape[0], np.int64)

  if data.dedup:  # first row per (user, item) by (time, file order)
    key = u * np.int64(item_raw.shape[0]) + i
    order = splits.stable_order(key, ts) if has_ts else np.argsort(key, kind="stable")
    ks = key[order]
    first = np.ones(ks.shape[0], bool)
    np.not_equal(ks[1:], ks[:-1], out=first[1:])
    if raw.labels is not None and not first.all():
      j = int(np.flatnonzero(~first)[0])
      dup, orig = int(rows[order[j]]), int(rows[order[j - 1]])
      raise DataError(
        _where(raw, dup),
        f"repeats (user {raw.users[dup]}, item "
        f"{raw.items[dup]}) of {_where(raw, orig)}; pre-split data is kept as "
        "given, so remove the repeat or set data.dedup=False to keep repeats",
      )
    keep = np.sort(order[first])
    del key, order, ks, first
    rows, u, i, ts = rows[keep], u[keep], i[keep], ts[keep]

  if raw.labels is None and (data.user_core or data.item_core):
    while True:
      uc = np.bincount(u, minlength=user_raw.shape[0])
      ic = np.bincount(i, minlength=item_raw.shape[0])
      bad = (uc[u] < data.user_core) | (ic[i] < data.item_core)
      if not bad.any():
        break
      good = ~bad
      rows, u, i, ts = rows[good], u[good], i[good], ts[good]
      if rows.size == 0:
        raise DataError(
          raw.source,
          f"no interactions left after k-core filtering "
          f"(user_core={data.user_core}, item_core={data.item_core})",
        )

  u, i, user_raw, item_raw = _dense(u, i, user_raw, item_raw, raw.item_universe is None)
  n_users, n_items = int(user_raw.shape[0]), int(item_raw.shape[0])

  order = splits.stable_order(u, ts)  # (user, time, file order): every split's row order
  if raw.labels is not None:
    labels = raw.labels[rows]
  else:
    if not has_ts and data.split not in _SEEDED_SPLITS:
      logging.warning(
        "source %s has no timestamps: split %s follows file order", raw.source, data.split
      )
    labels = splits.assign(
      data.split,
      u,
      ts,
      num_users=n_users,
      ratios=data.split_ratios,
      global_cut=data.global_cut,
      seed=seed,
      temporal_order=order,
      folds=(data.num_folds, data.fold),
    )
    labels = splits.carve_valid(labels, data.valid_of_train, seed)
    labels = splits.cold_items(labels, i, n_items, float(data.cold_items), seed)
    if data.exclude_unknowns:
      keep = ~splits.unknown_rows(labels, u, i, n_users, n_items)
      if not keep.all():
        logging.info(
          "exclude_unknowns: dropped %d valid/test rows of users/items without train rows",
          int((~keep).sum()),
        )
        rows, u, i, ts, labels = rows[keep], u[keep], i[keep], ts[keep], labels[keep]
        u, i, user_raw, item_raw = _dense(u, i, user_raw, item_raw, raw.item_universe is None)
        n_users, n_items = int(user_raw.shape[0]), int(item_raw.shape[0])
        order = splits.stable_order(u, ts)
  ratings = raw.ratings[rows] if has_rating else None
  del rows

  checksums: dict[str, str] = {}
  split_stats: dict[str, dict] = {}
  lab_sorted = labels[order]
  train_users = train_items = None
  for k, name in enumerate(SPLIT_NAMES):
    idx = order[lab_sorted == k]
    (out / name).mkdir()
    arrays = {
      "user": u[idx],
      "item": i[idx],
      "timestamp": ts[idx].astype(np.int64),
      "rating": (ratings[idx] if ratings is not None else np.ones(idx.shape[0], np.float32)).astype(
        np.float32
      ),
    }
    for stem, arr in arrays.items():
      f = out / name / f"{stem}.npy"
      np.save(f, np.ascontiguousarray(arr))
      checksums[f"{name}/{stem}.npy"] = sha256_file(f)
    su = np.bincount(arrays["user"], minlength=n_users) > 0
    si = np.bincount(arrays["item"], minlength=n_items) > 0
    if name == "train":
      train_users, train_items = su, si
    split_stats[name] = {
      "interactions": int(idx.shape[0]),
      "users": int(su.sum()),
      "items": int(si.sum()),
      "cold_users": int((su & ~train_users).sum()),
      "cold_items": int((si & ~train_items).sum()),
    }
    del idx, arrays
  if _after_partial_write is not None:
    _after_partial_write(out)
  del order, lab_sorted, labels, u, i, ts, ratings

  for fname, ids in (("user_ids.txt", user_raw), ("item_ids.txt", item_raw)):
    (out / fname).write_text("".join(f"{x}\n" for x in ids.tolist()), encoding="utf-8")
    checksums[fname] = sha256_file(out / fname)
  info = _item_info(raw, item_raw)
  with open(out / "items.jsonl", "w", encoding="utf-8") as f:
    for d in info:
      f.write(json.dumps(d, ensure_ascii=False) + "\n")
  checksums["items.jsonl"] = sha256_file(out / "items.jsonl")

  modalities = _write_features(raw, item_raw, info, out, data.rows_per_shard)
  for m in modalities:
    for f in sorted((out / "features" / m).iterdir()):
      checksums[f"features/{m}/{f.name}"] = sha256_file(f)

  manifest = {
    "format_version": FORMAT_VERSION,
    "source": raw.source,
    "num_users": n_users,
    "num_items": n_items,
    "num_interactions": sum(s["interactions"] for s in split_stats.values()),
    "has_timestamp": has_ts,
    "has_rating": has_rating,
    "splits": split_stats,
    "modalities": {m: f"features/{m}" for m in modalities},
    "checksums": checksums,
    "prep_config": prep_cfg,
    "fingerprint": fingerprint,
    "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    "prep_version": PREP_VERSION,
    "notes": raw.notes,
  }
  io_utils.atomic_write_json(out / "manifest.json", manifest, indent=1)


def _dense(
  u: np.ndarray, i: np.ndarray, user_raw: np.ndarray, item_raw: np.ndarray, drop_items: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """Dense ids over the users (and, with ``drop_items``, items) that have rows.

  Without ``drop_items`` (a source with an item universe) every item keeps its id.
  """
  used_u = np.bincount(u, minlength=user_raw.shape[0]) > 0
  new_u = np.cumsum(used_u) - 1
  u, user_raw = new_u[u].astype(np.int32), user_raw[used_u]
  if drop_items:
    used_i = np.bincount(i, minlength=item_raw.shape[0]) > 0
    new_i = np.cumsum(used_i) - 1
    i, item_raw = new_i[i].astype(np.int32), item_raw[used_i]
  else:
    i = i.astype(np.int32)
  return u, i, user_raw, item_raw


def _where(raw: sources.RawData, row: int) -> str:
  return raw.where_row(row) if raw.where_row else f"{raw.source} row {row + 1}"


_INFO_DEFAULT = {"title": None, "genres": [], "year": None, "tags": [], "image": None, "text": None}


def _item_info(raw: sources.RawData, item_raw: np.ndarray) -> list[dict[str, Any]]:
  given = raw.item_info or {}
  out = []
  for rid in item_raw.tolist():
    d = dict(_INFO_DEFAULT)
    d.update(given.get(str(rid), {}))
    out.append(d)
  return out


def _write_features(raw, item_raw, info, out: pathlib.Path, rows_per_shard: int) -> list[str]:
  root = out / "features"
  root.mkdir()
  n_items = item_raw.shape[0]
  written = []
  for m, spec in sorted(raw.features.items()):
    if (
      isinstance(spec[0], str) and spec[0] == "npy"
    ):  # MMRec file: row r = item id r = internal id r (universe kept)
      feature_store.write_from_npy(
        root / m,
        spec[1],
        modality=m,
        num_items=n_items,
        zero_rows_missing=True,
        rows_per_shard=rows_per_shard,
      )
    else:
      arr, ids = spec
      order = np.argsort(ids, kind="stable")
      pos = np.searchsorted(ids[order], item_raw.astype(ids.dtype))
      pos = np.minimum(pos, ids.shape[0] - 1)
      mask = ids[order][pos] == item_raw.astype(ids.dtype)
      rows = np.zeros((n_items, arr.shape[1]), np.float32)
      rows[mask] = arr[order[pos[mask]]]
      feature_store.write_feature_shards(
        root / m, rows, mask, modality=m, rows_per_shard=rows_per_shard, num_items=n_items
      )
    written.append(m)
  if raw.handcrafted_text and "text" not in raw.features:
    arr, mask = handcrafted_text_features(info)
    if mask.any():
      feature_store.write_feature_shards(
        root / "text", arr, mask, modality="text", rows_per_shard=rows_per_shard, num_items=n_items
      )
      written.append("text")
  return sorted(written)
