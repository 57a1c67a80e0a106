"""Bit-identity guard for refactors of the train step (not collected by pytest).

Captures, for every registered model and several step variants, the state after init,
the metrics and state after a few steps on fixed batches, and the evaluation
representations, on 8 fake CPU devices. Run it at the commit before a refactor with
``capture OUT.npz`` and after it with ``compare OUT.npz``; ``compare`` uses
``np.testing.assert_array_equal`` (no tolerance).

    XLA_FLAGS=--xla_force_host_platform_device_count=8 JAX_PLATFORMS=cpu \
      python tests/parity/step_parity.py capture /tmp/step_golden.npz
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax
import numpy as np

from mmrec_jax import config as config_lib
from mmrec_jax import sharding
from mmrec_jax.step import DataInfo, Task

NU, NI, B, N = 30, 44, 16, 2
ROW_MODELS = ("bpr_mf", "vbpr", "two_tower")
GRAPH = ("lightgcn", "freedom", "lattice", "bm3", "mmgcn")


def _cases():
  cases = []
  for name in ROW_MODELS + GRAPH:
    cases.append((f"{name}", name, {}))
    cases.append((f"{name}_l2clip", name, {"loss.l2": 1e-3, "optimizer.grad_clip": 0.5}))
  for name in ROW_MODELS:
    cases.append(
      (f"{name}_bce_adagrad", name, {"loss.name": "bce", "optimizer.sparse": "rowwise_adagrad"})
    )
    cases.append(
      (
        f"{name}_inbatch",
        name,
        {"loss.name": "sampled_softmax", "input.negative_sampler": "in_batch"},
      )
    )
    cases.append((f"{name}_bf16", name, {"train.compute_dtype": "bfloat16"}))
  for name in ("vbpr", "two_tower"):
    cases.append((f"{name}_stream", name, {"input.stream_features": True}))
  cases.append(
    (
      "two_tower_attn_drop",
      "two_tower",
      {"model.fusion": "attention", "model.modality_dropout": 0.3, "model.dropout": 0.1},
    )
  )
  cases.append(("bpr_mf_bias", "bpr_mf", {"model.item_bias": True}))
  return cases


def _info():
  rng = np.random.default_rng(0)
  feats = {
    "text": rng.normal(size=(NI, 6)).astype(np.float32),
    "image": rng.normal(size=(NI, 5)).astype(np.float32),
  }
  masks = {"text": rng.random(NI) > 0.2, "image": rng.random(NI) > 0.3}
  for m in feats:
    feats[m][~masks[m]] = 0
  users, items = rng.integers(0, NU, 120), rng.integers(0, NI, 120)
  return DataInfo(
    NU,
    NI,
    feats,
    masks,
    np.bincount(items, minlength=NI).astype(np.int64),
    train_users=users,
    train_items=items,
    modalities=("image", "text"),
  )


def _config(name, over):
  c = config_lib.base_config()
  c.model.name = name
  c.model.embed_dim = 8
  c.model.hidden_dim = 12
  c.model.knn_k = 3
  c.data.modalities = ("text", "image")
  c.input.batch_size = B
  c.input.num_negatives = N
  c.optimizer.learning_rate = 0.01
  c.optimizer.sparse_learning_rate = 0.05
  for key, v in over.items():
    sec, field = key.split(".")
    setattr(getattr(c, sec), field, v)
  return c


def _batch(task, info, rng):
  user = rng.integers(0, NU, B).astype(np.int32)
  pos = rng.integers(0, NI, B).astype(np.int32)
  neg = rng.integers(0, NI, (B, N)).astype(np.int32)
  local = {
    "user": user,
    "pos": pos,
    "neg": neg,
    "pos_logq": np.log(rng.uniform(0.01, 0.2, B)).astype(np.float32),
  }
  for m, f in info.features.items():
    local[f"feat_pos/{m}"], local[f"mask_pos/{m}"] = f[pos], info.feature_masks[m][pos]
    local[f"feat_neg/{m}"], local[f"mask_neg/{m}"] = f[neg], info.feature_masks[m][neg]
  keys = task.batch_keys()
  return sharding.global_batch_from_local(task.mesh, {k: local[k] for k in keys})


def _flat(prefix, tree):
  leaves = jax.tree_util.tree_flatten_with_path(jax.device_get(tree))[0]
  return {f"{prefix}/{jax.tree_util.keystr(p)}": np.asarray(v) for p, v in leaves}


def capture() -> dict[str, np.ndarray]:
  out = {}
  info = _info()
  mesh = sharding.make_mesh()
  for case, name, over in _cases():
    task = Task(_config(name, over), info, mesh)
    state = task.init(3)
    out.update(_flat(f"{case}/init", state))
    rng = np.random.default_rng(7)
    for s in range(3):
      state, metrics = task.train_step(state, _batch(task, info, rng))
      out.update(_flat(f"{case}/metrics{s}", metrics))
    out.update(_flat(f"{case}/after", state))
    users, items = task.eval_reprs(state)
    out[f"{case}/eval_users"] = np.asarray(jax.device_get(users))
    out[f"{case}/eval_items"] = np.asarray(jax.device_get(items))
    print(case, "ok", flush=True)
  return out


def main(argv):
  mode, path = argv[1], argv[2]
  got = capture()
  if mode == "capture":
    np.savez(path, **got)
    print(f"captured {len(got)} arrays into {path}")
    return 0
  want = dict(np.load(path))
  assert sorted(got) == sorted(want), sorted(set(got) ^ set(want))
  for k in sorted(want):
    np.testing.assert_array_equal(got[k], want[k], err_msg=k)
  print(f"bit-identical: {len(want)} arrays")
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv))
