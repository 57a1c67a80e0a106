"""Flax ResNet-50 against torchvision's resnet50 with the same (random) weights.

No pretrained weights can be fetched here, so the reference is torchvision's own
``resnet50`` with random weights and calibrated BatchNorm statistics
(torchvision_ref.random_resnet50), saved as its state dict -- safetensors and
``torch.save`` -- and read back by our loader. Checked: the features (avgpool output)
on random pixels, torchvision's ImageNet preprocessing on PIL images (including the
rounding of the center-crop offset), both together from image files, the ``.pth`` reader
(dtypes, strides, shared storages, refusal of non-tensor pickles) and the errors for
the wrong architecture.
"""

import collections
import dataclasses
import pickle
import zipfile

import jax
import numpy as np
import pytest
import safetensors.numpy
import safetensors.torch

# Hard imports: the `test` extra has them, so a broken install fails instead of skipping.
import torch
import torchvision_ref
from PIL import Image

from mmrec_jax import sharding
from mmrec_jax.errors import DataError
from mmrec_jax.features import resnet, torch_pickle

# float32 on CPU: observed max |diff| ~2e-4 on features of magnitude ~150 (20 layers of
# convolutions summed in a different order), i.e. ~1e-6 relative.
RTOL = 1e-5


def _close(got, ref):
  np.testing.assert_allclose(got, ref, rtol=RTOL, atol=RTOL * np.abs(ref).max())


@pytest.fixture(scope="module")
def ref_model(tmp_path_factory):
  path = tmp_path_factory.mktemp("resnet")
  model = torchvision_ref.random_resnet50(seed=0)
  state = model.state_dict()
  safetensors.torch.save_file(state, path / "resnet50.safetensors")
  torch.save(state, path / "resnet50.pth")
  return model, path


@pytest.fixture(scope="module")
def encoder(ref_model):
  mesh = sharding.make_mesh(devices=jax.devices()[:2])  # batch of 2 split over 2 devices
  return resnet.resnet_encoder(ref_model[1] / "resnet50.safetensors", batch_size=2, mesh=mesh)


def _torch_features(model, x: np.ndarray) -> np.ndarray:
  with torch.no_grad():
    return model(torch.from_numpy(x)).numpy()


def test_features_match_torchvision(ref_model, encoder):
  model, _ = ref_model
  x = np.random.default_rng(0).normal(size=(2, 3, 224, 224)).astype(np.float32)
  ref = _torch_features(model, x)
  got = encoder.encode(x.transpose(0, 2, 3, 1))
  assert got.shape == (2, 2048) and encoder.dim == 2048
  assert np.abs(ref).max() > 1 and ref.std() > 0.1  # not a degenerate all-zero net
  _close(got, ref)


def _image(path, w, h, seed):
  rgb = np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)
  Image.fromarray(rgb).save(path)
  return path


# (width, height): landscape, portrait, an odd crop margin where torchvision's rounding
# (round(35 / 2) = 18) and flooring (17) differ, a small image scaled up, a square one.
SIZES = [(300, 257), (257, 300), (259, 256), (120, 90), (224, 224)]


@pytest.mark.parametrize("w,h", SIZES)
def test_preprocessing_matches_torchvision(tmp_path, w, h):
  path = _image(tmp_path / "x.png", w, h, seed=w + h)
  want = torchvision_ref.imagenet_transform()(Image.open(path).convert("RGB")).numpy()
  got = resnet.imagenet_preprocess()(path)
  assert got.shape == (224, 224, 3)
  np.testing.assert_allclose(got.transpose(2, 0, 1), want, atol=1e-5)
  if (w, h) == (259, 256):  # the rounding matters: HF's flooring would be a pixel off
    floor = dataclasses.replace(resnet.imagenet_preprocess(), round_crop=False)(path)
    assert np.abs(floor.transpose(2, 0, 1) - want).max() > 0.1


@pytest.mark.parametrize("mode,channels", [("L", ()), ("RGBA", (4,))])
def test_grayscale_and_rgba_files_become_rgb(tmp_path, mode, channels):
  arr = np.random.default_rng(1).integers(0, 256, size=(230, 240, *channels), dtype=np.uint8)
  Image.fromarray(arr, mode=mode).save(tmp_path / "x.png")
  want = torchvision_ref.imagenet_transform()(Image.open(tmp_path / "x.png").convert("RGB"))
  got = resnet.imagenet_preprocess()(tmp_path / "x.png")
  np.testing.assert_allclose(got.transpose(2, 0, 1), want.numpy(), atol=1e-5)


def test_image_files_end_to_end(ref_model, encoder, tmp_path):
  """Files -> our Pillow preprocessing + Flax ResNet == torchvision transform + resnet50."""
  model, _ = ref_model
  paths = [_image(tmp_path / "a.jpg", 320, 240, 5), _image(tmp_path / "b.png", 200, 260, 6)]
  pixels, ok, problems = encoder.load([*paths, None, tmp_path / "missing.png"])
  assert ok.tolist() == [True, True, False, False] and len(problems) == 1
  got = encoder.encode(pixels[ok])
  tf = torchvision_ref.imagenet_transform()
  x = torch.stack([tf(Image.open(p).convert("RGB")) for p in paths]).numpy()
  _close(got, _torch_features(model, x))


def test_pth_file_loads_the_same_parameters(ref_model):
  _, path = ref_model
  from flax import nnx

  a, _ = resnet.load_resnet(path / "resnet50.safetensors")
  b, _ = resnet.load_resnet(path / "resnet50.pth")
  sa, sb = nnx.to_pure_dict(nnx.state(a)), nnx.to_pure_dict(nnx.state(b))
  flat_a = jax.tree_util.tree_leaves_with_path(sa)
  flat_b = dict(jax.tree_util.tree_leaves_with_path(sb))
  assert len(flat_a) == len(flat_b) == 53 * 4 + 53  # 53 convs, 53 BNs of 4 tensors
  for k, v in flat_a:
    np.testing.assert_array_equal(np.asarray(v), np.asarray(flat_b[k]))
  # The conv kernel layout: torch [out, in, kh, kw] -> Flax [kh, kw, in, out].
  torch_w = safetensors.numpy.load_file(path / "resnet50.safetensors")["layer2.0.conv2.weight"]
  np.testing.assert_array_equal(
    np.asarray(sa["layer2"][0]["conv2"]["kernel"]), torch_w.T.swapaxes(0, 1)
  )


def test_torch_pickle_reads_dtypes_strides_and_shared_storage(tmp_path):
  base = torch.randn(6, 5)
  sd = collections.OrderedDict(
    w=torch.randn(3, 4),
    transposed=base.t(),  # non-contiguous view
    window=base[2:4, 1:],  # offset into a storage shared with `transposed`
    ids=torch.arange(5),
    bf16=torch.randn(4).bfloat16(),
    half=torch.randn(3).half(),
    flags=torch.tensor([True, False]),
    empty=torch.zeros(0, 3),
    scalar=torch.tensor(3.0),
    param=torch.nn.Parameter(torch.ones(2)),
  )
  torch.save(sd, tmp_path / "sd.pth")
  torch.save({"state_dict": sd, "epoch": 3}, tmp_path / "ckpt.pt")
  for name in ("sd.pth", "ckpt.pt"):
    got = torch_pickle.load(tmp_path / name)
    assert list(got) == list(sd)
    for k, v in sd.items():
      want = v.detach().float().numpy() if v.dtype == torch.bfloat16 else v.detach().numpy()
      assert got[k].dtype == want.dtype and got[k].shape == want.shape, k
      np.testing.assert_array_equal(got[k], want)


def test_torch_pickle_refuses_what_is_not_a_state_dict(tmp_path):
  torch.save(torch.nn.Linear(2, 2), tmp_path / "model.pth")  # a whole pickled module
  with pytest.raises(DataError, match="torch.nn.modules.linear.Linear"):
    torch_pickle.load(tmp_path / "model.pth")
  torch.save({"w": torch.ones(2)}, tmp_path / "old.pth", _use_new_zipfile_serialization=False)
  with pytest.raises(DataError, match="legacy"):
    torch_pickle.load(tmp_path / "old.pth")

  class Evil:
    def __reduce__(self):
      return (print, ("pwned",))

  torch.save({"w": torch.ones(2)}, tmp_path / "evil.pth")
  with zipfile.ZipFile(tmp_path / "evil.pth") as z:
    members = {n: z.read(n) for n in z.namelist()}
  pkl = next(n for n in members if n.endswith("data.pkl"))
  members[pkl] = pickle.dumps(Evil(), protocol=2)
  with zipfile.ZipFile(tmp_path / "evil.pth", "w") as z:
    for n, data in members.items():
      z.writestr(n, data)
  with pytest.raises(DataError, match=r"\.print, which a tensor state dict does not need"):
    torch_pickle.load(tmp_path / "evil.pth")


def test_wrong_architecture_and_files_fail_naming_them(ref_model, tmp_path):
  _, path = ref_model
  state = safetensors.numpy.load_file(path / "resnet50.safetensors")
  state["fc.weight"] = np.zeros((10, 2048), np.float32)  # a classifier: ignored
  extra = dict(state, **{"layer3.6.conv1.weight": np.zeros((256, 1024, 1, 1), np.float32)})
  safetensors.numpy.save_file(extra, tmp_path / "r101ish.safetensors")
  with pytest.raises(DataError, match="layer3.6.conv1.weight"):
    resnet.load_resnet(tmp_path / "r101ish.safetensors")
  missing = {k: v for k, v in state.items() if k != "layer4.2.bn3.running_var"}
  safetensors.numpy.save_file(missing, tmp_path / "cut.safetensors")
  with pytest.raises(DataError, match="layer4.2.bn3.running_var"):
    resnet.load_resnet(tmp_path / "cut.safetensors")
  with pytest.raises(DataError, match="exactly one weight file"):
    resnet.load_resnet(tmp_path)  # a directory with two
  with pytest.raises(DataError, match="unknown ResNet 'resnet34'"):
    resnet.load_resnet(path / "resnet50.pth", "resnet34")
