"""Graph machinery against dense numpy references on toy graphs (8 fake devices)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmrec_jax import sharding
from mmrec_jax.errors import DataError
from mmrec_jax.graph import knn, propagation

NU, NI, D = 12, 16, 4


def _interactions(seed=0, n=60):
  rng = np.random.default_rng(seed)
  return rng.integers(0, NU, n), rng.integers(0, NI, n)


def _dense_norm_adj(users, items):
  """Symmetric-normalised joint adjacency [[0, R], [R^T, 0]] (deduplicated)."""
  r = np.zeros((NU, NI))
  r[users, items] = 1.0
  a = np.block([[np.zeros((NU, NU)), r], [r.T, np.zeros((NI, NI))]])
  deg = a.sum(1)
  dinv = np.where(deg > 0, deg**-0.5, 0.0)
  return dinv[:, None] * a * dinv[None, :]


def test_user_item_graph_dedups_and_normalises():
  users, items = _interactions()
  g = propagation.user_item_graph(np.r_[users, users[:5]], np.r_[items, items[:5]], NU, NI)
  pairs = set(zip(np.asarray(g.src).tolist(), np.asarray(g.dst).tolist()))
  assert len(pairs) == len(g.src) == len(set(zip(users.tolist(), items.tolist())))
  a = _dense_norm_adj(users, items)
  np.testing.assert_allclose(
    np.asarray(g.weight), a[np.asarray(g.src), NU + np.asarray(g.dst)], rtol=1e-6
  )


def test_user_item_graph_rejects_bad_ids():
  with pytest.raises(DataError, match="out of range"):
    propagation.user_item_graph(np.array([0, NU]), np.array([0, 1]), NU, NI)


@pytest.mark.parametrize("sharded", [False, True])
def test_lightgcn_matches_dense_numpy(sharded):
  users, items = _interactions()
  mesh = sharding.make_mesh() if sharded else None
  g = propagation.user_item_graph(users, items, NU, NI, mesh)
  if sharded:  # padded to a multiple of the 8 'data' shards, weight-0 padding
    assert g.src.shape[0] % 8 == 0 and len(g.src.sharding.device_set) == 8
  rng = np.random.default_rng(1)
  u0, i0 = rng.normal(size=(NU, D)), rng.normal(size=(NI, D))
  fn = jax.jit(lambda u, i, g: propagation.lightgcn_propagate(u, i, g, 3, mesh))
  u, i = fn(jnp.asarray(u0, jnp.float32), jnp.asarray(i0, jnp.float32), g)
  a = _dense_norm_adj(users, items)
  e = np.concatenate([u0, i0])
  layers = [e]
  for _ in range(3):
    layers.append(a @ layers[-1])
  ref = np.mean(layers, axis=0)
  np.testing.assert_allclose(np.asarray(u), ref[:NU], atol=1e-5)
  np.testing.assert_allclose(np.asarray(i), ref[NU:], atol=1e-5)


def test_sharded_propagation_gradient_matches_unsharded():
  users, items = _interactions(2)
  mesh = sharding.make_mesh()
  g1 = propagation.user_item_graph(users, items, NU, NI)
  g8 = propagation.user_item_graph(users, items, NU, NI, mesh)
  rng = np.random.default_rng(3)
  u0 = jnp.asarray(rng.normal(size=(NU, D)), jnp.float32)
  i0 = jnp.asarray(rng.normal(size=(NI, D)), jnp.float32)

  def loss(u, i, g, m):
    pu, pi = propagation.lightgcn_propagate(u, i, g, 2, m)
    return jnp.sum(pu[:3] @ pi[:5].T) + jnp.sum(jnp.sin(pi))

  g_a = jax.grad(loss, argnums=(0, 1))(u0, i0, g1, None)
  g_b = jax.jit(jax.grad(loss, argnums=(0, 1)), static_argnums=3)(u0, i0, g8, mesh)
  for a, b in zip(g_a, g_b):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)


def _numpy_knn_graph(x, k, valid, weighted):
  xn = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
  sim = xn @ xn.T
  sim[:, ~valid] = -np.inf
  a = np.zeros_like(sim)
  for r in np.flatnonzero(valid):
    nb = np.argsort(-sim[r], kind="stable")[:k]
    nb = nb[np.isfinite(sim[r, nb])]
    a[r, nb] = np.maximum(sim[r, nb], 0) if weighted else 1.0
  rs = a.sum(1)
  rinv = np.where(rs > 0, 1 / np.sqrt(np.maximum(rs, 1e-12)), 0)
  return rinv[:, None] * a * rinv[None, :]


@pytest.mark.parametrize("weighted", [False, True])
def test_knn_graph_chunked_matches_numpy(weighted):
  rng = np.random.default_rng(4)
  x = rng.normal(size=(NI, 6)).astype(np.float32)
  valid = rng.random(NI) > 0.25
  x[~valid] = 0
  # chunk=5 does not divide 16 items: exercises the padded last chunk.
  g = knn.knn_graph(jnp.asarray(x), 3, jnp.asarray(valid), weighted=weighted, chunk=5)
  dense = np.zeros((NI, NI))
  np.add.at(dense, (np.asarray(g.dst), np.asarray(g.src)), np.asarray(g.weight))
  np.testing.assert_allclose(dense, _numpy_knn_graph(x, 3, valid, weighted), atol=1e-5)
  # Missing-modality items neither have nor are neighbours.
  assert not dense[~valid].any() and not dense[:, ~valid].any()
  h = rng.normal(size=(NI, D)).astype(np.float32)
  np.testing.assert_allclose(
    np.asarray(propagation.item_propagate(jnp.asarray(h), g)), dense @ h, atol=1e-5
  )


def test_knn_self_is_first_neighbour_and_gradients_are_finite():
  rng = np.random.default_rng(5)
  x = jnp.asarray(rng.normal(size=(NI, 6)), jnp.float32)
  ids, sims = knn.knn(x, 4, chunk=4)
  np.testing.assert_array_equal(np.asarray(ids[:, 0]), np.arange(NI))
  np.testing.assert_allclose(np.asarray(sims[:, 0]), 1.0, atol=1e-5)
  xz = x.at[3].set(0.0)  # a zero row (padding / missing) must not give NaN gradients
  grad = jax.grad(lambda f: jnp.sum(knn.knn_graph(f, 4, weighted=True).weight ** 2))(xz)
  assert np.all(np.isfinite(np.asarray(grad)))


def test_degree_sensitive_prune_keeps_fraction_and_renormalises():
  rng = np.random.default_rng(6)
  users, items = rng.integers(0, 200, 4000), rng.integers(0, 300, 4000)
  g = propagation.user_item_graph(users, items, 200, 300)
  p = propagation.degree_sensitive_prune(g, jax.random.PRNGKey(0), 0.2, 200, 300)
  keep = np.asarray(p.weight) > 0
  assert abs(keep.mean() - 0.2) < 0.03
  src, dst = np.asarray(g.src)[keep], np.asarray(g.dst)[keep]
  du, di = np.bincount(src, minlength=200), np.bincount(dst, minlength=300)
  np.testing.assert_allclose(np.asarray(p.weight)[keep], 1 / np.sqrt(du[src] * di[dst]), rtol=1e-5)
  # Degree-sensitive: edges between high-degree nodes are dropped more often.
  w = np.asarray(g.weight)
  low, high = w < np.quantile(w, 0.25), w > np.quantile(w, 0.75)
  assert keep[high].mean() > keep[low].mean()


def test_side_data_graph_links_items_sharing_rare_tags():
  from mmrec_jax.features import side_graph

  items = [
    {"genres": ["Drama"], "tags": ["heist"]},
    {"genres": ["Drama"], "tags": ["heist", "noir"]},
    {"genres": ["Drama"], "tags": []},
    {"genres": ["Comedy"], "tags": ["noir"]},
    {"genres": [], "tags": []},
    {"genres": ["Drama", "Comedy"]},
  ]
  x, mask, vocab = side_graph.tag_features(items)
  assert vocab[0] == "genres:drama"  # most frequent first
  np.testing.assert_array_equal(mask, [True, True, True, True, False, True])
  np.testing.assert_allclose(np.linalg.norm(x[mask], axis=1), 1.0, rtol=1e-6)
  g = side_graph.shared_tag_graph(x, mask, k=3)
  dense = np.zeros((6, 6))
  np.add.at(dense, (np.asarray(g.dst), np.asarray(g.src)), np.asarray(g.weight))
  assert dense[0, 1] > 0 and dense[3, 1] > 0 and dense[3, 5] > 0  # shared tags
  assert dense[0, 3] == 0  # nothing in common: never linked
  assert not dense[4].any() and not dense[:, 4].any()  # no side data: no edges
  with pytest.raises(DataError, match="row 0"):
    side_graph.tag_features([{"tags": "heist"}])


def test_side_data_graph_uses_tag_genome_fields():
  """Items with only tag-genome tags in common are linked; genome tags are their own field."""
  from mmrec_jax.features import side_graph

  items = [
    {"genome_tags": ["dystopia", "robots"]},
    {"genome_tags": ["robots"]},
    {"genres": ["Drama"]},
    {"genres": ["Drama"], "genome_tags": ["dystopia"]},
  ]
  x, mask, vocab = side_graph.tag_features(items)
  assert "genome_tags:robots" in vocab and "genome_tags:dystopia" in vocab
  np.testing.assert_array_equal(mask, [True, True, True, True])
  g = side_graph.shared_tag_graph(x, mask, k=3)  # self + 2 neighbours
  dense = np.zeros((4, 4))
  np.add.at(dense, (np.asarray(g.dst), np.asarray(g.src)), np.asarray(g.weight))
  assert dense[0, 1] > 0 and dense[0, 3] > 0  # shared genome tags
  assert dense[1, 2] == 0  # nothing in common
