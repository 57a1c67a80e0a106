"""ResNet-50 image encoder in Flax NNX, reading torchvision weights (2048-d pooled features).

Why: the ML-25M multimodal notebooks of NVIDIA Merlin describe each movie poster by the
2048-d global-average-pool output of an ImageNet ResNet-50 -- the most common "frozen CNN
feature" of the multimodal recommender literature. This module computes exactly
torchvision's ``resnet50`` (v1.5: the stride sits on the 3x3 convolution of a bottleneck)
up to its average pool, so those features are extracted on the training mesh, without
PyTorch, with any torchvision-format state dict:

  * stem: 7x7/2 convolution, BatchNorm, ReLU, 3x3/2 max pool (padding 1, -inf pads);
  * ``layer1..layer4``: 3, 4, 6, 3 bottlenecks (1x1, 3x3, 1x1 x4 channels, projection
    shortcut ``downsample`` on the first block of each stage), widths 64..512;
  * every BatchNorm in inference mode (running mean/var, eps 1e-5), as ``model.eval()``;
  * the feature is the spatial mean of ``layer4`` -- ``avgpool`` flattened, before ``fc``
    (the classifier is dropped). It is not L2-normalised by default (the notebooks' poster
    features are the raw pooled activations); ``normalize=True`` makes it unit-length.

Preprocessing is torchvision's ImageNet evaluation transform, with Pillow: ``Resize(256)``
(shorter side to 256, bilinear), ``CenterCrop(224)`` (offsets rounded as torchvision
rounds them), ``ToTensor`` (/255) and ``Normalize`` with the ImageNet mean/std.

Weights, given as a file (or a directory holding exactly one weight file):

  * ``*.safetensors`` of the state dict -- the recommended form, made once where torch is
    installed: ``safetensors.torch.save_file(torchvision.models.resnet50(weights=...)
    .state_dict(), "resnet50.safetensors")``;
  * ``*.pth`` / ``*.pt`` written by ``torch.save(model.state_dict(), path)``, e.g. the files
    torchvision downloads into ``~/.cache/torch/hub/checkpoints``. They are read without
    torch by a restricted unpickler that accepts tensors only (torch_pickle.py says why
    this is safe and what it refuses).

Names follow torchvision's (``layer3.5.bn2.running_var``); a ``module.`` prefix
(``DataParallel``) is removed, ``fc.*`` and ``num_batches_tracked`` are ignored, and any
other tensor -- e.g. the extra blocks of a ResNet-101 -- fails naming it.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from mmrec_jax.errors import DataError
from mmrec_jax.features import image_encoder, loading, torch_pickle

# encoder name -> blocks per stage (torchvision's Bottleneck ResNets).
ARCHS = {"resnet50": (3, 4, 6, 3)}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt")
EXPANSION = 4
BN_EPS = 1e-5
PIL_BILINEAR = 2  # PIL.Image.Resampling.BILINEAR, torchvision's default for Resize


@dataclasses.dataclass(frozen=True)
class ResNetConfig:
  """A torchvision Bottleneck ResNet: its name and blocks per stage."""

  family: str = "resnet50"
  layers: tuple[int, ...] = ARCHS["resnet50"]
  width: int = 64
  image_size: int = 224

  @property
  def dim(self) -> int:
    return self.width * 8 * EXPANSION

  @classmethod
  def named(cls, name: str) -> ResNetConfig:
    if name not in ARCHS:
      raise DataError("encoder", f"unknown ResNet {name!r}; supported: {sorted(ARCHS)}")
    return cls(family=name, layers=ARCHS[name])


def _conv(c_in: int, c_out: int, k: int, stride: int, dtype: Any, rngs: nnx.Rngs) -> nnx.Conv:
  pad = (k - 1) // 2  # torchvision: padding 3 for 7x7, 1 for 3x3, 0 for 1x1
  return nnx.Conv(
    c_in,
    c_out,
    kernel_size=(k, k),
    strides=(stride, stride),
    padding=((pad, pad), (pad, pad)),
    use_bias=False,
    dtype=dtype,
    rngs=rngs,
  )


def _bn(c: int, dtype: Any, rngs: nnx.Rngs) -> nnx.BatchNorm:
  return nnx.BatchNorm(c, use_running_average=True, epsilon=BN_EPS, dtype=dtype, rngs=rngs)


class Bottleneck(nnx.Module):
  """torchvision ``Bottleneck``: 1x1 -> 3x3 (stride) -> 1x1 (x4), plus the shortcut."""

  def __init__(self, c_in: int, planes: int, stride: int, dtype: Any, rngs: nnx.Rngs):
    c_out = planes * EXPANSION
    self.conv1, self.bn1 = _conv(c_in, planes, 1, 1, dtype, rngs), _bn(planes, dtype, rngs)
    self.conv2, self.bn2 = _conv(planes, planes, 3, stride, dtype, rngs), _bn(planes, dtype, rngs)
    self.conv3, self.bn3 = _conv(planes, c_out, 1, 1, dtype, rngs), _bn(c_out, dtype, rngs)
    project = stride != 1 or c_in != c_out
    self.down_conv = _conv(c_in, c_out, 1, stride, dtype, rngs) if project else None
    self.down_bn = _bn(c_out, dtype, rngs) if project else None

  def __call__(self, x: jax.Array) -> jax.Array:
    y = jax.nn.relu(self.bn1(self.conv1(x)))
    y = jax.nn.relu(self.bn2(self.conv2(y)))
    y = self.bn3(self.conv3(y))
    shortcut = x if self.down_conv is None else self.down_bn(self.down_conv(x))
    return jax.nn.relu(y + shortcut)


class ResNet(nnx.Module):
  """Images ``[b, H, W, 3]`` (preprocessed, channels last) -> pooled features ``[b, 2048]``."""

  def __init__(self, cfg: ResNetConfig, *, dtype: Any = jnp.float32, rngs: nnx.Rngs):
    self.cfg = cfg
    w = cfg.width
    self.conv1, self.bn1 = _conv(3, w, 7, 2, dtype, rngs), _bn(w, dtype, rngs)
    c_in = w
    stages = []
    for i, n in enumerate(cfg.layers):
      planes = w * 2**i
      blocks = []
      for j in range(n):
        blocks.append(Bottleneck(c_in, planes, 2 if (i > 0 and j == 0) else 1, dtype, rngs))
        c_in = planes * EXPANSION
      stages.append(nnx.List(blocks))
    self.layer1, self.layer2, self.layer3, self.layer4 = stages

  @property
  def dim(self) -> int:
    return self.cfg.dim

  def __call__(self, images: jax.Array) -> jax.Array:
    x = jax.nn.relu(self.bn1(self.conv1(images)))
    x = nnx.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    for stage in (self.layer1, self.layer2, self.layer3, self.layer4):
      for block in stage:
        x = block(x)
    return x.astype(jnp.float32).mean(axis=(1, 2))


def _conv_params(t: loading.TensorSource, name: str, c_in: int, c_out: int, k: int) -> dict:
  """torch ``[out, in, kh, kw]`` -> Flax ``[kh, kw, in, out]``."""
  return {"kernel": t.get(f"{name}.weight", (c_out, c_in, k, k)).transpose(2, 3, 1, 0)}


def _bn_params(t: loading.TensorSource, name: str, c: int) -> dict:
  return {
    "scale": t.get(f"{name}.weight", (c,)),
    "bias": t.get(f"{name}.bias", (c,)),
    "mean": t.get(f"{name}.running_mean", (c,)),
    "var": t.get(f"{name}.running_var", (c,)),
  }


def convert_resnet(state: dict[str, np.ndarray], cfg: ResNetConfig, where: str) -> dict[str, Any]:
  """A torchvision ResNet state dict -> :class:`ResNet` params (module docstring)."""
  state = loading.strip_prefix(state, "conv1.weight", ("module.",))
  t = loading.TensorSource(state, where)
  w = cfg.width
  out: dict[str, Any] = {"conv1": _conv_params(t, "conv1", 3, w, 7), "bn1": _bn_params(t, "bn1", w)}
  c_in = w
  for i, n in enumerate(cfg.layers):
    planes = w * 2**i
    c_out = planes * EXPANSION
    stage: dict[int, Any] = {}
    for j in range(n):
      p = f"layer{i + 1}.{j}."
      block = {
        "conv1": _conv_params(t, p + "conv1", c_in, planes, 1),
        "bn1": _bn_params(t, p + "bn1", planes),
        "conv2": _conv_params(t, p + "conv2", planes, planes, 3),
        "bn2": _bn_params(t, p + "bn2", planes),
        "conv3": _conv_params(t, p + "conv3", planes, c_out, 1),
        "bn3": _bn_params(t, p + "bn3", c_out),
      }
      if j == 0:
        block["down_conv"] = _conv_params(t, p + "downsample.0", c_in, c_out, 1)
        block["down_bn"] = _bn_params(t, p + "downsample.1", c_out)
      stage[j] = block
      c_in = c_out
    out[f"layer{i + 1}"] = stage
  ignored = lambda k: k.startswith("fc.") or k.endswith("num_batches_tracked")
  extra = sorted(k for k in state if k not in t.used and not ignored(k))
  if extra:
    raise DataError(
      where,
      f"tensors that a torchvision {cfg.family} does not have: {extra[:5]} "
      f"({len(extra)} in all); is this another architecture?",
    )
  return out


def weight_file(path: os.PathLike | str) -> pathlib.Path:
  """The weight file: ``path`` itself, or the one ``*.safetensors``/``*.pth``/``*.pt`` in it."""
  path = pathlib.Path(path)
  if path.is_dir():
    files = sorted(p for p in path.iterdir() if p.suffix in WEIGHT_SUFFIXES and p.is_file())
    if len(files) != 1:
      raise DataError(
        str(path),
        f"expected exactly one weight file ({', '.join(WEIGHT_SUFFIXES)}) in the "
        f"directory, found {[p.name for p in files]}",
      )
    return files[0]
  if not path.exists():
    raise DataError(str(path), "weight file not found")
  if path.suffix not in WEIGHT_SUFFIXES:
    raise DataError(str(path), f"not a weight file; expected one of {list(WEIGHT_SUFFIXES)}")
  return path


def read_state_dict(path: os.PathLike | str) -> dict[str, np.ndarray]:
  """A state dict from ``*.safetensors`` or a ``torch.save`` zip (``*.pth``/``*.pt``)."""
  path = weight_file(path)
  if path.suffix == ".safetensors":
    return loading.load_safetensors(path)
  return torch_pickle.load(path)


def load_resnet(
  path: os.PathLike | str, name: str = "resnet50", dtype: Any = jnp.float32
) -> tuple[ResNet, ResNetConfig]:
  """Reads torchvision weights (a file or a directory with one) into a :class:`ResNet`."""
  cfg = ResNetConfig.named(name)
  where = str(weight_file(path))
  params = convert_resnet(read_state_dict(path), cfg, where)
  model = loading.fill_module(lambda: ResNet(cfg, dtype=dtype, rngs=nnx.Rngs(0)), params, where)
  return model, cfg


def imagenet_preprocess(resize: int = 256, crop: int = 224) -> image_encoder.Preprocess:
  """torchvision's ImageNet evaluation transform (module docstring), with Pillow."""
  return image_encoder.Preprocess(
    size=resize,
    crop=crop,
    shortest_edge=True,
    resample=PIL_BILINEAR,
    mean=IMAGENET_MEAN,
    std=IMAGENET_STD,
    round_crop=True,
  )


def resnet_encoder(
  path: os.PathLike | str,
  name: str = "resnet50",
  *,
  batch_size: int = 64,
  normalize: bool = False,
  dtype: str = "float32",
  mesh=None,
) -> image_encoder.ImageEncoder:
  """An :class:`~mmrec_jax.features.image_encoder.ImageEncoder` running this ResNet.

  Files or pixel arrays -> ``[n, 2048]``, jit-compiled with the batch sharded on the
  mesh 'data' axis; raw pooled features unless ``normalize``.
  """
  model, _ = load_resnet(path, name, jnp.dtype(dtype))
  return image_encoder.ImageEncoder(
    model, imagenet_preprocess(), normalize=normalize, batch_size=batch_size, mesh=mesh
  )
