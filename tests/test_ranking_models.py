"""The pointwise rankers against numpy re-implementations, and the embedding-bag sharded.

Each ranker's ``logits`` on a toy batch (ID tables, two side-feature bags with padding,
two frozen modalities with missing rows) equals a numpy forward pass written from the
papers' formulas and the model's own parameters; the embedding-bag on a table
row-sharded over 8 fake devices equals the unsharded lookup.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from toy import toy_config

from mmrec_jax import sharding
from mmrec_jax.layers.embedding_bag import CatEmbed, embedding_bag
from mmrec_jax.models import build_model

VOCAB = {"genre": 7, "year": 4}
DIMS = {"image": 6, "text": 5}
N = 12


def _a(x):
  return np.asarray(x[...], np.float64)


def _relu(x):
  return np.maximum(x, 0)


def _mlp(m, x):
  for layer in m.layers:
    x = _relu(x @ _a(layer.kernel) + _a(layer.bias))
  return x if m.head is None else x @ _a(m.head.kernel) + _a(m.head.bias)


def _bag(table, ids):
  t = _a(table.embedding)
  out = np.zeros((ids.shape[0], t.shape[1]))
  for r, row in enumerate(ids):
    for k in row:
      if k >= 0:
        out[r] += t[k]
  return out


def _inputs(seed=0, with_features=True):
  rng = np.random.default_rng(seed)
  users = rng.integers(0, 20, N).astype(np.int32)
  items = rng.integers(0, 30, N).astype(np.int32)
  side = {
    "genre": np.where(rng.random((N, 3)) < 0.3, -1, rng.integers(0, 7, (N, 3))).astype(np.int32),
    "year": np.where(rng.random((N, 1)) < 0.2, -1, rng.integers(0, 4, (N, 1))).astype(np.int32),
  }
  dims = DIMS if with_features else {}
  feats = {m: rng.normal(size=(N, d)).astype(np.float32) for m, d in dims.items()}
  masks = {m: rng.random(N) > 0.3 for m in dims}
  return users, items, side, feats, masks


def _fields(model, users, items, side):
  f = [_a(model.user_embed.embedding)[users], _a(model.item_embed.embedding)[items]]
  f += [_bag(model.side[n], side[n]) for n in sorted(side)]
  return np.stack(f, axis=1)


def _dense(feats, masks):
  if not feats:
    return None
  return np.concatenate([np.where(masks[m][:, None], feats[m], 0) for m in sorted(feats)], 1)


def ref_mlp(model, users, items, side, feats, masks):
  e = _fields(model, users, items, side)
  x = e.reshape(N, -1)
  d = _dense(feats, masks)
  if d is not None:
    x = np.concatenate([x, d], 1)
  return _mlp(model.mlp, x)[:, 0]


def ref_dlrm(model, users, items, side, feats, masks):
  e = _fields(model, users, items, side)
  parts, vecs = [], list(e.transpose(1, 0, 2))
  d = _dense(feats, masks)
  if d is not None:
    z = _mlp(model.bottom, d)
    vecs = [z, *vecs]
    parts.append(z)
  inter = [np.sum(vecs[i] * vecs[j], 1) for i in range(len(vecs)) for j in range(i + 1, len(vecs))]
  parts.append(np.stack(inter, 1))
  return _mlp(model.top, np.concatenate(parts, 1))[:, 0]


def ref_dcn(model, users, items, side, feats, masks):
  x0 = _fields(model, users, items, side).reshape(N, -1)
  d = _dense(feats, masks)
  if d is not None:
    x0 = np.concatenate([x0, d @ _a(model.proj.kernel) + _a(model.proj.bias)], 1)
  x = x0
  for layer in model.cross:
    x = x0 * (x @ _a(layer.kernel) + _a(layer.bias)) + x
  return _mlp(model.deep, x)[:, 0]


def ref_deepfm(model, users, items, side, feats, masks):
  e = _fields(model, users, items, side)
  first = _a(model.user_w.embedding)[users, 0] + _a(model.item_w.embedding)[items, 0]
  for n in sorted(side):
    first = first + _bag(model.side_w[n], side[n])[:, 0]
  d = _dense(feats, masks)
  if d is not None:
    p = d @ _a(model.proj.kernel) + _a(model.proj.bias)
    e = np.concatenate([e, p[:, None]], 1)
    first = first + (d @ _a(model.linear.kernel) + _a(model.linear.bias))[:, 0]
  fm = 0.0
  for a in range(e.shape[1]):
    for b in range(a + 1, e.shape[1]):
      fm = fm + np.sum(e[:, a] * e[:, b], 1)
  deep = _mlp(model.deep, e.reshape(N, -1))[:, 0]
  return _a(model.bias)[0] + first + fm + deep


REFS = {"mlp_ranker": ref_mlp, "dlrm": ref_dlrm, "dcn_v2": ref_dcn, "deepfm": ref_deepfm}


def _randomise(model, seed):
  """Non-zero values everywhere (DeepFM's first-order tables start at 0)."""
  rng = np.random.default_rng(seed)
  state = nnx.state(model)
  nnx.update(
    model,
    jax.tree.map(lambda x: jnp.asarray(0.3 * rng.normal(size=x.shape), x.dtype), state),
  )


@pytest.mark.parametrize("with_features", [True, False])
@pytest.mark.parametrize("name", sorted(REFS))
def test_ranker_matches_numpy_reference(name, with_features):
  cfg = toy_config(name, embed_dim=4, hidden_dim=8).model
  dims = DIMS if with_features else {}
  with nnx.use_eager_sharding(False):
    model = build_model(
      cfg, num_users=256, num_items=256, feature_dims=dims, rngs=nnx.Rngs(0), side_vocab=VOCAB
    )
  _randomise(model, 1)
  users, items, side, feats, masks = _inputs(2, with_features)
  got = model.logits(
    jnp.asarray(users),
    jnp.asarray(items),
    {k: jnp.asarray(v) for k, v in side.items()},
    {k: jnp.asarray(v) for k, v in feats.items()},
    {k: jnp.asarray(v) for k, v in masks.items()},
  )
  want = REFS[name](model, users, items, side, feats, masks)
  assert got.shape == (N,)
  np.testing.assert_allclose(np.asarray(got), want, rtol=2e-4, atol=2e-4)


@pytest.mark.parametrize("pooling", ["sum", "mean"])
def test_embedding_bag_on_8_devices_equals_unsharded(pooling):
  assert jax.device_count() == 8
  rng = np.random.default_rng(0)
  table = rng.normal(size=(256, 8)).astype(np.float32)
  ids = np.where(rng.random((64, 5)) < 0.4, -1, rng.integers(0, 256, (64, 5))).astype(np.int32)
  ids[3] = -1  # an empty bag pools to zeros
  mesh = sharding.make_mesh()
  sharded = jax.device_put(table, sharding.named_sharding(mesh, "rows", "embed"))
  assert len(sharded.sharding.device_set) == 8
  assert sharded.addressable_shards[0].data.shape == (32, 8)
  ids_dev = jax.device_put(ids, sharding.named_sharding(mesh, "batch", None))
  got = jax.jit(lambda t, i: embedding_bag(t, i, pooling))(sharded, ids_dev)
  want = np.zeros((64, 8))
  for r, row in enumerate(ids):
    valid = [k for k in row if k >= 0]
    if valid:
      want[r] = table[valid].sum(0) / (len(valid) if pooling == "mean" else 1)
  np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(
    np.asarray(embedding_bag(jnp.asarray(table), ids, pooling)), want, 1e-5
  )
  assert np.all(np.asarray(got)[3] == 0)


def test_cat_embed_pads_rows_and_rejects_bad_arguments():
  with nnx.use_eager_sharding(False):
    t = CatEmbed(7, 4, rngs=nnx.Rngs(0))
  assert t.embedding[...].shape == (256, 4)
  with pytest.raises(ValueError, match="pooling"):
    CatEmbed(7, 4, rngs=nnx.Rngs(0), pooling="max")
  with pytest.raises(ValueError, match="vocab"):
    CatEmbed(0, 4, rngs=nnx.Rngs(0))
