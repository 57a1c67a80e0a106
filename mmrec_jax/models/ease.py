"""EASE (Steck, WWW 2019): the closed-form item-item linear autoencoder.

``B = argmin |X - X B|^2 + lambda |B|^2`` s.t. ``diag(B) = 0`` has the closed form
``P = (X^T X + lambda I)^-1``, ``B = I - P diag(1 / diag(P))``, i.e. ``B_ij = -P_ij / P_jj``
(i != j), ``B_jj = 0``. ``X`` is the binary train user-item matrix; ``lambda`` is
``model.reg_weight`` (-1 = the paper's 500). Score ``s(u, j) = X_u . B[:, j]``: the towers
are ``users = X`` and ``items = B^T`` (width = padded items).

Sharding: the Gram ``X^T X`` and its inverse are row-sharded over every device and computed
by the distributed kernels of ``fitted_base`` (chunked reduce-scatter, block Gauss-Jordan),
so no device ever holds the whole ``I x I`` matrix while fitting; ``B^T`` is a row-sharded
``Table`` (what checkpoints hold). Since ``P`` is symmetric, ``B^T``'s row ``j`` is
``-P[j, :] / P_jj``, a local operation on each device's rows.

Memory: per device about ``4 (U I + 3 I^2) / n`` bytes to fit (X, Gram/inverse, B^T) and
``4 (2 U I / n + I^2 / mesh.model)`` to evaluate (the evaluator splits the item matrix over
the 'model' axis only). ML-1M (6k x 3.7k) needs ~0.2 GB; ML-25M (162k users x 59k items)
~10 GiB per device to fit on 8 devices and ~11 GiB to evaluate with ``mesh.model=8`` (~22
GiB with ``mesh.model=1``): it fits on 8 accelerators of 80 GB. ``fit_data`` checks this up front.

Serving: no fold-in (a new user is scored from her row of X directly, which serving does
not support yet) and no new items.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax.numpy as jnp
import ml_collections
from flax import nnx

from mmrec_jax.errors import ConfigError
from mmrec_jax.layers.embedding import Table
from mmrec_jax.models import fitted_base as fb
from mmrec_jax.models.graph_base import hparam


class EASE(fb.FittedRecommender):
  one_shot = True

  def __init__(
    self,
    cfg: ml_collections.ConfigDict,
    *,
    num_users: int,
    num_items: int,
    feature_dims: Mapping[str, int],
    rngs: nnx.Rngs,
  ):
    del feature_dims, rngs, num_users  # IDs only; the fit is deterministic
    self.modalities = ()
    self.reg = hparam(cfg, "reg_weight")
    if self.reg <= 0:
      raise ConfigError(f"model.reg_weight={self.reg} must be > 0 for EASE (lambda)")
    self.item_matrix = Table(
      jnp.zeros((num_items, num_items), jnp.float32), out_sharding=("items", "embed")
    )

  @classmethod
  def fit_data(cls, model_cfg, info, mesh, *, num_users, num_items):
    return fb.item_item_fit_data(model_cfg, info, mesh, num_users, num_items)

  def fit_step(self, data, step):
    del step
    mesh = self.mesh
    p = fb.spd_inverse(fb.add_diagonal(fb.gram(data["x"], mesh), self.reg, mesh), mesh)
    self.item_matrix.set_value(fb.row_scaled_zero_diagonal(p, mesh))
    return {"loss": jnp.zeros((), jnp.float32)}

  def towers(self, data):
    return data["x"], self.item_matrix[...]
