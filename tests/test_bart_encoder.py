"""Flax BART encoder against transformers' BartModel encoder on random weights.

No pretrained weights are reachable here, so each check builds a small BartConfig model
with random weights (LayerNorms and biases perturbed so a swapped tensor shows), saves
it with ``save_pretrained`` and compares the Flax module that loads that directory:
hidden states and mask-mean pooling on padded batches up to the full position table
(BART's offset of 2), ``scale_embedding``, a ``BartForConditionalGeneration`` checkpoint
(``model.`` prefix), and the whole path -- a byte-level BPE ``tokenizer.json`` read by
transformers' tokenizer for the reference, bucketing, the extraction command's
``bart`` encoder name.
"""

import json
import os

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Hard imports: these are in the `test` extra, so a broken install must fail, not skip.
import safetensors.numpy
import tokenizers
import torch
import transformers
from tokenizers import processors

from mmrec_jax.errors import ConfigError, DataError
from mmrec_jax.features import bart, extract
from mmrec_jax.features import text_encoder as te

ATOL = 1e-4
SMALL = dict(
  vocab_size=300,
  d_model=32,
  encoder_layers=2,
  decoder_layers=1,
  encoder_attention_heads=4,
  decoder_attention_heads=4,
  encoder_ffn_dim=64,
  decoder_ffn_dim=64,
  max_position_embeddings=64,
)
WORDS = (
  "love war city night family secret journey young old man woman detective ship "
  "space future past dream friend enemy king queen music school crime money power"
).split()


def _model(cls=transformers.BartModel, seed=0, **overrides):
  torch.manual_seed(seed)
  model = cls(transformers.BartConfig(**{**SMALL, **overrides})).eval()
  g = torch.Generator().manual_seed(seed + 1)
  with torch.no_grad():
    for name, p in model.named_parameters():
      if "layer_norm" in name or "layernorm" in name or name.endswith("bias"):
        p.add_(0.3 * torch.randn(p.shape, generator=g))
  return model


def _reference(model, ids, mask):
  """transformers' encoder states and their mean over the attention mask."""
  with torch.no_grad():
    h = model.get_encoder()(
      input_ids=torch.from_numpy(ids).long(), attention_mask=torch.from_numpy(mask).long()
    ).last_hidden_state.numpy()
  m = mask[..., None].astype(np.float32)
  return h, (h * m).sum(1) / m.sum(1)


def _ids(rng, lengths, length):
  ids = rng.integers(3, SMALL["vocab_size"], size=(len(lengths), length)).astype(np.int32)
  mask = (np.arange(length)[None] < np.array(lengths)[:, None]).astype(np.int32)
  ids[mask == 0] = 1  # BART's pad id
  return ids, mask


def _flax(flax_model, ids, mask):
  h = np.asarray(flax_model(ids, mask, np.zeros_like(ids)))
  m = mask[..., None].astype(np.float32)
  return h, (h * m).sum(1) / m.sum(1)


@pytest.mark.parametrize("scale_embedding", [False, True])
def test_random_bart_matches_transformers(tmp_path, scale_embedding):
  model = _model(scale_embedding=scale_embedding)
  model.save_pretrained(tmp_path, safe_serialization=True)
  flax_model, cfg = te.load_text_model(tmp_path)
  assert isinstance(flax_model, bart.BartEncoder) and cfg.family == "bart"
  assert (cfg.max_tokens, cfg.output_dim, cfg.pad_token_id) == (64, 32, 1)
  # 64 tokens read the last row of the 66-row position table; pads at the end of a row.
  ids, mask = _ids(np.random.default_rng(0), [64, 30, 3], 64)
  ref_h, ref_mean = _reference(model, ids, mask)
  got_h, got_mean = _flax(flax_model, ids, mask)
  valid = mask.astype(bool)
  np.testing.assert_allclose(got_h[valid], ref_h[valid], atol=ATOL)
  np.testing.assert_allclose(got_mean, ref_mean, atol=ATOL)


def test_conditional_generation_checkpoint_reads_its_encoder(tmp_path):
  """``model.``-prefixed tensors, decoder and LM head present: the encoder half is read."""
  model = _model(transformers.BartForConditionalGeneration, seed=2)
  model.save_pretrained(tmp_path, safe_serialization=True)
  names = safetensors.numpy.load_file(tmp_path / "model.safetensors")
  assert any(k.startswith("model.encoder.") for k in names)
  flax_model, _ = te.load_text_model(tmp_path)
  ids, mask = _ids(np.random.default_rng(1), [20, 7], 24)
  _, ref_mean = _reference(model.model, ids, mask)
  np.testing.assert_allclose(_flax(flax_model, ids, mask)[1], ref_mean, atol=ATOL)


def _bart_dir(path):
  """A BartModel directory with a trained byte-level BPE tokenizer (BART's scheme)."""
  tok = tokenizers.ByteLevelBPETokenizer()
  tok.train_from_iterator(
    [" ".join(WORDS)] * 5,
    vocab_size=SMALL["vocab_size"],
    special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
  )
  tok.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
  assert tok.get_vocab_size() == SMALL["vocab_size"]
  transformers.BartTokenizerFast(tokenizer_object=tok).save_pretrained(path)
  model = _model(seed=4)
  model.save_pretrained(path, safe_serialization=True)
  return model


TEXTS = [
  "Heat (1995). Genres: Action, Crime. A detective and a king of crime.",
  "love",
  " ".join(WORDS * 3),  # longer than the 64-token position table: truncated
  "A young woman's journey into space, and the future.",
  "Night.",
]


def test_sentence_encoder_and_extraction_match_transformers(tmp_path):
  model = _bart_dir(tmp_path / "bart")
  hf_tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "bart")
  batch = hf_tok(TEXTS, padding=True, truncation=True, max_length=64, return_tensors="np")
  assert batch["input_ids"].shape[1] == 64  # the long text fills the table
  _, ref = _reference(model, batch["input_ids"], batch["attention_mask"])

  enc = te.SentenceEncoder.from_pretrained(tmp_path / "bart", batch_size=2, buckets=(8, 16))
  assert (enc.pooling, enc.normalize, enc.max_length, enc.dim) == ("mean", False, 64, 32)
  got = enc.encode(TEXTS)
  np.testing.assert_allclose(got, ref, atol=ATOL)

  # The extraction command's encoder name: items.jsonl texts -> shards, raw means.
  ds = tmp_path / "ds"
  ds.mkdir()
  (ds / "manifest.json").write_text(
    json.dumps({"format_version": 1, "num_users": 1, "num_items": 3, "modalities": {}})
  )
  items = [{"text": TEXTS[0]}, {"title": None}, {"text": TEXTS[3]}]
  (ds / "items.jsonl").write_text("".join(json.dumps(r) + "\n" for r in items))
  with pytest.raises(ConfigError, match="use --encoder=bart"):
    extract.extract_features(ds, "text", "mpnet", model_dir=tmp_path / "bart", progress=False)
  shards = extract.extract_features(
    ds, "text", "bart", model_dir=tmp_path / "bart", batch_size=2, progress=False
  )
  np.testing.assert_array_equal(shards.mask, [True, False, True])
  feats = shards.to_array()
  assert shards.dim == 32 and not feats[1].any()
  np.testing.assert_allclose(feats[[0, 2]], ref[[0, 3]], atol=ATOL)


def test_bad_checkpoints_fail_naming_the_problem(tmp_path):
  model = _model(seed=5)
  model.save_pretrained(tmp_path, safe_serialization=True)
  state = safetensors.numpy.load_file(tmp_path / "model.safetensors")
  cfg = json.loads((tmp_path / "config.json").read_text())

  state["encoder.layer_norm.weight"] = np.ones(32, np.float32)  # mBART-style final norm
  safetensors.numpy.save_file(state, tmp_path / "model.safetensors")
  with pytest.raises(DataError, match="final encoder layer_norm"):
    te.load_text_model(tmp_path)
  del state["encoder.layer_norm.weight"]

  (tmp_path / "config.json").write_text(json.dumps(dict(cfg, encoder_layers=1)))
  safetensors.numpy.save_file(state, tmp_path / "model.safetensors")
  with pytest.raises(DataError, match="more encoder layers than encoder_layers=1"):
    te.load_text_model(tmp_path)

  (tmp_path / "config.json").write_text(json.dumps(dict(cfg, encoder_layers=3)))
  with pytest.raises(DataError, match="missing tensor 'encoder.layers.2.self_attn.q_proj"):
    te.load_text_model(tmp_path)

  (tmp_path / "config.json").write_text(
    json.dumps({k: v for k, v in cfg.items() if k != "d_model"})
  )
  with pytest.raises(DataError, match="missing key 'd_model'"):
    te.load_text_model(tmp_path)

  (tmp_path / "config.json").write_text(json.dumps(dict(cfg, model_type="mbart")))
  with pytest.raises(DataError, match="model_type 'mbart' is not supported"):
    te.load_text_model(tmp_path)
