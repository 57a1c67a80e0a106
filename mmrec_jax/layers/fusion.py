"""Fusion of per-modality item embeddings, chosen by ``model.fusion``.

Every fusion takes ``embs [..., K, D]`` (K sources: the ID embedding and one per
modality) and ``present [..., K]`` bool. A source that is absent (missing modality, or
dropped by modality dropout) is zeroed and excluded from normalisations, so its values
cannot influence the output:
  * ``concat``:    Linear(K*D -> D) of the zero-filled concatenation;
  * ``sum``:       mean over present sources (zeros if none);
  * ``attention``: softmax over present sources of ``q . tanh(W e_k) / sqrt(D)`` with a
                   learned query ``q``; output ``sum_k a_k e_k``;
  * ``gating``:    ``sum_k present_k * sigmoid(W e_k + b) * e_k`` (per-dim gates).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from mmrec_jax.errors import ConfigError
from mmrec_jax.layers.projection import dense

FUSIONS = ("concat", "sum", "attention", "gating")


def _zero_absent(embs: jax.Array, present: jax.Array) -> jax.Array:
  return jnp.where(present[..., None], embs, jnp.zeros((), embs.dtype))


class ConcatFusion(nnx.Module):
  def __init__(self, num_inputs: int, dim: int, *, rngs: nnx.Rngs):
    self.proj = dense(num_inputs * dim, dim, ("hidden", "embed"), rngs=rngs)

  def __call__(self, embs: jax.Array, present: jax.Array) -> jax.Array:
    x = _zero_absent(embs, present)
    return self.proj(x.reshape(*x.shape[:-2], -1))


class SumFusion(nnx.Module):
  def __init__(self, num_inputs: int, dim: int, *, rngs: nnx.Rngs):
    del num_inputs, dim, rngs

  def __call__(self, embs: jax.Array, present: jax.Array) -> jax.Array:
    n = jnp.maximum(jnp.sum(present, axis=-1, keepdims=True), 1).astype(embs.dtype)
    return jnp.sum(_zero_absent(embs, present), axis=-2) / n


class AttentionFusion(nnx.Module):
  def __init__(self, num_inputs: int, dim: int, *, rngs: nnx.Rngs):
    del num_inputs
    self.key = dense(dim, dim, ("embed", "hidden"), rngs=rngs)
    self.query = nnx.Param(
      jax.random.normal(rngs.params(), (dim,)) / jnp.sqrt(dim), out_sharding=("hidden",)
    )

  def weights(self, embs: jax.Array, present: jax.Array) -> jax.Array:
    """Attention weights [..., K]: sum to 1 over present sources, 0 on absent ones."""
    keys = jnp.tanh(self.key(embs))
    logits = (keys @ self.query[...].astype(keys.dtype)).astype(jnp.float32)
    logits = logits / jnp.sqrt(embs.shape[-1])
    # A finite fill (not -inf) keeps rows with no present source NaN-free in the
    # backward pass; their weights are then zeroed.
    logits = jnp.where(present, logits, -1e9)
    w = jax.nn.softmax(logits, axis=-1)
    return jnp.where(present, w, 0.0)

  def __call__(self, embs: jax.Array, present: jax.Array) -> jax.Array:
    w = self.weights(embs, present).astype(embs.dtype)
    return jnp.sum(w[..., None] * _zero_absent(embs, present), axis=-2)


class GatingFusion(nnx.Module):
  def __init__(self, num_inputs: int, dim: int, *, rngs: nnx.Rngs):
    del num_inputs
    self.gate = dense(dim, dim, ("embed", "hidden"), rngs=rngs)

  def __call__(self, embs: jax.Array, present: jax.Array) -> jax.Array:
    x = _zero_absent(embs, present)
    return jnp.sum(jax.nn.sigmoid(self.gate(x)) * x, axis=-2)


def make_fusion(name: str, num_inputs: int, dim: int, *, rngs: nnx.Rngs) -> nnx.Module:
  """The fusion module named by ``model.fusion``; unknown names raise."""
  classes = {
    "concat": ConcatFusion,
    "sum": SumFusion,
    "attention": AttentionFusion,
    "gating": GatingFusion,
  }
  if name not in classes:
    raise ConfigError(f"model.fusion={name!r} is not one of {list(FUSIONS)}")
  return classes[name](num_inputs, dim, rngs=rngs)
