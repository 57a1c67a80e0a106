"""Graph models give the same results whichever propagation method runs (8 fake devices).

The segment-sum path is the reference (tests/test_graph_models.py checks it against the
papers' equations); 'dense' and 'host_csr' must reproduce its towers, losses and updated
parameters -- FREEDOM with its per-step edge pruning on -- and a short LightGCN training
run must end with the same metrics.
"""

import importlib.util
import pathlib

import jax
import numpy as np
import pytest
from toy import toy_info

from mmrec_jax import config as config_lib
from mmrec_jax import sharding
from mmrec_jax.step import DataInfo, Task

REPO = pathlib.Path(__file__).resolve().parents[1]
NU, NI, D, B = 12, 16, 4, 16


def _task(name, method, devices=None, **model_over):
  info = toy_info(NU, NI, dims={"text": 6, "image": 5}, seed=0, num_edges=70)
  c = config_lib.base_config()
  c.model.name = name
  c.model.embed_dim = D
  c.model.knn_k = 3
  c.model.num_layers = 2
  c.model.propagation = method
  c.data.modalities = () if name == "lightgcn" else ("text", "image")
  c.input.batch_size = B
  for k, v in model_over.items():
    setattr(c.model, k, v)
  feats = {m: np.asarray(f) for m, f in info.features.items()} if c.data.modalities else {}
  masks = {m: np.asarray(k) for m, k in info.feature_masks.items()} if c.data.modalities else {}
  data = DataInfo(NU, NI, feats, masks, train_users=info.train_users, train_items=info.train_items)
  task = Task(c, data, sharding.make_mesh(devices=devices))
  return task, task.init(0)


def _batch(task):
  rng = np.random.default_rng(1)
  local = {
    "user": rng.integers(0, NU, B).astype(np.int32),
    "pos": rng.integers(0, NI, B).astype(np.int32),
    "neg": rng.integers(0, NI, (B, 1)).astype(np.int32),
  }
  return sharding.global_batch_from_local(task.mesh, local)


# The other graph models (MMGCN's asymmetric mean graphs, BM3, LATTICE) run 'auto' =
# 'host_csr' in tests/test_graph_models.py against the papers' equations; the products
# with asymmetric weights are checked for every method in tests/test_propagation.py.
CASES = {
  "lightgcn": dict(reg_weight=1e-2),
  "freedom": dict(reg_weight=0.5, graph_dropout=0.8),  # pruning resampled in the step
}


def _assert_same(ref, got, method):
  """Towers, loss and gradient norm to float32 rounding; updated parameters to 1e-4.

  Adam's first step moves every parameter by about lr * sign(g), so a gradient entry
  that is ~0 (float noise of the summation order) may move either way by up to lr=1e-3;
  the towers and the gradient norm pin the gradient itself.
  """
  (r_reprs, r_metrics, r_params), (g_reprs, g_metrics, g_params) = ref, got
  for a, b in zip(jax.tree.leaves(r_reprs), jax.tree.leaves(g_reprs)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=2e-5, err_msg=method)
  for k in ("loss", "grad_norm"):
    np.testing.assert_allclose(g_metrics[k], r_metrics[k], rtol=1e-5, err_msg=f"{method} {k}")
  for a, b in zip(jax.tree.leaves(r_params), jax.tree.leaves(g_params)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-4, err_msg=method)


@pytest.mark.parametrize("name", sorted(CASES))
def test_methods_give_the_segment_paths_results(name):
  results = {}
  for method in ("segment", "dense", "host_csr"):
    task, state = _task(name, method, **CASES[name])
    assert task.frozen["graph"]["ui"].method == method
    reprs = task.eval_reprs(state)
    new_state, metrics = task.train_step(state, _batch(task))
    results[method] = jax.device_get((reprs, metrics, new_state["params"]))
  ref = results.pop("segment")
  for method, got in results.items():
    _assert_same(ref, got, method)


def test_single_device_fused_host_call_gives_the_segment_paths_results():
  """On one device LightGCN's propagation is one host call (forward and backward); with
  pruned weights it is checked against numpy in tests/test_propagation.py."""
  results = {}
  for method in ("segment", "host_csr"):
    task, state = _task("lightgcn", method, devices=jax.devices()[:1], **CASES["lightgcn"])
    assert task.mesh.size == 1
    reprs = task.eval_reprs(state)
    new_state, metrics = task.train_step(state, _batch(task))
    results[method] = jax.device_get((reprs, metrics, new_state["params"]))
  _assert_same(results["segment"], results["host_csr"], "host_csr")


def test_auto_runs_host_csr_on_cpu_and_logs_it(caplog):
  with caplog.at_level("INFO"):
    task, _ = _task("lightgcn", "auto")
  assert task.frozen["graph"]["ui"].method == "host_csr"
  assert "graph propagation: host_csr (model.propagation=auto" in caplog.text


def _load(name, arg, **overrides):
  spec = importlib.util.spec_from_file_location(name, REPO / "experiments" / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config(arg)
  for key, value in overrides.items():
    section, leaf = key.split(".")
    config[section][leaf] = value
  return config


def test_lightgcn_toy_training_metrics_equal_across_methods(tmp_path):
  """A short default-config LightGCN run: same valid/test metrics, segment vs auto."""
  from mmrec_jax.train import train_and_evaluate

  runs = {}
  for method in ("segment", "auto"):
    config = _load(
      "synthetic",
      "smoke,lightgcn",
      **{
        "data.cache_dir": str(tmp_path / "cache"),
        "train.max_steps": 6,
        "model.propagation": method,
      },
    )
    runs[method] = train_and_evaluate(config, tmp_path / method)
  ref = runs.pop("segment")
  for method, got in runs.items():
    for split in ("valid", "test"):
      assert set(got[split]) == set(ref[split])
      for k, v in ref[split].items():
        assert abs(got[split][k] - v) <= 1e-4, (method, split, k, got[split][k], v)
