"""Transformer layers shared by the Flax text encoders (BERT/RoBERTa, MPNet, CLIP text).

Why a module of its own: the three families differ in embeddings, position handling and
pooling, but their layers are one of two shapes -- post-LayerNorm (BERT, RoBERTa, MPNet:
``x = LN(x + attn(x)); x = LN(x + mlp(x))``) and pre-LayerNorm (CLIP:
``x = x + attn(LN(x)); x = x + mlp(LN(x))``). One copy of each keeps a parity fix in one
place, and lets the family modules (text_encoder.py, mpnet.py, clip_text.py) import it
without importing each other. Both layers take an additive attention ``bias``
(float32, broadcastable to ``[batch, heads, query, key]``) that carries the padding mask,
and for MPNet its relative position bias, and for CLIP its causal mask.

The parameter names below are what the checkpoint converters fill (loading.fill_module
checks every one), so renaming one is a format change.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from mmrec_jax.errors import DataError


def _quick_gelu(x):
  return x * jax.nn.sigmoid(1.702 * x)


# Hugging Face ``hidden_act`` names -> functions (shared with the image encoder).
ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
  "gelu": functools.partial(jax.nn.gelu, approximate=False),
  "gelu_new": functools.partial(jax.nn.gelu, approximate=True),
  "gelu_pytorch_tanh": functools.partial(jax.nn.gelu, approximate=True),
  "quick_gelu": _quick_gelu,
  "relu": jax.nn.relu,
  "silu": jax.nn.silu,
  "swish": jax.nn.silu,
}


def activation(name: str, where: str) -> Callable[[jax.Array], jax.Array]:
  """The function for a ``hidden_act`` name; DataError naming ``where`` if unknown."""
  if name not in ACTIVATIONS:
    raise DataError(where, f"unknown hidden_act {name!r}; supported: {sorted(ACTIVATIONS)}")
  return ACTIVATIONS[name]


def padding_bias(mask: jax.Array) -> jax.Array:
  """``[b, n]`` attention mask (1 = token) -> additive bias ``[b, 1, 1, n]`` (float32)."""
  return jnp.where(mask[:, None, None, :] > 0, 0.0, jnp.finfo(jnp.float32).min)


def _attention(
  x: jax.Array,
  bias: jax.Array,
  num_heads: int,
  query: nnx.Linear,
  key: nnx.Linear,
  value: nnx.Linear,
) -> jax.Array:
  """Multi-head scaled dot-product attention; softmax in float32."""
  b, n, h = x.shape
  split = lambda t: t.reshape(b, n, num_heads, h // num_heads)
  q, k, v = split(query(x)), split(key(x)), split(value(x))
  scores = jnp.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(h // num_heads)
  probs = jax.nn.softmax(scores.astype(jnp.float32) + bias, axis=-1).astype(v.dtype)
  return jnp.einsum("bhqk,bkhd->bqhd", probs, v).reshape(b, n, h)


class PostLNLayer(nnx.Module):
  """One post-LayerNorm layer: ``BertLayer`` / ``RobertaLayer`` / ``MPNetLayer``."""

  def __init__(
    self,
    hidden: int,
    intermediate: int,
    num_heads: int,
    eps: float,
    act: str,
    dtype: Any,
    rngs: nnx.Rngs,
  ):
    lin = functools.partial(nnx.Linear, dtype=dtype, rngs=rngs)
    ln = functools.partial(nnx.LayerNorm, epsilon=eps, dtype=dtype, rngs=rngs)
    h, f = hidden, intermediate
    self.query, self.key, self.value, self.attn_out = lin(h, h), lin(h, h), lin(h, h), lin(h, h)
    self.attn_ln = ln(h)
    self.mlp_in, self.mlp_out = lin(h, f), lin(f, h)
    self.mlp_ln = ln(h)
    self.num_heads = num_heads
    self.act = ACTIVATIONS[act]

  def __call__(self, x: jax.Array, bias: jax.Array) -> jax.Array:
    ctx = _attention(x, bias, self.num_heads, self.query, self.key, self.value)
    x = self.attn_ln(x + self.attn_out(ctx))
    return self.mlp_ln(x + self.mlp_out(self.act(self.mlp_in(x))))


class PreLNLayer(nnx.Module):
  """One pre-LayerNorm layer: ``CLIPEncoderLayer`` (text tower)."""

  def __init__(
    self,
    hidden: int,
    intermediate: int,
    num_heads: int,
    eps: float,
    act: str,
    dtype: Any,
    rngs: nnx.Rngs,
  ):
    lin = functools.partial(nnx.Linear, dtype=dtype, rngs=rngs)
    ln = functools.partial(nnx.LayerNorm, epsilon=eps, dtype=dtype, rngs=rngs)
    h, f = hidden, intermediate
    self.ln1, self.ln2 = ln(h), ln(h)
    self.query, self.key, self.value, self.attn_out = lin(h, h), lin(h, h), lin(h, h), lin(h, h)
    self.fc1, self.fc2 = lin(h, f), lin(f, h)
    self.num_heads = num_heads
    self.act = ACTIVATIONS[act]

  def __call__(self, x: jax.Array, bias: jax.Array) -> jax.Array:
    ctx = _attention(self.ln1(x), bias, self.num_heads, self.query, self.key, self.value)
    x = x + self.attn_out(ctx)
    return x + self.fc2(self.act(self.fc1(self.ln2(x))))
