"""Reading pretrained weights (safetensors) into Flax NNX modules.

Why a module of its own: the text and the image encoders both take checkpoints written
by Hugging Face ``save_pretrained`` (or sentence-transformers), whose tensors are named
and laid out for PyTorch (``Linear.weight`` is ``[out, in]``, conv kernels are
``[out, in, kh, kw]``). This file owns the file handling and the checks that make a
wrong or truncated checkpoint fail with the tensor name, and the encoders own the name
mapping. torch is never imported here: Hugging Face directories are read from
``.safetensors`` files only (for a ``pytorch_model.bin`` the error says how to convert
it); the torchvision CNN weights may also be ``torch.save`` zip files, which
torch_pickle.py reads without torch.
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np
from flax import nnx

from mmrec_jax.errors import DataError
from mmrec_jax.io_utils import read_json  # loading.read_json: config.json and the like

SAFETENSORS_INDEX = "model.safetensors.index.json"


def weight_files(model_dir: os.PathLike | str) -> list[pathlib.Path]:
  """The safetensors files of a Hugging Face model directory, in load order."""
  model_dir = pathlib.Path(model_dir)
  if not model_dir.is_dir():
    raise DataError(str(model_dir), "model directory not found")
  index = model_dir / SAFETENSORS_INDEX
  if index.exists():
    weight_map = read_json(index).get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
      raise DataError(str(index), "no 'weight_map' with tensor -> file entries")
    return [model_dir / f for f in sorted(set(weight_map.values()))]
  single = model_dir / "model.safetensors"
  if single.exists():
    return [single]
  files = sorted(model_dir.glob("*.safetensors"))
  if files:
    return files
  if any((model_dir / n).exists() for n in ("pytorch_model.bin", "model.pt", "model.pth")):
    raise DataError(
      str(model_dir),
      "only PyTorch pickle weights found; mmrec_jax reads "
      "safetensors only. Convert once with transformers: "
      "AutoModel.from_pretrained(dir).save_pretrained(dir, "
      "safe_serialization=True)",
    )
  raise DataError(str(model_dir), "no model.safetensors (or *.safetensors) file")


def load_safetensors(path: os.PathLike | str) -> dict[str, np.ndarray]:
  """One ``.safetensors`` file -> numpy arrays (bfloat16 tensors widened to float32)."""
  path = pathlib.Path(path)
  from safetensors import safe_open  # noqa: PLC0415

  out: dict[str, np.ndarray] = {}
  try:
    with safe_open(str(path), framework="numpy") as f:
      for k in f.keys():
        out[k] = f.get_tensor(k)
    return out
  except TypeError:
    pass  # bfloat16 tensors: numpy has no such dtype; read them through jax.
  except Exception as e:  # safetensors raises its own SafetensorError on bad files
    raise DataError(str(path), f"cannot read safetensors file ({e})") from None
  with safe_open(str(path), framework="flax") as f:
    for k in f.keys():
      out[k] = np.asarray(jax.device_get(f.get_tensor(k)).astype(np.float32))
  return out


def load_state_dict(model_dir: os.PathLike | str) -> dict[str, np.ndarray]:
  """All tensors of a model directory as numpy arrays keyed by their PyTorch names."""
  state: dict[str, np.ndarray] = {}
  for path in weight_files(model_dir):
    if not path.exists():
      raise DataError(str(path), "weight file listed in the index is missing")
    state.update(load_safetensors(path))
  return state


def strip_prefix(
  state: Mapping[str, np.ndarray], probe: str, prefixes: tuple[str, ...]
) -> dict[str, np.ndarray]:
  """Removes the head-model prefix (``bert.``, ``vit.``...) found in front of ``probe``.

  Checkpoints of task models (``BertForMaskedLM``, ``ViTForImageClassification``) nest
  the encoder under a prefix; the encoder tensors are the same.
  """
  if probe in state:
    return dict(state)
  for p in prefixes:
    if p + probe in state:
      return {k[len(p) :]: v for k, v in state.items() if k.startswith(p)}
  return dict(state)


class TensorSource:
  """Hands out checkpoint tensors by name with shape checks; remembers what was used."""

  def __init__(self, state: Mapping[str, np.ndarray], where: str):
    self.state = state
    self.where = where
    self.used: set[str] = set()

  def get(self, name: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
    if name not in self.state:
      near = sorted(k for k in self.state if k.split(".")[0] == name.split(".", maxsplit=1)[0])[:5]
      raise DataError(
        self.where, f"missing tensor {name!r} (present with the same prefix: {near or 'none'})"
      )
    a = np.asarray(self.state[name])
    if shape is not None and tuple(a.shape) != tuple(shape):
      raise DataError(
        self.where, f"tensor {name!r} has shape {tuple(a.shape)}, the config expects {tuple(shape)}"
      )
    self.used.add(name)
    return a

  def has(self, name: str) -> bool:
    return name in self.state

  def linear(self, name: str, d_in: int, d_out: int, bias: bool = True) -> dict[str, Any]:
    """A torch ``Linear`` (``weight [out, in]``) as an NNX Linear's ``kernel [in, out]``."""
    out = {"kernel": self.get(f"{name}.weight", (d_out, d_in)).T}
    if bias:
      out["bias"] = self.get(f"{name}.bias", (d_out,))
    return out

  def layer_norm(self, name: str, d: int) -> dict[str, Any]:
    return {"scale": self.get(f"{name}.weight", (d,)), "bias": self.get(f"{name}.bias", (d,))}


def fill_module(
  make: Callable[[], nnx.Module], params: Mapping[str, Any], where: str, dtype: Any = np.float32
) -> nnx.Module:
  """Builds ``make()`` without random init and fills it from a pure dict of arrays.

  The module is traced with ``nnx.eval_shape`` (no memory, no RNG work), every parameter
  must be given with its exact shape, and no extra entries are allowed: a converter bug
  then fails here naming the parameter instead of computing garbage.
  """
  abstract = nnx.eval_shape(make)
  graphdef, state = nnx.split(abstract)
  want = nnx.to_pure_dict(state)

  def check(path, spec, given):
    name = "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)
    if given is None:
      raise DataError(where, f"converter gave no value for parameter {name}")
    given = np.asarray(given)
    if tuple(given.shape) != tuple(spec.shape):
      raise DataError(
        where, f"parameter {name} has shape {tuple(given.shape)}, expected {tuple(spec.shape)}"
      )
    return jax.numpy.asarray(given, dtype=dtype)

  want_paths = {jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(want)}
  got_paths = {
    jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(dict(params))
  }
  extra = sorted(got_paths - want_paths)
  missing = sorted(want_paths - got_paths)
  if extra or missing:
    raise DataError(
      where,
      f"converted parameters do not match the module: missing "
      f"{missing[:5]}, unexpected {extra[:5]}",
    )
  filled = jax.tree_util.tree_map_with_path(lambda p, s: check(p, s, _lookup(params, p)), want)
  nnx.replace_by_pure_dict(state, filled)
  return nnx.merge(graphdef, state)


def _lookup(tree: Mapping[Any, Any], path) -> Any:
  node: Any = tree
  for k in path:
    key = getattr(k, "key", getattr(k, "idx", None))
    if not isinstance(node, Mapping) or key not in node:
      return None
    node = node[key]
  return node
