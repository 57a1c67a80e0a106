"""Training pipeline: determinism, exact resume, process slicing, negatives, features."""

import collections
import json

import numpy as np
import pytest

from mmrec_jax.config import base_config
from mmrec_jax.data.dataset import Split as DatasetSplit
from mmrec_jax.data.feature_store import write_feature_shards
from mmrec_jax.data.pipeline import make_train_pipeline
from mmrec_jax.errors import ConfigError, DataError

Split = collections.namedtuple("Split", "users items")
NUM_USERS, NUM_ITEMS, NUM_TRAIN = 60, 40, 1003


def make_split(seed=0, n=NUM_TRAIN):
  """Distinct (user, item) pairs, so a pair identifies an interaction."""
  rng = np.random.default_rng(seed)
  keys = rng.choice(NUM_USERS * NUM_ITEMS, size=n, replace=False)
  return Split((keys // NUM_ITEMS).astype(np.int32), (keys % NUM_ITEMS).astype(np.int32))


def cfg(**kw):
  c = base_config().input
  c.batch_size = 64
  for k, v in kw.items():
    c[k] = v
  return c


def build(split=None, seed=0, pi=0, pc=1, **kw):
  extra = {k: kw.pop(k) for k in ("features", "expected_dims", "num_epochs") if k in kw}
  return make_train_pipeline(
    split if split is not None else make_split(),
    NUM_USERS,
    NUM_ITEMS,
    cfg(**kw),
    seed=seed,
    process_index=pi,
    process_count=pc,
    **extra,
  )


def take(p, n):
  out = [next(p) for _ in range(n)]
  return out


def assert_batches_equal(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert x.keys() == y.keys()
    for k in x:
      np.testing.assert_array_equal(x[k], y[k], err_msg=k)


@pytest.fixture(scope="module")
def feature_dirs(tmp_path_factory):
  """Two modalities with several shards and some missing items."""
  root = tmp_path_factory.mktemp("features")
  rng = np.random.default_rng(5)
  text = rng.standard_normal((NUM_ITEMS, 6)).astype(np.float32)
  image = rng.standard_normal((NUM_ITEMS, 10)).astype(np.float32)
  mask = rng.random(NUM_ITEMS) < 0.7
  fs = {
    "text": write_feature_shards(root / "text", text, None, modality="text", rows_per_shard=16),
    "image": write_feature_shards(root / "image", image, mask, modality="image", rows_per_shard=7),
  }
  image[~mask] = 0  # documented imputation
  return fs, {"text": text, "image": image}, {"text": np.ones(NUM_ITEMS, bool), "image": mask}


def test_shapes_dtypes_and_rows_are_train_pairs():
  split = make_split()
  p = build(split, num_negatives=3)
  assert p.steps_per_epoch == NUM_TRAIN // 64
  pairs = set(zip(split.users.tolist(), split.items.tolist()))
  for b in take(p, 3):
    assert {k: (v.shape, v.dtype) for k, v in b.items()} == p.element_spec
    assert set(zip(b["user"].tolist(), b["pos"].tolist())) <= pairs
    assert b["neg"].min() >= 0 and b["neg"].max() < NUM_ITEMS


def test_accepts_a_memory_mapped_dataset_split(tmp_path):
  """PreparedDataset.split gives memory-mapped arrays; batches are the same as in memory."""
  split = make_split()
  for name, a in (("user", split.users), ("item", split.items)):
    np.save(tmp_path / f"{name}.npy", a)
  mm = DatasetSplit(
    np.load(tmp_path / "user.npy", mmap_mode="r"),
    np.load(tmp_path / "item.npy", mmap_mode="r"),
    np.zeros(NUM_TRAIN, np.int64),
    np.ones(NUM_TRAIN, np.float32),
  )
  got = take(build(mm, exclude_positives=True), 3)
  # A dataset split carries ratings, so its batches carry them too (the rating regime's
  # input); the id part equals the in-memory pipeline's.
  assert all(np.array_equal(b.pop("rating"), np.ones(b["user"].shape, np.float32)) for b in got)
  assert_batches_equal(got, take(build(split, exclude_positives=True), 3))


def test_process_defaults_come_from_jax():
  p = make_train_pipeline(make_split(), NUM_USERS, NUM_ITEMS, cfg(), seed=0)
  assert p.local_batch_size == p.global_batch_size == 64  # one process in tests
  assert_batches_equal([next(p)], [build().batch_at(0)])


def test_deterministic_for_a_seed_and_different_across_seeds():
  a, b, c = build(seed=3), build(seed=3), build(seed=4)
  ba, bb, bc = take(a, 20), take(b, 20), take(c, 3)
  assert_batches_equal(ba, bb)
  assert not np.array_equal(ba[0]["pos"], bc[0]["pos"])
  # Epochs are shuffled differently.
  spe = a.steps_per_epoch
  assert not np.array_equal(ba[0]["user"], ba[spe]["user"])
  assert_batches_equal(ba[5:6], [a.batch_at(5)])


def test_read_threads_across_an_epoch_boundary_keep_the_order():
  p = make_train_pipeline(
    make_split(),
    NUM_USERS,
    NUM_ITEMS,
    cfg(prefetch=4),
    seed=2,
    process_index=0,
    process_count=1,
    num_threads=3,
  )
  got = take(p, 40)
  p.close()
  assert_batches_equal(got, [p.batch_at(g) for g in range(40)])


def test_one_epoch_covers_every_interaction_once_minus_the_tail():
  split = make_split()
  p = build(split, num_epochs=1)
  batches = list(p)
  assert len(batches) == p.steps_per_epoch and p.epoch == 1
  seen = [(u, i) for b in batches for u, i in zip(b["user"].tolist(), b["pos"].tolist())]
  assert len(seen) == len(set(seen)) == p.steps_per_epoch * 64
  assert set(seen) <= set(zip(split.users.tolist(), split.items.tolist()))
  assert NUM_TRAIN - len(seen) == NUM_TRAIN % 64  # the dropped tail


@pytest.mark.parametrize(
  "sampler,exclude", [("uniform", False), ("popularity", True), ("in_batch", False)]
)
def test_two_processes_are_disjoint_cover_and_slice_the_global_batch(sampler, exclude):
  split = make_split()
  kw = dict(negative_sampler=sampler, exclude_positives=exclude, num_negatives=2, num_epochs=1)
  whole = list(build(split, **kw))
  p0, p1 = build(split, pi=0, pc=2, **kw), build(split, pi=1, pc=2, **kw)
  assert p0.local_batch_size == p1.local_batch_size == 32
  b0, b1 = list(p0), list(p1)
  assert len(b0) == len(b1) == p0.steps_per_epoch == len(whole)
  rows = lambda bs: [(u, i) for b in bs for u, i in zip(b["user"].tolist(), b["pos"].tolist())]
  r0, r1 = rows(b0), rows(b1)
  assert not set(r0) & set(r1)
  assert sorted(r0 + r1) == sorted(rows(whole))
  assert len(r0 + r1) == NUM_TRAIN - NUM_TRAIN % 64
  for x, y, w in zip(b0, b1, whole):  # negatives too: exact slices of the global batch
    for k in w:
      np.testing.assert_array_equal(np.concatenate([x[k], y[k]]), w[k], err_msg=k)


@pytest.mark.parametrize("stop_at", [5, 15, 32])  # mid-epoch, ends epoch 0, in epoch 2
def test_resume_from_saved_state_is_exact(stop_at):
  p = build(seed=9, negative_sampler="popularity", exclude_positives=True)
  assert p.steps_per_epoch == 15
  ref = take(build(seed=9, negative_sampler="popularity", exclude_positives=True), stop_at + 10)
  first = take(p, stop_at)
  state = json.loads(json.dumps(p.get_state()))
  assert state["next_batch"] == stop_at and state["epoch"] == stop_at // 15
  p.close()
  q = build(seed=9, negative_sampler="popularity", exclude_positives=True)
  q.set_state(state)
  assert q.epoch == stop_at // 15
  assert_batches_equal(first + take(q, 10), ref)


def test_set_state_rejects_a_state_of_another_pipeline():
  state = build(seed=1).get_state()
  with pytest.raises(DataError, match="seed=1 but this run has seed=2"):
    build(seed=2).set_state(state)
  with pytest.raises(DataError, match="global_batch_size"):
    make_train_pipeline(
      make_split(),
      NUM_USERS,
      NUM_ITEMS,
      cfg(batch_size=32),
      seed=1,
      process_index=0,
      process_count=1,
    ).set_state(state)


def test_finite_epochs_stop():
  p = build(num_epochs=2)
  assert len(list(p)) == 2 * p.steps_per_epoch
  with pytest.raises(StopIteration):
    next(p)


def test_exclude_positives_gives_no_known_positive():
  split = make_split()
  pos = np.zeros((NUM_USERS, NUM_ITEMS), bool)
  pos[split.users, split.items] = True
  for sampler in ("uniform", "popularity"):
    p = build(split, negative_sampler=sampler, exclude_positives=True, num_negatives=5)
    for b in take(p, 20):
      assert not pos[b["user"][:, None], b["neg"]].any()


def test_in_batch_mode_has_logq_and_no_negatives():
  split = make_split()
  p = build(split, negative_sampler="in_batch")
  b = next(p)
  assert "neg" not in b and b["pos_logq"].dtype == np.float32
  freq = np.bincount(split.items, minlength=NUM_ITEMS) / NUM_TRAIN
  np.testing.assert_allclose(b["pos_logq"], np.log(freq[b["pos"]]), rtol=1e-6)


def test_streamed_features_equal_shard_rows(feature_dirs):
  fs, tables, masks = feature_dirs
  p = build(
    stream_features=True, num_negatives=2, features=fs, expected_dims={"text": 6, "image": 10}
  )
  for b in take(p, 4):
    for m in ("text", "image"):
      np.testing.assert_array_equal(b[f"feat_pos/{m}"], tables[m][b["pos"]])
      np.testing.assert_array_equal(b[f"feat_neg/{m}"], tables[m][b["neg"]])
      np.testing.assert_array_equal(b[f"mask_pos/{m}"], masks[m][b["pos"]])
      np.testing.assert_array_equal(b[f"mask_neg/{m}"], masks[m][b["neg"]])
    assert {k: (v.shape, v.dtype) for k, v in b.items()} == p.element_spec
  # Without stream_features the batch carries ids only.
  assert set(next(build(features=fs))) == {"user", "pos", "neg"}


def test_two_workers_give_the_same_batches_as_none(feature_dirs):
  # One pair of worker processes (spawning is the slow part): start them from a saved
  # mid-run state, which also checks resuming into a multi-worker pipeline.
  fs = feature_dirs[0]
  kw = dict(
    seed=5, stream_features=True, features=fs, negative_sampler="popularity", exclude_positives=True
  )
  ref = take(build(worker_count=0, **kw), 7)
  p = build(worker_count=0, **kw)
  take(p, 2)
  state = p.get_state()
  q = build(worker_count=2, **kw)
  try:
    q.set_state(state)
    got = take(q, 5)
  finally:
    q.close()
  assert_batches_equal(got, ref[2:])


@pytest.mark.parametrize(
  "kw,err,pattern",
  [
    (
      dict(split=Split(np.array([0, 1]), np.array([0, NUM_ITEMS]))),
      DataError,
      r"train split row 1: item id 40 out of range \[0, 40\)",
    ),
    (
      dict(split=Split(np.array([-1, 1]), np.array([0, 1]))),
      DataError,
      r"train split row 0: user id -1 out of range",
    ),
    (
      dict(split=Split(np.zeros(0, np.int32), np.zeros(0, np.int32))),
      DataError,
      "train split: has no interactions",
    ),
    (
      dict(pc=3),
      ConfigError,
      "input.batch_size=64 must be a positive multiple of the process count 3",
    ),
    (dict(batch_size=2048), ConfigError, "input.batch_size=2048 is larger than the 1003"),
    (
      dict(negative_sampler="hard"),
      ConfigError,
      r"input.negative_sampler='hard' is not one "
      r"of \['uniform', 'popularity', 'trained_uniform', 'in_batch'\]",
    ),
    (dict(stream_features=True), ConfigError, "needs feature shards"),
  ],
)
def test_bad_input_fails_at_build_time(kw, err, pattern):
  with pytest.raises(err, match=pattern):
    build(**kw)


def test_bad_features_fail_at_build_time(feature_dirs, tmp_path):
  fs = feature_dirs[0]
  with pytest.raises(ConfigError, match="modality 'audio' is not available"):
    build(stream_features=True, features=fs, expected_dims={"text": 6, "audio": 3})
  with pytest.raises(DataError, match="features/text: has dim=6 but 8 was expected"):
    build(stream_features=True, features=fs, expected_dims={"text": 8})
  short = write_feature_shards(
    tmp_path / "short", np.zeros((NUM_ITEMS - 1, 6), np.float32), None, modality="text"
  )
  with pytest.raises(DataError, match="features/text: has num_items=39 but the dataset has 40"):
    build(stream_features=True, features={"text": short})


def test_exclusion_impossible_for_a_user_with_every_item():
  users = np.zeros(NUM_ITEMS, np.int32)
  items = np.arange(NUM_ITEMS, dtype=np.int32)
  with pytest.raises(DataError, match="train split user 0: has every item as a positive"):
    build(Split(users, items), batch_size=8, exclude_positives=True)
