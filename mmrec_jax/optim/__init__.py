"""Optimizers: row-wise sparse ones for tables (``sparse``), optax for dense layers."""

from mmrec_jax.optim.dense import DENSE_OPTIMIZERS, make_dense_optimizer
from mmrec_jax.optim.sparse import (
  SPARSE_OPTIMIZERS,
  SparseOptimizer,
  make_sparse_optimizer,
  unique_ids,
)

__all__ = [
  "DENSE_OPTIMIZERS",
  "SPARSE_OPTIMIZERS",
  "SparseOptimizer",
  "make_dense_optimizer",
  "make_sparse_optimizer",
  "unique_ids",
]
