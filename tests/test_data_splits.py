"""Split invariants: every row kept once, time order respected, seeded determinism."""

import numpy as np
import pytest

from mmrec_jax.data import prepare as prep
from mmrec_jax.data import splits
from mmrec_jax.errors import ConfigError


def random_log(seed=0, n_users=40, n=800, ties=True):
  rng = np.random.default_rng(seed)
  users = rng.integers(0, n_users, n).astype(np.int64)
  # coarse timestamps so many ties occur within a user
  ts = rng.integers(0, 30 if ties else 10**9, n).astype(np.int64)
  return users, ts


def per_user_blocks(users, ts, labels):
  for u in np.unique(users):
    rows = np.flatnonzero(users == u)
    yield u, rows, ts[rows], labels[rows]


def test_ratio_counts_recbole_rule():
  nv, nt = splits.ratio_counts(np.array([1, 2, 3, 10, 11]), (0.8, 0.1, 0.1))
  assert list(nt) == [0, 1, 1, 1, 1] and list(nv) == [0, 0, 1, 1, 1]
  nv, nt = splits.ratio_counts(np.array([100]), (0.6, 0.2, 0.2))
  assert (nv[0], nt[0]) == (20, 20)


@pytest.mark.parametrize("method", ["temporal_ratio", "leave_last_out"])
def test_per_user_temporal_order_and_ties(method):
  users, ts = random_log()
  labels = splits.assign(method, users, ts, num_users=40, ratios=(0.7, 0.15, 0.15))
  assert labels.shape == users.shape and set(np.unique(labels)) <= {0, 1, 2}
  counts = np.bincount(users, minlength=40)
  nv, nt = (
    splits.ratio_counts(counts, (0.7, 0.15, 0.15))
    if method == "temporal_ratio"
    else ((counts >= 3).astype(int), (counts >= 2).astype(int))
  )
  for u, rows, t, lab in per_user_blocks(users, ts, labels):
    # order by (time, row): labels must be non-decreasing along it
    order = np.lexsort((rows, t))
    assert (np.diff(lab[order]) >= 0).all()
    assert (lab == 2).sum() == nt[u] and (lab == 1).sum() == nv[u]


def test_leave_last_out_small_users():
  users = np.array([0, 1, 1, 2, 2, 2])
  ts = np.array([5, 1, 2, 3, 3, 3])  # user 2: a three-way tie -> file order
  lab = splits.assign("leave_last_out", users, ts, num_users=3)
  assert list(lab) == [0, 0, 2, 0, 1, 2]


def test_global_temporal_cut():
  users, ts = random_log(ties=False, n=1000)
  lab = splits.assign("global_temporal", users, ts, num_users=40, global_cut=(0.7, 0.85))
  assert list(np.bincount(lab)) == [700, 150, 150]
  assert ts[lab == 0].max() <= ts[lab == 1].min() <= ts[lab == 1].max() <= ts[lab == 2].min()
  # ties across the cut are broken by row order
  tied = splits.assign(
    "global_temporal",
    np.zeros(10, np.int64),
    np.zeros(10, np.int64),
    num_users=1,
    global_cut=(0.5, 0.8),
  )
  assert list(tied) == [0] * 5 + [1] * 3 + [2] * 2


def test_random_ratio_seeded():
  users, ts = random_log()
  a = splits.assign("random_ratio", users, ts, num_users=40, seed=1)
  b = splits.assign("random_ratio", users, ts, num_users=40, seed=1)
  c = splits.assign("random_ratio", users, ts, num_users=40, seed=2)
  assert np.array_equal(a, b) and not np.array_equal(a, c)
  nv, nt = splits.ratio_counts(np.bincount(users, minlength=40), (0.8, 0.1, 0.1))
  for lab in (a, c):
    for u, _, _, l in per_user_blocks(users, ts, lab):
      assert (l == 2).sum() == nt[u] and (l == 1).sum() == nv[u]
  # not temporal: some user has a test row older than one of its train rows
  assert any(
    t[l == 2].min() < t[l == 0].max()
    for _, _, t, l in per_user_blocks(users, ts, a)
    if (l == 2).any()
  )


@pytest.mark.parametrize("method", list(splits.SPLITS))
def test_prepared_splits_partition_the_log(tmp_path, method):
  """Through prepare(): no overlap, every deduplicated row once, rows in (user, time) order."""
  rng = np.random.default_rng(7)
  n = 600
  u = rng.integers(1, 30, n)
  i = rng.integers(1, 50, n)
  t = rng.integers(0, 200, n)
  lines = "".join(f"{a}\t{b}\t{c}\n" for a, b, c in zip(u, i, t))
  (tmp_path / "log.inter").write_text("user_id:token\titem_id:token\ttimestamp:float\n" + lines)
  cfg = {
    "source": "recbole",
    "path": str(tmp_path / "log.inter"),
    "split": method,
    "cache_dir": str(tmp_path / "c"),
    "global_cut": (0.6, 0.8),
  }
  ds = prep.prepare(cfg, seed=5)
  # reference: earliest (time, row) per (user, item)
  first = {}
  for k, (a, b, c) in enumerate(zip(u, i, t)):
    first.setdefault((a, b), (c, k))
    first[(a, b)] = min(first[(a, b)], (c, k))
  ur, ir = ds.user_raw_ids().astype(int), ds.item_raw_ids().astype(int)
  seen = {}
  for name in ("train", "valid", "test"):
    s = ds.split(name)
    key = np.lexsort((s.timestamps, s.users))
    assert np.array_equal(key, np.arange(key.shape[0]))  # stored in (user, time) order
    for a, b, c in zip(ur[s.users], ir[s.items], s.timestamps):
      assert (a, b) not in seen  # no overlap, no repeats
      seen[(a, b)] = (name, int(c))
  assert {k: v[1] for k, v in seen.items()} == {k: v[0] for k, v in first.items()}
  again = prep.prepare({**cfg, "cache_dir": str(tmp_path / "c2")}, seed=5)
  for name in ("train", "valid", "test"):
    assert np.array_equal(ds.split(name).items, again.split(name).items)
  if method == "global_temporal":
    tr, va, te = (ds.split(s).timestamps for s in ("train", "valid", "test"))
    assert tr.max() <= va.min() and va.max() <= te.min()


def test_bad_ratios_and_cuts():
  from mmrec_jax.errors import ConfigError

  for bad in [(0.5, 0.2), (0.8, 0.3, 0.1), (0.0, 0.5, 0.5), (1.2, -0.1, -0.1), "abc"]:
    with pytest.raises(ConfigError, match="data.split_ratios"):
      splits.check_ratios(bad)
  for bad in [(0.9, 0.8), (0.0, 0.5), (0.5, 1.5), (0.5,)]:
    with pytest.raises(ConfigError, match="data.global_cut"):
      splits.check_global_cut(bad)


@pytest.mark.parametrize("scale", [1, 2**40])
def test_stable_order_matches_lexsort(scale):
  """Packed-key path (small values) and lexsort fallback (huge spans) agree with lexsort."""
  rng = np.random.default_rng(scale % 97)
  major = rng.integers(0, 50, 3000)
  minor = rng.integers(-5, 20, 3000) * scale
  assert np.array_equal(splits.stable_order(major, minor), np.lexsort((minor, major)))


def test_splits_registry_dispatches_by_name():
  """SPLITS (what config validation reads) maps each data.split name to its function."""
  assert list(splits.SPLITS) == [
    "temporal_ratio",
    "random_ratio",
    "leave_last_out",
    "global_temporal",
    "global_random",
    "kfold",
  ]
  users, ts = random_log(3)
  for name, fn in splits.SPLITS.items():
    kw = dict(
      num_users=40, ratios=(0.8, 0.1, 0.1), global_cut=(0.8, 0.9), seed=1, temporal_order=None
    )
    np.testing.assert_array_equal(splits.assign(name, users, ts, **kw), fn(users, ts, **kw))
  with pytest.raises(
    ConfigError,
    match=r"data\.split='nope' is not one of "
    r"\['temporal_ratio', 'random_ratio'",
  ):
    splits.assign("nope", users, ts, num_users=40)
