"""Train/valid/test splits of interaction logs: seeded, deterministic, vectorised.

Every method returns one int8 label per row (0 train, 1 valid, 2 test) and keeps every
row. Ties in timestamps are broken by row order (the order of the source file after
de-duplication), so the same input always gives the same split; without timestamps
(all zeros) the temporal methods therefore follow file order.

Methods (:data:`SPLITS`, the registry ``data.split`` is checked against):

* ``temporal_ratio``  per user, oldest -> newest; the newest ``ratios[2]`` go to test and
  the ``ratios[1]`` before them to valid. Counts follow RecBole's rule: valid/test get
  ``floor(ratio * n)``, raised to 1 when ``0 < ratio * n < 1`` as long as train keeps at
  least one row (test is served first), so a user with 3 rows and (0.8, 0.1, 0.1) gets
  1/1/1 and a user with 1 row trains only.
* ``random_ratio``    the same counts over a seeded random order per user: the per-user
  stratified random split (every user keeps the ratio).
* ``leave_last_out``  per user the newest row is test and the second newest valid; users
  with 2 rows get train+test, users with 1 row train only.
* ``global_temporal`` one time cut for everyone: rows sorted by (time, row order); the
  first ``global_cut[0]`` fraction is train, up to ``global_cut[1]`` valid, the rest test.
  Valid/test users and items need not appear in train (cold start) -- on purpose: it is
  what deployment sees.
* ``global_random``   Cornac's ``RatioSplit``, row for row: ``p = RandomState(seed)
  .permutation(n)`` over the rows in file order; ``test_size = ceil(ratios[2] * n)``,
  ``val_size = ceil(ratios[1] * n)``; ``p[:n - val - test]`` train, ``p[-test:]`` test,
  the rows between valid. Not stratified by user (that is ``random_ratio``). Combine with
  ``data.exclude_unknowns`` for Cornac's ``exclude_unknowns=True``.
* ``kfold``           Cornac's ``CrossValidation`` partition: ``floor(n / folds)`` rows per
  fold, shuffled with ``RandomState(seed)``, the remainder assigned to random folds; fold
  ``data.fold`` is test, the rest train (``data.valid_of_train`` carves a validation set).

Three steps apply after any method (``prepare.py`` calls them in this order):

* :func:`carve_valid` (``data.valid_of_train = f > 0``): a seeded random fraction ``f`` of
  the TRAIN rows becomes valid (Elliot's "validation = 10% of train", global, not per
  user); ``ceil(f * n_train)`` rows, drawn with ``RandomState(seed + 1)``.
* :func:`cold_items` (``data.cold_items = f > 0``): a seeded fraction ``f`` of the items
  loses its train rows to valid (half of those items) and test (the other half): the
  item cold-start protocol, for models that score new items from their content.
* :func:`unknown_rows` (``data.exclude_unknowns``): valid/test rows whose user or item has
  no train row are dropped (Cornac's ``exclude_unknowns=True``); ids are then made dense
  over what remains.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from mmrec_jax.errors import ConfigError

TRAIN, VALID, TEST = 0, 1, 2


def stable_order(major: np.ndarray, minor: np.ndarray) -> np.ndarray:
  """Row order by (major, minor, row index), like ``np.lexsort((minor, major))``.

  One stable argsort of a packed int64 key when ``major * span(minor)`` fits, which is
  ~15x faster than lexsort on 25M rows here; lexsort otherwise.
  """
  n = major.shape[0]
  if n == 0:
    return np.zeros(0, np.int64)
  lo, hi = int(minor.min()), int(minor.max())
  span = hi - lo + 1
  top = int(major.max()) + 1
  if int(major.min()) >= 0 and top * span < 2**62:
    key = major.astype(np.int64) * span + (minor.astype(np.int64) - lo)
    return np.argsort(key, kind="stable")
  return np.lexsort((minor, major))


def check_ratios(ratios, key: str = "data.split_ratios") -> tuple[float, float, float]:
  try:
    r = tuple(float(x) for x in ratios)
  except (TypeError, ValueError):
    raise ConfigError(f"{key}={ratios!r}: must be three numbers (train, valid, test)") from None
  if len(r) != 3:
    raise ConfigError(f"{key}={ratios!r}: must be three numbers (train, valid, test)")
  if any(not np.isfinite(x) or x < 0 for x in r) or r[0] <= 0:
    raise ConfigError(f"{key}={ratios!r}: must be finite, >= 0, with train > 0")
  if abs(sum(r) - 1.0) > 1e-6:
    raise ConfigError(f"{key}={ratios!r}: must sum to 1 (sum is {sum(r):g})")
  return r


def check_global_cut(cut, key: str = "data.global_cut") -> tuple[float, float]:
  try:
    c = tuple(float(x) for x in cut)
  except (TypeError, ValueError):
    raise ConfigError(f"{key}={cut!r}: must be two fractions (valid_start, test_start)") from None
  if len(c) != 2 or not (0.0 < c[0] <= c[1] <= 1.0):
    raise ConfigError(
      f"{key}={cut!r}: must be two fractions with 0 < valid_start <= test_start <= 1"
    )
  return c


def _newest_labels(
  users: np.ndarray, order: np.ndarray, counts: np.ndarray, n_valid: np.ndarray, n_test: np.ndarray
) -> np.ndarray:
  """Per user: the last ``n_test`` rows in ``order`` test, the ``n_valid`` before valid."""
  n = users.shape[0]
  sorted_users = users[order]
  start = np.concatenate([[0], np.cumsum(counts)[:-1]])
  pos = np.arange(n, dtype=np.int64) - start[sorted_users]
  from_end = counts[sorted_users] - pos  # 1 for the newest row of a user
  ranked = np.full(n, TRAIN, np.int8)
  ranked[from_end <= n_test[sorted_users] + n_valid[sorted_users]] = VALID
  ranked[from_end <= n_test[sorted_users]] = TEST
  labels = np.empty(n, np.int8)
  labels[order] = ranked
  return labels


def _temporal(users, timestamps, temporal_order):
  if temporal_order is not None:
    return temporal_order
  return stable_order(users, timestamps)  # stable: ties keep row order


def _user_counts(users: np.ndarray, num_users: int) -> np.ndarray:
  return np.bincount(users, minlength=num_users).astype(np.int64)


def temporal_ratio(
  users: np.ndarray,
  timestamps: np.ndarray,
  *,
  num_users: int,
  ratios,
  global_cut,
  seed: int,
  temporal_order: np.ndarray | None,
  **unused,
) -> np.ndarray:
  """Per user by time: the newest ``ratios[2]`` test, the ``ratios[1]`` before valid."""
  del global_cut, seed
  order = _temporal(users, timestamps, temporal_order)
  counts = _user_counts(users, num_users)
  n_valid, n_test = ratio_counts(counts, check_ratios(ratios))
  return _newest_labels(users, order, counts, n_valid, n_test)


def random_ratio(
  users: np.ndarray,
  timestamps: np.ndarray,
  *,
  num_users: int,
  ratios,
  global_cut,
  seed: int,
  temporal_order: np.ndarray | None,
  **unused,
) -> np.ndarray:
  """The counts of ``temporal_ratio`` over a seeded random order per user."""
  del timestamps, global_cut, temporal_order
  rng = np.random.default_rng([seed, 0x5B117])
  order = stable_order(users, rng.permutation(users.shape[0]))
  counts = _user_counts(users, num_users)
  n_valid, n_test = ratio_counts(counts, check_ratios(ratios))
  return _newest_labels(users, order, counts, n_valid, n_test)


def leave_last_out(
  users: np.ndarray,
  timestamps: np.ndarray,
  *,
  num_users: int,
  ratios,
  global_cut,
  seed: int,
  temporal_order: np.ndarray | None,
  **unused,
) -> np.ndarray:
  """Per user the newest row is test and the second newest valid."""
  del ratios, global_cut, seed
  order = _temporal(users, timestamps, temporal_order)
  counts = _user_counts(users, num_users)
  n_test = (counts >= 2).astype(np.int64)
  n_valid = (counts >= 3).astype(np.int64)
  return _newest_labels(users, order, counts, n_valid, n_test)


def global_temporal(
  users: np.ndarray,
  timestamps: np.ndarray,
  *,
  num_users: int,
  ratios,
  global_cut,
  seed: int,
  temporal_order: np.ndarray | None,
  **unused,
) -> np.ndarray:
  """One time cut for everyone at the ``global_cut`` quantiles of (time, row order)."""
  del num_users, ratios, seed, temporal_order
  n = users.shape[0]
  c = check_global_cut(global_cut)
  order = np.argsort(timestamps, kind="stable")
  n_valid_start = int(np.floor(c[0] * n))
  n_test_start = int(np.floor(c[1] * n))
  ranked = np.full(n, TRAIN, np.int8)
  ranked[n_valid_start:n_test_start] = VALID
  ranked[n_test_start:] = TEST
  labels = np.empty(n, np.int8)
  labels[order] = ranked
  return labels


def global_random(
  users: np.ndarray,
  timestamps: np.ndarray,
  *,
  num_users: int,
  ratios,
  global_cut,
  seed: int,
  temporal_order: np.ndarray | None,
  **unused,
) -> np.ndarray:
  """Cornac's RatioSplit: one seeded permutation of all rows (see module doc)."""
  del timestamps, num_users, global_cut, temporal_order
  n = users.shape[0]
  _, rv, rt = check_ratios(ratios)
  n_valid, n_test = math.ceil(rv * n), math.ceil(rt * n)
  if n_valid + n_test >= n:
    raise ConfigError(f"data.split_ratios={tuple(ratios)!r}: valid + test take all {n} rows")
  perm = np.random.RandomState(seed).permutation(n)
  labels = np.full(n, TRAIN, np.int8)
  labels[perm[n - n_valid - n_test : n - n_test]] = VALID
  if n_test:
    labels[perm[n - n_test :]] = TEST
  return labels


def kfold_partition(n: int, num_folds: int, seed: int) -> np.ndarray:
  """Fold of each row, exactly as Cornac's ``CrossValidation._partition_data``."""
  if isinstance(num_folds, bool) or int(num_folds) != num_folds or num_folds < 2:
    raise ConfigError(f"data.num_folds={num_folds!r}: must be an integer >= 2")
  num_folds = int(num_folds)
  rng = np.random.RandomState(seed)
  fold_size = n // num_folds
  partition = np.repeat(np.arange(num_folds), fold_size)
  rng.shuffle(partition)
  remain = n - fold_size * num_folds
  if remain > 0:
    partition = np.concatenate([partition, rng.choice(num_folds, size=remain, replace=True)])
  return partition


def kfold(
  users: np.ndarray,
  timestamps: np.ndarray,
  *,
  num_users: int,
  ratios,
  global_cut,
  seed: int,
  temporal_order: np.ndarray | None,
  folds: tuple[int, int] = (5, 0),
  **unused,
) -> np.ndarray:
  """Fold ``folds[1]`` of ``folds[0]`` (Cornac's partition) is test, the rest train."""
  del timestamps, num_users, ratios, global_cut, temporal_order
  num_folds, fold = folds
  partition = kfold_partition(users.shape[0], num_folds, seed)
  if isinstance(fold, bool) or int(fold) != fold or not 0 <= fold < num_folds:
    raise ConfigError(f"data.fold={fold!r}: must be an integer in [0, {num_folds})")
  return np.where(partition == int(fold), TEST, TRAIN).astype(np.int8)


def carve_valid(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
  """A seeded random ``fraction`` of the train rows relabelled valid (module doc)."""
  fraction = float(fraction)
  if not 0.0 <= fraction < 1.0:
    raise ConfigError(f"data.valid_of_train={fraction!r}: must be in [0, 1)")
  if fraction == 0.0:
    return labels
  train = np.flatnonzero(labels == TRAIN)
  take = math.ceil(fraction * train.shape[0])
  out = labels.copy()
  out[train[np.random.RandomState(seed + 1).permutation(train.shape[0])[:take]]] = VALID
  return out


def cold_items(
  labels: np.ndarray, items: np.ndarray, num_items: int, fraction: float, seed: int
) -> np.ndarray:
  """Item cold start: a seeded ``fraction`` of the items loses every train row.

  The chosen items (``round(fraction * items with rows)``, drawn with
  ``RandomState(seed + 2)``) are split in two halves by the same draw: the train rows of
  the first half become valid rows, those of the second half test rows. Valid and test
  therefore both hold items no model saw in training, so model selection sees the
  cold-start case the test measures (the protocol of DropoutNet / CLCRec evaluations).
  Rows already valid/test stay where they are. ``fraction=0`` returns ``labels``.
  """
  if fraction <= 0:
    return labels
  present = np.unique(items)
  n_cold = round(fraction * present.size)
  if n_cold == 0:
    return labels
  chosen = np.random.RandomState(seed + 2).permutation(present)[:n_cold]
  target = np.full(num_items, -1, np.int8)
  target[chosen[: n_cold // 2]] = VALID
  target[chosen[n_cold // 2 :]] = TEST
  t = target[items]
  out = labels.copy()
  move = (labels == TRAIN) & (t >= 0)
  out[move] = t[move]
  return out


def unknown_rows(
  labels: np.ndarray, users: np.ndarray, items: np.ndarray, num_users: int, num_items: int
) -> np.ndarray:
  """bool per row: a valid/test row whose user or item has no train row."""
  train = labels == TRAIN
  known_u = np.bincount(users[train], minlength=num_users) > 0
  known_i = np.bincount(items[train], minlength=num_items) > 0
  return ~train & ~(known_u[users] & known_i[items])


# data.split -> its implementation: (users, timestamps, *, num_users, ratios, global_cut,
# seed, temporal_order) -> int8 label per row.
SPLITS: dict[str, Callable[..., np.ndarray]] = {
  "temporal_ratio": temporal_ratio,
  "random_ratio": random_ratio,
  "leave_last_out": leave_last_out,
  "global_temporal": global_temporal,
  "global_random": global_random,
  "kfold": kfold,
}


def assign(
  method: str,
  users: np.ndarray,
  timestamps: np.ndarray,
  *,
  num_users: int,
  ratios=(0.8, 0.1, 0.1),
  global_cut=(0.8, 0.9),
  seed: int = 0,
  temporal_order: np.ndarray | None = None,
  folds: tuple[int, int] = (5, 0),
) -> np.ndarray:
  """int8 label per row (0 train, 1 valid, 2 test) for ``method``; see the module doc.

  ``temporal_order`` may pass ``stable_order(users, timestamps)`` when the caller has it
  (saves a sort of every row).
  """
  if method not in SPLITS:
    raise ConfigError(f"data.split={method!r} is not one of {list(SPLITS)}")
  return SPLITS[method](
    users,
    timestamps,
    num_users=num_users,
    ratios=ratios,
    global_cut=global_cut,
    seed=seed,
    temporal_order=temporal_order,
    folds=folds,
  )


def ratio_counts(counts: np.ndarray, ratios) -> tuple[np.ndarray, np.ndarray]:
  """(n_valid, n_test) per user by RecBole's rounding rule (see module doc)."""
  counts = np.asarray(counts, np.int64)
  _, rv, rt = ratios
  n_test = np.floor(rt * counts + 1e-9).astype(np.int64)
  n_valid = np.floor(rv * counts + 1e-9).astype(np.int64)
  n_train = counts - n_test - n_valid
  bump = (rt * counts > 0) & (rt * counts < 1) & (n_train > 1)
  n_test += bump
  n_train -= bump
  bump = (rv * counts > 0) & (rv * counts < 1) & (n_train > 1)
  n_valid += bump
  return n_valid, n_test
