"""Classic baselines (MostPop, ItemKNN, EASE, iALS) against direct numpy references.

Each model is fitted through the ``closed_form`` regime's jitted step on 8 fake devices
(tests/conftest.py) and its evaluation towers are compared with the formula computed
straight in numpy: EASE's ``B`` from ``numpy.linalg.inv`` (and 8 devices == 1 device),
ItemKNN's shrunk-cosine top-k as RecBole computes it, MostPop's counts, and iALS against a
per-user loop that transcribes implicit's ``cg`` solver. An end-to-end run checks that one
step is one epoch and that a one-shot fit stops after it.
"""

from __future__ import annotations

import dataclasses
import pathlib

import jax
import numpy as np
import pytest
from toy import toy_batch, toy_config, toy_info

from mmrec_jax import sharding
from mmrec_jax.errors import ConfigError
from mmrec_jax.models import fitted_base as fb
from mmrec_jax.step import Task

REPO = pathlib.Path(__file__).resolve().parents[1]


def fit(name, info, mesh=None, steps=1, **overrides):
  task = Task(toy_config(name, **overrides), info, mesh or sharding.make_mesh())
  state = task.init(0)
  # Fitted, not stepped: no optimizer moments of an I x I matrix (closed_form regime).
  assert jax.tree.leaves(state["opt_state"]) == []
  init = jax.device_get(state["params"]["tables"])
  metrics = None
  for _ in range(steps):
    state, metrics = task.train_step(state, toy_batch(task, info, np.random.default_rng(1)))
  users, items = (np.asarray(a) for a in task.eval_reprs(state))
  return task, init, users, items, metrics


def binary(info):
  x = np.zeros((info.num_users, info.num_items))
  x[info.train_users, info.train_items] = 1.0
  return x


def test_users_without_train_rows_are_ranked_by_popularity():
  """The closed-form regime's fallback column: only users with no train row get it."""
  info = toy_info(num_users=40, num_items=30, num_edges=300)
  keep = info.train_users >= 5  # users 0-4 lose their train interactions
  counts = np.bincount(info.train_items[keep], minlength=30)
  info = dataclasses.replace(
    info,
    train_users=info.train_users[keep],
    train_items=info.train_items[keep],
    item_counts=counts.astype(np.int64),
  )
  _, _, users, items, _ = fit("ease", info, model__reg_weight=2.0)
  np.testing.assert_array_equal(users[:40, -1], (np.arange(40) < 5).astype(np.float32))
  np.testing.assert_allclose(items[:30, -1], counts / counts.max(), rtol=1e-6)
  scores = users[:40] @ items[:30].T
  np.testing.assert_allclose(scores[:5], np.broadcast_to(counts / counts.max(), (5, 30)))
  x = binary(info)
  np.testing.assert_allclose(scores[5:], x[5:] @ ease_reference(x, 2.0)[:, :30], atol=1e-4)


def test_mostpop_scores_are_train_counts():
  info = toy_info(num_edges=200)
  _, _, users, items, _ = fit("mostpop", info)
  # The last column is the closed-form regime's popularity fallback for users without
  # train interactions (step/closed_form.py): MostPop's own scores are the first one.
  scores = users[: info.num_users, :-1] @ items[: info.num_items, :-1].T
  counts = np.bincount(info.train_items, minlength=info.num_items)
  np.testing.assert_array_equal(scores, np.broadcast_to(counts, scores.shape))
  assert np.all(items[info.num_items :] == 0)


def ease_reference(x, lam):
  p = np.linalg.inv(x.T @ x + lam * np.eye(x.shape[1]))
  b = -p / np.diag(p)[None, :]
  np.fill_diagonal(b, 0.0)
  return b


@pytest.mark.parametrize("lam", [2.0])
def test_ease_matches_numpy_and_one_device(lam):
  info = toy_info(num_users=40, num_items=30, num_edges=300)
  x = binary(info)
  b = ease_reference(x, lam)
  _, _, users, items, _ = fit("ease", info, model__reg_weight=lam)
  u, i = info.num_users, info.num_items
  np.testing.assert_array_equal(users[:u, :i], x)
  np.testing.assert_allclose(items[:i, :i], b.T, atol=2e-5 * max(1, np.abs(b).max()))
  assert np.all(items[:, i:-1] == 0) and np.all(items[i:] == 0)
  np.testing.assert_allclose(users[:u, :-1] @ items[:i, :-1].T, x @ b, atol=1e-4)
  one = sharding.make_mesh(1, 1, devices=jax.devices()[:1])
  _, _, _, items1, _ = fit("ease", info, mesh=one, model__reg_weight=lam)
  np.testing.assert_allclose(items1[:i, :i], items[:i, :i], atol=1e-5)


@pytest.mark.parametrize("shape,block", [((8, 1), 8), ((4, 2), 16), ((1, 8), 32)])
def test_distributed_gram_and_inverse_on_every_mesh_shape(shape, block):
  mesh = sharding.make_mesh(*shape)
  rng = np.random.default_rng(3)
  users, items, _ = fb.train_pairs(
    type(
      "Info",
      (),
      {"train_users": rng.integers(0, 50, 900), "train_items": rng.integers(0, 250, 900)},
    ),
    50,
    250,
  )
  x = fb.interaction_matrix(mesh, users, items, 64, 256)
  xn = np.zeros((64, 256))
  xn[users, items] = 1
  g = jax.jit(lambda a: fb.gram(a, mesh))(x)
  np.testing.assert_array_equal(np.asarray(g), xn.T @ xn)
  assert g.sharding.spec == jax.sharding.PartitionSpec(sharding.ALL_DEVICES, None)
  inv = jax.jit(lambda a: fb.spd_inverse(fb.add_diagonal(a, 3.0, mesh), mesh, block=block))(g)
  ref = np.linalg.inv(xn.T @ xn + 3.0 * np.eye(256))
  np.testing.assert_allclose(np.asarray(inv), ref, atol=1e-5)


def itemknn_reference(x, k, shrink):
  """RecBole's ComputeSimilarity(method='item', normalize=True) in float32, then W^T."""
  x = x.astype(np.float32)
  norm = np.sqrt((x * x).sum(0))
  g = x.T @ x
  s = g / (norm[:, None] * norm[None, :] + np.float32(shrink) + np.float32(1e-6))
  np.fill_diagonal(s, 0.0)
  w_t = np.zeros_like(s)
  for j in range(s.shape[0]):
    keep = np.argsort(-s[j], kind="stable")[:k]
    w_t[j, keep] = s[j, keep]
  return w_t


@pytest.mark.parametrize("k,shrink", [(3, 0.0), (5, 2.0), (100, 0.0)])
def test_itemknn_matches_recbole_formula(k, shrink):
  info = toy_info(num_users=40, num_items=30, num_edges=300)
  x = binary(info)
  _, _, users, items, _ = fit("itemknn", info, model__num_neighbors=k, model__shrink=shrink)
  i = info.num_items
  ref = itemknn_reference(x, k, shrink)
  np.testing.assert_allclose(items[:i, :i], ref, rtol=1e-5, atol=1e-7)
  assert np.all(items[:i, i:-1] == 0)
  assert (np.count_nonzero(items[:i, :-1], axis=1) <= k).all()
  np.testing.assert_allclose(users[: info.num_users, :i] @ items[:i, :i].T, x @ ref.T, rtol=1e-5)


def ials_reference(x, y, edges, reg, cg_steps):
  """One user pass of implicit's CPU ``_least_squares_cg``, transcribed loop by loop."""
  x = x.copy()
  yty = y.T @ y + reg * np.eye(y.shape[1])
  for u in range(x.shape[0]):
    row = [(i, c) for (uu, i, c) in edges if uu == u]
    xu = x[u]
    r = -yty @ xu
    for i, c in row:
      r += (c - (c - 1) * (y[i] @ xu)) * y[i]
    p = r.copy()
    rsold = r @ r
    if rsold < 1e-20:
      continue
    for _ in range(cg_steps):
      ap = yty @ p
      for i, c in row:
        ap += (c - 1) * (y[i] @ p) * y[i]
      alpha = rsold / (p @ ap)
      xu = xu + alpha * p
      r = r - alpha * ap
      rsnew = r @ r
      if rsnew < 1e-20:
        break
      p = r + (rsnew / rsold) * p
      rsold = rsnew
    x[u] = xu
  return x


@pytest.mark.parametrize(
  "alpha,reg,cg_steps,layout",
  [(2.0, 1.0, 3, "dense"), (2.0, 1.0, 3, "edges"), (10.0, 5.0, 2, "edges")],
)
def test_ials_matches_implicit_cg_loop(alpha, reg, cg_steps, layout):
  info = toy_info(num_users=20, num_items=30, num_edges=150)
  over = dict(
    model__confidence_alpha=alpha,
    model__reg_weight=reg,
    model__cg_steps=cg_steps,
    model__ials_layout=layout,
  )
  _, init, users, items, metrics = fit("ials", info, steps=2, embed_dim=8, **over)
  pairs, counts = np.unique(
    np.stack([info.train_users, info.train_items], 1), axis=0, return_counts=True
  )
  edges = [(u, i, 1.0 + alpha * c) for (u, i), c in zip(pairs, counts)]
  x = np.asarray(init["user_factors"], np.float64)[: info.num_users]
  y = np.asarray(init["item_factors"], np.float64)[: info.num_items]
  flip = [(i, u, c) for (u, i, c) in edges]
  for _ in range(2):
    x = ials_reference(x, y, edges, reg, cg_steps)
    y = ials_reference(y, x, flip, reg, cg_steps)
  # float32 CG vs this float64 loop: agreement to ~1e-4 of the factor scale (a vectorised
  # float32 numpy CG differs from the loop by as much; any algorithmic slip is O(scale)).
  tol = 1e-3 * np.abs(x).max()
  # (the last column: the popularity fallback of users without train rows)
  np.testing.assert_allclose(users[: info.num_users, :-1], x, atol=tol)
  np.testing.assert_allclose(items[: info.num_items, :-1], y, atol=tol)
  assert np.all(users[info.num_users :] == 0) and np.all(items[info.num_items :] == 0)
  # The reported loss is the weighted objective per unit confidence.
  s = x @ y.T
  c = np.ones_like(s)
  p = np.zeros_like(s)
  for u, i, conf in edges:
    c[u, i], p[u, i] = conf, 1.0
  obj = np.sum(c * (p - s) ** 2) + reg * (np.sum(x * x) + np.sum(y * y))
  total = sum(e[2] for e in edges) + s.size - len(edges)
  assert float(metrics["loss"]) == pytest.approx(obj / total, rel=1e-3)


def test_ials_layouts_and_meshes_agree_and_loss_decreases():
  info = toy_info(num_users=30, num_items=40, num_edges=300)
  losses = []
  out = []
  runs = [
    (sharding.make_mesh(), "edges"),
    (sharding.make_mesh(4, 2), "dense"),
    (sharding.make_mesh(1, 1, devices=jax.devices()[:1]), "edges"),
  ]
  for mesh, layout in runs:
    cfg = toy_config(
      "ials",
      embed_dim=6,
      model__reg_weight=2.0,
      model__confidence_alpha=2.0,
      model__ials_layout=layout,
    )
    task = Task(cfg, info, mesh)
    state = task.init(0)
    ls = []
    for _ in range(3):
      state, m = task.train_step(state, toy_batch(task, info, np.random.default_rng(0)))
      ls.append(float(m["loss"]))
    losses.append(ls)
    out.append(np.asarray(task.eval_reprs(state)[0]))
  for other in out[1:]:
    np.testing.assert_allclose(out[0], other, atol=1e-4 * np.abs(other).max())
  for ls in losses:
    assert all(b <= a + 1e-7 for a, b in zip(ls, ls[1:])), ls


def test_memory_check_fails_in_one_line_before_fitting():
  mesh = sharding.make_mesh()
  need = fb.item_item_memory(mesh, 162_541, 59_136, 3)
  with pytest.raises(ConfigError, match=r"model.name='ease' needs about .* GiB per device"):
    fb.check_memory("ease", need, "X and three I x I matrices", have=16 * 2**30)
  # ML-25M's 59k items x 162k users fit on 8 devices of 80 GB (mesh.model=1: the
  # evaluator holds the whole item matrix on each device, ~13 GiB).
  assert 20 * 2**30 < need < 0.9 * 80 * 2**30
  fb.check_memory("ease", need, "ML-25M", have=80 * 2**30)
  fb.check_memory("ease", fb.item_item_memory(mesh, 6144, 3840, 3), "ML-1M", have=2**30)


@pytest.mark.parametrize("kind", ["ease", "itemknn"])
def test_ml25m_shaped_fit_is_partitioned_compile_only(kind):
  """EASE/ItemKNN at ML-25M's shape (162k users x 59k items) on 8 devices, compiled only.

  XLA's memory analysis per device: no device ever holds a whole 59k x 59k matrix
  (13 GiB); the output is exactly its 1/8 row block (1.6 GiB) and the work arrays stay
  within a few such blocks.
  """
  mesh = sharding.make_mesh()
  u, i = 162_816, 59_136
  x = jax.ShapeDtypeStruct(
    (u, i), np.float32, sharding=sharding.named_sharding(mesh, "users", None)
  )

  def fit(x):
    g = fb.gram(x, mesh)
    if kind == "ease":
      return fb.row_scaled_zero_diagonal(
        fb.spd_inverse(fb.add_diagonal(g, 500.0, mesh), mesh), mesh
      )
    return fb.cosine_topk(g, 100, 0.0, mesh)

  mem = jax.jit(fit).lower(x).compile().memory_analysis()
  block = 4 * i * i / 8
  assert mem.argument_size_in_bytes == 4 * u * i / 8
  assert mem.output_size_in_bytes == block
  # Work arrays: ~1.3 blocks for EASE, ~2.3 for ItemKNN (Gram, similarities, top-k
  # scatter); a whole matrix would be 8.
  assert mem.temp_size_in_bytes < 3 * block, mem.temp_size_in_bytes / block
