"""The BART encoder in Flax NNX: item text as the mean of BART's last encoder states.

Why: the ML-25M multimodal notebooks of NVIDIA Merlin describe each movie synopsis by
``facebook/bart-large``'s *encoder half*, mean-pooled over the tokens (1024-d). BART is a
sequence-to-sequence model; only its encoder runs here, and it differs from BERT in
small ways that this module reproduces from ``transformers.BartModel``'s encoder:

  * token embeddings ``shared`` (``encoder.embed_tokens``, tied), multiplied by
    ``sqrt(d_model)`` when the config has ``scale_embedding`` (BART-large: no);
  * *learned* positions with BART's offset of 2: the table has
    ``max_position_embeddings + 2`` rows and token ``t`` reads row ``t + 2``, whatever
    the padding (right padding, so real tokens are numbered from 0);
  * no token types; ``layernorm_embedding`` on the sum (eps 1e-5, as every BART norm);
  * post-LayerNorm layers, the same arithmetic as BERT's (transformer.PostLNLayer):
    ``self_attn`` q/k/v/out projections, ``self_attn_layer_norm``, ``fc1`` ->
    ``activation_function`` -> ``fc2``, ``final_layer_norm``; no final encoder norm.

The sentence vector is the mean of the last hidden states over the attention mask (the
``<s>``/``</s>`` tokens the tokenizer adds included) -- text_encoder.SentenceEncoder's
mean pooling, which also does the tokenisation (BART's byte-level BPE from
``tokenizer.json``), bucketing and batching. It is not L2-normalised unless asked
(``normalize=True`` or a sentence-transformers ``modules.json`` with ``Normalize``): the
notebooks' features are the raw means.

Weights: a Hugging Face ``save_pretrained`` directory with ``config.json``
(``model_type: bart``) and safetensors of a ``BartModel`` (``encoder.*``, ``shared.*``)
or of a task model nesting it under ``model.`` (``BartForConditionalGeneration``). The
decoder tensors are not read. mBART, PLBart and other BART relatives (pre-LayerNorm,
final encoder norms) are other model_types and are refused by text_encoder.
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

POSITION_OFFSET = 2  # BartLearnedPositionalEmbedding.offset
LAYER_NORM_EPS = 1e-5  # torch.nn.LayerNorm's default, which BART's norms use


@dataclasses.dataclass(frozen=True)
class BartConfig:
  """The encoder sizes of a BART model, as in Hugging Face ``config.json``."""

  vocab_size: int
  hidden_size: int  # d_model
  num_layers: int  # encoder_layers
  num_heads: int  # encoder_attention_heads
  intermediate_size: int  # encoder_ffn_dim
  max_position_embeddings: int
  hidden_act: str = "gelu"  # activation_function
  scale_embedding: bool = False
  pad_token_id: int = 1
  model_type: str = "bart"

  family = "bart"

  @classmethod
  def from_dict(cls, d: dict[str, Any], where: str = "config.json") -> BartConfig:
    if d.get("model_type") != "bart":
      raise DataError(where, f"model_type {d.get('model_type')!r} is not bart")
    try:
      cfg = cls(
        vocab_size=int(d["vocab_size"]),
        hidden_size=int(d["d_model"]),
        num_layers=int(d["encoder_layers"]),
        num_heads=int(d["encoder_attention_heads"]),
        intermediate_size=int(d["encoder_ffn_dim"]),
        max_position_embeddings=int(d["max_position_embeddings"]),
        hidden_act=str(d.get("activation_function", "gelu")),
        scale_embedding=bool(d.get("scale_embedding", False)),
        pad_token_id=int(d.get("pad_token_id", 1)),
      )
    except KeyError as e:
      raise DataError(where, f"missing key {e.args[0]!r}") from None
    except (TypeError, ValueError) as e:
      raise DataError(where, f"bad BART config value ({e})") from None
    if cfg.hidden_size % cfg.num_heads:
      raise DataError(
        where,
        f"d_model {cfg.hidden_size} is not divisible by encoder_attention_heads {cfg.num_heads}",
      )
    transformer.activation(cfg.hidden_act, where)
    return cfg

  @property
  def max_tokens(self) -> int:
    return self.max_position_embeddings

  @property
  def output_dim(self) -> int:
    return self.hidden_size


class BartEncoder(nnx.Module):
  """Token ids -> last encoder hidden states ``[batch, length, d_model]``."""

  def __init__(self, cfg: BartConfig, *, dtype: Any = jnp.float32, rngs: nnx.Rngs):
    h = cfg.hidden_size
    emb = functools.partial(nnx.Embed, features=h, dtype=dtype, rngs=rngs)
    self.token = emb(cfg.vocab_size)
    self.position = emb(cfg.max_position_embeddings + POSITION_OFFSET)
    self.emb_ln = nnx.LayerNorm(h, epsilon=LAYER_NORM_EPS, dtype=dtype, rngs=rngs)
    self.layers = nnx.List(
      [
        transformer.PostLNLayer(
          h, cfg.intermediate_size, cfg.num_heads, LAYER_NORM_EPS, cfg.hidden_act, dtype, rngs
        )
        for _ in range(cfg.num_layers)
      ]
    )
    self.embed_scale = math.sqrt(h) if cfg.scale_embedding else 1.0

  def __call__(self, ids: jax.Array, mask: jax.Array, type_ids: jax.Array | None = None):
    del type_ids  # BART has no token types
    pos = jnp.arange(ids.shape[1]) + POSITION_OFFSET
    x = self.token(ids) * self.embed_scale + self.position(pos)[None]
    x = self.emb_ln(x)
    bias = transformer.padding_bias(mask)
    for layer in self.layers:
      x = layer(x, bias)
    return x


def convert_bart(state: dict[str, np.ndarray], cfg: BartConfig, where: str) -> dict[str, Any]:
  """``BartModel`` (or ``model.``-prefixed task model) tensors -> :class:`BartEncoder` params."""
  state = loading.strip_prefix(state, "encoder.embed_positions.weight", ("model.",))
  t = loading.TensorSource(state, where)
  h, f = cfg.hidden_size, cfg.intermediate_size
  tokens = next(
    (n for n in ("encoder.embed_tokens.weight", "shared.weight") if t.has(n)),
    "encoder.embed_tokens.weight",
  )
  out: dict[str, Any] = {
    "token": {"embedding": t.get(tokens, (cfg.vocab_size, h))},
    "position": {
      "embedding": t.get(
        "encoder.embed_positions.weight", (cfg.max_position_embeddings + POSITION_OFFSET, h)
      )
    },
    "emb_ln": t.layer_norm("encoder.layernorm_embedding", h),
    "layers": {},
  }
  for i in range(cfg.num_layers):
    p = f"encoder.layers.{i}."
    out["layers"][i] = {
      "query": t.linear(p + "self_attn.q_proj", h, h),
      "key": t.linear(p + "self_attn.k_proj", h, h),
      "value": t.linear(p + "self_attn.v_proj", h, h),
      "attn_out": t.linear(p + "self_attn.out_proj", h, h),
      "attn_ln": t.layer_norm(p + "self_attn_layer_norm", h),
      "mlp_in": t.linear(p + "fc1", h, f),
      "mlp_out": t.linear(p + "fc2", f, h),
      "mlp_ln": t.layer_norm(p + "final_layer_norm", h),
    }
  if t.has(f"encoder.layers.{cfg.num_layers}.fc1.weight"):
    raise DataError(
      where, f"checkpoint has more encoder layers than encoder_layers={cfg.num_layers}"
    )
  if t.has("encoder.layer_norm.weight"):
    raise DataError(
      where,
      "checkpoint has a final encoder layer_norm (an mBART-style pre-LayerNorm model), "
      "which BART's arithmetic does not include",
    )
  return out


def load_bart(
  model_dir: os.PathLike | str, dtype: Any = jnp.float32
) -> tuple[BartEncoder, BartConfig]:
  """Reads ``config.json`` + safetensors weights into a :class:`BartEncoder`."""
  model_dir = pathlib.Path(model_dir)
  cfg = BartConfig.from_dict(
    loading.read_json(model_dir / "config.json"), str(model_dir / "config.json")
  )
  params = convert_bart(loading.load_state_dict(model_dir), cfg, str(model_dir))
  model = loading.fill_module(
    lambda: BartEncoder(cfg, dtype=dtype, rngs=nnx.Rngs(0)), params, str(model_dir)
  )
  return model, cfg
