"""A prepared dataset as a tensorflow-datasets dataset in array_record format, no TensorFlow.

Why: TFDS's ``tfds.data_source`` gives random-access, grain-compatible readers over
array_record files with TFDS's versioning and dataset_info bookkeeping, and none of that
needs TensorFlow (tensorflow-datasets >= 4.9 runs its array_record path on numpy; it is
tested here with TensorFlow absent).

    from mmrec_jax.data import tfds_builder
    data_dir = tfds_builder.build(prepared)                # once; idempotent
    train = tfds_builder.data_source(data_dir, "train")    # len(), train[i] -> dict

Each split becomes one TFDS split with records ``{"user": int32, "item": int32,
"timestamp": int64, "rating": float32}`` in the prepared order (shuffling disabled).
Checks: the prepared files are re-hashed against their manifest sha256 sums before
anything is generated; the manifest's fingerprint, counts and checksums are kept in the
TFDS metadata, and :func:`data_source` refuses a TFDS copy whose fingerprint differs from
the prepared dataset it is asked for. Version 1.0.0 reads prepared format_version 1.
Readers need neither TensorFlow nor this module: a fresh process can call
``tfds.data_source("prepared_interactions", data_dir=...)``.
"""

from __future__ import annotations

import os
import pathlib
from typing import ClassVar

import numpy as np
import tensorflow_datasets as tfds

from mmrec_jax.data.dataset import SPLIT_NAMES, PreparedDataset
from mmrec_jax.errors import DataError

NAME = "prepared_interactions"


class PreparedInteractions(tfds.core.GeneratorBasedBuilder):
  """Interactions of one prepared dataset directory (see module doc)."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES: ClassVar[dict[str, str]] = {
    "1.0.0": "Prepared dataset format_version 1: user, item, timestamp, "
    "rating per split, in (user, time) order."
  }

  # No URL checksums file to look up (nothing is downloaded). Overridden because TFDS
  # derives it from the package's resource path, which fails for namespace/editable
  # installs ("MultiplexedPath only supports directories").
  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls):
    return None

  def __init__(self, *, prepared: PreparedDataset | str | os.PathLike | None = None, **kwargs):
    if prepared is not None and not isinstance(prepared, PreparedDataset):
      prepared = PreparedDataset.open(prepared)
    self._prepared = prepared
    kwargs.setdefault("file_format", "array_record")
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    meta = tfds.core.MetadataDict()
    if self._prepared is not None:
      m = self._prepared.manifest
      meta.update(
        {
          k: m[k]
          for k in (
            "source",
            "num_users",
            "num_items",
            "num_interactions",
            "fingerprint",
            "format_version",
            "checksums",
            "has_timestamp",
            "has_rating",
          )
        }
      )
    return tfds.core.DatasetInfo(
      builder=self,
      description="User-item interactions of an mmrec_jax prepared dataset.",
      features=tfds.features.FeaturesDict(
        {
          "user": tfds.features.Scalar(np.int32),
          "item": tfds.features.Scalar(np.int32),
          "timestamp": tfds.features.Scalar(np.int64),
          "rating": tfds.features.Scalar(np.float32),
        }
      ),
      metadata=meta,
      disable_shuffling=True,
    )

  def _split_generators(self, dl_manager):
    if self._prepared is None:
      raise DataError(NAME, "pass prepared=<prepared dataset> to generate")
    self._prepared.verify()  # sha256 of every prepared file against its manifest
    return {name: self._generate_examples(name) for name in SPLIT_NAMES}

  def _generate_examples(self, name):
    sp = self._prepared.split(name)
    chunk = 1 << 16
    for s in range(0, sp.users.shape[0], chunk):
      u = np.asarray(sp.users[s : s + chunk])
      it = np.asarray(sp.items[s : s + chunk])
      ts = np.asarray(sp.timestamps[s : s + chunk])
      r = np.asarray(sp.ratings[s : s + chunk])
      for j in range(u.shape[0]):
        yield s + j, {"user": u[j], "item": it[j], "timestamp": ts[j], "rating": r[j]}


def default_data_dir(prepared: PreparedDataset) -> pathlib.Path:
  return prepared.path.parent / f"{prepared.path.name}.tfds"


def build(
  prepared: PreparedDataset | str | os.PathLike, data_dir: str | os.PathLike | None = None
) -> pathlib.Path:
  """Writes (if not there yet) the TFDS copy of ``prepared``; returns its data_dir."""
  if not isinstance(prepared, PreparedDataset):
    prepared = PreparedDataset.open(prepared)
  data_dir = pathlib.Path(data_dir) if data_dir else default_data_dir(prepared)
  builder = PreparedInteractions(prepared=prepared, data_dir=str(data_dir))
  existing = _fingerprint_at(data_dir)
  if existing is not None and existing != prepared.manifest["fingerprint"]:
    raise DataError(
      str(data_dir),
      f"holds the TFDS copy of another prepared dataset "
      f"(fingerprint {existing[:12]}); use another data_dir",
    )
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(verify_ssl=True))
  return data_dir


def _fingerprint_at(data_dir: pathlib.Path) -> str | None:
  try:
    b = tfds.builder_from_directory(str(data_dir / NAME / str(PreparedInteractions.VERSION)))
  except Exception:  # (absent or unreadable: not built yet)
    return None
  return (b.info.metadata or {}).get("fingerprint")


def data_source(data_dir: str | os.PathLike, split: str, prepared: PreparedDataset | None = None):
  """Random-access reader of one split (``len()``, ``[i]``), optionally fingerprint-checked."""
  if prepared is not None:
    got = _fingerprint_at(pathlib.Path(data_dir))
    if got != prepared.manifest["fingerprint"]:
      raise DataError(
        str(data_dir),
        f"TFDS copy fingerprint {str(got)[:12]} does not "
        f"match the prepared dataset's {prepared.manifest['fingerprint'][:12]}",
      )
  return tfds.data_source(NAME, data_dir=str(data_dir), split=split)
