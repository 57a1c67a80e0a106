"""EASE with item content (Jeunen, Van Balen & Goethals, RecSys 2020: "CEASE"/"Add-EASE").

Why: EASE is the strongest classic baseline on MovieLens here (benchmarks/RESULTS_baselines.md),
but it is blind to item content, and an item with no training interaction gets an all-zero
column of ``B`` (it can never be recommended). The paper's collective variant stacks the
item side information under the interaction matrix as extra "pseudo-users",
``X_aug = [X; sqrt(w) F^T]``, so the closed form is EASE's on a Gram with a content term:

  ``G = X^T X + w F F^T``,  ``P = (G + lambda I)^-1``,  ``B = I - P diag(1 / diag(P))``,
  ``B_jj = 0``;  score ``s(u, j) = X_u . B[:, j]``.

``F`` [items, d]: each of the model's modalities (``data.modalities``), rows L2-normalised
(so every item has the same content self-similarity 1 whatever its feature scale) and the
modalities concatenated, each scaled by ``1/sqrt(#modalities)``; items without a modality's
row get zeros there. ``w`` is ``model.content_weight`` (``-1`` = 30, a middle value of the
grid in benchmarks/RESULTS_cease_grid.md; experiments/ml100k.py uses that grid's pick, 100);
``lambda`` is ``model.reg_weight`` (``-1`` = 500, as EASE). With no modality it is EASE
exactly.

What the content term does: it adds ``w cos(f_i, f_j)`` to the co-occurrence of items i and
j, so items with similar content share weight even where co-occurrence is sparse, and a
cold item's column of ``B`` is no longer zero (it is scored through the items its content
resembles). Sharding and memory: as EASE (``ease.py``), plus one more ``I x I`` Gram while
fitting (``gram`` of the ``[d, I]`` feature matrix, row-sharded over its d rows).
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from mmrec_jax import sharding
from mmrec_jax.errors import ConfigError, DataError
from mmrec_jax.models import fitted_base as fb
from mmrec_jax.models.ease import EASE
from mmrec_jax.models.graph_base import hparam


def content_matrix(info, modalities: tuple[str, ...], num_items: int) -> np.ndarray:
  """``F^T`` [d, num_items] float32 (module doc), zero columns for padded items."""
  parts = []
  for m in modalities:
    f = np.asarray(info.features[m], np.float32)
    if f.ndim != 2 or f.shape[0] != info.num_items:
      raise DataError(f"features[{m!r}]", f"shape {f.shape}, expected ({info.num_items}, d)")
    if not np.all(np.isfinite(f)):
      raise DataError(f"features[{m!r}]", "has non-finite values")
    mask = getattr(info, "feature_masks", {}).get(m)
    if mask is not None:
      f = np.where(np.asarray(mask, bool)[:, None], f, 0.0)
    norm = np.linalg.norm(f, axis=1, keepdims=True)
    parts.append(np.where(norm > 0, f / np.maximum(norm, 1e-12), 0.0) / np.sqrt(len(modalities)))
  f = np.concatenate(parts, axis=1)
  out = np.zeros((f.shape[1], num_items), np.float32)
  out[:, : info.num_items] = f.T
  return out


class CEASE(EASE):
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
    super().__init__(
      cfg, num_users=num_users, num_items=num_items, feature_dims=feature_dims, rngs=rngs
    )
    self.modalities = tuple(sorted(feature_dims))
    self.content_weight = hparam(cfg, "content_weight")
    if self.content_weight < 0:
      raise ConfigError(f"model.content_weight={self.content_weight} must be >= 0")

  @classmethod
  def fit_data(cls, model_cfg, info, mesh, *, num_users, num_items):
    data = fb.item_item_fit_data(model_cfg, info, mesh, num_users, num_items, num_matrices=4)
    modalities = tuple(sorted(info.features))
    if modalities:
      ft = content_matrix(info, modalities, num_items)
      # gram() reads a matrix row-sharded over every device: pad d to a multiple.
      rows = -(-ft.shape[0] // mesh.size) * mesh.size
      ft = np.pad(ft, ((0, rows - ft.shape[0]), (0, 0)))
      spec = sharding.named_sharding(mesh, "users", None)
      data["content"] = jax.make_array_from_callback(ft.shape, spec, lambda idx: ft[idx])
    return data

  def fit_step(self, data, step):
    del step
    mesh = self.mesh
    g = fb.gram(data["x"], mesh)
    if "content" in data and self.content_weight > 0:
      g = g + self.content_weight * fb.gram(data["content"], mesh)
    p = fb.spd_inverse(fb.add_diagonal(g, self.reg, mesh), mesh)
    self.item_matrix.set_value(fb.row_scaled_zero_diagonal(p, mesh))
    return {"loss": jnp.zeros((), jnp.float32)}
