"""MPNet in Flax NNX: the architecture of sentence-transformers' all-mpnet-base-v2.

all-mpnet-base-v2 is the sentence-transformers model most often used for item text
when MiniLM is too small, and it is not a BERT: its layers are BERT's (post-LayerNorm,
erf GELU), but it has no token-type embeddings and adds a *relative position bias* to
every layer's attention scores -- one learned scalar per head and bucket of the signed
query-key distance (T5-style buckets: 16 per direction, exact up to 8, logarithmic up to
128). Absolute positions are counted from ``padding_idx + 1 = 2`` over the non-pad tokens,
as RoBERTa does. This file reproduces ``transformers.MPNetModel`` exactly, including two
quirks that matter for parity:

  * positions are computed from ``input_ids != 1`` (the hard-coded ``padding_idx``), not
    from the attention mask;
  * the bucket function is always called with 32 buckets and max distance 128, whatever
    ``relative_attention_num_buckets`` says; configs with another value are refused
    rather than silently computing something transformers does not.

Weights: a Hugging Face / sentence-transformers directory with ``config.json``
(``model_type: mpnet``) and safetensors (``mpnet.`` / ``0.auto_model.`` prefixes of task
or wrapped models are stripped; the unused ``pooler.*`` is ignored). Tokenisation,
pooling (mean, per ``modules.json``) and normalisation are text_encoder.SentenceEncoder's.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import pathlib
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from mmrec_jax.errors import DataError
from mmrec_jax.features import loading, transformer

PADDING_IDX = 1  # MPNetEmbeddings.padding_idx (hard-coded in transformers)
NUM_BUCKETS = 32  # MPNetEncoder.compute_position_bias's default
MAX_DISTANCE = 128  # MPNetEncoder.relative_position_bucket's default


@dataclasses.dataclass(frozen=True)
class MPNetConfig:
  """The sizes of an MPNet encoder, as in Hugging Face ``config.json``."""

  vocab_size: int
  hidden_size: int
  num_layers: int
  num_heads: int
  intermediate_size: int
  max_position_embeddings: int
  layer_norm_eps: float = 1e-5
  hidden_act: str = "gelu"
  pad_token_id: int = PADDING_IDX
  model_type: str = "mpnet"

  family = "mpnet"

  @classmethod
  def from_dict(cls, d: dict[str, Any], where: str = "config.json") -> MPNetConfig:
    if d.get("model_type") != "mpnet":
      raise DataError(where, f"model_type {d.get('model_type')!r} is not mpnet")
    try:
      cfg = cls(
        vocab_size=int(d["vocab_size"]),
        hidden_size=int(d["hidden_size"]),
        num_layers=int(d["num_hidden_layers"]),
        num_heads=int(d["num_attention_heads"]),
        intermediate_size=int(d["intermediate_size"]),
        max_position_embeddings=int(d["max_position_embeddings"]),
        layer_norm_eps=float(d.get("layer_norm_eps", 1e-5)),
        hidden_act=str(d.get("hidden_act", "gelu")),
        pad_token_id=int(d.get("pad_token_id", PADDING_IDX)),
      )
    except KeyError as e:
      raise DataError(where, f"missing key {e.args[0]!r}") from None
    if cfg.hidden_size % cfg.num_heads:
      raise DataError(
        where,
        f"hidden_size {cfg.hidden_size} is not divisible by num_attention_heads {cfg.num_heads}",
      )
    buckets = int(d.get("relative_attention_num_buckets", NUM_BUCKETS))
    if buckets != NUM_BUCKETS:
      raise DataError(
        where,
        f"relative_attention_num_buckets={buckets}: transformers' "
        f"MPNetModel always buckets into {NUM_BUCKETS}; only that is "
        "supported",
      )
    transformer.activation(cfg.hidden_act, where)
    return cfg

  @property
  def max_tokens(self) -> int:
    """Positions start at ``PADDING_IDX + 1``: 514 table rows hold 512 tokens."""
    return self.max_position_embeddings - PADDING_IDX - 1

  @property
  def output_dim(self) -> int:
    return self.hidden_size


@functools.lru_cache(maxsize=32)
def relative_position_buckets(length: int) -> np.ndarray:
  """int32 ``[length, length]``: the bucket of key position k seen from query q.

  ``MPNetEncoder.relative_position_bucket`` in numpy, with its float32 arithmetic (the
  log-spaced bucket edges fall on exact powers, where float64 would round differently).
  It depends only on the (static) padded length, so it is a constant under jit.
  """
  ctx = np.arange(length)[:, None]
  mem = np.arange(length)[None, :]
  n = -(mem - ctx)
  half = NUM_BUCKETS // 2
  ret = (n < 0).astype(np.int64) * half
  n = np.abs(n)
  max_exact = half // 2
  ratio = np.maximum(n, 1).astype(np.float32) / np.float32(max_exact)
  large = max_exact + (
    np.log(ratio) / np.float32(math.log(MAX_DISTANCE / max_exact)) * np.float32(half - max_exact)
  ).astype(np.int64)
  large = np.minimum(large, half - 1)
  ret += np.where(n < max_exact, n, large)
  return ret.astype(np.int32)


class MPNetEncoder(nnx.Module):
  """Token ids -> last hidden states ``[batch, length, hidden]`` (no pooler)."""

  def __init__(self, cfg: MPNetConfig, *, dtype: Any = jnp.float32, rngs: nnx.Rngs):
    emb = functools.partial(nnx.Embed, features=cfg.hidden_size, dtype=dtype, rngs=rngs)
    self.word = emb(cfg.vocab_size)
    self.position = emb(cfg.max_position_embeddings)
    self.emb_ln = nnx.LayerNorm(cfg.hidden_size, epsilon=cfg.layer_norm_eps, dtype=dtype, rngs=rngs)
    self.rel_bias = nnx.Embed(NUM_BUCKETS, cfg.num_heads, dtype=jnp.float32, rngs=rngs)
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

  def __call__(
    self, ids: jax.Array, mask: jax.Array, type_ids: jax.Array | None = None
  ) -> jax.Array:
    del type_ids  # MPNet has no token-type embeddings
    not_pad = (ids != PADDING_IDX).astype(jnp.int32)
    pos = jnp.cumsum(not_pad, axis=1) * not_pad + PADDING_IDX
    x = self.emb_ln(self.word(ids) + self.position(pos))
    buckets = relative_position_buckets(int(ids.shape[1]))
    rel = self.rel_bias(jnp.asarray(buckets)).astype(jnp.float32)  # [q, k, heads]
    bias = rel.transpose(2, 0, 1)[None] + transformer.padding_bias(mask.astype(jnp.int32))
    for layer in self.layers:
      x = layer(x, bias)
    return x


def convert_mpnet(state: dict[str, np.ndarray], cfg: MPNetConfig, where: str) -> dict[str, Any]:
  """Hugging Face ``MPNetModel`` tensors -> :class:`MPNetEncoder` params."""
  state = loading.strip_prefix(
    state, "embeddings.word_embeddings.weight", ("mpnet.", "model.", "0.auto_model.")
  )
  t = loading.TensorSource(state, where)
  h, f = cfg.hidden_size, cfg.intermediate_size
  out: dict[str, Any] = {
    "word": {"embedding": t.get("embeddings.word_embeddings.weight", (cfg.vocab_size, h))},
    "position": {
      "embedding": t.get("embeddings.position_embeddings.weight", (cfg.max_position_embeddings, h))
    },
    "emb_ln": t.layer_norm("embeddings.LayerNorm", h),
    "rel_bias": {
      "embedding": t.get("encoder.relative_attention_bias.weight", (NUM_BUCKETS, cfg.num_heads))
    },
    "layers": {},
  }
  for i in range(cfg.num_layers):
    p = f"encoder.layer.{i}."
    out["layers"][i] = {
      "query": t.linear(p + "attention.attn.q", h, h),
      "key": t.linear(p + "attention.attn.k", h, h),
      "value": t.linear(p + "attention.attn.v", h, h),
      "attn_out": t.linear(p + "attention.attn.o", h, h),
      "attn_ln": t.layer_norm(p + "attention.LayerNorm", h),
      "mlp_in": t.linear(p + "intermediate.dense", h, f),
      "mlp_out": t.linear(p + "output.dense", f, h),
      "mlp_ln": t.layer_norm(p + "output.LayerNorm", h),
    }
  if t.has(f"encoder.layer.{cfg.num_layers}.attention.attn.q.weight"):
    raise DataError(
      where, f"checkpoint has more layers than num_hidden_layers={cfg.num_layers} in config.json"
    )
  return out


def load_mpnet(
  model_dir: os.PathLike | str,
  dtype: Any = jnp.float32,
) -> tuple[MPNetEncoder, MPNetConfig]:
  """Reads ``config.json`` + safetensors weights into an :class:`MPNetEncoder`."""
  model_dir = pathlib.Path(model_dir)
  cfg = MPNetConfig.from_dict(
    loading.read_json(model_dir / "config.json"), str(model_dir / "config.json")
  )
  params = convert_mpnet(loading.load_state_dict(model_dir), cfg, str(model_dir))
  model = loading.fill_module(
    lambda: MPNetEncoder(cfg, dtype=dtype, rngs=nnx.Rngs(0)), params, str(model_dir)
  )
  return model, cfg
