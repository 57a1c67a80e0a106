"""Projections of frozen modality features into the embedding space."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

_init = nnx.initializers.lecun_normal()


def dense(
  in_dim: int,
  out_dim: int,
  axes: tuple[str | None, str | None],
  *,
  rngs: nnx.Rngs,
  use_bias: bool = True,
) -> nnx.Linear:
  """nnx.Linear whose kernel carries logical axes (mapped by sharding.LOGICAL_AXIS_RULES)."""
  return nnx.Linear(
    in_dim,
    out_dim,
    use_bias=use_bias,
    kernel_init=nnx.with_partitioning(_init, axes),
    bias_init=nnx.with_partitioning(nnx.initializers.zeros_init(), (axes[1],)),
    rngs=rngs,
  )


def dropout(x: jax.Array, rate: float, rng: jax.Array | None) -> jax.Array:
  """Inverted dropout; identity when ``rng`` is None (evaluation) or rate is 0.

  An explicit key instead of nnx.Rngs state keeps the model stateless inside jit.
  """
  if rng is None or rate <= 0:
    return x
  keep = jax.random.bernoulli(rng, 1.0 - rate, x.shape)
  return jnp.where(keep, x / (1.0 - rate), 0).astype(x.dtype)


class ModalityMLP(nnx.Module):
  """``Linear(d_m, hidden) -> relu -> dropout -> Linear(hidden, embed_dim)``."""

  def __init__(
    self, in_dim: int, hidden_dim: int, out_dim: int, *, rngs: nnx.Rngs, dropout_rate: float = 0.0
  ):
    self.fc1 = dense(in_dim, hidden_dim, (None, "hidden"), rngs=rngs)
    self.fc2 = dense(hidden_dim, out_dim, ("hidden", "embed"), rngs=rngs)
    self.dropout_rate = dropout_rate

  def __call__(self, x: jax.Array, rng: jax.Array | None = None) -> jax.Array:
    h = jax.nn.relu(self.fc1(x))
    return self.fc2(dropout(h, self.dropout_rate, rng))
