"""Reading ``torch.save`` state dicts (``.pth`` / ``.pt`` zip files) without torch.

Why: torchvision publishes its ImageNet weights as ``.pth`` files, and a user with a
fine-tuned CNN has ``torch.save(model.state_dict(), path)``. mmrec_jax never imports torch
at run time, so either the user converts the file once (``safetensors.torch.save_file(
model.state_dict(), "resnet50.safetensors")``, which needs torch) or we read the format
ourselves. Reading is feasible and safe for *state dicts*: since PyTorch 1.6 ``torch.save``
writes a zip archive holding ``data.pkl`` (a small pickle describing the tensors) and one
raw little-endian buffer per storage (``data/<key>``). The pickle only ever names a handful
of globals -- ``collections.OrderedDict``, ``torch._utils._rebuild_tensor_v2``,
``torch._utils._rebuild_parameter`` and the ``torch.<Type>Storage`` classes -- so a
restricted unpickler that resolves exactly those to numpy rebuilders, and refuses every
other global, reads any state dict and cannot run code from a malicious file. This is the
same idea as ``torch.load(weights_only=True)``, torch's own default since 2.6.

Not read, each failing with a message that says how to convert:
  * the legacy (pre-1.6, ``_use_new_zipfile_serialization=False``) format, a bare pickle
    stream with storages appended; supporting it would double this file for files that
    are rare today;
  * whole pickled models (``torch.save(model)``): their pickle names the model classes,
    which is exactly what the restriction forbids;
  * tensor subclasses, quantized and sparse tensors.
"""

from __future__ import annotations

import collections
import io
import os
import pathlib
import pickle
import zipfile
from typing import Any

import numpy as np

from mmrec_jax.errors import DataError

CONVERT = (
  "convert it once where torch is installed: "
  'safetensors.torch.save_file(torch.load(path), "model.safetensors")'
)

# torch.<Name>Storage -> numpy dtype of its elements ("bfloat16": no numpy dtype, widened).
_STORAGE_DTYPES = {
  "FloatStorage": np.dtype("<f4"),
  "DoubleStorage": np.dtype("<f8"),
  "HalfStorage": np.dtype("<f2"),
  "BFloat16Storage": "bfloat16",
  "LongStorage": np.dtype("<i8"),
  "IntStorage": np.dtype("<i4"),
  "ShortStorage": np.dtype("<i2"),
  "CharStorage": np.dtype("i1"),
  "ByteStorage": np.dtype("u1"),
  "BoolStorage": np.dtype("?"),
}


class _StorageType:
  """What a pickled ``torch.<Name>Storage`` global resolves to: its element dtype."""

  def __init__(self, name: str):
    self.name = name
    self.dtype = _STORAGE_DTYPES[name]


def _bfloat16_to_float32(raw: np.ndarray) -> np.ndarray:
  """bfloat16 bit patterns (uint16) -> float32: they are the high half of a float32."""
  return (raw.astype(np.uint32) << 16).view(np.float32)


def _rebuild_tensor(storage, offset, size, stride, *_ignored) -> np.ndarray:
  """``torch._utils._rebuild_tensor_v2``: a strided view of a storage, copied out."""
  flat, where = storage
  size, stride = tuple(int(s) for s in size), tuple(int(s) for s in stride)
  if any(s < 0 for s in size + stride) or offset < 0:
    raise DataError(where, f"bad tensor size {size} / stride {stride} / offset {offset}")
  if size and min(size) == 0:
    return np.zeros(size, flat.dtype)
  last = offset + sum((n - 1) * s for n, s in zip(size, stride))
  if last >= flat.size:
    raise DataError(where, f"tensor of size {size} overruns its storage of {flat.size} elements")
  view = np.lib.stride_tricks.as_strided(
    flat[offset:], shape=size, strides=tuple(s * flat.itemsize for s in stride), writeable=False
  )
  return np.array(view)


def _rebuild_parameter(data, *_ignored) -> np.ndarray:
  """``torch._utils._rebuild_parameter(_with_state)``: a Parameter is its data here."""
  return data


_GLOBALS = {
  ("collections", "OrderedDict"): collections.OrderedDict,
  ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
  ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
  ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
}


class _Unpickler(pickle.Unpickler):
  """Resolves only the globals a state dict needs; storages come from the zip."""

  def __init__(self, data: bytes, archive: zipfile.ZipFile, prefix: str, where: str, big: bool):
    super().__init__(io.BytesIO(data))
    self.archive, self.prefix, self.where, self.big = archive, prefix, where, big
    self.storages: dict[str, tuple[np.ndarray, str]] = {}

  def find_class(self, module: str, name: str) -> Any:
    if (module, name) in _GLOBALS:
      return _GLOBALS[(module, name)]
    if module == "torch" and name in _STORAGE_DTYPES:
      return _StorageType(name)
    raise DataError(
      self.where,
      f"the pickle names {module}.{name}, which a tensor state dict does not need; "
      "only state dicts (torch.save(model.state_dict(), path)) are read, never pickled "
      f"objects (a whole model, or a file that may run code); {CONVERT}",
    )

  def persistent_load(self, pid: Any) -> tuple[np.ndarray, str]:
    if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
      raise DataError(self.where, f"unsupported persistent id {str(pid)[:80]!r}")
    _, kind, key, _location, numel = pid
    if not isinstance(kind, _StorageType):
      raise DataError(self.where, f"storage of unsupported type {kind!r}")
    key = str(key)
    if key not in self.storages:
      name = f"{self.prefix}data/{key}"
      try:
        raw = self.archive.read(name)
      except KeyError:
        raise DataError(self.where, f"storage {name} is missing from the archive") from None
      if kind.dtype == "bfloat16":
        flat = _bfloat16_to_float32(np.frombuffer(raw, ">u2" if self.big else "<u2"))
      else:
        dtype = kind.dtype.newbyteorder(">") if self.big else kind.dtype
        flat = np.frombuffer(raw, dtype).astype(kind.dtype.newbyteorder("="), copy=False)
      if flat.size < int(numel):
        raise DataError(self.where, f"storage {name} has {flat.size} elements, expected {numel}")
      self.storages[key] = (flat, self.where)
    return self.storages[key]


def load(path: os.PathLike | str) -> dict[str, np.ndarray]:
  """Reads a ``torch.save`` zip file of a state dict -> ``{name: numpy array}``.

  A checkpoint dict that nests the state dict under ``"state_dict"`` or ``"model"`` (as
  training scripts save it) is unwrapped. Non-tensor entries fail naming their key.
  """
  path = pathlib.Path(path)
  where = str(path)
  if not zipfile.is_zipfile(path):
    with open(path, "rb") as f:
      head = f.read(2)
    kind = "the legacy (PyTorch < 1.6) torch.save format" if head[:1] == b"\x80" else "not a zip"
    raise DataError(where, f"{kind}; mmrec_jax reads torch.save zip files only; {CONVERT}")
  with zipfile.ZipFile(path) as archive:
    pickles = [n for n in archive.namelist() if n.endswith("data.pkl")]
    if len(pickles) != 1:
      raise DataError(where, f"expected one data.pkl in the archive, found {len(pickles)}")
    prefix = pickles[0][: -len("data.pkl")]
    order = prefix + "byteorder"
    big = order in archive.namelist() and archive.read(order).strip() == b"big"
    try:
      obj = _Unpickler(archive.read(pickles[0]), archive, prefix, where, big).load()
    except DataError:
      raise
    except Exception as e:  # a truncated or corrupt pickle
      raise DataError(where, f"cannot read the pickle ({type(e).__name__}: {e})") from None
  if isinstance(obj, dict):
    for key in ("state_dict", "model"):
      if isinstance(obj.get(key), dict):
        obj = obj[key]
        break
  if not isinstance(obj, dict):
    raise DataError(where, f"holds a {type(obj).__name__}, not a state dict; {CONVERT}")
  out: dict[str, np.ndarray] = {}
  for k, v in obj.items():
    if not isinstance(v, np.ndarray):
      raise DataError(where, f"entry {k!r} is a {type(v).__name__}, not a tensor")
    out[str(k)] = v
  return out
