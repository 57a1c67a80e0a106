"""Chunked, sharded full ranking against the direct numpy reference (8 fake CPU devices)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from mmrec_jax.errors import ConfigError, DataError
from mmrec_jax.evaluation import metrics as M
from mmrec_jax.evaluation.ranking import csr_from_pairs, evaluate_embeddings
from mmrec_jax.sharding import make_mesh

KS = (1, 5, 10)
U, I, D = 37, 53, 4  # 53 items: not divisible by model axes 2, 4, 8


def lists(csr):
  return [csr[1][csr[0][u] : csr[0][u + 1]] for u in range(csr[0].size - 1)]


@pytest.fixture(scope="module")
def problem():
  rng = np.random.default_rng(0)
  # Small integer embeddings: float32 scores are exact, so ties are frequent and real.
  um = rng.integers(-2, 3, (U, D)).astype(np.float32)
  im = rng.integers(-2, 3, (I, D)).astype(np.float32)
  truth = csr_from_pairs(
    np.append(rng.integers(0, U, 90), 3), np.append(rng.integers(0, I, 90), 50), U
  )
  # user 3: 48 of 53 items excluded -> only 5 rankable items, fewer than K = 10
  ex_u = np.concatenate([rng.integers(0, U, 300), np.full(48, 3)])
  ex_i = np.concatenate([rng.integers(0, I, 300), np.arange(48)])
  exclude = csr_from_pairs(ex_u, ex_i, U)
  users = np.arange(U)
  ref = M.reference_evaluate(um, im, users, lists(truth), lists(exclude), KS, M.METRICS)
  return um, im, truth, exclude, ref


def check(res, ref):
  assert np.array_equal(res.users, ref["users"])
  assert res.users.size < U  # some users had no ground truth
  finite = np.isfinite(res.topk_scores)
  assert np.array_equal(np.where(finite, res.topk_items, -1), np.where(finite, ref["topk"], -1))
  for name, vals in res.per_user.items():
    np.testing.assert_allclose(vals, ref[name], rtol=1e-5, atol=1e-6, err_msg=name)
    assert res.metrics[name] == pytest.approx(ref[name].mean(), abs=1e-6)
  for name, v in res.coverage.items():
    assert v == pytest.approx(ref[name])


@pytest.mark.parametrize("shape", [(1, 1), (8, 1), (4, 2), (2, 4), (1, 8)])
def test_sharded_equals_reference(problem, shape):
  um, im, truth, exclude, ref = problem
  mesh = make_mesh(*shape, devices=jax.devices()[: shape[0] * shape[1]])
  # chunk 5 -> rounded to a multiple of the data axis; 3x users do not divide evenly
  res = evaluate_embeddings(
    jnp.asarray(um),
    jnp.asarray(im),
    users=np.arange(U),
    truth=truth,
    exclude=exclude,
    ks=KS,
    metrics=M.METRICS,
    mesh=mesh,
    user_chunk=5,
    return_topk=10,
  )
  check(res, ref)


@pytest.mark.parametrize("item_chunk", [10, 16])
def test_item_blocks_equal_reference(problem, item_chunk):
  um, im, truth, exclude, ref = problem
  mesh = make_mesh(2, 4)
  res = evaluate_embeddings(
    jnp.asarray(um),
    jnp.asarray(im),
    users=np.arange(U),
    truth=truth,
    exclude=exclude,
    ks=KS,
    metrics=M.METRICS,
    mesh=mesh,
    user_chunk=6,
    return_topk=10,
    item_chunk=item_chunk,
  )
  check(res, ref)


def test_host_and_row_sharded_user_tables(problem):
  um, im, truth, exclude, ref = problem
  mesh = make_mesh(4, 2)
  res = evaluate_embeddings(
    um,
    im,
    users=np.arange(U),
    truth=truth,
    exclude=exclude,
    ks=KS,
    metrics=M.METRICS,
    mesh=mesh,
    user_chunk=16,
    return_topk=10,
  )
  check(res, ref)
  padded = np.zeros((40, D), np.float32)  # table rows sharded over all 8 devices
  padded[:U] = um
  # evaluate_embeddings takes num_users from the table: pad the CSRs to 40 users
  pad = lambda c: (np.concatenate([c[0], np.full(3, c[0][-1])]), c[1])
  table = jax.device_put(padded, NamedSharding(mesh, P(("data", "model"), None)))
  res = evaluate_embeddings(
    table,
    im,
    users=np.arange(40),
    truth=pad(truth),
    exclude=pad(exclude),
    ks=KS,
    metrics=M.METRICS,
    mesh=mesh,
    user_chunk=16,
    return_topk=10,
  )
  check(res, ref)


def test_exclusion_masks_items(problem):
  um, im, truth, exclude, _ = problem
  # Make every user's excluded items the best-scoring ones: they must still never appear.
  rng = np.random.default_rng(3)
  im2 = im.copy()
  im2[:5] = 100.0 * np.sign(um.sum(0) + 0.5)
  ex = csr_from_pairs(np.repeat(np.arange(U), 5), np.tile(np.arange(5), U), U)
  mesh = make_mesh(2, 4)
  res = evaluate_embeddings(
    jnp.asarray(um),
    jnp.asarray(im2),
    users=np.arange(U),
    truth=truth,
    exclude=ex,
    ks=(10,),
    metrics=("hit",),
    mesh=mesh,
    user_chunk=8,
    return_topk=10,
  )
  assert not np.isin(res.topk_items, np.arange(5)).any()
  # ... and excluded ground truth never counts as a hit
  truth_ex = csr_from_pairs(np.arange(U), rng.integers(0, 5, U), U)
  res = evaluate_embeddings(
    jnp.asarray(um),
    jnp.asarray(im2),
    users=np.arange(U),
    truth=truth_ex,
    exclude=ex,
    ks=(10,),
    metrics=("hit",),
    mesh=mesh,
  )
  assert res.metrics["hit@10"] == 0.0 and res.users.size == U
  # user 3 of the fixture has at most 5 rankable items: the rest of its top 10 is -inf
  res = evaluate_embeddings(
    jnp.asarray(um),
    jnp.asarray(im),
    users=np.array([3]),
    truth=truth,
    exclude=exclude,
    ks=(10,),
    metrics=("hit",),
    mesh=mesh,
    return_topk=10,
  )
  excluded = set(lists(exclude)[3].tolist())
  rankable = I - len(excluded)
  assert res.users.tolist() == [3] and rankable <= 5
  assert np.isfinite(res.topk_scores[0, :rankable]).all()
  assert np.isneginf(res.topk_scores[0, rankable:]).all()
  assert not excluded & set(res.topk_items[0, :rankable].tolist())


def test_csr_from_pairs_sorts_and_dedupes():
  indptr, idx = csr_from_pairs(np.array([2, 0, 2, 2]), np.array([5, 1, 3, 5]), 4)
  assert indptr.tolist() == [0, 1, 1, 3, 3]
  assert idx.tolist() == [1, 3, 5]


def test_bad_inputs_fail_loudly(problem):
  um, im, truth, exclude, _ = problem
  mesh = make_mesh(1, 1, devices=jax.devices()[:1])
  kw = dict(users=np.arange(U), truth=truth, exclude=exclude, mesh=mesh)
  with pytest.raises(DataError, match="exceeds"):
    evaluate_embeddings(um, im, ks=(I + 1,), metrics=("recall",), **kw)
  with pytest.raises(ConfigError, match="unknown metric"):
    evaluate_embeddings(um, im, ks=(10,), metrics=("auc",), **kw)
  with pytest.raises(DataError, match="truth"):
    evaluate_embeddings(
      um,
      im,
      ks=(10,),
      metrics=("recall",),
      users=np.arange(U),
      truth=(truth[0][:-1], truth[1]),
      exclude=exclude,
      mesh=mesh,
    )
  with pytest.raises(DataError, match="item id out of range"):
    evaluate_embeddings(um, im[:40], ks=(10,), metrics=("recall",), **kw)


def test_ml25m_chunk_compiles_sharded_without_running():
  """Compile-only check at ML-25M shape on a (4, 2) mesh: catches sharding errors cheaply."""
  from mmrec_jax.evaluation.ranking import _chunk_fn

  mesh = make_mesh(4, 2)
  # user table rows padded to a multiple of the 8 devices, as sharded tables are
  users, items, dim, chunk, pairs = 162_544, 59_047, 64, 1024, 65_536
  fn = _chunk_fn(mesh, items, 20, 29_524, (10, 20), ("recall", "ndcg"), False)
  s = lambda shape, dtype, spec: jax.ShapeDtypeStruct(
    shape, dtype, sharding=NamedSharding(mesh, spec)
  )
  pair = s((4, pairs), jnp.int32, P("data", None))
  compiled = fn.lower(
    s((users, dim), jnp.float32, P(("data", "model"), None)),
    s((chunk,), jnp.int32, P("data")),
    s((2 * 29_524, dim), jnp.float32, P("model", None)),
    pair,
    pair,
    pair,
    pair,
    s((chunk,), jnp.int32, P("data")),
  ).compile()
  vals, top, _ = compiled.output_shardings
  assert vals.is_equivalent_to(NamedSharding(mesh, P(None, "data")), 2)
  assert top.is_equivalent_to(NamedSharding(mesh, P("data", None)), 2)
