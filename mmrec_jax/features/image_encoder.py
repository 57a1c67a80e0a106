"""Vision Transformer image encoder in Flax NNX (ViT and CLIP image towers).

Item image features come from a frozen, user-supplied pretrained image tower. One Flax
module, :class:`VisionTransformer`, covers the two Hugging Face families users have
checkpoints of, because they differ only in small switches:

  ==================  ==========================  ===============================
  switch              ``ViTModel`` (``vit``)      ``CLIPVisionModel`` (``clip*``)
  ==================  ==========================  ===============================
  patch bias          yes                         no
  LayerNorm before    no                          ``pre_layrnorm``
  the first layer
  final LayerNorm     ``layernorm``               ``post_layernorm`` (on CLS)
  projection          none                        ``visual_projection`` (optional)
  activation          config (``gelu``)           config (``quick_gelu``)
  ==================  ==========================  ===============================

The image feature is the final-LayerNorm CLS token (``last_hidden_state[:, 0]`` of ViT,
``pooler_output`` of CLIP), projected to the joint space when the checkpoint has CLIP's
``visual_projection``, then L2-normalised (``normalize=False`` keeps the raw vector).

Weights come from a Hugging Face ``save_pretrained`` directory (``config.json`` +
safetensors). Preprocessing follows the directory's ``preprocessor_config.json`` (resize,
center crop, rescale, normalise) with Pillow, or the family's defaults when it is absent.
What is not supported, and why:

  * torchvision's ``vit_b_16`` state dicts: it fuses q/k/v in ``in_proj_weight`` under
    other names. Convert such a model once, in an environment with torch, to a Hugging
    Face ``ViTModel`` and ``save_pretrained(safe_serialization=True)``. torchvision's
    ResNet-50 *is* read, from safetensors or its ``.pth`` file: resnet.py (encoder
    ``resnet50``), which reuses :class:`Preprocess` and :class:`ImageEncoder` below.
  * timm checkpoints in general: timm's many ViT variants (registers, LayerScale, QK
    norm, average pooling with ``fc_norm``, ``norm_pre`` CLIP towers) and its other
    families change the arithmetic, and its ``config.json`` holds no layer sizes.
    Exactly one layout is read: a plain timm ``VisionTransformer`` (CLS-token pooling)
    state dict saved as safetensors, whose ``blocks.N.attn.qkv`` tensors are split into
    q/k/v and renamed to ``ViTModel`` names (:func:`timm_vit_to_hf`). Its directory
    needs a Hugging Face ``ViTConfig`` ``config.json`` (``model_type: vit``, the sizes,
    and timm's ``layer_norm_eps: 1e-6``); any other timm tensor fails naming it.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import os
import pathlib
import re
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from mmrec_jax import sharding
from mmrec_jax.errors import DataError
from mmrec_jax.features import loading
from mmrec_jax.features.transformer import ACTIVATIONS, activation

FAMILIES = ("vit", "clip")
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclasses.dataclass(frozen=True)
class ViTConfig:
  """Sizes and switches of a ViT/CLIP image tower (see the module docstring)."""

  family: str
  hidden_size: int
  num_layers: int
  num_heads: int
  intermediate_size: int
  image_size: int
  patch_size: int
  num_channels: int = 3
  layer_norm_eps: float = 1e-12
  hidden_act: str = "gelu"
  projection_dim: int = 0  # CLIP visual_projection width; 0 = no projection

  @property
  def num_patches(self) -> int:
    return (self.image_size // self.patch_size) ** 2

  @classmethod
  def from_dict(cls, d: dict[str, Any], where: str = "config.json") -> ViTConfig:
    model_type = d.get("model_type", "")
    if model_type == "vit":
      family = "vit"
    elif model_type in ("clip", "clip_vision_model"):
      family = "clip"
      if model_type == "clip":  # full CLIPModel: image tower nested in vision_config
        proj = int(d.get("projection_dim", 0))
        d = dict(d.get("vision_config") or {})
        d.setdefault("projection_dim", proj)
    else:
      raise DataError(
        where,
        f"model_type {model_type!r} is not an image tower the Flax "
        f"encoder reads; supported: vit, clip, clip_vision_model",
      )
    try:
      cfg = cls(
        family=family,
        hidden_size=int(d["hidden_size"]),
        num_layers=int(d["num_hidden_layers"]),
        num_heads=int(d["num_attention_heads"]),
        intermediate_size=int(d["intermediate_size"]),
        image_size=int(d["image_size"]),
        patch_size=int(d["patch_size"]),
        num_channels=int(d.get("num_channels", 3)),
        layer_norm_eps=float(d.get("layer_norm_eps", 1e-12 if family == "vit" else 1e-5)),
        hidden_act=str(d.get("hidden_act", "gelu" if family == "vit" else "quick_gelu")),
        projection_dim=int(d.get("projection_dim", 0) or 0),
      )
    except KeyError as e:
      raise DataError(where, f"missing key {e.args[0]!r}") from None
    if family == "vit" and not d.get("qkv_bias", True):
      raise DataError(where, "qkv_bias=false is not supported")
    if cfg.image_size % cfg.patch_size:
      raise DataError(
        where, f"image_size {cfg.image_size} is not a multiple of patch_size {cfg.patch_size}"
      )
    activation(cfg.hidden_act, where)
    return cfg


class _Block(nnx.Module):
  """Pre-LayerNorm transformer block (ViTLayer / CLIPEncoderLayer)."""

  def __init__(self, cfg: ViTConfig, dtype: Any, rngs: nnx.Rngs):
    h, f = cfg.hidden_size, cfg.intermediate_size
    lin = functools.partial(nnx.Linear, dtype=dtype, rngs=rngs)
    ln = functools.partial(nnx.LayerNorm, epsilon=cfg.layer_norm_eps, dtype=dtype, rngs=rngs)
    self.ln1, self.ln2 = ln(h), ln(h)
    self.query, self.key, self.value, self.attn_out = lin(h, h), lin(h, h), lin(h, h), lin(h, h)
    self.fc1, self.fc2 = lin(h, f), lin(f, h)
    self.num_heads = cfg.num_heads
    self.act = ACTIVATIONS[cfg.hidden_act]

  def __call__(self, x: jax.Array) -> jax.Array:
    b, n, h = x.shape
    y = self.ln1(x)
    split = lambda t: t.reshape(b, n, self.num_heads, h // self.num_heads)
    q, k, v = split(self.query(y)), split(self.key(y)), split(self.value(y))
    scores = jnp.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(h // self.num_heads)
    probs = jax.nn.softmax(scores.astype(jnp.float32), axis=-1).astype(v.dtype)
    x = x + self.attn_out(jnp.einsum("bhqk,bkhd->bqhd", probs, v).reshape(b, n, h))
    return x + self.fc2(self.act(self.fc1(self.ln2(x))))


class VisionTransformer(nnx.Module):
  """Images ``[b, H, W, C]`` (preprocessed, channels last) -> features ``[b, dim]``."""

  def __init__(self, cfg: ViTConfig, *, dtype: Any = jnp.float32, rngs: nnx.Rngs):
    h, p, c = cfg.hidden_size, cfg.patch_size, cfg.num_channels
    self.cfg = cfg
    # A stride-p conv with a p x p kernel is a Linear on flattened patches.
    self.patch = nnx.Linear(c * p * p, h, use_bias=cfg.family == "vit", dtype=dtype, rngs=rngs)
    self.cls = nnx.Param(jnp.zeros((h,), jnp.float32))
    self.pos = nnx.Param(jnp.zeros((cfg.num_patches + 1, h), jnp.float32))
    ln = functools.partial(nnx.LayerNorm, epsilon=cfg.layer_norm_eps, dtype=dtype, rngs=rngs)
    self.pre_ln = ln(h) if cfg.family == "clip" else None
    self.layers = nnx.List([_Block(cfg, dtype, rngs) for _ in range(cfg.num_layers)])
    self.final_ln = ln(h)
    self.proj = (
      nnx.Linear(h, cfg.projection_dim, use_bias=False, dtype=dtype, rngs=rngs)
      if cfg.projection_dim
      else None
    )

  @property
  def dim(self) -> int:
    return self.cfg.projection_dim or self.cfg.hidden_size

  def __call__(self, images: jax.Array) -> jax.Array:
    b, hh, ww, c = images.shape
    p = self.cfg.patch_size
    if hh != self.cfg.image_size or ww != self.cfg.image_size:
      raise ValueError(f"images are {hh}x{ww}; the model takes {self.cfg.image_size}^2")
    # [b, gh, p, gw, p, c] -> [b, gh, gw, c, p, p]: torch's (c, kh, kw) kernel order.
    x = images.reshape(b, hh // p, p, ww // p, p, c).transpose(0, 1, 3, 5, 2, 4)
    x = self.patch(x.reshape(b, -1, c * p * p))
    cls = jnp.broadcast_to(self.cls[...].astype(x.dtype), (b, 1, x.shape[-1]))
    x = jnp.concatenate([cls, x], axis=1) + self.pos[...].astype(x.dtype)
    if self.pre_ln is not None:
      x = self.pre_ln(x)
    for layer in self.layers:
      x = layer(x)
    feat = self.final_ln(x[:, 0])
    return self.proj(feat) if self.proj is not None else feat


_TIMM_VIT = {
  "cls_token": "embeddings.cls_token",
  "pos_embed": "embeddings.position_embeddings",
  "patch_embed.proj.weight": "embeddings.patch_embeddings.projection.weight",
  "patch_embed.proj.bias": "embeddings.patch_embeddings.projection.bias",
  "norm.weight": "layernorm.weight",
  "norm.bias": "layernorm.bias",
}
_TIMM_BLOCK = {
  "norm1": "layernorm_before",
  "norm2": "layernorm_after",
  "attn.proj": "attention.output.dense",
  "mlp.fc1": "intermediate.dense",
  "mlp.fc2": "output.dense",
}


def timm_vit_to_hf(state: dict[str, np.ndarray], where: str) -> dict[str, np.ndarray]:
  """A plain timm ``VisionTransformer`` state dict under HF ``ViTModel`` names.

  timm computes ``qkv(x).reshape(b, n, 3, heads, head_dim)``: the rows of the fused
  ``[3h, h]`` weight are q, then k, then v. The classifier ``head.*`` is dropped; any
  tensor of another variant (module docstring) fails here rather than being ignored.
  """
  out = {}
  for k, v in state.items():
    if k.startswith("head."):
      continue
    if k in _TIMM_VIT:
      out[_TIMM_VIT[k]] = v
      continue
    m = re.fullmatch(r"blocks\.(\d+)\.(.+)\.(weight|bias)", k)
    if not m or (m.group(2) != "attn.qkv" and m.group(2) not in _TIMM_BLOCK):
      raise DataError(
        where,
        f"timm tensor {k!r} is not part of a plain ViT (CLS pooling, "
        "no registers/LayerScale/QK-norm); not supported",
      )
    i, name, kind = m.groups()
    if name == "attn.qkv":
      for part, t in zip(("query", "key", "value"), np.split(np.asarray(v), 3, axis=0)):
        out[f"encoder.layer.{i}.attention.attention.{part}.{kind}"] = t
    else:
      out[f"encoder.layer.{i}.{_TIMM_BLOCK[name]}.{kind}"] = v
  return out


def convert_vit(state: dict[str, np.ndarray], cfg: ViTConfig, where: str) -> dict[str, Any]:
  """HF ``ViTModel`` / ``CLIPVisionModel(WithProjection)`` tensors -> module params.

  A timm ViT state dict (``blocks.0.attn.qkv.weight``) is renamed first.
  """
  h, f, p, c = cfg.hidden_size, cfg.intermediate_size, cfg.patch_size, cfg.num_channels
  n = cfg.num_patches + 1
  if cfg.family == "vit" and "blocks.0.attn.qkv.weight" in state:
    state = timm_vit_to_hf(state, where)
  if cfg.family == "vit":
    state = loading.strip_prefix(state, "embeddings.cls_token", ("vit.", "model."))
    t = loading.TensorSource(state, where)
    patch_w = t.get("embeddings.patch_embeddings.projection.weight", (h, c, p, p))
    out: dict[str, Any] = {
      "patch": {
        "kernel": patch_w.reshape(h, -1).T,
        "bias": t.get("embeddings.patch_embeddings.projection.bias", (h,)),
      },
      "cls": t.get("embeddings.cls_token", (1, 1, h)).reshape(h),
      "pos": t.get("embeddings.position_embeddings", (1, n, h)).reshape(n, h),
      "final_ln": t.layer_norm("layernorm", h),
      "layers": {},
    }
    names = (
      "encoder.layer.{}.",
      "layernorm_before",
      "layernorm_after",
      "attention.attention.query",
      "attention.attention.key",
      "attention.attention.value",
      "attention.output.dense",
      "intermediate.dense",
      "output.dense",
    )
  else:
    proj = state.get("visual_projection.weight")
    state = loading.strip_prefix(state, "embeddings.class_embedding", ("vision_model.",))
    t = loading.TensorSource(state, where)
    patch_w = t.get("embeddings.patch_embedding.weight", (h, c, p, p))
    out = {
      "patch": {"kernel": patch_w.reshape(h, -1).T},
      "cls": t.get("embeddings.class_embedding", (h,)),
      "pos": t.get("embeddings.position_embedding.weight", (n, h)),
      "pre_ln": t.layer_norm("pre_layrnorm", h),
      "final_ln": t.layer_norm("post_layernorm", h),
      "layers": {},
    }
    if cfg.projection_dim:
      if proj is None:
        raise DataError(
          where, "config has projection_dim but the checkpoint has no visual_projection.weight"
        )
      if proj.shape != (cfg.projection_dim, h):
        raise DataError(
          where,
          f"visual_projection.weight has shape {proj.shape}, expected {(cfg.projection_dim, h)}",
        )
      out["proj"] = {"kernel": proj.T}
    names = (
      "encoder.layers.{}.",
      "layer_norm1",
      "layer_norm2",
      "self_attn.q_proj",
      "self_attn.k_proj",
      "self_attn.v_proj",
      "self_attn.out_proj",
      "mlp.fc1",
      "mlp.fc2",
    )
  pre, ln1, ln2, q, k, v, o, fc1, fc2 = names
  for i in range(cfg.num_layers):
    b = pre.format(i)
    out["layers"][i] = {
      "ln1": t.layer_norm(b + ln1, h),
      "ln2": t.layer_norm(b + ln2, h),
      "query": t.linear(b + q, h, h),
      "key": t.linear(b + k, h, h),
      "value": t.linear(b + v, h, h),
      "attn_out": t.linear(b + o, h, h),
      "fc1": t.linear(b + fc1, h, f),
      "fc2": t.linear(b + fc2, f, h),
    }
  return out


def load_vit(
  model_dir: os.PathLike | str, dtype: Any = jnp.float32, *, projection: bool = True
) -> tuple[VisionTransformer, ViTConfig]:
  """Reads ``config.json`` + safetensors into a :class:`VisionTransformer`.

  ``projection=False`` drops CLIP's ``visual_projection`` (features = pooled CLS).
  A CLIPVisionModel checkpoint without a projection has ``projection_dim`` in its config
  but no tensor; it is then dropped too.
  """
  model_dir = pathlib.Path(model_dir)
  where = str(model_dir)
  cfg = ViTConfig.from_dict(
    loading.read_json(model_dir / "config.json"), str(model_dir / "config.json")
  )
  state = loading.load_state_dict(model_dir)
  if cfg.projection_dim and (not projection or "visual_projection.weight" not in state):
    cfg = dataclasses.replace(cfg, projection_dim=0)
  params = convert_vit(state, cfg, where)
  model = loading.fill_module(
    lambda: VisionTransformer(cfg, dtype=dtype, rngs=nnx.Rngs(0)), params, where
  )
  return model, cfg


@dataclasses.dataclass(frozen=True)
class Preprocess:
  """Pillow preprocessing equal to the Hugging Face image processors' defaults."""

  size: int  # target of the resize (shortest edge or both edges)
  crop: int  # center crop side (== size: no crop)
  shortest_edge: bool  # True: keep aspect (CLIP); False: squash (ViT)
  resample: int  # PIL resample filter id
  mean: tuple[float, float, float]
  std: tuple[float, float, float]
  rescale: float = 1 / 255
  # Center-crop offset: Hugging Face floors (size - crop) / 2, torchvision rounds it
  # half to even (int(round(...))); they differ by a pixel for odd margins.
  round_crop: bool = False

  @classmethod
  def for_model(cls, model_dir: os.PathLike | str, cfg: ViTConfig) -> Preprocess:
    path = pathlib.Path(model_dir) / "preprocessor_config.json"
    d = loading.read_json(path) if path.exists() else {}
    clip = cfg.family == "clip"
    size = d.get("size", {"shortest_edge": cfg.image_size} if clip else cfg.image_size)
    if isinstance(size, dict):
      shortest = "shortest_edge" in size
      size = size.get("shortest_edge", size.get("height", cfg.image_size))
    else:
      shortest = clip
    crop = d.get("crop_size", cfg.image_size)
    crop = crop.get("height", cfg.image_size) if isinstance(crop, dict) else crop
    if not d.get("do_center_crop", clip):
      crop = size
    if crop != cfg.image_size:
      raise DataError(
        str(path),
        f"crop/resize to {crop} but the model takes {cfg.image_size}x{cfg.image_size} images",
      )
    mean = tuple(d.get("image_mean", CLIP_MEAN if clip else (0.5, 0.5, 0.5)))
    std = tuple(d.get("image_std", CLIP_STD if clip else (0.5, 0.5, 0.5)))
    return cls(
      size=int(size),
      crop=int(crop),
      shortest_edge=shortest,
      resample=int(d.get("resample", 3 if clip else 2)),
      mean=mean,
      std=std,
      rescale=float(d.get("rescale_factor", 1 / 255)),
    )

  def __call__(self, path: os.PathLike | str) -> np.ndarray:
    """Reads one image file -> float32 ``[crop, crop, 3]`` normalised pixels."""
    from PIL import Image  # noqa: PLC0415

    with Image.open(path) as img:
      img = img.convert("RGB")
      w, h = img.size
      if self.shortest_edge:
        short, long = (w, h) if w <= h else (h, w)
        new_short, new_long = self.size, int(self.size * long / short)
        size = (new_short, new_long) if w <= h else (new_long, new_short)
      else:
        size = (self.size, self.size)
      img = img.resize(size, resample=self.resample)
      if self.crop != self.size or size[0] != size[1]:
        offset = (lambda m: round(m / 2)) if self.round_crop else (lambda m: m // 2)
        left, top = offset(size[0] - self.crop), offset(size[1] - self.crop)
        img = img.crop((left, top, left + self.crop, top + self.crop))
      arr = np.asarray(img, np.float32) * self.rescale
    return (arr - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)


class ImageEncoder:
  """Image files or pixel arrays -> ``[n, dim]`` features, jit-compiled, data-parallel.

  ``model`` is any image module with ``cfg.family`` and ``dim`` that maps preprocessed
  pixels ``[b, H, W, 3]`` to ``[b, dim]``: :class:`VisionTransformer` here, the ResNet
  of resnet.py.
  """

  def __init__(
    self,
    model: nnx.Module,
    preprocess: Preprocess,
    *,
    normalize: bool = True,
    batch_size: int = 64,
    mesh=None,
    num_threads: int = 8,
  ):
    self.model_cfg, self.preprocess, self.normalize = model.cfg, preprocess, normalize
    self.dim = model.dim
    self.mesh = sharding.make_mesh() if mesh is None else mesh
    n_data = self.mesh.shape[sharding.DATA]
    self.batch_size = max(n_data, -(-batch_size // n_data) * n_data)
    self.num_threads = num_threads
    graphdef, state = nnx.split(model)
    rep = sharding.replicated(self.mesh)
    self._state = jax.device_put(state, rep)
    batch = NamedSharding(self.mesh, P(sharding.DATA, None, None, None))

    def fwd(state, images):
      emb = nnx.merge(graphdef, state)(images).astype(jnp.float32)
      if normalize:
        emb = emb / jnp.maximum(jnp.linalg.norm(emb, axis=-1, keepdims=True), 1e-12)
      return emb

    self._fwd = jax.jit(
      fwd, in_shardings=(rep, batch), out_shardings=NamedSharding(self.mesh, P(sharding.DATA, None))
    )

  @classmethod
  def from_pretrained(
    cls,
    model_dir: os.PathLike | str,
    *,
    batch_size: int = 64,
    normalize: bool = True,
    projection: bool = True,
    dtype: str = "float32",
    mesh=None,
  ) -> ImageEncoder:
    model, cfg = load_vit(model_dir, jnp.dtype(dtype), projection=projection)
    return cls(
      model,
      Preprocess.for_model(model_dir, cfg),
      normalize=normalize,
      batch_size=batch_size,
      mesh=mesh,
    )

  def load(
    self, paths: Sequence[os.PathLike | str | None]
  ) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Reads and preprocesses files in threads -> (pixels, ok mask, problems).

    A missing or undecodable file gives ``ok=False`` and a message in ``problems``
    (the caller records it in the coverage mask and reports the count).
    """
    s = self.preprocess.crop
    pixels = np.zeros((len(paths), s, s, 3), np.float32)
    ok = np.zeros(len(paths), bool)
    problems: list[str] = []

    def one(i):
      if paths[i] is None:
        return
      try:
        pixels[i] = self.preprocess(paths[i])
        ok[i] = True
      except (OSError, ValueError) as e:  # PIL.UnidentifiedImageError is an OSError
        problems.append(f"{paths[i]}: {e}")

    with concurrent.futures.ThreadPoolExecutor(self.num_threads) as pool:
      list(pool.map(one, range(len(paths))))
    return pixels, ok, problems

  def encode(self, images: np.ndarray) -> np.ndarray:
    """Preprocessed pixels ``[n, H, W, 3]`` -> float32 ``[n, dim]``."""
    n = images.shape[0]
    out = np.zeros((n, self.dim), np.float32)
    pending = []
    for a in range(0, n, self.batch_size):
      chunk = images[a : a + self.batch_size]
      if chunk.shape[0] < self.batch_size:
        pad = np.zeros((self.batch_size - chunk.shape[0],) + chunk.shape[1:], chunk.dtype)
        chunk = np.concatenate([chunk, pad])
      pending.append((a, self._fwd(self._state, chunk)))
    for a, emb in pending:
      k = min(self.batch_size, n - a)
      out[a : a + k] = np.asarray(emb)[:k]
    return out
