"""Graph models through the Task: representations and losses against numpy references.

Each model is built by ``step.Task`` on 8 fake devices (tables row-sharded, edges sharded
on 'data'), its evaluation towers are compared with a dense numpy implementation of the
paper's equations on a toy graph, and the loss of one train step with the same formulas
on the pre-step parameters.
"""

import jax
import numpy as np
import pytest
from toy import toy_info

from mmrec_jax import config as config_lib
from mmrec_jax import sharding
from mmrec_jax.errors import ConfigError, DataError
from mmrec_jax.step import DataInfo, Task

NU, NI, D, K, B = 12, 16, 4, 3, 16


def _data(seed=0):
  """(train users, train items, features, masks) of the shared toy data (tests/toy.py)."""
  info = toy_info(NU, NI, dims={"text": 6, "image": 5}, seed=seed, num_edges=70)
  feats = {m: np.asarray(f) for m, f in info.features.items()}
  masks = {m: np.asarray(k) for m, k in info.feature_masks.items()}
  return info.train_users, info.train_items, feats, masks


def _task(name, mods=("text", "image"), **model_over):
  users, items, feats, masks = _data()
  c = config_lib.base_config()
  c.model.name = name
  c.model.embed_dim = D
  c.model.knn_k = K
  c.model.num_layers = 2
  c.data.modalities = mods
  c.input.batch_size = B
  for k, v in model_over.items():
    setattr(c.model, k, v)
  info = DataInfo(NU, NI, feats, masks, train_users=users, train_items=items)
  task = Task(c, info, sharding.make_mesh())
  return task, task.init(0), (users, items, feats, masks)


def _batch(task, seed=1):
  rng = np.random.default_rng(seed)
  local = {
    "user": rng.integers(0, NU, B).astype(np.int32),
    "pos": rng.integers(0, NI, B).astype(np.int32),
    "neg": rng.integers(0, NI, (B, 1)).astype(np.int32),
  }
  return local, sharding.global_batch_from_local(task.mesh, local)


def _np(tree):
  return jax.tree.map(lambda a: np.asarray(a, np.float64), jax.device_get(tree))


# ----------------------------------------------------------------- numpy references
def norm_adj(users, items):
  r = np.zeros((NU, NI))
  r[users, items] = 1.0
  a = np.block([[np.zeros((NU, NU)), r], [r.T, np.zeros((NI, NI))]])
  deg = a.sum(1)
  dinv = np.where(deg > 0, 1 / np.sqrt(np.maximum(deg, 1)), 0.0)
  return dinv[:, None] * a * dinv[None, :]


def lightgcn_np(u0, i0, users, items, layers=2):
  a = norm_adj(users, items)
  e = [np.concatenate([u0[:NU], i0[:NI]])]
  for _ in range(layers):
    e.append(a @ e[-1])
  e = np.mean(e, 0)
  return e[:NU], e[NU:]


def knn_np(x, valid, weighted):
  xn = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
  sim = xn @ xn.T
  sim[:, ~valid] = -np.inf
  a = np.zeros_like(sim)
  for r in np.flatnonzero(valid):
    nb = np.argsort(-sim[r], kind="stable")[:K]
    nb = nb[np.isfinite(sim[r, nb])]
    a[r, nb] = np.maximum(sim[r, nb], 0) if weighted else 1.0
  rs = a.sum(1)
  rinv = np.where(rs > 0, 1 / np.sqrt(np.maximum(rs, 1e-12)), 0)
  return rinv[:, None] * a * rinv[None, :]


def bpr_np(pos, neg):
  return np.mean(np.log1p(np.exp(-(pos[:, None] - neg))))


def scores(u, i, loc):
  us = u[loc["user"]]
  return np.sum(us * i[loc["pos"]], -1), np.einsum("bd,bkd->bk", us, i[loc["neg"]])


def lin(x, p):
  return x @ p["kernel"] + p["bias"]


def cos_loss(a, b):
  return np.mean(
    1
    - np.sum(a * b, -1) / np.maximum(np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1), 1e-8)
  )


# ----------------------------------------------------------------- per-model references
def ref_lightgcn(p, d, loc, reg):
  users, items, _, _ = d
  u0, i0 = p["tables"]["user_embed"]["embedding"], p["tables"]["item_embed"]["embedding"]
  u, i = lightgcn_np(u0, i0, users, items)
  ids = np.concatenate([loc["pos"][:, None], loc["neg"]], 1)
  l2 = 0.5 * (np.sum(u0[loc["user"]] ** 2) + np.sum(i0[ids] ** 2)) / B
  return u, i, bpr_np(*scores(u, i, loc)) + reg * l2


def ref_freedom(p, d, loc, reg, mix):
  users, items, feats, masks = d
  u0, i0 = p["tables"]["user_embed"]["embedding"], p["tables"]["item_embed"]["embedding"]
  s = sum(w * knn_np(feats[m], masks[m], False) for m, w in mix.items())
  u, i = lightgcn_np(u0, i0, users, items)
  i = i + s @ i0[:NI]
  loss = bpr_np(*scores(u, i, loc))
  for m in mix:
    f = lin(feats[m], p["dense"]["proj"][m])
    loss += reg * bpr_np(*scores(u, f, loc))
  return u, i, loss


def ref_lattice(p, d, loc, reg, lam):
  users, items, feats, masks = d
  u0, i0 = p["tables"]["user_embed"]["embedding"], p["tables"]["item_embed"]["embedding"]
  mods = sorted(feats)
  a = np.exp(p["dense"]["modal_weight"]) / np.exp(p["dense"]["modal_weight"]).sum()
  s = sum(
    a[j]
    * (
      (1 - lam) * knn_np(lin(feats[m], p["dense"]["proj"][m]), masks[m], True)
      + lam * knn_np(feats[m], masks[m], True)
    )
    for j, m in enumerate(mods)
  )
  h = s @ i0[:NI]
  h = h / np.maximum(np.linalg.norm(h, axis=1, keepdims=True), 1e-12)
  u, i = lightgcn_np(u0, i0, users, items)
  i = i + h
  ids = np.concatenate([loc["pos"][:, None], loc["neg"]], 1)
  l2 = 0.5 * (np.sum(u[loc["user"]] ** 2) + np.sum(i[ids] ** 2)) / B
  return u, i, bpr_np(*scores(u, i, loc)) + reg * l2


def ref_bm3(p, d, loc, reg, cl_weight):
  users, items, feats, _ = d
  u0, i0 = p["tables"]["user_embed"]["embedding"], p["tables"]["item_embed"]["embedding"]
  u, i = lightgcn_np(u0, i0, users, items, layers=2)
  i = i + i0[:NI]
  pred = p["dense"]["predictor"]
  uu, ii = u[loc["user"]], i[loc["pos"]]
  loss = cos_loss(lin(uu, pred), ii) + cos_loss(lin(ii, pred), uu)
  for m in sorted(feats):
    f = lin(feats[m][loc["pos"]], p["dense"]["proj"][m])
    loss += cl_weight * (cos_loss(lin(f, pred), ii) + cos_loss(lin(f, pred), f))
  loss += reg * (np.linalg.norm(u) + np.linalg.norm(i)) / NI
  return lin(u, pred), lin(i, pred), loss


def ref_mmgcn(p, d, loc, reg, layers=2):
  users, items, feats, _ = d
  r = np.zeros((NU, NI))
  r[users, items] = 1.0
  mu = r / np.maximum(r.sum(1, keepdims=True), 1)
  mi = r.T / np.maximum(r.T.sum(1, keepdims=True), 1)
  u0 = p["tables"]["user_embed"]["embedding"][:NU]
  i0 = p["tables"]["item_embed"]["embedding"][:NI]
  lrelu = lambda x: np.where(x > 0, x, 0.01 * x)
  nrm = lambda x: x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
  outs_u, outs_i = [], []
  for m in sorted(feats):
    net, tab = p["dense"]["gcn"][m], p["tables"]["gcn"][m]
    xu, xi = nrm(tab["pref"]["embedding"][:NU]), nrm(lin(feats[m], net["mlp"]))
    for l in range(layers):
      k = net["conv"][l]["kernel"]
      hu, hi = lrelu(mu @ (xi @ k)), lrelu(mi @ (xu @ k))
      xhu, xhi = lrelu(lin(xu, net["lin"][l])) + u0, lrelu(lin(xi, net["lin"][l])) + i0
      xu, xi = lrelu(lin(hu, net["g"][l]) + xhu), lrelu(lin(hi, net["g"][l]) + xhi)
    outs_u.append(xu)
    outs_i.append(xi)
  u, i = np.mean(outs_u, 0), np.mean(outs_i, 0)
  ids = np.concatenate([loc["pos"][:, None], loc["neg"]], 1)
  loss = bpr_np(*scores(u, i, loc)) + reg * (np.mean(u0[loc["user"]] ** 2) + np.mean(i0[ids] ** 2))
  return u, i, loss


CASES = {
  "mmgcn": (dict(reg_weight=0.1), lambda p, d, loc: ref_mmgcn(p, d, loc, 0.1)),
  "lightgcn": (dict(reg_weight=1e-2), lambda p, d, loc: ref_lightgcn(p, d, loc, 1e-2)),
  "freedom": (
    dict(reg_weight=0.5, graph_dropout=0.0),
    lambda p, d, loc: ref_freedom(p, d, loc, 0.5, {"image": 0.1, "text": 0.9}),
  ),
  "lattice": (
    dict(reg_weight=0.1, lambda_coeff=0.7),
    lambda p, d, loc: ref_lattice(p, d, loc, 0.1, 0.7),
  ),
  "bm3": (
    dict(reg_weight=0.1, graph_dropout=0.0, cl_weight=2.0),
    lambda p, d, loc: ref_bm3(p, d, loc, 0.1, 2.0),
  ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_model_reprs_and_loss_match_numpy(name):
  over, ref = CASES[name]
  task, state, data = _task(name, **over)
  params = _np(state["params"])
  loc, batch = _batch(task)
  u_ref, i_ref, loss_ref = ref(params, data, loc)
  users, items = task.eval_reprs(state)
  np.testing.assert_allclose(np.asarray(users)[:NU], u_ref, atol=2e-5)
  np.testing.assert_allclose(np.asarray(items)[:NI], i_ref, atol=2e-5)
  assert not np.asarray(items)[NI:].any()  # padding items score 0
  new_state, metrics = task.train_step(state, batch)
  np.testing.assert_allclose(float(metrics["loss"]), loss_ref, rtol=2e-5, atol=1e-6)
  # Checkpointable: the state is parameters + optimizer only (no graph), shapes kept,
  # and every table row that the graph reaches moved (whole-table gradients).
  assert jax.tree.structure(new_state) == jax.tree.structure(task.abstract_state())
  before = params["tables"]["item_embed"]["embedding"][:NI]
  after = np.asarray(new_state["params"]["tables"]["item_embed"]["embedding"])[:NI]
  touched = np.isin(np.arange(NI), data[1])
  assert np.all(np.any(before != after, axis=1)[touched])


def test_graph_models_need_modalities_and_train_edges():
  with pytest.raises(ConfigError, match="needs at least one modality"):
    _task("freedom", mods=())
  users, items, _, _ = _data()
  c = config_lib.base_config()
  c.model.name = "lightgcn"
  c.data.modalities = ()
  with pytest.raises(DataError, match="train_users"):
    Task(c, DataInfo(NU, NI), sharding.make_mesh())
  c.input.stream_features = True
  with pytest.raises(ConfigError, match="stream_features"):
    Task(c, DataInfo(NU, NI, train_users=users, train_items=items), sharding.make_mesh())
