"""Model scores: shapes and values against numpy references; fusion invariants."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import toy
from flax import nnx
from toy import toy_config, toy_info

from mmrec_jax import sharding
from mmrec_jax.errors import ConfigError
from mmrec_jax.layers.fusion import make_fusion
from mmrec_jax.models import MODELS, build_model
from mmrec_jax.step import Task

NU, NI = 20, 30
DIMS = toy.DIMS


def _cfg(name, **model):
  return toy_config(name, **{f"model__{k}": v for k, v in model.items()})


def _info(seed=0):
  return toy_info(NU, NI, dims=DIMS, seed=seed)


def _build(cfg, seed=0):
  with nnx.use_eager_sharding(False):
    return build_model(
      cfg.model, num_users=NU, num_items=NI, feature_dims=DIMS, rngs=nnx.Rngs(seed)
    )


def test_registry_and_unknown_names():
  assert set(MODELS) == {
    "bpr_mf",
    "vbpr",
    "two_tower",
    "lightgcn",
    "mmgcn",
    "lattice",
    "freedom",
    "bm3",
    "mf",
    "pmf",
    "mostpop",
    "itemknn",
    "ease",
    "cease",
    "ials",
    "mlp_ranker",
    "dlrm",
    "dcn_v2",
    "deepfm",
  }
  with pytest.raises(ConfigError, match="two_tower"):
    _build(_cfg("ncf"))
  with pytest.raises(ConfigError, match="attention"):
    _build(_cfg("two_tower", fusion="max"))


def test_bpr_mf_eval_reprs_equal_gather_dot():
  task = Task(_cfg("bpr_mf"), _info(), sharding.make_mesh())
  state = task.init(0)
  users, items = task.eval_reprs(state)
  assert users.shape == (task.padded_users, 8) and items.shape == (task.padded_items, 8)
  p = np.asarray(state["params"]["tables"]["user_embed"]["embedding"])
  q = np.asarray(state["params"]["tables"]["item_embed"]["embedding"])
  u, i = np.array([0, 3, 19]), np.array([5, 29, 0])
  got = np.sum(np.asarray(users)[u] * np.asarray(items)[i], axis=1)
  np.testing.assert_allclose(got, np.sum(p[u] * q[i], axis=1), rtol=1e-5)
  assert not np.asarray(items)[NI:].any()  # padding rows are zero


def test_bpr_mf_item_bias_adds_b_i_and_is_trained():
  """``model.item_bias``: score = p_u . q_i + b_i, and the bias rows get sparse updates."""
  cfg = _cfg("bpr_mf", item_bias=True)
  cfg.optimizer.sparse = "sgd"
  cfg.optimizer.sparse_learning_rate = 1.0
  task = Task(cfg, _info(), sharding.make_mesh())
  state = task.init(0)
  tb = state["params"]["tables"]
  assert not np.asarray(tb["item_bias"]["embedding"]).any()  # starts at zero
  b = np.zeros((task.padded_items, 1), np.float32)
  b[:NI, 0] = np.linspace(-1, 1, NI)
  tb["item_bias"]["embedding"] = jax.device_put(
    jnp.asarray(b), tb["item_bias"]["embedding"].sharding
  )
  users, items = task.eval_reprs(state)
  p = np.asarray(tb["user_embed"]["embedding"])
  q = np.asarray(tb["item_embed"]["embedding"])
  u, i = np.array([0, 3, 19]), np.array([5, 29, 0])
  got = np.sum(np.asarray(users)[u] * np.asarray(items)[i], axis=1)
  np.testing.assert_allclose(got, np.sum(p[u] * q[i], axis=1) + b[i, 0], rtol=1e-5)
  # One BPR step moves the positive's bias up and the negative's down.
  n = 8  # a multiple of the data axis of any test mesh
  batch = {
    "user": np.arange(n, dtype=np.int32),
    "pos": np.full(n, 4, np.int32),
    "neg": np.full((n, 1), 7, np.int32),
  }
  before = np.asarray(state["params"]["tables"]["item_bias"]["embedding"])[:, 0].copy()
  state, _ = task.train_step(state, sharding.global_batch_from_local(task.mesh, batch))
  after = np.asarray(state["params"]["tables"]["item_bias"]["embedding"])[:, 0]
  assert after[4] > before[4] and after[7] < before[7]
  untouched = np.setdiff1d(np.arange(NI), [4, 7])
  np.testing.assert_array_equal(after[untouched], before[untouched])


def test_vbpr_score_equals_formula():
  info = _info()
  task = Task(_cfg("vbpr"), info, sharding.make_mesh())
  state = task.init(1)
  # Non-zero item biases so every term of the formula is exercised.
  tb = state["params"]["tables"]
  tb["item_bias"]["embedding"] = jax.device_put(
    jnp.arange(task.padded_items, dtype=jnp.float32)[:, None] / 10,
    tb["item_bias"]["embedding"].sharding,
  )
  users, items = map(np.asarray, task.eval_reprs(state))
  t = {k: np.asarray(v["embedding"]) for k, v in tb.items()}
  dense = state["params"]["dense"]
  e, bp = np.asarray(dense["proj"]["kernel"]), np.asarray(dense["feat_bias"]["kernel"])
  f = np.concatenate(
    [
      info.features["image"] * info.feature_masks["image"][:, None],
      info.features["text"] * info.feature_masks["text"][:, None],
    ],
    axis=1,
  )
  ref = (
    t["item_bias"][:NI, 0][None, :]
    + t["gamma_user"][:NU] @ t["gamma_item"][:NI].T
    + t["theta_user"][:NU] @ (f @ e).T
    + (f @ bp)[:, 0][None, :]
  )
  np.testing.assert_allclose(users[:NU] @ items[:NI].T, ref, rtol=1e-4, atol=1e-5)
  assert users.shape[1] == 8 + 2


@pytest.mark.parametrize("fusion", ["concat", "sum", "attention", "gating"])
@pytest.mark.parametrize("use_ids", [True, False])
def test_masked_modality_has_no_effect(fusion, use_ids):
  model = _build(_cfg("two_tower", fusion=fusion, use_ids=use_ids))
  rng = np.random.default_rng(0)
  ids = jnp.arange(4)
  feats = {m: jnp.asarray(rng.normal(size=(4, d)), jnp.float32) for m, d in DIMS.items()}
  masks = {
    "image": jnp.array([True, False, True, False]),
    "text": jnp.array([True, True, False, False]),
  }
  out = model.item_repr(ids, feats, masks)
  assert out.shape == (4, 8)
  feats2 = {m: f + jnp.where(masks[m][:, None], 0.0, 100.0) for m, f in feats.items()}
  np.testing.assert_allclose(model.item_repr(ids, feats2, masks), out, rtol=1e-6)
  # A present modality does change the output.
  feats3 = {"image": feats["image"] + 1.0, "text": feats["text"]}
  assert not np.allclose(model.item_repr(ids, feats3, masks)[0], out[0])


def test_attention_weights_sum_to_one_over_present():
  with nnx.use_eager_sharding(False):
    fusion = make_fusion("attention", 3, 8, rngs=nnx.Rngs(0))
  embs = jnp.asarray(np.random.default_rng(0).normal(size=(5, 3, 8)), jnp.float32)
  present = jnp.array([[1, 1, 1], [1, 0, 1], [0, 0, 1], [0, 0, 0], [1, 1, 0]], bool)
  w = np.asarray(fusion.weights(embs, present))
  np.testing.assert_allclose(w.sum(axis=1), [1, 1, 1, 0, 1], rtol=1e-6)
  assert (w[~np.asarray(present)] == 0).all()
  g = jax.grad(lambda e: jnp.sum(fusion(e, present)))(embs)
  assert np.isfinite(np.asarray(g)).all()  # all-absent row stays NaN-free


def test_sum_fusion_is_mean_of_present():
  with nnx.use_eager_sharding(False):
    fusion = make_fusion("sum", 2, 3, rngs=nnx.Rngs(0))
  embs = jnp.asarray([[[1.0, 2, 3], [3, 4, 5]], [[1.0, 2, 3], [3, 4, 5]]])
  present = jnp.array([[True, True], [False, True]])
  np.testing.assert_allclose(fusion(embs, present), [[2, 3, 4], [3, 4, 5]])


def test_modality_dropout_only_in_training():
  model = _build(_cfg("two_tower", fusion="sum", modality_dropout=0.5, dropout=0.2))
  rng = np.random.default_rng(0)
  ids = jnp.arange(64) % NI
  feats = {m: jnp.asarray(rng.normal(size=(64, d)), jnp.float32) for m, d in DIMS.items()}
  masks = {m: jnp.ones(64, bool) for m in DIMS}
  a = model.item_repr(ids, feats, masks)
  np.testing.assert_array_equal(a, model.item_repr(ids, feats, masks))  # eval deterministic
  _, present = model.sources(ids, feats, masks, rng=jax.random.PRNGKey(1))
  frac = float(jnp.mean(present[:, 1:]))
  assert 0.3 < frac < 0.7  # about half the modalities dropped
  assert bool(jnp.all(present[:, 0]))  # the ID embedding is never dropped
  b = model.item_repr(ids, feats, masks, rng=jax.random.PRNGKey(1))
  assert not np.allclose(a, b)


def test_two_tower_eval_reprs_shapes_and_sharding():
  task = Task(_cfg("two_tower", fusion="attention"), _info(), sharding.make_mesh())
  users, items = task.eval_reprs(task.init(0))
  assert users.shape == (task.padded_users, 8) and items.shape == (task.padded_items, 8)
  assert len(items.sharding.device_set) == 8
  assert items.sharding.shard_shape(items.shape)[0] == task.padded_items // 8
