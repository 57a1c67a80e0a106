"""Flax ViT/CLIP image tower against Hugging Face transformers with the same weights.

No pretrained image weights can be downloaded here, so the reference models are small,
randomly initialised transformers models saved with ``save_pretrained`` (safetensors)
and read back through our loader: this checks the name mapping, the layouts
(Linear transposes, conv-as-patch-matmul order) and the arithmetic, which is what a
real checkpoint needs too.
"""

import json

import numpy as np
import pytest
import safetensors.numpy
import scipy.special

# Hard imports: the `test` extra has them, so a broken install fails instead of skipping.
import torch
import transformers
from PIL import Image

from mmrec_jax.errors import DataError
from mmrec_jax.features import image_encoder as ie

SMALL = dict(
  hidden_size=64,
  num_hidden_layers=2,
  num_attention_heads=4,
  intermediate_size=128,
  image_size=32,
  patch_size=8,
)
ATOL = 1e-5  # float32, CPU; observed max |diff| ~1e-6 on outputs of magnitude ~3


def _save(model, path):
  torch.manual_seed(0)
  model.eval()
  model.save_pretrained(path, safe_serialization=True)
  return model


def _pixels(n=5, seed=0):
  return np.random.default_rng(seed).normal(size=(n, 3, 32, 32)).astype(np.float32)


def _ref(model, x, attr):
  with torch.no_grad():
    out = model(pixel_values=torch.from_numpy(x))
  return getattr(out, attr)


@pytest.fixture(scope="module")
def vit_dir(tmp_path_factory):
  torch.manual_seed(0)
  path = tmp_path_factory.mktemp("vit")
  model = _save(transformers.ViTModel(transformers.ViTConfig(**SMALL)), path)
  return path, model


def test_vit_matches_transformers(vit_dir):
  path, model = vit_dir
  enc = ie.ImageEncoder.from_pretrained(path, batch_size=8, normalize=False)
  x = _pixels()
  ref = _ref(model, x, "last_hidden_state")[:, 0].numpy()
  got = enc.encode(x.transpose(0, 2, 3, 1))
  assert got.shape == (5, 64)
  np.testing.assert_allclose(got, ref, atol=ATOL, rtol=1e-5)


@pytest.mark.parametrize("with_projection", [True, False])
def test_clip_vision_matches_transformers(tmp_path, with_projection):
  torch.manual_seed(1)
  cfg = transformers.CLIPVisionConfig(projection_dim=32, **SMALL)
  if with_projection:
    model = _save(transformers.CLIPVisionModelWithProjection(cfg), tmp_path)
    attr, dim = "image_embeds", 32
  else:
    model = _save(transformers.CLIPVisionModel(cfg), tmp_path)
    attr, dim = "pooler_output", 64
  enc = ie.ImageEncoder.from_pretrained(tmp_path, batch_size=8, normalize=False)
  x = _pixels(seed=2)
  got = enc.encode(x.transpose(0, 2, 3, 1))
  assert got.shape == (5, dim)
  np.testing.assert_allclose(got, _ref(model, x, attr).numpy(), atol=ATOL, rtol=1e-5)


def test_normalized_features_have_unit_norm(vit_dir):
  enc = ie.ImageEncoder.from_pretrained(vit_dir[0], batch_size=8)
  got = enc.encode(_pixels(3).transpose(0, 2, 3, 1))
  np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("family", ["vit", "clip"])
def test_preprocessing_matches_hf_image_processor(tmp_path, family):
  """Resize / center-crop / normalise equal the HF (PIL) processors on a 50x37 image."""
  rgb = np.random.default_rng(3).integers(0, 256, size=(37, 50, 3), dtype=np.uint8)
  img_path = tmp_path / "x.png"
  Image.fromarray(rgb).save(img_path)
  if family == "vit":
    proc = transformers.ViTImageProcessor(size={"height": 32, "width": 32})
    cfg = ie.ViTConfig(
      family="vit",
      hidden_size=8,
      num_layers=1,
      num_heads=1,
      intermediate_size=8,
      image_size=32,
      patch_size=8,
    )
  else:
    proc = transformers.CLIPImageProcessor(
      size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
    )
    cfg = ie.ViTConfig(
      family="clip",
      hidden_size=8,
      num_layers=1,
      num_heads=1,
      intermediate_size=8,
      image_size=32,
      patch_size=8,
      layer_norm_eps=1e-5,
      hidden_act="quick_gelu",
    )
  proc.save_pretrained(tmp_path)
  prep = ie.Preprocess.for_model(tmp_path, cfg)
  ref = proc(images=Image.open(img_path), return_tensors="np")["pixel_values"][0]
  got = prep(img_path)
  assert got.shape == (32, 32, 3)
  # Same PIL resize; differences are float rounding of rescale/normalise only.
  np.testing.assert_allclose(got, ref.transpose(1, 2, 0), atol=1e-5)


def test_load_marks_missing_and_broken_files(vit_dir, tmp_path):
  enc = ie.ImageEncoder.from_pretrained(vit_dir[0], batch_size=8)
  good = tmp_path / "good.jpg"
  Image.fromarray(np.full((40, 40, 3), 128, np.uint8)).save(good)
  broken = tmp_path / "broken.jpg"
  broken.write_bytes(b"not an image")
  pixels, ok, problems = enc.load([str(good), None, str(tmp_path / "missing.jpg"), str(broken)])
  assert ok.tolist() == [True, False, False, False]
  assert len(problems) == 2
  assert pixels.shape == (4, 32, 32, 3)
  # A uniform grey image normalises to (128/255 - 0.5) / 0.5 everywhere.
  np.testing.assert_allclose(pixels[0], (128 / 255 - 0.5) / 0.5, atol=1e-6)
  assert not pixels[1:].any()


def test_loader_rejects_mismatched_checkpoint(vit_dir, tmp_path):
  import shutil

  path = tmp_path / "bad"
  shutil.copytree(vit_dir[0], path)
  cfg = json.loads((path / "config.json").read_text())
  cfg["intermediate_size"] = 96
  (path / "config.json").write_text(json.dumps(cfg))
  with pytest.raises(DataError, match="intermediate.dense.weight.*shape"):
    ie.load_vit(path)
  cfg["model_type"] = "resnet"
  (path / "config.json").write_text(json.dumps(cfg))
  with pytest.raises(DataError, match="model_type 'resnet'"):
    ie.load_vit(path)


def _timm_vit_state(rng, h=32, layers=2, f=64, p=8, c=3, image=32, classes=5):
  """Random tensors named and shaped as timm ``VisionTransformer.state_dict()``."""
  r = lambda *shape: (0.2 * rng.standard_normal(shape)).astype(np.float32)
  n = (image // p) ** 2 + 1
  state = {
    "cls_token": r(1, 1, h),
    "pos_embed": r(1, n, h),
    "patch_embed.proj.weight": r(h, c, p, p),
    "patch_embed.proj.bias": r(h),
    "norm.weight": 1 + r(h),
    "norm.bias": r(h),
    "head.weight": r(classes, h),
    "head.bias": r(classes),
  }
  for i in range(layers):
    b = f"blocks.{i}."
    state.update(
      {
        b + "norm1.weight": 1 + r(h),
        b + "norm1.bias": r(h),
        b + "attn.qkv.weight": r(3 * h, h),
        b + "attn.qkv.bias": r(3 * h),
        b + "attn.proj.weight": r(h, h),
        b + "attn.proj.bias": r(h),
        b + "norm2.weight": 1 + r(h),
        b + "norm2.bias": r(h),
        b + "mlp.fc1.weight": r(f, h),
        b + "mlp.fc1.bias": r(f),
        b + "mlp.fc2.weight": r(h, f),
        b + "mlp.fc2.bias": r(h),
      }
    )
  return state


def _timm_vit_reference(s, x, heads, layers, p=8, eps=1e-6):
  """timm's VisionTransformer.forward_features + CLS pooling, written out in numpy."""

  def ln(t, name):
    mu, var = t.mean(-1, keepdims=True), t.var(-1, keepdims=True)
    return (t - mu) / np.sqrt(var + eps) * s[name + ".weight"] + s[name + ".bias"]

  lin = lambda t, name: t @ s[name + ".weight"].T + s[name + ".bias"]
  b, c, hh, ww = x.shape
  patches = x.reshape(b, c, hh // p, p, ww // p, p).transpose(0, 2, 4, 1, 3, 5)
  w = s["patch_embed.proj.weight"]
  t = patches.reshape(b, -1, c * p * p) @ w.reshape(w.shape[0], -1).T
  t = t + s["patch_embed.proj.bias"]
  t = np.concatenate([np.broadcast_to(s["cls_token"], (b, 1, t.shape[-1])), t], 1)
  t = t + s["pos_embed"]
  n, h = t.shape[1], t.shape[2]
  for i in range(layers):
    pre = f"blocks.{i}."
    qkv = lin(ln(t, pre + "norm1"), pre + "attn.qkv").reshape(b, n, 3, heads, h // heads)
    q, k, v = qkv.transpose(2, 0, 3, 1, 4)  # [b, heads, n, d] each
    att = scipy.special.softmax(q @ k.transpose(0, 1, 3, 2) / np.sqrt(h // heads), -1)
    t = t + lin((att @ v).transpose(0, 2, 1, 3).reshape(b, n, h), pre + "attn.proj")
    y = lin(ln(t, pre + "norm2"), pre + "mlp.fc1")
    y = 0.5 * y * (1 + scipy.special.erf(y / np.sqrt(2)))  # nn.GELU (erf)
    t = t + lin(y, pre + "mlp.fc2")
  return ln(t, "norm")[:, 0]


def test_timm_vit_state_dict_matches_numpy_timm_forward(tmp_path):
  """A timm-layout ViT (fused qkv, timm names, eps 1e-6) read by our loader computes
  what timm computes; timm tensors of other variants fail naming the tensor."""
  rng = np.random.default_rng(7)
  state = _timm_vit_state(rng)
  safetensors.numpy.save_file(state, str(tmp_path / "model.safetensors"))
  (tmp_path / "config.json").write_text(
    json.dumps(
      dict(
        model_type="vit",
        layer_norm_eps=1e-6,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        image_size=32,
        patch_size=8,
      )
    )
  )
  enc = ie.ImageEncoder.from_pretrained(tmp_path, batch_size=8, normalize=False)
  x = _pixels(n=3, seed=4)
  got = enc.encode(x.transpose(0, 2, 3, 1))
  ref = _timm_vit_reference(
    {k: v.astype(np.float64) for k, v in state.items()}, x.astype(np.float64), heads=4, layers=2
  )
  np.testing.assert_allclose(got, ref, atol=ATOL, rtol=1e-5)
  # Sanity: q, k and v really come from different thirds of qkv (a swap changes output).
  swapped = dict(state)
  qkv = state["blocks.0.attn.qkv.weight"]
  swapped["blocks.0.attn.qkv.weight"] = np.concatenate([qkv[32:64], qkv[:32], qkv[64:]])
  hf = ie.timm_vit_to_hf(swapped, "x")
  np.testing.assert_array_equal(hf["encoder.layer.0.attention.attention.query.weight"], qkv[32:64])
  state["blocks.0.ls1.gamma"] = np.ones(32, np.float32)
  safetensors.numpy.save_file(state, str(tmp_path / "model.safetensors"))
  with pytest.raises(DataError, match="timm tensor 'blocks.0.ls1.gamma'"):
    ie.load_vit(tmp_path)
