"""MPNet and CLIP text towers in Flax against transformers / sentence-transformers.

No pretrained weights are reachable here, so each check builds a tiny model with random
weights from transformers' own config classes (MPNetConfig/MPNetModel,
CLIPTextConfig/CLIPTextModel(WithProjection), CLIPConfig/CLIPModel), saves it with
``save_pretrained`` and compares the Flax module that loads that directory (within
1e-4). Sequence lengths go past 64 tokens so MPNet's logarithmic relative-position
buckets are exercised, and the whole path -- tokenizer.json, padding to buckets, pooling,
normalisation, the extraction command's encoder names -- is checked against
sentence-transformers on an all-mpnet-base-v2-shaped directory.
"""

import json
import os
import pathlib

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Hard imports: these are in the `test` extra, so a broken install must fail, not skip.
import sentence_transformers
import tokenizers
import torch
import transformers

from mmrec_jax.errors import ConfigError, DataError
from mmrec_jax.features import clip_text, extract, mpnet
from mmrec_jax.features import text_encoder as te

ATOL = 1e-4
WORDS = (
  "love war city night family secret journey young old man woman detective ship "
  "space future past dream friend enemy king queen music school crime money power "
  "island river mountain storm fire robot home road escape revenge heart truth lie "
  "game hunter killer child father mother village winter summer"
).split()
SIZES = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)


def _randomize(model) -> None:
  """Larger random LayerNorm/bias values than the init, so a swapped tensor shows."""
  g = torch.Generator().manual_seed(1)
  with torch.no_grad():
    for name, p in model.named_parameters():
      if "LayerNorm" in name or "layer_norm" in name or name.endswith("bias"):
        p.add_(0.3 * torch.randn(p.shape, generator=g))
      if "relative_attention_bias" in name:
        p.normal_(0.0, 1.0, generator=g)


def _ids(rng, batch: int, length: int, lengths: list[int], low: int, high: int, pad: int):
  ids = rng.integers(low, high, size=(batch, length)).astype(np.int32)
  mask = np.zeros_like(ids)
  for r, n in enumerate(lengths):
    mask[r, :n] = 1
  ids[mask == 0] = pad
  return ids, mask


def test_mpnet_buckets_match_transformers():
  n = 700  # every bucket, both directions, the log-spaced edges and the 128 cap
  rel = torch.arange(n)[None, :] - torch.arange(n)[:, None]
  want = transformers.models.mpnet.modeling_mpnet.MPNetEncoder.relative_position_bucket(rel)
  np.testing.assert_array_equal(mpnet.relative_position_buckets(n), want.numpy())


def test_random_mpnet_matches_transformers(tmp_path):
  torch.manual_seed(0)
  model = transformers.MPNetModel(
    transformers.MPNetConfig(vocab_size=99, max_position_embeddings=200, **SIZES)
  ).eval()
  _randomize(model)
  model.save_pretrained(tmp_path, safe_serialization=True)  # with the unused pooler
  flax_model, cfg = te.load_text_model(tmp_path)
  assert isinstance(flax_model, mpnet.MPNetEncoder) and cfg.family == "mpnet"
  assert cfg.max_tokens == 198
  ids, mask = _ids(np.random.default_rng(0), 3, 150, [150, 90, 5], 3, 99, 1)
  with torch.no_grad():
    ref = model(
      input_ids=torch.from_numpy(ids).long(), attention_mask=torch.from_numpy(mask).long()
    ).last_hidden_state.numpy()
  got = np.asarray(flax_model(ids, mask, np.zeros_like(ids)))
  keep = mask.astype(bool)  # padded positions are never pooled
  np.testing.assert_allclose(got[keep], ref[keep], atol=ATOL, rtol=1e-4)


def _clip_text_config(**kw):
  return transformers.CLIPTextConfig(
    vocab_size=99,
    max_position_embeddings=16,
    projection_dim=8,
    pad_token_id=1,
    bos_token_id=97,
    eos_token_id=98,
    **SIZES,
    **kw,
  )


@pytest.mark.parametrize("kind", ["with_projection", "no_projection", "clip_model", "legacy_eos"])
def test_random_clip_text_matches_transformers(tmp_path, kind):
  torch.manual_seed(0)
  if kind == "clip_model":
    vision = transformers.CLIPVisionConfig(image_size=8, patch_size=4, **SIZES)
    model = transformers.CLIPModel(
      transformers.CLIPConfig(
        text_config=_clip_text_config().to_dict(), vision_config=vision.to_dict(), projection_dim=8
      )
    ).eval()
  elif kind == "no_projection":
    model = transformers.CLIPTextModel(_clip_text_config()).eval()
  else:
    cfg = _clip_text_config()
    if kind == "legacy_eos":  # old configs: pooled at argmax(ids), the highest id = EOS
      cfg.eos_token_id = 2
    model = transformers.CLIPTextModelWithProjection(cfg).eval()
  _randomize(model)
  model.save_pretrained(tmp_path, safe_serialization=True)
  flax_model, cfg = te.load_text_model(tmp_path)
  assert isinstance(flax_model, clip_text.CLIPTextEncoder) and cfg.family == "clip_text"
  assert cfg.output_dim == (32 if kind == "no_projection" else 8)
  ids, mask = _ids(np.random.default_rng(1), 4, 16, [16, 9, 3, 12], 3, 97, 1)
  for r, n in enumerate([16, 9, 3, 12]):
    ids[r, 0], ids[r, n - 1] = 97, 98  # start and end of text, as the tokenizer adds
  tids, tmask = torch.from_numpy(ids).long(), torch.from_numpy(mask).long()
  with torch.no_grad():
    if kind == "clip_model":
      out = model.get_text_features(input_ids=tids, attention_mask=tmask)
      ref = getattr(out, "pooler_output", out).numpy()
      hidden = model.text_model(input_ids=tids, attention_mask=tmask).last_hidden_state
    else:
      out = model(input_ids=tids, attention_mask=tmask)
      ref = (out.pooler_output if kind == "no_projection" else out.text_embeds).numpy()
      hidden = out.last_hidden_state
  states = flax_model(ids, mask)
  keep = mask.astype(bool)
  np.testing.assert_allclose(np.asarray(states)[keep], hidden.numpy()[keep], atol=ATOL)
  np.testing.assert_allclose(np.asarray(flax_model.pool(states, ids)), ref, atol=ATOL)


def _word_tokenizer(
  path: pathlib.Path, start: str, end: str, extra: dict[str, int], transformers_files: bool = False
) -> dict[str, int]:
  """A word-level tokenizer.json wrapping texts as ``start ... end`` (offline stand-in)."""
  vocab = dict(extra)
  for w in WORDS:
    vocab[w] = len(vocab)
  tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="<unk>"))
  tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
  tok.post_processor = tokenizers.processors.TemplateProcessing(
    single=f"{start} $A {end}", special_tokens=[(start, vocab[start]), (end, vocab[end])]
  )
  if transformers_files:
    fast = transformers.PreTrainedTokenizerFast(
      tokenizer_object=tok,
      bos_token=start,
      eos_token=end,
      pad_token="<pad>",
      unk_token="<unk>",
      cls_token=start,
      sep_token=end,
    )
    fast.save_pretrained(path)
  else:
    tok.save(str(path / "tokenizer.json"))
  return vocab


def _texts(rng, n: int, longest: int) -> list[str]:
  return [" ".join(rng.choice(WORDS, int(k))) for k in rng.integers(1, longest, n)]


def _mpnet_sentence_dir(path: pathlib.Path) -> pathlib.Path:
  """A sentence-transformers directory laid out like all-mpnet-base-v2's."""
  vocab = _word_tokenizer(
    path, "<s>", "</s>", {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}, transformers_files=True
  )
  torch.manual_seed(0)
  model = transformers.MPNetModel(
    transformers.MPNetConfig(vocab_size=len(vocab), max_position_embeddings=130, **SIZES)
  ).eval()
  _randomize(model)
  model.save_pretrained(path, safe_serialization=True)
  (path / "modules.json").write_text(
    json.dumps(
      [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {
          "idx": 1,
          "name": "1",
          "path": "1_Pooling",
          "type": "sentence_transformers.models.Pooling",
        },
        {
          "idx": 2,
          "name": "2",
          "path": "2_Normalize",
          "type": "sentence_transformers.models.Normalize",
        },
      ]
    )
  )
  (path / "1_Pooling").mkdir()
  (path / "1_Pooling" / "config.json").write_text(
    json.dumps(
      {
        "word_embedding_dimension": 32,
        "pooling_mode_cls_token": False,
        "pooling_mode_mean_tokens": True,
        "pooling_mode_max_tokens": False,
        "pooling_mode_mean_sqrt_len_tokens": False,
      }
    )
  )
  (path / "2_Normalize").mkdir()
  (path / "sentence_bert_config.json").write_text(
    json.dumps({"max_seq_length": 96, "do_lower_case": False})
  )
  return path


def test_mpnet_sentence_encoder_matches_sentence_transformers(tmp_path):
  path = _mpnet_sentence_dir(tmp_path / "mpnet")
  enc = te.SentenceEncoder.from_pretrained(path, batch_size=8)
  assert (enc.pooling, enc.normalize, enc.max_length, enc.dim) == ("mean", True, 96, 32)
  texts = _texts(np.random.default_rng(2), 19, 120) + ["love", "unknownword war"]
  got = enc.encode(texts)
  ref = sentence_transformers.SentenceTransformer(str(path), device="cpu").encode(
    texts, batch_size=8, convert_to_numpy=True
  )
  np.testing.assert_allclose(got, ref, atol=ATOL)
  assert max(len(e.ids) for e in enc.tokenize(texts)) == 96  # truncated like the ref


def test_clip_sentence_encoder_pools_at_end_of_text(tmp_path):
  vocab = _word_tokenizer(
    tmp_path,
    "<|startoftext|>",
    "<|endoftext|>",
    {"<unk>": 0, "<pad>": 1, "<|startoftext|>": 2, "<|endoftext|>": 3},
  )
  torch.manual_seed(0)
  model = transformers.CLIPTextModelWithProjection(
    transformers.CLIPTextConfig(
      vocab_size=len(vocab),
      max_position_embeddings=20,
      projection_dim=8,
      pad_token_id=1,
      bos_token_id=2,
      eos_token_id=3,
      **SIZES,
    )
  ).eval()
  _randomize(model)
  model.save_pretrained(tmp_path, safe_serialization=True)
  enc = te.SentenceEncoder.from_pretrained(tmp_path, batch_size=4, buckets=(8, 16))
  assert (enc.pooling, enc.normalize, enc.max_length, enc.dim) == ("eos", True, 20, 8)
  texts = _texts(np.random.default_rng(3), 9, 40)  # some longer than 20 tokens
  got = enc.encode(texts)
  for text, row in zip(texts, got):
    ids = enc.tokenize([text])[0].ids
    assert len(ids) <= 20 and ids[-1] == 3  # truncation keeps the end-of-text token
    with torch.no_grad():
      ref = model(input_ids=torch.tensor([ids])).text_embeds[0].numpy()
    np.testing.assert_allclose(row, ref / np.linalg.norm(ref), atol=ATOL)
  with pytest.raises(ConfigError, match="eos pooling is CLIP's"):
    te.SentenceEncoder.from_pretrained(_mpnet_sentence_dir(tmp_path / "m"), pooling="eos")


def test_extraction_selects_the_new_encoders_by_name(tmp_path):
  assert extract.ENCODERS["mpnet"] == extract.ENCODERS["clip_text"] == "text"
  path = _mpnet_sentence_dir(tmp_path / "mpnet")
  ds = tmp_path / "ds"
  ds.mkdir()
  (ds / "manifest.json").write_text(json.dumps({"num_items": 5, "modalities": {}}))
  (ds / "items.jsonl").write_text(
    "".join(
      json.dumps({"title": t, "genres": [], "tags": []}) + "\n"
      for t in ["love story", None, "space war", "robot home", "king queen"]
    )
  )
  with pytest.raises(ConfigError, match="is a 'mpnet' model; use --encoder=mpnet"):
    extract.extract_features(ds, "text", "bert", model_dir=path, progress=False)
  shards = extract.extract_features(ds, "text", "mpnet", model_dir=path, progress=False)
  assert shards.modality == "text_mpnet" and shards.dim == 32
  assert shards.mask.tolist() == [True, False, True, True, True]
  ref = te.SentenceEncoder.from_pretrained(path).encode(["love story"])
  np.testing.assert_allclose(shards.to_array()[0], ref[0], atol=1e-5)


def test_loader_errors_name_the_problem(tmp_path):
  torch.manual_seed(0)
  transformers.MPNetModel(
    transformers.MPNetConfig(vocab_size=50, max_position_embeddings=40, **SIZES)
  ).save_pretrained(tmp_path)
  cfg = json.loads((tmp_path / "config.json").read_text())
  (tmp_path / "config.json").write_text(json.dumps(dict(cfg, num_hidden_layers=3)))
  with pytest.raises(DataError, match="missing tensor 'encoder.layer.2"):
    te.load_text_model(tmp_path)
  (tmp_path / "config.json").write_text(json.dumps(dict(cfg, relative_attention_num_buckets=64)))
  with pytest.raises(DataError, match="relative_attention_num_buckets=64"):
    te.load_text_model(tmp_path)
  (tmp_path / "config.json").write_text(json.dumps(dict(cfg, model_type="gpt2")))
  with pytest.raises(DataError, match="model_type 'gpt2' is not supported"):
    te.load_text_model(tmp_path)
  (tmp_path / "config.json").write_text(json.dumps(cfg))
  with pytest.raises(DataError, match="no tokenizer.json found"):
    te.SentenceEncoder.from_pretrained(tmp_path)
