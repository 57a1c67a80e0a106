"""Sparse row-wise optimizers equal dense optax restricted to the touched rows."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mmrec_jax import sharding
from mmrec_jax.errors import ConfigError
from mmrec_jax.optim.sparse import (
  SPARSE_OPTIMIZERS,
  adam_moments,
  gather_rows,
  make_sparse_optimizer,
  pick_row_mode,
  row_index,
  unique_ids,
)

R, D = 16, 4
IDS = np.array([3, 7, 3, 0, 7, 7, 12, 3], np.int32)  # duplicates on purpose
TOUCHED = np.unique(IDS)
UNTOUCHED = np.setdiff1d(np.arange(R), TOUCHED)


def _loss(rows_per_id, w):
  return jnp.sum(jnp.tanh(rows_per_id) * w)


def _dense_grad(table, w):
  return jax.grad(lambda t: _loss(t[IDS], w))(table)


def _sparse_step(opt, table, state, w):
  uniq, inv = unique_ids(jnp.asarray(IDS), R)
  rows = gather_rows(table, uniq)
  g = jax.grad(lambda r: _loss(r[inv], w))(rows)
  return opt.update(table, state, uniq, rows, g)


@pytest.fixture
def data():
  rng = np.random.default_rng(0)
  return (
    jnp.asarray(rng.normal(size=(R, D)), jnp.float32),
    jnp.asarray(rng.normal(size=(len(IDS), D)), jnp.float32),
  )


def test_unique_ids_inverse_and_fill():
  uniq, inv = unique_ids(jnp.asarray(IDS.reshape(2, 4)), R)
  assert uniq.shape == (8,) and inv.shape == (2, 4)
  np.testing.assert_array_equal(np.asarray(uniq)[np.asarray(inv)], IDS.reshape(2, 4))
  np.testing.assert_array_equal(np.asarray(uniq)[: len(TOUCHED)], TOUCHED)
  assert (np.asarray(uniq)[len(TOUCHED) :] == R).all()  # out-of-range fill


@pytest.mark.parametrize(
  "shape,num_rows,high",
  [((8192,), 10_000_000, 10_000_000), ((4096, 2), 50, 50), ((333,), 7, 1), ((1,), 3, 3)],
)
@pytest.mark.parametrize("method", ["sort_search", None])
def test_unique_ids_equals_jnp_unique(shape, num_rows, high, method):
  """The sort-then-search formulation returns exactly what ``jnp.unique`` returns."""
  ids = np.random.default_rng(len(shape) + num_rows).integers(0, high, shape).astype(np.int32)
  uniq, inv = jax.jit(unique_ids, static_argnums=(1, 2))(jnp.asarray(ids), num_rows, method)
  ref_u, ref_i = jnp.unique(
    ids.reshape(-1), size=ids.size, fill_value=num_rows, return_inverse=True
  )
  np.testing.assert_array_equal(uniq, ref_u)
  np.testing.assert_array_equal(inv, np.asarray(ref_i).reshape(shape))
  assert inv.dtype == ref_i.dtype and uniq.dtype == ref_u.dtype


@pytest.mark.parametrize("shape", [(R,), (R, D), (R, 3, 2)])
def test_gather_rows_equals_fill_mode_gather(shape):
  """Clamped gather + row select reads exactly what ``mode='fill'`` reads (fill ids: 0)."""
  x = jnp.asarray(np.random.default_rng(1).normal(size=shape), jnp.float32) + 5.0
  uniq, _ = unique_ids(jnp.asarray(IDS), R)  # valid ids, then fill ids == R
  ref = x.at[uniq].get(mode="fill", fill_value=0)
  got = jax.jit(gather_rows)(x, uniq)
  np.testing.assert_array_equal(got, ref)
  assert (np.asarray(got)[len(TOUCHED) :] == 0).all() and got.dtype == x.dtype


def test_unique_ids_unknown_method_fails():
  with pytest.raises(ValueError, match="'radix' is not one of"):
    unique_ids(jnp.asarray(IDS), R, method="radix")


@pytest.mark.parametrize("name,dense", [("sgd", optax.sgd(0.1)), ("adam", optax.adam(0.1))])
def test_one_and_two_steps_match_dense_optax(data, name, dense):
  table, w = data
  opt = make_sparse_optimizer(name, 0.1)
  state = opt.init(table.shape, table.dtype)
  dstate = dense.init(table)
  t_sparse, t_dense = table, table
  for _ in range(2):  # same ids twice: per-row counts equal the global step
    t_sparse, state = _sparse_step(opt, t_sparse, state, w)
    upd, dstate = dense.update(_dense_grad(t_dense, w), dstate, t_dense)
    t_dense = optax.apply_updates(t_dense, upd)
    np.testing.assert_allclose(
      np.asarray(t_sparse)[TOUCHED], np.asarray(t_dense)[TOUCHED], rtol=1e-6, atol=1e-7
    )
    np.testing.assert_array_equal(np.asarray(t_sparse)[UNTOUCHED], np.asarray(table)[UNTOUCHED])
  if name == "adam":
    mu, nu, count = map(np.asarray, adam_moments(state))
    np.testing.assert_array_equal(count[TOUCHED], 2)
    np.testing.assert_array_equal(count[UNTOUCHED], 0)
    np.testing.assert_allclose(mu[TOUCHED], np.asarray(dstate[0].mu)[TOUCHED], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(nu[TOUCHED], np.asarray(dstate[0].nu)[TOUCHED], rtol=1e-6, atol=1e-9)
    assert not mu[UNTOUCHED].any() and not nu[UNTOUCHED].any()


def test_adam_is_lazy_per_row(data):
  """A row skipped by a step keeps its value and moments; its count lags."""
  table, w = data
  opt = make_sparse_optimizer("adam", 0.1)
  state = opt.init(table.shape, table.dtype)
  t1, s1 = _sparse_step(opt, table, state, w)
  other = jnp.asarray([1, 2], jnp.int32)
  uniq, _ = unique_ids(other, R)
  rows = gather_rows(t1, uniq)
  t2, s2 = opt.update(t1, s1, uniq, rows, jnp.ones((2, D)))
  for a, b in zip(adam_moments(s2), adam_moments(s1)):
    np.testing.assert_array_equal(np.asarray(a)[TOUCHED], np.asarray(b)[TOUCHED])
  np.testing.assert_array_equal(np.asarray(t2)[TOUCHED], np.asarray(t1)[TOUCHED])
  np.testing.assert_array_equal(np.asarray(adam_moments(s2)[2])[[1, 2]], 1)


def test_rowwise_adagrad_numpy_reference(data):
  table, w = data
  opt = make_sparse_optimizer("rowwise_adagrad", 0.1)
  state = opt.init(table.shape, table.dtype)
  new, st = _sparse_step(opt, table, state, w)
  g = np.asarray(_dense_grad(table, w))
  acc = 0.1 + np.mean(g * g, axis=1)
  ref = np.asarray(table) - 0.1 * g / np.sqrt(acc + 1e-7)[:, None]
  np.testing.assert_allclose(np.asarray(new)[TOUCHED], ref[TOUCHED], rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(np.asarray(new)[UNTOUCHED], np.asarray(table)[UNTOUCHED])
  np.testing.assert_allclose(np.asarray(st["acc"])[TOUCHED], acc[TOUCHED], rtol=1e-6)
  np.testing.assert_array_equal(np.asarray(st["acc"])[UNTOUCHED], np.float32(0.1))


def test_rowwise_adagrad_equals_optax_adagrad_for_width_one():
  rng = np.random.default_rng(1)
  table = jnp.asarray(rng.normal(size=(R, 1)), jnp.float32)
  w = jnp.asarray(rng.normal(size=(len(IDS), 1)), jnp.float32)
  opt = make_sparse_optimizer("rowwise_adagrad", 0.1)
  new, _ = _sparse_step(opt, table, opt.init(table.shape, table.dtype), w)
  dense = optax.adagrad(0.1)
  upd, _ = dense.update(_dense_grad(table, w), dense.init(table), table)
  np.testing.assert_allclose(
    np.asarray(new)[TOUCHED], np.asarray(optax.apply_updates(table, upd))[TOUCHED], rtol=1e-6
  )


def test_sharded_update_matches_single_device(data):
  """Row-sharded table on 8 devices: same result, output stays row-sharded."""
  mesh = sharding.make_mesh()
  rows_sh = sharding.named_sharding(mesh, "items", "embed")
  big = jnp.tile(data[0], (8, 1))  # 128 rows: divisible by 8 devices
  opt = make_sparse_optimizer("adam", 0.1)
  st = opt.init(big.shape, big.dtype)
  w = data[1]
  ref, _ = _sparse_step(opt, big, st, w)
  sharded_in = jax.device_put(big, rows_sh)
  st_sh = jax.tree.map(
    lambda a: jax.device_put(a, sharding.named_sharding(mesh, "items", *([None] * (a.ndim - 1)))),
    st,
  )
  out, _ = jax.jit(lambda t, s: _sparse_step(opt, t, s, w))(sharded_in, st_sh)
  np.testing.assert_allclose(np.asarray(out), np.asarray(ref), rtol=1e-6)
  assert out.sharding.is_equivalent_to(rows_sh, 2)


def test_unknown_name_lists_valid():
  with pytest.raises(ConfigError, match="rowwise_adagrad"):
    make_sparse_optimizer("adamax", 0.1)


def _dense_mode_step(opt, table, state, w, ids=IDS):
  ix = row_index(jnp.asarray(ids), R, "dense")
  g = jax.grad(lambda t: _loss(t[ix.inverse], w))(table)
  return opt.update(table, state, None, table, g, touched=ix.touched)


@pytest.mark.parametrize("name", SPARSE_OPTIMIZERS)
def test_dense_row_mode_equals_unique_mode_bit_for_bit(data, name):
  """Three steps on different id sets: same tables and optimizer state, exactly.

  Exact because each touched row goes through the same element-wise formula on the same
  gradient (duplicates summed by the gather's transpose in index order either way), and
  untouched rows are selected, not recomputed.
  """
  table, w = data
  opt = make_sparse_optimizer(name, 0.1)
  a = b = table
  sa = sb = opt.init(table.shape, table.dtype)
  for shift in range(3):
    ids = (IDS + shift * 5) % R
    uniq, inv = unique_ids(jnp.asarray(ids), R)
    rows = gather_rows(a, uniq)
    g = jax.grad(lambda r, inv=inv: _loss(r[inv], w))(rows)
    a, sa = opt.update(a, sa, uniq, rows, g)
    b, sb = _dense_mode_step(opt, b, sb, w, ids)
  np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  for k in sa:
    np.testing.assert_array_equal(np.asarray(sa[k]), np.asarray(sb[k]), err_msg=k)


def test_row_index_counts_and_mode_choice():
  ids = jnp.asarray(IDS.reshape(2, 4))
  dense, uniq = row_index(ids, R, "dense"), row_index(ids, R, "unique")
  want = np.bincount(IDS, minlength=R)
  np.testing.assert_array_equal(np.asarray(dense.counts), want)
  np.testing.assert_array_equal(np.asarray(dense.touched), want > 0)
  np.testing.assert_array_equal(np.asarray(uniq.counts)[: len(TOUCHED)], want[TOUCHED])
  assert dense.uniq is None and np.array_equal(np.asarray(dense.inverse), IDS.reshape(2, 4))
  assert pick_row_mode("auto", 1682, 2048) == "dense"  # ML-100K items, batch 1024 + 1 neg
  assert pick_row_mode("auto", 6040, 1024) == "unique"  # ML-1M users
  assert pick_row_mode("unique", 10, 4) == "unique"
  assert pick_row_mode("auto", 1682, 2048, num_shards=8) == "unique"  # sharded: no all-gather
  assert pick_row_mode("dense", 1682, 2048, num_shards=8) == "dense"  # asked for: honoured
  with pytest.raises(ConfigError, match="sparse_rows"):
    pick_row_mode("hash", 10, 4)


@pytest.mark.parametrize("name", ["sgd", "adam"])
def test_linear_schedule_follows_optax_linear_schedule_over_steps(data, name):
  """Steps 0..4 of a 4-step linear decay: the tables follow optax with the same schedule
  (the fifth step has rate 0 and leaves the table as it was)."""
  table, w = data
  sched = optax.linear_schedule(0.1, 0.0, 4)
  dense = optax.sgd(sched) if name == "sgd" else optax.adam(sched)
  opt = make_sparse_optimizer(name, 0.1, "linear", 4)
  state, dstate = opt.init(table.shape, table.dtype), dense.init(table)
  t_sparse, t_dense = table, table
  for step in range(5):
    uniq, inv = unique_ids(jnp.asarray(IDS), R)
    rows = gather_rows(t_sparse, uniq)
    g = jax.grad(lambda r, inv=inv: _loss(r[inv], w))(rows)
    before = t_sparse
    t_sparse, state = opt.update(t_sparse, state, uniq, rows, g, step=jnp.int32(step))
    upd, dstate = dense.update(_dense_grad(t_dense, w), dstate, t_dense)
    t_dense = optax.apply_updates(t_dense, upd)
    np.testing.assert_allclose(
      np.asarray(t_sparse)[TOUCHED], np.asarray(t_dense)[TOUCHED], rtol=1e-5, atol=1e-6
    )
  np.testing.assert_array_equal(np.asarray(t_sparse), np.asarray(before))  # rate 0 at step 4


def test_schedule_keys_fail_in_one_line():
  from mmrec_jax.optim.dense import make_dense_optimizer

  with pytest.raises(ConfigError, match="optimizer.schedule='cosine' is not one of"):
    make_sparse_optimizer("sgd", 0.1, "cosine", 10)
  with pytest.raises(ConfigError, match="needs optimizer.decay_steps > 0"):
    make_dense_optimizer("adam", 0.1, 0.0, "linear", 0)


def test_decay_steps_default_to_the_runs_total_steps():
  from mmrec_jax import config as config_lib
  from mmrec_jax.loop.setup import _resolve_decay_steps

  c = config_lib.base_config()
  c.input.batch_size = 100
  c.train.num_epochs = 3
  assert _resolve_decay_steps(c, 1050) is c  # constant schedule: untouched
  c.optimizer.schedule = "linear"
  resolved = _resolve_decay_steps(c, 1050)
  assert resolved.optimizer.decay_steps == 30 and c.optimizer.decay_steps == 0
  c.train.max_steps = 7
  assert _resolve_decay_steps(c, 1050).optimizer.decay_steps == 7
  c.optimizer.decay_steps = 12
  assert _resolve_decay_steps(c, 1050).optimizer.decay_steps == 12


def test_linear_schedule_through_the_real_flag_parser(tmp_path):
  """`--config.optimizer.schedule=linear` as a user types it: the run decays to 0 over
  its own total steps and finishes."""
  import json
  import os
  import pathlib
  import subprocess
  import sys

  root = pathlib.Path(__file__).resolve().parents[1]
  cmd = [
    sys.executable,
    "-m",
    "mmrec_jax.main",
    f"--config={root / 'experiments/synthetic.py'}:smoke",
    f"--workdir={tmp_path / 'run'}",
    f"--config.data.cache_dir={tmp_path / 'data'}",
    "--config.optimizer.schedule=linear",
    "--config.train.max_steps=3",
  ]
  out = subprocess.run(
    cmd, cwd=tmp_path, env=dict(os.environ), capture_output=True, text=True, timeout=600
  )
  assert out.returncode == 0, out.stderr[-3000:]
  assert "optimizer.schedule='linear' decays to 0 over 3 steps" in out.stderr
  assert json.loads((tmp_path / "run" / "results.json").read_text())["status"] == "finished"
  bad = subprocess.run(
    [*cmd[:-2], "--config.optimizer.schedule=cosine"],
    cwd=tmp_path,
    capture_output=True,
    text=True,
    timeout=600,
  )
  assert bad.returncode != 0
  assert "optimizer.schedule='cosine' is not one of" in bad.stderr.strip().splitlines()[-1]
