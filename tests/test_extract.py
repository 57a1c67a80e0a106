"""Feature extraction into a prepared dataset: shards, mask, manifest, resume."""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Hard imports: all in the `test` extra, so a broken install fails instead of skipping.

from mmrec_jax.errors import ConfigError
from mmrec_jax.features import extract

REPO = pathlib.Path(__file__).resolve().parents[1]

NUM_ITEMS = 20
NO_TEXT = {3, 11}  # items with no title, genres, tags or text


def _make_dataset(path, with_images=False):
  path.mkdir(parents=True, exist_ok=True)
  manifest = {
    "format_version": 1,
    "source": "test",
    "num_users": 1,
    "num_items": NUM_ITEMS,
    "modalities": {},
    "checksums": {},
  }
  (path / "manifest.json").write_text(json.dumps(manifest))
  with open(path / "items.jsonl", "w") as f:
    for i in range(NUM_ITEMS):
      rec = {
        "title": f"Movie {i}",
        "genres": ["Drama"] if i % 2 else [],
        "year": 1990 + i,
        "tags": ["tag"] if i % 3 == 0 else [],
        "text": "A plot." if i % 4 else None,
        "image": None,
      }
      if i in NO_TEXT:
        rec.update(title=None, genres=[], tags=[], text=None, year=None)
      if with_images and i % 5:
        rec["image"] = f"img/{i}.png"
      f.write(json.dumps(rec) + "\n")
  return path


def _minilm():
  from mmrec_jax.features import text_encoder

  return text_encoder


def test_item_text():
  rec = {
    "title": "Heat",
    "year": 1995,
    "genres": ["Action", "Crime"],
    "tags": ["pacino"],
    "text": "A heist.",
    "image": None,
  }
  assert extract.item_text(rec) == "Heat (1995). Genres: Action, Crime. Tags: pacino. A heist."
  assert extract.item_text({"title": "Heat (1995)", "year": 1995}) == "Heat (1995)"
  assert extract.item_text({"title": None, "genres": [], "tags": [], "text": " "}) is None


def test_extract_text_resume_and_mask(tmp_path, monkeypatch):
  te = _minilm()
  ds = _make_dataset(tmp_path / "ds")
  calls = []
  real_encode = te.SentenceEncoder.encode

  def counting(self, texts):
    calls.append(len(texts))
    if fail_at and len(calls) == fail_at:
      raise KeyboardInterrupt("simulated interruption")
    return real_encode(self, texts)

  monkeypatch.setattr(te.SentenceEncoder, "encode", counting)
  fail_at = 3  # chunks of 6 items -> 4 chunks; dies while encoding the third
  with pytest.raises(KeyboardInterrupt):
    extract.extract_features(ds, "text", "minilm", chunk_rows=6, batch_size=8, progress=False)
  work = ds / "features" / ".work-text_minilm"
  assert sorted(p.name for p in work.glob("*.done")) == ["chunk-00000.done", "chunk-00001.done"]
  assert "text_minilm" not in json.loads((ds / "manifest.json").read_text())["modalities"]

  calls.clear()
  fail_at = 0
  shards = extract.extract_features(
    ds, "text", "minilm", chunk_rows=6, batch_size=8, progress=False
  )
  assert calls == [6, 2]  # only chunks 2 and 3 (20 items: 6+6+6+2) are encoded again
  assert not work.exists()

  mask = np.ones(NUM_ITEMS, bool)
  mask[list(NO_TEXT)] = False
  np.testing.assert_array_equal(shards.mask, mask)
  feats = shards.to_array()
  assert feats.shape == (NUM_ITEMS, 384)
  assert not feats[~mask].any()
  # Same vectors as encoding every item's text in one go (resume changed nothing).
  items = [json.loads(l) for l in (ds / "items.jsonl").read_text().splitlines()]
  texts = [extract.item_text(r) for r in items]
  import jax

  from mmrec_jax import sharding

  enc = extract.build_encoder(
    "minilm",
    te.minilm_dir().resolve(),
    8,
    "float32",
    None,
    sharding.make_mesh(devices=jax.local_devices()),
  )
  ref = real_encode(enc, [t for t in texts if t is not None])
  np.testing.assert_allclose(feats[mask], ref, atol=1e-5)
  manifest = json.loads((ds / "manifest.json").read_text())  # reread: extraction added
  assert manifest["modalities"]["text_minilm"] == "features/text_minilm"
  assert manifest["source"] == "test"  # rest of the manifest kept

  # Already registered: returned without encoding anything.
  calls.clear()
  again = extract.extract_features(ds, "text", "minilm", progress=False)
  assert calls == [] and again.num_items == NUM_ITEMS


def test_changed_plan_restarts_work(tmp_path):
  _minilm()
  ds = _make_dataset(tmp_path / "ds")
  work = ds / "features" / ".work-text_minilm"
  work.mkdir(parents=True)
  (work / "plan.json").write_text(json.dumps({"chunk_rows": 1}))
  (work / "chunk-00000.done").write_text("stale")
  np.save(work / "chunk-00000.feat.npy", np.ones((1, 384), np.float32))
  shards = extract.extract_features(
    ds, "text", "minilm", chunk_rows=32, batch_size=8, progress=False
  )
  assert np.abs(np.linalg.norm(shards.to_array()[0]) - 1) < 1e-5  # recomputed


def test_extract_images_with_missing_files(tmp_path):
  import torch
  import transformers
  from PIL import Image as image

  ds = _make_dataset(tmp_path / "ds", with_images=True)
  (ds / "img").mkdir()
  for i in range(NUM_ITEMS):
    if i % 5 and i != 7:  # item 7 points at a file that does not exist
      arr = np.random.default_rng(i).integers(0, 256, (40, 30, 3), dtype=np.uint8)
      image.fromarray(arr).save(ds / "img" / f"{i}.png")
  torch.manual_seed(0)
  model = transformers.ViTModel(
    transformers.ViTConfig(
      hidden_size=32,
      num_hidden_layers=1,
      num_attention_heads=4,
      intermediate_size=64,
      image_size=32,
      patch_size=8,
    )
  )
  model.save_pretrained(tmp_path / "vit", safe_serialization=True)
  with pytest.raises(ConfigError, match="--encoder=vit"):
    extract.extract_features(ds, "image", "clip", model_dir=tmp_path / "vit", progress=False)
  shards = extract.extract_features(
    ds, "image", "vit", model_dir=tmp_path / "vit", chunk_rows=8, batch_size=8, progress=False
  )
  want = np.array([bool(i % 5) and i != 7 for i in range(NUM_ITEMS)])
  np.testing.assert_array_equal(shards.mask, want)
  feats = shards.to_array()
  assert feats.shape == (NUM_ITEMS, 32) and not feats[~want].any()
  np.testing.assert_allclose(np.linalg.norm(feats[want], axis=1), 1.0, rtol=1e-5)


def test_bad_names_fail_listing_valid_ones(tmp_path):
  ds = _make_dataset(tmp_path / "ds")
  with pytest.raises(ConfigError, match="valid: \\['text', 'image'\\]"):
    extract.extract_features(ds, "audio", "minilm")
  with pytest.raises(ConfigError, match="valid for image: \\['clip', 'resnet50', 'vit'\\]"):
    extract.extract_features(ds, "image", "minilm")
  with pytest.raises(ConfigError, match="needs --model_dir"):
    extract.extract_features(ds, "image", "vit")
  with pytest.raises(ConfigError, match="needs --model_dir \\(a torchvision state dict"):
    extract.extract_features(ds, "image", "resnet50")


def test_command_line_reports_one_line_error(tmp_path):
  ds = _make_dataset(tmp_path / "ds")
  proc = subprocess.run(
    [
      sys.executable,
      "-m",
      "mmrec_jax.features",
      f"--dataset={ds}",
      "--modality=image",
      "--encoder=vit",
    ],
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert proc.returncode != 0
  assert proc.stderr.strip().splitlines()[-1].startswith("error: features.model_dir")


def _features_cli(*args, timeout=300):
  return subprocess.run(
    [sys.executable, "-m", "mmrec_jax.features", *args],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=timeout,
  )


def test_command_line_with_config_writes_shards_and_mask(tmp_path):
  """--config prepares the experiment's dataset (as main would) and extracts into it."""
  raw = tmp_path / "raw"
  raw.mkdir()
  (raw / "ratings.dat").write_text(
    "".join(
      f"{u}::{i}::{1 + (u + i) % 5}::{1_000_000 + 10 * u + i}\n"
      for u in range(1, 21)
      for i in range(1, NUM_ITEMS + 1)
      if (u + i) % 4
    )
  )
  (raw / "movies.dat").write_text(
    "".join(
      f"{i}::Movie {i} ({1960 + i})::{'Comedy' if i % 2 else 'Drama|War'}\n"
      for i in range(1, NUM_ITEMS + 1)
    ),
    encoding="latin-1",
  )
  overrides = [f"--config.data.path={raw}", f"--config.data.cache_dir={tmp_path / 'cache'}"]
  proc = _features_cli(
    "--config=experiments/ml1m.py:smoke",
    *overrides,
    "--modality=text",
    "--chunk_rows=8",
    "--batch_size=8",
    "--rows_per_shard=16",
    "--noprogress",
  )
  assert proc.returncode == 0, proc.stderr[-2000:]
  prepared = list((tmp_path / "cache" / "prepared").iterdir())
  assert len(prepared) == 1
  ds = prepared[0]
  manifest = json.loads((ds / "manifest.json").read_text())
  assert manifest["num_items"] == NUM_ITEMS  # every movie was rated
  assert proc.stdout.strip().splitlines()[-1] == (
    f"text_minilm: {NUM_ITEMS}/{NUM_ITEMS} items, dim 384 -> {ds}/features/text_minilm"
  )
  manifest = json.loads((ds / "manifest.json").read_text())  # reread: extraction added
  assert manifest["modalities"]["text_minilm"] == "features/text_minilm"
  out = ds / "features" / "text_minilm"
  shard_manifest = json.loads((out / "manifest.json").read_text())
  assert (shard_manifest["dim"], shard_manifest["num_shards"]) == (384, 2)  # 16 + 4 rows
  assert sorted(p.name for p in out.glob("*.npy")) == [
    "mask.npy",
    "shard-00000.npy",
    "shard-00001.npy",
  ]
  mask = np.load(out / "mask.npy")
  assert mask.dtype == bool and mask.shape == (NUM_ITEMS,) and mask.all()
  from mmrec_jax.data import feature_store as feature_io

  shards = feature_io.FeatureShards.open(out, verify=True)  # checksums of every shard
  assert (shards.num_items, shards.dim) == (NUM_ITEMS, 384)
  feats = shards.to_array()
  np.testing.assert_allclose(np.linalg.norm(feats, axis=1), 1.0, rtol=1e-5)
  assert not list((ds / "features").glob(f"{extract.WORK_PREFIX}*"))  # work dir removed
  # The same command again finds the registered modality and encodes nothing.
  again = _features_cli("--config=experiments/ml1m.py:smoke", *overrides, "--noprogress")
  assert again.returncode == 0 and again.stdout == proc.stdout, again.stderr[-2000:]


def test_command_line_needs_exactly_one_of_config_and_dataset(tmp_path):
  ds = _make_dataset(tmp_path / "ds")
  for args in ([], [f"--dataset={ds}", "--config=experiments/ml1m.py:smoke"]):
    proc = _features_cli(*args, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
      "error: features: give exactly one of --config=<experiment config file> and "
      "--dataset=<prepared dataset directory>"
    )


def test_command_line_resnet50_on_image_files_matches_torchvision(tmp_path):
  """The extraction command with a random-weight torchvision resnet50 safetensors file.

  A folder of images of different sizes and formats (item 2 has none, item 3 a missing
  file) -> 2048-d feature shards + mask, each row equal to torchvision's transform +
  resnet50 on the same file.
  """
  import safetensors.torch
  import torch
  import torchvision_ref
  from PIL import Image as image

  ds = tmp_path / "ds"
  ds.mkdir()
  files = {
    0: ("a.jpg", 320, 240),
    1: ("b.png", 200, 260),
    3: ("gone.png", 0, 0),
    4: ("c.png", 259, 256),
  }
  (ds / "img").mkdir()
  with open(ds / "items.jsonl", "w") as f:
    for i in range(5):
      name = files.get(i, (None,))[0]
      f.write(json.dumps({"title": f"Movie {i}", "image": name and f"img/{name}"}) + "\n")
  for i, (name, w, h) in files.items():
    if i != 3:
      arr = np.random.default_rng(i).integers(0, 256, (h, w, 3), dtype=np.uint8)
      image.fromarray(arr).save(ds / "img" / name)
  (ds / "manifest.json").write_text(
    json.dumps({"format_version": 1, "num_users": 1, "num_items": 5, "modalities": {}})
  )
  model = torchvision_ref.random_resnet50(seed=3)
  weights = tmp_path / "resnet50.safetensors"
  safetensors.torch.save_file(model.state_dict(), weights)
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # one CPU device
  proc = subprocess.run(
    [
      sys.executable,
      "-m",
      "mmrec_jax.features",
      f"--dataset={ds}",
      "--modality=image",
      "--encoder=resnet50",
      f"--model_dir={weights}",
      "--batch_size=4",
      "--rows_per_shard=4",
      "--noprogress",
    ],
    cwd=REPO,
    env=env,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert proc.returncode == 0, proc.stderr[-2000:]
  out = ds / "features" / "image_resnet50"
  assert (
    proc.stdout.strip().splitlines()[-1]
    == f"image_resnet50: 3/5 items, dim 2048 -> {ds}/features/image_resnet50"
  )
  assert json.loads((ds / "manifest.json").read_text())["modalities"] == {
    "image_resnet50": "features/image_resnet50"
  }
  from mmrec_jax.data import feature_store

  shards = feature_store.FeatureShards.open(out, verify=True)
  assert (shards.num_items, shards.dim) == (5, 2048)
  assert sorted(p.name for p in out.glob("shard-*.npy")) == ["shard-00000.npy", "shard-00001.npy"]
  np.testing.assert_array_equal(shards.mask, [True, True, False, False, True])
  feats = shards.to_array()
  assert not feats[[2, 3]].any()
  tf = torchvision_ref.imagenet_transform()
  x = torch.stack([tf(image.open(ds / "img" / files[i][0]).convert("RGB")) for i in (0, 1, 4)])
  with torch.no_grad():
    ref = model(x).numpy()
  np.testing.assert_allclose(feats[[0, 1, 4]], ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())
