"""The batch contract of the train step: which keys it reads, their shapes, checks.

A training batch is a dict of global arrays sharded on the mesh's 'data' axis:
``user [B]``, ``pos [B]``, ``neg [B, N]`` (absent with the in-batch sampler), ``pos_logq
[B]`` (sampled softmax with in-batch negatives and logQ correction), and with
``input.stream_features`` the feature rows of the batch items: ``feat_pos/<m> [B, d]``,
``mask_pos/<m> [B]``, ``feat_neg/<m> [B, N, d]``, ``mask_neg/<m> [B, N]``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from mmrec_jax import sharding
from mmrec_jax.errors import DataError


@dataclasses.dataclass(frozen=True)
class BatchContract:
  """What the step reads from a batch, given the sampler, loss and feature placement."""

  in_batch: bool
  use_logq: bool
  stream: bool
  modalities: tuple[str, ...]
  feature_dims: Mapping[str, int]

  def keys(self) -> tuple[str, ...]:
    """Keys the step reads from a batch (others are ignored)."""
    keys = ["user", "pos"]
    keys.append("pos_logq" if self.use_logq else None)
    if not self.in_batch:
      keys.append("neg")
    if self.stream:
      for m in self.modalities:
        keys += [f"feat_pos/{m}", f"mask_pos/{m}"]
        if not self.in_batch:
          keys += [f"feat_neg/{m}", f"mask_neg/{m}"]
    return tuple(k for k in keys if k is not None)

  def select(self, batch: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
    """The keys the step reads; a missing one is a one-line DataError."""
    keys = self.keys()
    missing = [k for k in keys if k not in batch]
    if missing:
      raise DataError("train batch", f"missing keys {missing}; has {sorted(batch)}")
    return {k: batch[k] for k in keys}

  def abstract(
    self, mesh: Mesh, batch_size: int, num_negatives: int = 1
  ) -> dict[str, jax.ShapeDtypeStruct]:
    """ShapeDtypeStructs of a global batch (for lowering and tests)."""
    sh = NamedSharding(mesh, P(sharding.DATA))
    b, n = batch_size, num_negatives
    shapes = {
      "user": ((b,), jnp.int32),
      "pos": ((b,), jnp.int32),
      "neg": ((b, n), jnp.int32),
      "pos_logq": ((b,), jnp.float32),
    }
    for m in self.modalities:
      d = int(self.feature_dims[m])
      shapes.update(
        {
          f"feat_pos/{m}": ((b, d), jnp.float32),
          f"mask_pos/{m}": ((b,), bool),
          f"feat_neg/{m}": ((b, n, d), jnp.float32),
          f"mask_neg/{m}": ((b, n), bool),
        }
      )
    return {k: jax.ShapeDtypeStruct(*shapes[k], sharding=sh) for k in self.keys()}

  def item_ids(self, batch: Mapping[str, jax.Array]) -> jax.Array:
    """[B, 1+N] item ids of the batch, positive first ([B, 1] with in-batch negatives)."""
    pos = batch["pos"]
    return pos[:, None] if self.in_batch else jnp.concatenate([pos[:, None], batch["neg"]], 1)
