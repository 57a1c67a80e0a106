"""Epochs made on device (data/device_epoch.py): batches, sampling, chunking, resume.

The properties the grain pipeline guarantees are checked here for the device path: an
epoch visits distinct train rows, batches are a pure function of (seed, batch index) and
do not depend on the mesh, negatives follow the configured distribution, running the
steps in chunks of any size (or resuming from a saved position) gives the state the
one-step-at-a-time loop gives, and the choice of path follows ``input.device_epochs``.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmrec_jax import config as config_lib
from mmrec_jax import sharding
from mmrec_jax.data import device_epoch
from mmrec_jax.data import negatives as negatives_lib
from mmrec_jax.data.pipeline import make_train_pipeline
from mmrec_jax.errors import ConfigError, DataError
from mmrec_jax.loop.steps import DeviceSteps, GrainSteps, make_step_source
from mmrec_jax.step import DataInfo, Task

NU, NI, N = 40, 50, 1000


class _Split:
  def __init__(self, seed=0):
    rng = np.random.default_rng(seed)
    self.users = rng.integers(0, NU, N).astype(np.int32)
    self.items = rng.integers(0, NI, N).astype(np.int32)


def _cfg(**over):
  c = config_lib.base_config()
  c.model.name = "bpr_mf"
  c.model.embed_dim = 8
  c.data.modalities = ()
  c.input.batch_size = 64
  c.input.num_negatives = 2
  c.optimizer.sparse_learning_rate = 0.05
  c.train.log_every_steps = 4
  for key, v in over.items():
    sec, field = key.split("__")
    setattr(getattr(c, sec), field, v)
  return c


def _epochs(cfg, mesh, split=None, max_chunk=4):
  pipe = make_train_pipeline(
    split or _Split(), NU, NI, cfg.input, seed=7, process_index=0, process_count=1
  )
  return device_epoch.DeviceEpochs.from_pipeline(pipe, mesh, max_chunk=max_chunk), pipe


def test_an_epoch_visits_distinct_train_rows_and_epochs_differ():
  split = _Split()
  epochs, _ = _epochs(_cfg(), sharding.make_mesh(), split)
  spe = epochs.steps_per_epoch
  assert spe == N // 64
  keys = split.users.astype(np.int64) * NI + split.items
  for e in range(2):
    ids = np.asarray(epochs.epoch_ids(e))  # [2, spe, B]
    got = ids[0].reshape(-1).astype(np.int64) * NI + ids[1].reshape(-1)
    # Every batch row is a train pair, and the epoch never repeats a train row: the
    # multiset of pairs is a sub-multiset of the split's.
    uk, uc = np.unique(keys, return_counts=True)
    gk, gc = np.unique(got, return_counts=True)
    pos = np.searchsorted(uk, gk)
    assert (uk[pos] == gk).all() and (gc <= uc[pos]).all()
  e0, e1 = np.asarray(epochs.epoch_ids(0)), np.asarray(epochs.epoch_ids(1))
  assert not np.array_equal(e0, e1)


@pytest.mark.parametrize("n", [1, 2, 7, 1000, (1 << 16) + 3])
def test_feistel_order_is_a_permutation_that_changes_with_the_key(n):
  keys = jnp.arange(6, dtype=jnp.uint32) * 977
  j = jnp.arange(n, dtype=jnp.int32)
  perm = np.asarray(device_epoch.feistel_permute(j, n, keys))
  np.testing.assert_array_equal(np.sort(perm), np.arange(n))
  if n >= 1000:
    other = np.asarray(device_epoch.feistel_permute(j, n, keys + 1))
    assert (perm != other).mean() > 0.9
    # Shuffled, not a shifted run: neighbours land far apart on average.
    assert np.abs(np.diff(perm)).mean() > n / 10


def _murmur_finaliser(x, k):
  """``_mix32``'s formula in NumPy uint64 arithmetic reduced mod 2**32 (no JAX)."""
  m = np.uint64(0xFFFFFFFF)
  x = (x.astype(np.uint64) * np.uint64(0x9E3779B1) + k.astype(np.uint64)) & m
  x = ((x ^ (x >> np.uint64(16))) * np.uint64(0x85EBCA6B)) & m
  x = ((x ^ (x >> np.uint64(13))) * np.uint64(0xC2B2AE35)) & m
  return (x ^ (x >> np.uint64(16))).astype(np.uint32)


@pytest.mark.parametrize(
  "x_shape,k_shape", [((), ()), ((7,), ()), ((), (5,)), ((3, 4), (3, 1)), ((4,), (3, 4))]
)
def test_mix32_is_murmur3s_finaliser_with_broadcasting(x_shape, k_shape):
  rng = np.random.default_rng(0)
  x = rng.integers(0, 1 << 32, x_shape, dtype=np.uint64).astype(np.uint32)
  k = rng.integers(0, 1 << 32, k_shape, dtype=np.uint64).astype(np.uint32)
  got = np.asarray(device_epoch._mix32(jnp.asarray(x), jnp.asarray(k)))
  np.testing.assert_array_equal(got, _murmur_finaliser(*np.broadcast_arrays(x, k)))
  traced = np.asarray(jax.jit(device_epoch._mix32)(jnp.asarray(x), jnp.asarray(k)))
  np.testing.assert_array_equal(traced, got)


def test_counter_randint_is_multiply_shift_of_the_bits_and_uniform():
  key = device_epoch.hash_key(5, 11, jnp.int32(3))
  span = np.array([1, 7, 1682, 10_000_000, (1 << 31) - 1], np.uint64)
  bits = np.asarray(device_epoch.counter_bits(key, (4096, 5))).astype(np.uint64)
  got = np.asarray(device_epoch.counter_randint(key, (4096, 5), jnp.asarray(span, jnp.int32)))
  # Lemire's (bits * span) >> 32, exactly, from 16-bit halves.
  np.testing.assert_array_equal(got, (bits * span) >> np.uint64(32))
  draws = np.concatenate(
    [
      np.asarray(
        device_epoch.counter_randint(device_epoch.hash_key(0, 1, jnp.int32(g)), (1000,), 50)
      )
      for g in range(40)
    ]
  )
  counts = np.bincount(draws, minlength=50)
  assert counts.size == 50
  # 40,000 draws over 50 values: chi-square with 49 dof, p ~ 1e-6 above 100.
  assert ((counts - 800.0) ** 2 / 800.0).sum() < 100
  # Keys and streams give unrelated draws.
  other_key = device_epoch.counter_bits(device_epoch.hash_key(5, 11, jnp.int32(4)), (4096, 5))
  other_stream = device_epoch.counter_bits(key, (4096, 5), stream=1)
  for other in (other_key, other_stream):
    assert (np.asarray(other).astype(np.uint64) == bits).mean() < 0.01


@pytest.mark.parametrize("exclude", [False, True])
def test_batches_are_a_function_of_seed_and_index_not_of_the_mesh(exclude):
  cfg = _cfg(input__exclude_positives=exclude)
  a, _ = _epochs(cfg, sharding.make_mesh(8, 1))
  b, _ = _epochs(cfg, sharding.make_mesh(2, 4))
  c, _ = _epochs(cfg, sharding.make_mesh(1, 1, devices=jax.devices()[:1]))
  for g in (0, 5, a.steps_per_epoch + 3):
    ba, bb, bc = a.batch_at(g), b.batch_at(g), c.batch_at(g)
    for k in ("user", "pos", "neg"):
      np.testing.assert_array_equal(ba[k], bb[k], err_msg=k)
      np.testing.assert_array_equal(ba[k], bc[k], err_msg=k)
  assert not np.array_equal(a.batch_at(0)["neg"], a.batch_at(1)["neg"])


@pytest.mark.parametrize("sampler", ["uniform", "popularity"])
def test_negatives_follow_the_samplers_distribution(sampler):
  split = _Split()
  cfg = _cfg(input__negative_sampler=sampler, input__num_negatives=50)
  epochs, _ = _epochs(cfg, sharding.make_mesh(), split)
  draws = np.concatenate([epochs.batch_at(g)["neg"].ravel() for g in range(40)])
  assert draws.min() >= 0 and draws.max() < NI
  counts = np.bincount(split.items, minlength=NI)
  want = negatives_lib.NegativeSampler(sampler, NI, counts).probabilities
  freq = np.bincount(draws, minlength=NI) / draws.size
  # 128,000 draws over 50 items: the total variation distance of the empirical
  # distribution is ~0.01; a wrong distribution (e.g. uniform for popularity) is > 0.05.
  assert 0.5 * np.abs(freq - want).sum() < 0.025
  if sampler == "popularity":
    uniform = np.full(NI, 1 / NI)
    assert 0.5 * np.abs(uniform - want).sum() > 0.05


def test_in_batch_adds_the_log_frequency_of_the_positives():
  split = _Split()
  epochs, _ = _epochs(_cfg(input__negative_sampler="in_batch"), sharding.make_mesh(), split)
  batch = epochs.batch_at(3)
  assert "neg" not in batch
  counts = np.bincount(split.items, minlength=NI)
  np.testing.assert_allclose(batch["pos_logq"], np.log(counts[batch["pos"]] / N), rtol=1e-6)


def _task(cfg, mesh):
  info = DataInfo(NU, NI, {}, {}, np.ones(NI, np.int64))
  return Task(cfg, info, mesh)


def test_chunks_of_any_size_equal_one_step_at_a_time_and_resume_mid_epoch(monkeypatch):
  mesh = sharding.make_mesh()
  cfg = _cfg()
  task = _task(cfg, mesh)
  total = 18  # 1000 // 64 = 15 steps per epoch: the run crosses an epoch boundary

  # Reference: the plain jitted step on batches fetched to the host one at a time.
  ref_epochs, _ = _epochs(cfg, mesh)
  state = task.init(0)
  losses = []
  for g in range(total):
    batch = sharding.global_batch_from_local(mesh, ref_epochs.batch_at(g))
    state, m = task.train_step(state, batch)
    losses.append(float(m["loss"]))
  ref = jax.tree.map(np.asarray, state)

  # (steps per call, steps per block of batches made at once): a 15-step call in blocks
  # of 4 ends in a partial block.
  for chunk, block in ((4, 4), (15, 15), (15, 4)):
    per_step = cfg.input.batch_size * (2 + cfg.input.num_negatives)
    monkeypatch.setattr(device_epoch, "BLOCK_ELEMENTS", per_step * block)
    epochs, _ = _epochs(cfg, mesh, max_chunk=chunk)
    assert epochs._block_steps == block
    st = task.init(0)
    seen = []
    while epochs.step < total:
      st, metrics, n = epochs.advance(task, st, total)
      at_end = epochs.step % epochs.steps_per_epoch == 0 or epochs.step == total
      assert n == chunk or (n < chunk and at_end)
      seen += list(np.asarray(metrics["loss"])[:n])
    np.testing.assert_allclose(seen, losses, rtol=1e-6)
    jax.tree.map(
      lambda a, b: np.testing.assert_allclose(np.asarray(a), b, rtol=1e-6, atol=1e-7), st, ref
    )

  # Resume: stop at step 7 (mid-epoch), save the position, continue in a new object.
  epochs, _ = _epochs(cfg, mesh)
  st = task.init(0)
  while epochs.step < 7:
    st, _, _ = epochs.advance(task, st, 7)
  saved = epochs.get_state()
  assert saved["batch_in_epoch"] == 7 and saved["kind"] == "device"
  resumed, _ = _epochs(cfg, mesh, max_chunk=5)
  resumed.set_state(saved)
  while resumed.step < total:
    st, _, _ = resumed.advance(task, st, total)
  jax.tree.map(
    lambda a, b: np.testing.assert_allclose(np.asarray(a), b, rtol=1e-6, atol=1e-7), st, ref
  )


def test_a_position_from_the_other_path_is_refused():
  cfg = _cfg()
  epochs, pipe = _epochs(cfg, sharding.make_mesh())
  with pytest.raises(DataError, match="grain"):
    epochs.set_state(pipe.get_state())
  with pytest.raises(DataError, match="device"):
    pipe.set_state(epochs.get_state())
  bad = dict(epochs.get_state(), seed=8)
  with pytest.raises(DataError, match="seed"):
    epochs.set_state(bad)


def test_the_path_follows_the_config_and_the_regime():
  mesh = sharding.make_mesh(1, 1, devices=jax.devices()[:1])
  cfg = _cfg()
  task = _task(cfg, mesh)
  _, pipe = _epochs(cfg, mesh)
  assert isinstance(make_step_source(cfg, task, pipe, mesh), DeviceSteps)
  # Several CPU devices: 'auto' keeps the grain path (see device_epoch.choose), 'on' not.
  mesh8 = sharding.make_mesh()
  task8 = _task(cfg, mesh8)
  assert isinstance(make_step_source(cfg, task8, pipe, mesh8), GrainSteps)
  cfg.input.device_epochs = "on"
  assert isinstance(make_step_source(cfg, task8, pipe, mesh8), DeviceSteps)
  cfg.input.device_epochs = "auto"
  cfg.input.device_epochs = "off"
  assert isinstance(make_step_source(cfg, task, pipe, mesh), GrainSteps)
  cfg.input.device_epochs = "auto"
  # Excluding positives: on device for the uniform sampler, on the host for the others.
  cfg.input.exclude_positives = True
  assert isinstance(make_step_source(cfg, task, pipe, mesh), DeviceSteps)
  cfg.input.negative_sampler = "popularity"
  assert isinstance(make_step_source(cfg, task, pipe, mesh), GrainSteps)
  cfg.input.device_epochs = "on"
  with pytest.raises(ConfigError, match="exclude_positives=True with input.negative_sampler"):
    make_step_source(cfg, task, pipe, mesh)
  cfg.input.negative_sampler = "uniform"
  cfg.input.device_epochs = "sometimes"
  with pytest.raises(ConfigError, match="device_epochs"):
    make_step_source(cfg, task, pipe, mesh)
  # A regime that does not declare device_epochs keeps the grain path under 'auto'.
  use, why = device_epoch.choose(_cfg(), False, N, 1, "cpu")
  assert not use and "regime" in why
  # Too big for the device: the grain path, with the sizes in the reason.
  use, why = device_epoch.choose(_cfg(), True, 1 << 50, 1, "cpu")
  assert not use and "GiB" in why


def test_metrics_buffer_holds_each_steps_values():
  mesh = sharding.make_mesh()
  cfg = _cfg()
  task = _task(cfg, mesh)
  epochs, _ = _epochs(cfg, mesh, max_chunk=6)
  st = task.init(0)
  st, metrics, n = epochs.advance(task, st, 3)
  assert n == 3 and int(st["step"]) == 3
  loss = np.asarray(metrics["loss"])
  assert loss.shape == (6,) and np.isfinite(loss[:3]).all() and (loss[3:] == 0).all()
  assert jnp.all(jnp.asarray(loss[:3]) > 0)


def test_ranker_batches_carry_each_rows_rating_and_chunks_equal_single_steps():
  """Pointwise rankers read ``rating``: it travels with its (user, item) row."""
  mesh = sharding.make_mesh(devices=jax.devices()[:1])
  split = _Split(3)
  split.ratings = np.arange(N, dtype=np.float32) % 5 + 1  # rating identifies nothing alone
  key = {(int(u), int(i)): [] for u, i in zip(split.users, split.items)}
  for r, (u, i) in enumerate(zip(split.users, split.items)):
    key[(int(u), int(i))].append(float(split.ratings[r]))
  cfg = _cfg(model__name="mlp_ranker", data__label_threshold=3.0, optimizer__sparse="adam")
  cfg.model.hidden_dim = 8
  pipe = make_train_pipeline(split, NU, NI, cfg.input, seed=7, process_index=0, process_count=1)
  epochs = device_epoch.DeviceEpochs.from_pipeline(pipe, mesh, max_chunk=4, with_ratings=True)
  for g in (0, 5, 16):
    b = epochs.batch_at(g)
    for u, i, r in zip(b["user"], b["pos"], b["rating"]):
      assert float(r) in key[(int(u), int(i))]
  assert "rating" not in device_epoch.DeviceEpochs.from_pipeline(pipe, mesh, 4).batch_at(0)
  task = _task(cfg, mesh)
  assert task.supports_device_epochs
  state = task.init(0)
  ref = []
  for g in range(6):
    state, m = task.train_step(state, sharding.global_batch_from_local(mesh, epochs.batch_at(g)))
    ref.append(float(m["loss"]))
  st = task.init(0)
  seen = []
  while epochs.step < 6:
    st, metrics, n = epochs.advance(task, st, 6)
    seen += list(np.asarray(metrics["loss"])[:n])
  np.testing.assert_allclose(seen, ref, rtol=1e-6)
  jax.tree.map(
    lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7),
    st,
    state,
  )


def test_excluding_positives_draws_uniformly_from_each_users_non_positives():
  split = _Split()
  cfg = _cfg(input__exclude_positives=True, input__num_negatives=50)
  epochs, _ = _epochs(cfg, sharding.make_mesh(1, 1, devices=jax.devices()[:1]), split)
  positives = [set(split.items[split.users == u].tolist()) for u in range(NU)]
  # Exactly the k-th non-positive of the user for the k the sampler drew (numpy reference).
  user = jnp.asarray([0, 5, 17, 39], jnp.int32)
  key = device_epoch.hash_key(0, 3, jnp.int32(7))
  got = np.asarray(epochs._uniform_non_positive(epochs._tables, user, key, (4, 50)))
  for row, u in enumerate(np.asarray(user)):
    free = np.array(sorted(set(range(NI)) - positives[u]))
    k = np.asarray(device_epoch.counter_randint(key, (4, 50), free.size))
    np.testing.assert_array_equal(got[row], free[k[row]])
  # Batches: never a positive of the row's user, and uniform over the non-positives.
  draws = {u: [] for u in range(NU)}
  for g in range(40):
    b = epochs.batch_at(g)
    for u, negs in zip(b["user"], b["neg"]):
      assert not positives[u] & set(negs.tolist())
      draws[u].extend(negs.tolist())
  u = max(draws, key=lambda v: len(draws[v]))
  free = sorted(set(range(NI)) - positives[u])
  freq = np.bincount(draws[u], minlength=NI)[free] / len(draws[u])
  # >= 3,000 draws over ~30 items: TV ~0.03; a sampler ignoring the exclusion is > 0.25.
  assert 0.5 * np.abs(freq - 1 / len(free)).sum() < 0.06
  assert len(draws[u]) >= 3000


def test_a_user_with_every_item_cannot_exclude_positives_on_device():
  users = np.repeat(np.arange(2, dtype=np.int32), NI)
  items = np.tile(np.arange(NI, dtype=np.int32), 2)
  with pytest.raises(DataError, match="train split user 0.*every item"):
    device_epoch.DeviceEpochs(
      users=users,
      items=items,
      num_items=NI,
      batch_size=8,
      num_negatives=1,
      sampler=negatives_lib.NegativeSampler("uniform", NI, np.bincount(items)),
      logq=None,
      seed=0,
      mesh=sharding.make_mesh(1, 1, devices=jax.devices()[:1]),
      max_chunk=1,
      positives=negatives_lib.PositiveSet(users, items, NI),
    )


@pytest.mark.parametrize("sparse", ["sgd", "adam"])
def test_the_loop_rewrites_whole_tables_in_place_without_copying_them(sparse):
  """Dense row mode on one device: the compiled loop copies no table (nor optimizer row
  state) per step.

  The loss and metrics read the old tables on paths the update did not wait for, and
  XLA:CPU then copied each table on every step (~23% of an ML-100K epoch at batch 1024);
  likewise the optimizer state the new rows read. ``optim/sparse.py:order_after``.
  """
  import re

  mesh = sharding.make_mesh(1, 1, devices=jax.devices()[:1])
  # d=64 as in practice: with 8-wide rows XLA fuses the Adam update differently and
  # still copies the [256, 17] moments (a fusion choice for tiny arrays, not measured).
  cfg = _cfg(
    optimizer__sparse=sparse, optimizer__sparse_rows="dense", loss__l2=1e-3, model__embed_dim=64
  )
  task = _task(cfg, mesh)
  epochs, _ = _epochs(cfg, mesh)
  st = task.init(0)
  loop = epochs._build_loop(task.step_fn, task.state_shardings, task.frozen)
  args = (st, epochs._ids, epochs._tables, task.frozen, jnp.int32(0), jnp.int32(1))
  hlo = loop.lower(*args).compile().as_text()
  leaves = jax.tree.leaves((st["params"]["tables"], st["opt_state"]["tables"]))
  big = {"f32[" + ",".join(map(str, a.shape)) + "]" for a in leaves if a.ndim == 2}
  assert big
  copies = re.findall(r"= (f32\[[0-9,]+\])\{[0-9,]*\} copy\(", hlo)
  assert not [c for c in copies if c in big], (copies, big)


@pytest.mark.parametrize("devices", [1, 8])
@pytest.mark.parametrize("propagation", ["host_csr", "segment", "dense"])
def test_graph_models_run_on_device_epochs_like_single_steps(propagation, devices):
  """The whole-table (graph) regime declares device epochs: LightGCN's chunked loop,
  host-CSR callbacks and collectives inside it included, gives the states single jitted
  steps give, on one device and on the 8 fake ones."""
  mesh = sharding.make_mesh(devices, 1, devices=jax.devices()[:devices])
  split = _Split(5)
  cfg = _cfg(model__name="lightgcn", optimizer__sparse="adam")
  cfg.model.num_layers = 2
  cfg.model.propagation = propagation
  info = DataInfo(NU, NI, {}, {}, np.ones(NI, np.int64), split.users, split.items)
  task = Task(cfg, info, mesh)
  assert task.supports_device_epochs
  epochs, _ = _epochs(cfg, mesh, split, max_chunk=4)
  state, ref = task.init(0), []
  for g in range(6):
    state, m = task.train_step(state, sharding.global_batch_from_local(mesh, epochs.batch_at(g)))
    ref.append(float(m["loss"]))
  st, seen = task.init(0), []
  while epochs.step < 6:
    st, metrics, n = epochs.advance(task, st, 6)
    seen += list(np.asarray(metrics["loss"])[:n])
  np.testing.assert_allclose(seen, ref, rtol=1e-6)
  assert ref[-1] != ref[0]  # the tables moved
  same = lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)
  jax.tree.map(same, st, state)
  # Resume mid-epoch from a saved position in a new object: the same state again.
  first, _ = _epochs(cfg, mesh, split, max_chunk=4)
  st = task.init(0)
  st, _, _ = first.advance(task, st, 3)
  resumed, _ = _epochs(cfg, mesh, split, max_chunk=4)
  resumed.set_state(first.get_state())
  while resumed.step < 6:
    st, _, _ = resumed.advance(task, st, 6)
  jax.tree.map(same, st, state)
