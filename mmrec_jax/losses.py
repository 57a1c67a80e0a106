"""Ranking losses on (positive, negative) score pairs, chosen by ``loss.name``.

All losses take the same inputs so the train step is loss-agnostic:
  * ``pos`` [B]: score of each example's positive item;
  * ``neg`` [B, N]: scores of its negatives -- sampled ones, or with the ``in_batch``
    sampler the positives of the other examples (then ``neg_valid`` masks the example's
    own positive and duplicates of it: an item is not its own negative);
  * ``neg_valid`` [B, N] bool or None (all valid).
Scores are cast to float32 first, so bf16 compute still reduces in f32.

Definitions (``mean_b`` = mean over examples):
  * ``bpr``: mean over valid (b, n) pairs of ``-log sigmoid(pos_b - neg_bn)``;
  * ``bce``: ``mean_b[-log sigmoid(pos_b) - sum_n valid_bn * log sigmoid(-neg_bn)]``
    (each negative is one labelled-0 example);
  * ``sampled_softmax``: ``mean_b[-log softmax([pos_b, neg_b.])_0]`` over logits
    ``score / temperature - logQ``; the logQ correction (Yi et al., RecSys 2019)
    subtracts the log sampling probability of every candidate (the positive too), which
    removes the popularity bias of in-batch negatives. ``pos_logq`` [B] and
    ``neg_logq`` [B, N] are given by the step when ``loss.logq_correction``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from mmrec_jax.errors import ConfigError

LOSSES = ("bpr", "bce", "sampled_softmax")


def _valid(neg: jax.Array, neg_valid: jax.Array | None) -> jax.Array:
  return jnp.ones(neg.shape, bool) if neg_valid is None else neg_valid


def bpr_loss(pos: jax.Array, neg: jax.Array, neg_valid: jax.Array | None = None) -> jax.Array:
  pos, neg = pos.astype(jnp.float32), neg.astype(jnp.float32)
  valid = _valid(neg, neg_valid)
  terms = -jax.nn.log_sigmoid(pos[:, None] - neg)
  return jnp.sum(jnp.where(valid, terms, 0.0)) / jnp.maximum(jnp.sum(valid), 1)


def bce_loss(pos: jax.Array, neg: jax.Array, neg_valid: jax.Array | None = None) -> jax.Array:
  pos, neg = pos.astype(jnp.float32), neg.astype(jnp.float32)
  valid = _valid(neg, neg_valid)
  neg_terms = jnp.sum(jnp.where(valid, -jax.nn.log_sigmoid(-neg), 0.0), axis=-1)
  return jnp.mean(-jax.nn.log_sigmoid(pos) + neg_terms)


def sampled_softmax_loss(
  pos: jax.Array,
  neg: jax.Array,
  neg_valid: jax.Array | None = None,
  *,
  pos_logq: jax.Array | None = None,
  neg_logq: jax.Array | None = None,
  temperature: float = 1.0,
) -> jax.Array:
  pos = pos.astype(jnp.float32) / temperature
  neg = neg.astype(jnp.float32) / temperature
  if pos_logq is not None:
    pos = pos - pos_logq.astype(jnp.float32)
  if neg_logq is not None:
    neg = neg - neg_logq.astype(jnp.float32)
  neg = jnp.where(_valid(neg, neg_valid), neg, -jnp.inf)
  logits = jnp.concatenate([pos[:, None], neg], axis=-1)
  return jnp.mean(jax.nn.logsumexp(logits, axis=-1) - pos)


def compute_loss(
  name: str,
  pos: jax.Array,
  neg: jax.Array,
  neg_valid: jax.Array | None = None,
  *,
  pos_logq: jax.Array | None = None,
  neg_logq: jax.Array | None = None,
  temperature: float = 1.0,
) -> jax.Array:
  """The loss named by ``loss.name`` (logQ/temperature only affect sampled_softmax)."""
  if name == "bpr":
    return bpr_loss(pos, neg, neg_valid)
  if name == "bce":
    return bce_loss(pos, neg, neg_valid)
  if name == "sampled_softmax":
    return sampled_softmax_loss(
      pos, neg, neg_valid, pos_logq=pos_logq, neg_logq=neg_logq, temperature=temperature
    )
  raise ConfigError(f"loss.name={name!r} is not one of {list(LOSSES)}")


def check_loss_name(name: str) -> None:
  if name not in LOSSES:
    raise ConfigError(f"loss.name={name!r} is not one of {list(LOSSES)}")
