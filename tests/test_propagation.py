"""The user-item propagation methods (segment, dense, host_csr) against numpy references.

Every method must give the same ``R x``, ``R^T x``, LightGCN towers and gradients as a
dense numpy computation, on one device and on the 8 fake devices of conftest.py, with
the fixed normalised weights and with re-weighted (pruned) edges.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmrec_jax import sharding
from mmrec_jax.errors import ConfigError
from mmrec_jax.graph import propagation

# Padded node counts (multiples of the 8 fake devices, as the Task pads tables).
NU, NI, D = 16, 24, 5
METHODS = ("segment", "dense", "host_csr")


def _edges(seed=0, n=90):
  rng = np.random.default_rng(seed)
  users, items = rng.integers(0, NU - 2, n), rng.integers(0, NI - 3, n)  # padding rows unused
  src, dst = propagation.dedup_edges(users, items, NI)
  return users, items, src, dst


def _dense(src, dst, w):
  r = np.zeros((NU, NI))
  np.add.at(r, (src, dst), w)
  return r


def _mesh(sharded):
  return sharding.make_mesh() if sharded else None


def _graph(method, src, dst, w, mesh):
  return propagation.bipartite_graph(src, dst, w, NU, NI, mesh, method)


@pytest.mark.parametrize("sharded", [False, True])
@pytest.mark.parametrize("method", METHODS)
def test_products_and_their_gradients_match_numpy(method, sharded):
  """``R x``, ``R^T x`` with arbitrary (asymmetric) weights, and their VJPs."""
  _, _, src, dst = _edges()
  rng = np.random.default_rng(1)
  w = rng.uniform(0.1, 1.0, len(src)).astype(np.float32)  # e.g. MMGCN's 1/deg weights
  mesh = _mesh(sharded)
  g = _graph(method, src, dst, w, mesh)
  assert g.method == method
  r = _dense(src, dst, w)
  xi, xu = rng.normal(size=(NI, D)), rng.normal(size=(NU, D))
  gu, gi = rng.normal(size=(NU, D)), rng.normal(size=(NI, D))

  def loss(xu, xi, g):
    a = propagation.to_users(xi, g, NU, mesh)
    b = propagation.to_items(xu, g, NI, mesh)
    return jnp.sum(a * gu) + jnp.sum(b * gi), (a, b)

  f = jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))
  (val, (a, b)), (d_xu, d_xi) = f(jnp.asarray(xu, jnp.float32), jnp.asarray(xi, jnp.float32), g)
  np.testing.assert_allclose(np.asarray(a), r @ xi, atol=1e-5)
  np.testing.assert_allclose(np.asarray(b), r.T @ xu, atol=1e-5)
  np.testing.assert_allclose(float(val), np.sum((r @ xi) * gu) + np.sum((r.T @ xu) * gi), rtol=1e-5)
  np.testing.assert_allclose(np.asarray(d_xi), r.T @ gu, atol=1e-5)
  np.testing.assert_allclose(np.asarray(d_xu), r @ gi, atol=1e-5)


def _lightgcn_np(r, u0, i0, layers):
  a = np.block([[np.zeros((NU, NU)), r], [r.T, np.zeros((NI, NI))]])
  m = sum(np.linalg.matrix_power(a, k) for k in range(layers + 1)) / (layers + 1)
  return m, m @ np.concatenate([u0, i0])


@pytest.mark.parametrize("sharded", [False, True])
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("pruned", [False, True])
def test_lightgcn_towers_and_gradient_match_numpy(method, sharded, pruned):
  """LightGCN value and gradient, normalised weights or FREEDOM-pruned ones (in jit)."""
  users, items, src, dst = _edges(2)
  mesh = _mesh(sharded)
  g = propagation.user_item_graph(users, items, NU, NI, mesh, method=method)
  rng = np.random.default_rng(3)
  u0, i0 = rng.normal(size=(NU, D)), rng.normal(size=(NI, D))
  gu, gi = rng.normal(size=(NU, D)), rng.normal(size=(NI, D))
  key = jax.random.PRNGKey(7)

  def loss(u, i, g):
    if pruned:
      g = propagation.degree_sensitive_prune(g, key, 0.5, NU, NI)
    pu, pi = propagation.lightgcn_propagate(u, i, g, 3, mesh)
    return jnp.sum(pu * gu) + jnp.sum(pi * gi), (pu, pi, g.edges.weight)

  f = jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))
  (_, (pu, pi, w)), (d_u, d_i) = f(jnp.asarray(u0, jnp.float32), jnp.asarray(i0, jnp.float32), g)
  w = np.asarray(w)[: len(src)]  # edge order = (src, dst) order; padding edges at the end
  if pruned:
    assert 0 < (w > 0).sum() < len(src)
  else:
    np.testing.assert_allclose(w, propagation.sym_norm_weights(src, dst, NU, NI), rtol=1e-6)
  m, ref = _lightgcn_np(_dense(src, dst, w), u0, i0, 3)
  np.testing.assert_allclose(np.asarray(pu), ref[:NU], atol=1e-5)
  np.testing.assert_allclose(np.asarray(pi), ref[NU:], atol=1e-5)
  grad = m.T @ np.concatenate([gu, gi])
  np.testing.assert_allclose(np.asarray(d_u), grad[:NU], atol=1e-5)
  np.testing.assert_allclose(np.asarray(d_i), grad[NU:], atol=1e-5)


def test_methods_agree_with_the_bare_edge_list():
  """The new methods reproduce the original EdgeList (segment) path exactly in float32."""
  users, items, _, _ = _edges(4)
  mesh = _mesh(True)
  old = propagation.user_item_graph(users, items, NU, NI, mesh)
  assert isinstance(old, propagation.EdgeList)
  rng = np.random.default_rng(5)
  u0 = jnp.asarray(rng.normal(size=(NU, D)), jnp.float32)
  i0 = jnp.asarray(rng.normal(size=(NI, D)), jnp.float32)
  fn = jax.jit(lambda u, i, g: propagation.lightgcn_propagate(u, i, g, 2, mesh))
  ref = fn(u0, i0, old)
  for method in METHODS:
    new = propagation.user_item_graph(users, items, NU, NI, mesh, method=method)
    for a, b in zip(ref, fn(u0, i0, new)):
      np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=2e-6)


def test_dense_block_stays_row_sharded():
  """R is row-sharded like the user table and never all-gathered; R x stays row-sharded."""
  _, _, src, dst = _edges()
  w = np.ones(len(src), np.float32)
  mesh = _mesh(True)
  g = _graph("dense", src, dst, w, mesh)
  assert g.dense.shape == (NU, NI)
  assert g.dense.sharding.spec == propagation.dense_sharding(mesh).spec
  assert len(g.dense.sharding.device_set) == 8
  x = jnp.ones((NI, D), jnp.float32)
  f = jax.jit(lambda x, g: propagation.to_users(x, g, NU, mesh))
  out = f(x, g)
  assert out.sharding.shard_shape(out.shape)[0] == NU // 8
  hlo = f.lower(x, g).compile().as_text()
  assert f"f32[{NU},{NI}]" not in hlo  # the block never exists whole on one device


def test_choose_propagation_rule():
  mesh = _mesh(True)
  assert propagation.choose_propagation("auto", 943, 1682, mesh, backend="cpu") == "host_csr"
  assert propagation.choose_propagation("auto", 6040, 3706, None, backend="gpu") == "dense"
  big = propagation.choose_propagation("auto", 162_541, 59_047, mesh, backend="gpu")
  assert big == "segment"
  assert propagation.choose_propagation("dense", 10, 10, None, backend="cpu") == "dense"
  with pytest.raises(ConfigError, match="CPU backend"):
    propagation.choose_propagation("host_csr", 10, 10, None, backend="tpu")
  with pytest.raises(ConfigError, match="not one of"):
    propagation.choose_propagation("csr", 10, 10, None, backend="cpu")


def test_host_lightgcn_on_a_helper_thread_is_bit_identical(monkeypatch):
  """A layer's two host products run on two threads above PARALLEL_MIN_WORK: the same
  arrays, bit for bit, as one thread (and as the dense numpy reference, to float32)."""
  _, _, src, dst = _edges(3, n=300)
  w = propagation.sym_norm_weights(src, dst, NU, NI)
  host = propagation.HostCSR(src, dst, NU, NI)
  rng = np.random.default_rng(0)
  u = rng.standard_normal((NU, 64)).astype(np.float32)
  i = rng.standard_normal((NI, 64)).astype(np.float32)
  monkeypatch.setattr(propagation, "PARALLEL_MIN_WORK", 1 << 62)
  serial = host.lightgcn(u, i, w, 3)
  monkeypatch.setattr(propagation, "PARALLEL_MIN_WORK", 0)
  if propagation._helper_pool() is None:
    pytest.skip("a single-core host runs the products on one thread")
  threaded = host.lightgcn(u, i, w, 3)
  for a, b in zip(threaded, serial):
    np.testing.assert_array_equal(a, b)
  r = _dense(src, dst, w)
  a = np.block([[np.zeros((NU, NU)), r], [r.T, np.zeros((NI, NI))]])
  x = np.concatenate([u, i]).astype(np.float64)
  ref, e = x.copy(), x
  for _ in range(3):
    e = a @ e
    ref += e
  np.testing.assert_allclose(np.concatenate(threaded), ref / 4, rtol=1e-4, atol=1e-5)


def test_a_forked_child_gets_its_own_helper_thread():
  """After a fork the parent's executor has no thread in the child: the child must not
  reuse it (a product submitted there would never run)."""
  import multiprocessing

  if propagation._helper_pool() is None:
    pytest.skip("a single-core host runs the products on one thread")
  parent = propagation._helper_pool()
  ctx = multiprocessing.get_context("fork")
  with ctx.Pool(1) as pool:
    ok = pool.apply_async(_child_product).get(timeout=60)
  assert ok and propagation._helper_pool() is parent


def _child_product() -> bool:
  pool = propagation._helper_pool()
  return pool.submit(lambda: 41 + 1).result(timeout=20) == 42
