"""Labelled interactions: (user, item, label) rows for pointwise ranking, Parquet and TSV.

Why: a ranker learns p(label | user, item), so it needs the negatives that top-K
recommenders throw away. Two ways to get them, the rule ``data.label_threshold`` picks
(the pointwise train step applies the same rule to its batches, ``step/pointwise.py``):

  * explicit ratings (``>= 0``): every row is kept, ``label = rating > threshold``
    (prepare with ``data.rating_threshold < 0`` so no row is dropped). The Merlin
    ML-25M notebooks: ``rating > 3``, a global random 80/20 split -- here
    ``data.split='global_random'`` (Cornac's RatioSplit, seeded) with
    ``data.exclude_unknowns`` to drop held-out rows of users/items unseen in train;
  * implicit data (``< 0``): each row is a positive; ``negatives`` items drawn uniformly
    at random (seeded) per positive are the zeros. A drawn item may be one the user
    interacted with (as in most sampled evaluations); at ML sizes this is rare.

Rows come out grouped by user (the prepared splits are ordered by user, and the sampled
negatives follow their positive's user), which the streamed per-user GAUC relies on
(``evaluation/pointwise.py``).

Files: :func:`write_rows` writes ``user_id, item_id, rating, label`` with raw ids as
Parquet (pyarrow) or TSV by the suffix; :func:`read_rows` reads either back.
"""

from __future__ import annotations

import dataclasses
import pathlib

import numpy as np

from mmrec_jax import io_utils
from mmrec_jax.errors import ConfigError, DataError

FORMATS = (".parquet", ".tsv")
COLUMNS = ("user_id", "item_id", "rating", "label")


@dataclasses.dataclass(frozen=True)
class LabelledRows:
  """Held-out or training rows with labels; ids are the prepared dense ids."""

  users: np.ndarray  # int32 [n]
  items: np.ndarray  # int32 [n]
  labels: np.ndarray  # float32 [n], 0 or 1
  ratings: np.ndarray  # float32 [n] (0 for sampled negatives)

  def __len__(self) -> int:
    return int(self.users.shape[0])


def labelled_rows(
  split, label_threshold: float, *, num_items: int, negatives: int = 1, seed: int = 0
) -> LabelledRows:
  """The labelled rows of a prepared ``split`` (``PreparedDataset.split(name)``).

  Args:
    split: users, items, ratings arrays (ordered by user).
    label_threshold: >= 0: label = rating > it; < 0: positives + sampled negatives.
    num_items: catalogue size (negatives are drawn from 0..num_items-1).
    negatives: sampled negatives per positive (implicit data only).
    seed: seed of the negative draw.
  """
  users = np.asarray(split.users, np.int32)
  items = np.asarray(split.items, np.int32)
  ratings = np.asarray(split.ratings, np.float32)
  if label_threshold >= 0:
    labels = (ratings > label_threshold).astype(np.float32)
    return LabelledRows(users, items, labels, ratings)
  if negatives < 1:
    raise ConfigError(
      f"eval.pointwise_negatives={negatives}: implicit data (data.label_threshold < 0) "
      "needs at least one sampled negative per positive"
    )
  rng = np.random.default_rng(seed)
  n = users.shape[0]
  neg = rng.integers(0, num_items, (n, negatives)).astype(np.int32)
  # Per positive: the positive, then its negatives -- rows stay grouped by user.
  all_users = np.repeat(users, negatives + 1)
  all_items = np.concatenate([items[:, None], neg], axis=1).reshape(-1)
  labels = np.zeros((n, negatives + 1), np.float32)
  labels[:, 0] = 1.0
  rates = np.zeros((n, negatives + 1), np.float32)
  rates[:, 0] = ratings
  return LabelledRows(all_users, all_items, labels.reshape(-1), rates.reshape(-1))


def _suffix(path: pathlib.Path) -> str:
  suffix = path.suffix.lower()
  if suffix not in FORMATS:
    raise ConfigError(f"{path}: labelled rows are written as one of {list(FORMATS)}")
  return suffix


def write_rows(
  path: str | pathlib.Path, rows: LabelledRows, user_raw: np.ndarray, item_raw: np.ndarray
) -> None:
  """Writes ``rows`` with raw ids to ``path`` (.parquet or .tsv), atomically."""
  path = pathlib.Path(path)
  suffix = _suffix(path)
  cols = {
    "user_id": np.asarray(user_raw)[rows.users].astype(str),
    "item_id": np.asarray(item_raw)[rows.items].astype(str),
    "rating": rows.ratings.astype(np.float32),
    "label": rows.labels.astype(np.int8),
  }
  with io_utils.atomic_path(path) as tmp:
    if suffix == ".parquet":
      import pyarrow as pa  # noqa: PLC0415  (pyarrow only for Parquet)
      import pyarrow.parquet as pq  # noqa: PLC0415

      pq.write_table(pa.table(cols), tmp)
    else:
      with open(tmp, "w", encoding="utf-8") as f:
        f.write("\t".join(COLUMNS) + "\n")
        for u, i, r, y in zip(*(cols[c] for c in COLUMNS)):
          f.write(f"{u}\t{i}\t{r:g}\t{int(y)}\n")


def read_rows(path: str | pathlib.Path) -> dict[str, np.ndarray]:
  """Columns ``user_id, item_id, rating, label`` of a file :func:`write_rows` wrote.

  Raw ids come back as strings; a missing column is a one-line DataError naming it.
  """
  path = pathlib.Path(path)
  suffix = _suffix(path)
  if suffix == ".parquet":
    import pyarrow.parquet as pq  # noqa: PLC0415

    table = pq.read_table(path)
    have = set(table.column_names)
    get = lambda c: table.column(c).to_numpy(zero_copy_only=False)
  else:
    with open(path, encoding="utf-8") as f:
      header = f.readline().rstrip("\n").split("\t")
      body = [line.rstrip("\n").split("\t") for line in f if line.strip()]
    have = set(header)
    for lineno, r in enumerate(body, 2):
      if len(r) != len(header):
        raise DataError(f"{path}:{lineno}", f"{len(r)} fields, header has {len(header)}")
    cols = {h: [r[k] for r in body] for k, h in enumerate(header)}
    get = lambda c: np.asarray(cols[c])
  missing = [c for c in COLUMNS if c not in have]
  if missing:
    raise DataError(str(path), f"missing columns {missing}")
  return {
    "user_id": get("user_id").astype(str),
    "item_id": get("item_id").astype(str),
    "rating": get("rating").astype(np.float32),
    "label": get("label").astype(np.int8),
  }


# Column names accepted for Parquet interaction files (first match wins).
_PARQUET_COLUMNS = {
  "user": ("user_id", "userId", "user", "userID"),
  "item": ("item_id", "movieId", "itemId", "item", "itemID"),
  "rating": ("rating",),
  "timestamp": ("timestamp",),
}


def read_parquet_interactions(path: str | pathlib.Path) -> dict[str, np.ndarray]:
  """Interaction columns of a Parquet file for the ``presplit`` source.

  ``user``/``item`` (any of the names in ``_PARQUET_COLUMNS``; integer ids stay
  integers, others become strings), optional ``rating`` and ``timestamp``. A missing
  id column is a one-line DataError naming the file and the names tried.
  """
  import pyarrow.parquet as pq  # noqa: PLC0415

  path = pathlib.Path(path)
  try:
    table = pq.read_table(path)
  except Exception as e:  # pyarrow raises several types for bad files
    raise DataError(str(path), f"not a readable Parquet file ({type(e).__name__}: {e})") from None
  out = {}
  for key, names in _PARQUET_COLUMNS.items():
    name = next((n for n in names if n in table.column_names), None)
    if name is None:
      if key in ("user", "item"):
        raise DataError(str(path), f"no {key} column (tried {list(names)})")
      continue
    col = table.column(name).to_numpy(zero_copy_only=False)
    if key in ("user", "item"):
      out[key] = col.astype(np.int64) if col.dtype.kind in "iu" else col.astype(str)
    else:
      out[key] = col.astype(np.float64)
  return out


def export_splits(ds, out_dir: str | pathlib.Path, label_threshold: float, fmt: str = ".parquet"):
  """Writes ``<split><fmt>`` of every split of ``ds`` (explicit labels); returns paths."""
  out_dir = pathlib.Path(out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  if label_threshold < 0:
    raise ConfigError("export_splits writes explicit labels: data.label_threshold must be >= 0")
  paths = []
  for name in ("train", "valid", "test"):
    rows = labelled_rows(ds.split(name), label_threshold, num_items=ds.num_items)
    p = out_dir / f"{name}{fmt}"
    write_rows(p, rows, ds.user_raw_ids(), ds.item_raw_ids())
    paths.append(p)
  return paths
