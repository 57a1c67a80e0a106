"""The model registry: every model trains, a model from outside the package plugs in.

"A model is one file plus one registry line" in executable form: a toy model defined in
this file is registered at run time and trained end to end through
``train_and_evaluate`` without editing anything under ``mmrec_jax/``. And no code outside
``mmrec_jax/models/`` compares model names (an AST scan).
"""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from toy import toy_batch, toy_config, toy_info

from mmrec_jax import config as config_lib
from mmrec_jax import sharding
from mmrec_jax.errors import ConfigError
from mmrec_jax.layers.embedding import Embed
from mmrec_jax.layers.projection import dense
from mmrec_jax.models import build_model, registry
from mmrec_jax.models.base import Recommender
from mmrec_jax.step import REGIMES, Task

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", registry.names())
def test_every_registered_model_trains_one_step(name):
  spec = registry.get(name)
  assert spec.regime in REGIMES
  info = toy_info()
  task = Task(toy_config(name), info, sharding.make_mesh())
  assert task.regime.__class__ is REGIMES[spec.regime]
  assert task.modalities == (("image", "text") if spec.uses_features else ())
  state = task.init(0)
  before = jax.device_get(state["params"])
  state, metrics = task.train_step(state, toy_batch(task, info, np.random.default_rng(1)))
  assert np.isfinite(float(metrics["loss"])) and int(state["step"]) == 1
  after = jax.device_get(state["params"])
  changed = [
    not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(after))
  ]
  assert any(changed), "one step changed no parameter"
  users, items = task.eval_reprs(state)
  assert users.shape[0] == task.padded_users and items.shape[0] == task.padded_items
  assert np.all(np.asarray(items)[task.num_items :] == 0)  # padding rows never rank


def test_specs_are_complete_and_importable_without_jax():
  for name, spec in registry.MODELS.items():
    assert spec.name == name and spec.search_space and spec.reference
    assert issubclass(spec.load(), Recommender)
  code = (
    "import sys, mmrec_jax.models.registry as r, mmrec_jax.config as c; "
    "assert 'jax' not in sys.modules and 'flax' not in sys.modules, 'jax imported'; "
    "print(len(r.MODELS))"
  )
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
  assert out.stdout.strip() == str(len(registry.MODELS))


def test_unknown_name_and_missing_modality_fail_in_one_place():
  with pytest.raises(ConfigError, match=r"'ncf' is not one of .*'two_tower'"):
    registry.get("ncf")
  c = config_lib.base_config()
  c.model.name = "ncf"
  with pytest.raises(ValueError, match="model.name"):
    config_lib.finalize(c)
  required = [n for n, s in registry.MODELS.items() if s.features == "required"]
  assert required
  for name in required:
    with pytest.raises(ConfigError, match=f"model.name='{name}' needs at least one modality"):
      with nnx.use_eager_sharding(False):
        build_model(
          toy_config(name).model, num_users=8, num_items=8, feature_dims={}, rngs=nnx.Rngs(0)
        )
  with pytest.raises(ConfigError, match="regime='dense'"):
    registry.ModelSpec("bad", Recommender, regime="dense")


def test_model_variants_follow_the_registry():
  c = config_lib.base_config()
  config_lib.apply_model_variant(c, {"lightgcn"})
  assert c.model.name == "lightgcn" and tuple(c.data.modalities) == ()
  c = config_lib.base_config()
  config_lib.apply_model_variant(c, {"freedom"})
  assert c.model.name == "freedom" and tuple(c.data.modalities) == ("text",)


# ------------------------------------------------- a model from outside the package
class ContentOnly(Recommender):
  """IDs for users, a linear map of the item features for items (defined in a test)."""

  def __init__(self, cfg, *, num_users, num_items, feature_dims, rngs):
    del num_items
    self.modalities = tuple(sorted(feature_dims))
    self.user_embed = Embed(num_users, cfg.embed_dim, "users", rngs=rngs)
    dim = sum(feature_dims.values())
    self.proj = dense(dim, cfg.embed_dim, (None, "embed"), rngs=rngs)

  def user_repr(self, ids, *, rng=None):
    return self.user_embed(ids)

  def item_repr(self, ids, feats, masks, *, rng=None):
    f = jnp.concatenate(
      [jnp.where(masks[m][..., None], feats[m], 0) for m in self.modalities], axis=-1
    )
    return self.proj(f)


@pytest.fixture
def content_only():
  spec = registry.register(
    registry.ModelSpec(
      "content_only_test",
      ContentOnly,
      features="required",
      search_space={"optimizer.learning_rate": ("log_float", 1e-4, 1e-1)},
      reference="a test",
    )
  )
  yield spec
  registry.unregister(spec.name)


def test_a_model_registered_from_outside_trains_end_to_end(content_only, tmp_path, monkeypatch):
  from mmrec_jax.train import train_and_evaluate

  monkeypatch.setenv("MMREC_JAX_CACHE", str(tmp_path / "cache"))
  c = config_lib.base_config()
  c.data.source = "synthetic"
  c.data.num_users, c.data.num_items, c.data.num_interactions = 60, 40, 900
  c.data.text_dim, c.data.image_dim = 8, 8
  c.data.modalities = ("text", "image")
  c.data.cache_dir = str(tmp_path / "cache")
  config_lib.apply_smoke(c)
  c.model.name = content_only.name
  c.eval.slices = False
  results = train_and_evaluate(config_lib.finalize(c), tmp_path / "run")
  assert results["status"] == "finished" and results["model"] == content_only.name
  assert results["modalities"] == ["text", "image"]
  assert 0.0 <= results["test"]["ndcg@10"] <= 1.0


# ------------------------------------------------- no model names outside models/
def _name_comparisons(path: pathlib.Path, names: set[str]) -> list[str]:
  """``x == 'bpr_mf'``, ``x in ('lightgcn', ...)`` and the like in one file."""
  hits = []
  for node in ast.walk(ast.parse(path.read_text(), str(path))):
    if not isinstance(node, ast.Compare):
      continue
    for side in [node.left, *node.comparators]:
      consts = (
        [side]
        if isinstance(side, ast.Constant)
        else (list(side.elts) if isinstance(side, (ast.Tuple, ast.List, ast.Set)) else [])
      )
      if any(isinstance(c, ast.Constant) and c.value in names for c in consts):
        hits.append(f"{path.relative_to(ROOT)}:{node.lineno}")
  return hits


def test_no_model_name_comparisons_outside_models():
  names = set(registry.names())
  files = [
    p
    for d in ("mmrec_jax", "experiments", "benchmarks", "launch")
    for p in (ROOT / d).rglob("*.py")
    if "models" not in p.relative_to(ROOT).parts
  ]
  assert len(files) > 40
  hits = [h for p in files for h in _name_comparisons(p, names)]
  assert not hits, hits
