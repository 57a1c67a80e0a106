"""The sharded train step: learning, sharding, HLO without table all-gathers."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmrec_jax import config as config_lib
from mmrec_jax import sharding
from mmrec_jax import step as step_lib
from mmrec_jax.errors import DataError
from mmrec_jax.step import DataInfo, Task

NU, NI, G = 64, 128, 8  # planted: user u likes items i with i % G == u % G


def _cfg(name="bpr_mf", **over):
  c = config_lib.base_config()
  c.model.name = name
  c.model.embed_dim = 16
  c.model.hidden_dim = 32
  c.data.modalities = ("text",)
  c.optimizer.learning_rate = 0.01
  c.optimizer.sparse_learning_rate = 0.05
  for key, v in over.items():
    sec, field = key.split("__")
    setattr(getattr(c, sec), field, v)
  return c


def _info(ni=NI):
  rng = np.random.default_rng(0)
  text = np.eye(G, dtype=np.float32)[np.arange(ni) % G] + 0.1 * rng.normal(size=(ni, G))
  mask = rng.random(ni) > 0.2
  text[~mask] = 0
  return DataInfo(
    NU,
    ni,
    {"text": text.astype(np.float32)},
    {"text": mask},
    np.bincount(np.arange(ni) % 7, minlength=ni).astype(np.int64) + 1,
  )


def _batch(task, rng, b=64, n=2, info=None):
  user = rng.integers(0, NU, b)
  pos = rng.integers(0, NI // G, b) * G + user % G
  neg = rng.integers(0, NI // G, (b, n)) * G + (user[:, None] % G + rng.integers(1, G, (b, n))) % G
  local = {
    "user": user.astype(np.int32),
    "pos": pos.astype(np.int32),
    "neg": neg.astype(np.int32),
    "pos_logq": np.full(b, np.log(1 / NI), np.float32),
  }
  if info is not None:
    for m, f in info.features.items():
      local[f"feat_pos/{m}"], local[f"mask_pos/{m}"] = f[pos], info.feature_masks[m][pos]
      local[f"feat_neg/{m}"], local[f"mask_neg/{m}"] = f[neg], info.feature_masks[m][neg]
  return sharding.global_batch_from_local(task.mesh, local)


def _train(task, steps, seed=0):
  rng = np.random.default_rng(seed)
  state = task.init(0)
  losses = []
  for _ in range(steps):
    state, metrics = task.train_step(state, _batch(task, rng))
    losses.append(metrics["loss"])
  return state, [float(x) for x in losses]


@pytest.mark.parametrize(
  "over",
  [
    dict(model__name="bpr_mf"),
    dict(
      model__name="vbpr",
      loss__name="bce",
      optimizer__sparse="rowwise_adagrad",
      optimizer__sparse_learning_rate=1.0,
    ),
    dict(
      model__name="two_tower",
      loss__name="sampled_softmax",
      input__negative_sampler="in_batch",
      model__fusion="attention",
      model__modality_dropout=0.2,
    ),
  ],
)
def test_training_reduces_loss(over):
  task = Task(_cfg(**over), _info(), sharding.make_mesh())
  _, losses = _train(task, 40)
  assert np.isfinite(losses).all()
  assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5]), losses


def test_state_sharded_and_metrics_consistent_with_eval():
  task = Task(_cfg(), _info(), sharding.make_mesh())
  state = task.init(0)
  sharding.assert_tables_sharded(state, min_bytes=1024)
  table = state["params"]["tables"]["item_embed"]["embedding"]
  assert table.sharding.shard_shape(table.shape)[0] == task.padded_items // 8
  moments = state["opt_state"]["tables"]["item_embed"]["embedding"]["moments"]
  assert moments.sharding.is_equivalent_to(table.sharding, 2)
  users, items = map(np.asarray, task.eval_reprs(state))
  batch = _batch(task, np.random.default_rng(3))
  ref_pos = np.mean(np.sum(users[np.asarray(batch["user"])] * items[np.asarray(batch["pos"])], -1))
  new_state, metrics = task.train_step(state, batch)
  np.testing.assert_allclose(float(metrics["pos_score"]), ref_pos, rtol=1e-4, atol=1e-6)
  assert int(new_state["step"]) == 1
  assert set(metrics) >= {"loss", "grad_norm"}
  assert all(v.dtype == jnp.float32 and v.shape == () for v in metrics.values())


def test_untouched_rows_unchanged_by_a_step():
  task = Task(_cfg(), _info(), sharding.make_mesh())
  state = task.init(0)
  before = np.asarray(state["params"]["tables"]["item_embed"]["embedding"])
  batch = _batch(task, np.random.default_rng(4), b=8, n=1)
  touched = np.unique(np.concatenate([np.asarray(batch["pos"]), np.asarray(batch["neg"]).ravel()]))
  state, _ = task.train_step(state, batch)
  after = np.asarray(state["params"]["tables"]["item_embed"]["embedding"])
  untouched = np.setdiff1d(np.arange(task.padded_items), touched)
  np.testing.assert_array_equal(after[untouched], before[untouched])
  assert (np.abs(after[touched] - before[touched]).max(axis=1) > 0).all()


def test_streamed_features_equal_on_device_tables():
  info = _info()
  over = dict(model__name="two_tower", model__fusion="gating")
  frozen = Task(_cfg(**over), info, sharding.make_mesh())
  stream = Task(_cfg(input__stream_features=True, **over), info, sharding.make_mesh())
  assert "feat_neg/text" in stream.batch_keys() and "feat_neg/text" not in frozen.batch_keys()
  batch = _batch(stream, np.random.default_rng(5), info=info)
  _, m1 = frozen.train_step(frozen.init(0), batch)
  _, m2 = stream.train_step(stream.init(0), batch)
  np.testing.assert_allclose(float(m1["loss"]), float(m2["loss"]), rtol=1e-6)


def test_bfloat16_compute_keeps_float32_params():
  task = Task(
    _cfg(model__name="two_tower", train__compute_dtype="bfloat16"), _info(), sharding.make_mesh()
  )
  state, losses = _train(task, 3)
  assert np.isfinite(losses).all()
  assert all(x.dtype in (jnp.float32, jnp.int32) for x in jax.tree.leaves(state))


def test_missing_batch_key_is_a_data_error():
  task = Task(_cfg(), _info(), sharding.make_mesh())
  batch = _batch(task, np.random.default_rng(0))
  del batch["neg"]
  with pytest.raises(DataError, match="neg"):
    task.train_step(task.init(0), batch)


def _collectives(hlo: str):
  """(op, element count) of every all-gather / all-to-all / collective-permute result."""
  out = []
  for line in hlo.splitlines():
    m = re.search(
      r"= \(?([a-z0-9]+)\[([0-9,]*)\][^=]*?(all-gather|all-to-all|"
      r"collective-permute)(-start)?\(",
      line,
    )
    if m:
      out.append((m.group(3), int(np.prod([int(x) for x in m.group(2).split(",") if x]))))
  return out


@pytest.mark.parametrize("name", ["bpr_mf", "two_tower"])
def test_compiled_step_never_all_gathers_a_table(name):
  """Compile-only, 2**18-row tables on 8 devices: collectives move batch-sized data only."""
  n_items = 1 << 18
  info = DataInfo(
    1 << 16,
    n_items,
    {"text": np.zeros((n_items, 8), np.float32)},
    {"text": np.ones(n_items, bool)},
    np.ones(n_items, np.int64),
  )
  task = Task(_cfg(model__name=name), info, sharding.make_mesh())
  hlo = task.lower_train_step(batch_size=256, num_negatives=4).compile().as_text()
  shard_elems = (n_items // 8) * 16
  big = [(op, n) for op, n in _collectives(hlo) if n >= shard_elems // 4]
  assert not big, big
  assert "scatter" in hlo


def test_init_is_sharded_at_creation():
  """init is compiled with out_shardings: each device outputs only its table shard."""
  n_items = 1 << 18
  task = Task(_cfg(), DataInfo(256, n_items), sharding.make_mesh())
  compiled = (
    jax.jit(task.layout.init_fn, out_shardings=task.state_shardings)
    .lower(jax.random.PRNGKey(0))
    .compile()
  )
  table_bytes = task.padded_items * 16 * 4
  mem = compiled.memory_analysis()
  if mem is not None:
    # Outputs per device: item table + 2 moments (+ counts, user side): ~3/8 of a table.
    assert mem.output_size_in_bytes < 0.6 * table_bytes
    assert mem.temp_size_in_bytes < 0.6 * table_bytes


def test_streamed_eval_reprs_equal_on_device(monkeypatch):
  monkeypatch.setattr(step_lib.rows, "STREAM_EVAL_CHUNK", 256)
  info = _info(ni=600)  # 768 padded rows: three chunks
  over = dict(model__name="two_tower", model__fusion="concat")
  frozen = Task(_cfg(**over), info, sharding.make_mesh())
  stream = Task(_cfg(input__stream_features=True, **over), info, sharding.make_mesh())
  u1, i1 = frozen.eval_reprs(frozen.init(0))
  u2, i2 = stream.eval_reprs(stream.init(0))
  np.testing.assert_allclose(np.asarray(u1), np.asarray(u2))
  np.testing.assert_allclose(np.asarray(i1), np.asarray(i2), rtol=1e-5, atol=1e-6)
  assert i2.sharding.is_equivalent_to(i1.sharding, 2)


@pytest.mark.parametrize("name", ["bpr_mf", "vbpr", "two_tower"])
def test_dense_and_unique_row_modes_train_the_same_model(name):
  """The whole step with ``optimizer.sparse_rows`` dense vs unique, to float tolerance.

  For the feature models dense mode also runs the item tower once over the catalogue
  (128 items <= the batch's 64 x 3 item slots) and gathers its outputs, where unique
  mode runs it per slot: the same model, as the assertion shows.

  Not bit-for-bit: the L2 term and the gradient norm are sums over the gathered rows,
  whose length and order differ between the modes (rows x vs distinct ids), so the loss
  and grad_norm differ in the last bits; the updates themselves are element-wise.
  """
  mesh = sharding.make_mesh()
  states = {}
  for mode in ("dense", "unique"):
    cfg = _cfg(model__name=name, optimizer__sparse_rows=mode, loss__l2=1e-3, optimizer__name="sgd")
    states[mode], _ = _train(Task(cfg, _info(), mesh), 4)
  jax.tree.map(
    lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6),
    states["dense"],
    states["unique"],
  )


def test_after_leaves_gradients_bit_identical_whatever_the_values():
  """``order_after`` only orders: -0.0, NaN and inf gradients pass unchanged, also
  when the values it waits for are not finite. (Subnormals are flushed by XLA:CPU, as
  by any arithmetic the update does on a gradient, so they are not part of the claim.)"""
  from mmrec_jax.optim.sparse import order_after

  g = {("t",): jnp.asarray([[-0.0, 0.0, 1.5, -2.0], [jnp.nan, jnp.inf, -jnp.inf, 1e-30]])}
  for values in [(jnp.float32(0.7), {"a": jnp.float32(-3.0)}), (jnp.float32(jnp.nan), {})]:
    out = jax.jit(order_after)(g, values)
    np.testing.assert_array_equal(
      np.asarray(out[("t",)]).view(np.uint32), np.asarray(g[("t",)]).view(np.uint32)
    )
