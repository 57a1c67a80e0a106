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

Cold items (``model.cold_neighbors = k > 0``; our addition, not the paper's). The content
term alone does not make a cold item recommendable: the regression still fits its all-zero
interaction column, so its ``B`` column learns to predict "nobody interacts" and its
scores stay far below the warm items' (benchmarks/RESULTS_cold_start.md: recall@20 0.0004
on 10% held-out items). With ``k > 0``, after the fit, the column of every item with no
train interaction and some content is replaced by the mean of the columns of its ``k``
most content-similar trained items, weighted by their cosine similarity (the DropoutNet
assumption in closed form: a new item is scored like the trained items it resembles):
``B[:, j] = sum_n w_jn B[:, n] / sum_n w_jn``, ``B_jj = 0``. Its scores are then on the
warm items' scale. The neighbours (cosines of ``F``, only positive ones kept) are found on
the host in blocks; the mixing is one ``[C, I] x [I, I]`` product over each device's rows
(``C`` cold items) and a psum, so ``B`` stays row-sharded; it holds ``C x I`` floats per
device for the psum (ML-25M with 10% of its 59k items cold: ~1.4 GB). Warm columns are
unchanged; ``k = 0`` is the paper's model.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from flax import nnx

from mmrec_jax import sharding
from mmrec_jax.errors import ConfigError, DataError
from mmrec_jax.models import fitted_base as fb
from mmrec_jax.models.ease import EASE
from mmrec_jax.models.graph_base import hparam


def cold_neighbours(
  ft: np.ndarray, counts: np.ndarray, k: int, block: int = 1024
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(cold ids [C], neighbour ids [C, k], weights [C, k]) for the cold-item columns (doc).

  ``ft`` is :func:`content_matrix` [d, I]; ``counts`` the train interactions of the real
  items. Cold: count 0 and a non-zero content row. Neighbours: the ``k`` trained items of
  largest positive cosine; weights are those cosines normalised to sum 1 (0 past the
  positive ones; a cold item with none keeps its column). Blocks of cold items bound the
  host memory to ``block x I`` floats.
  """
  num_real = counts.shape[0]
  f = ft[:, :num_real].T  # rows are unit (or zero) vectors
  has_content = np.any(f != 0, axis=1)
  warm = np.flatnonzero(counts > 0)
  cold = np.flatnonzero((counts == 0) & has_content)
  k = min(int(k), warm.size)
  if cold.size == 0 or k == 0:
    return (
      np.zeros(0, np.int32),
      np.zeros((0, max(k, 1)), np.int32),
      np.zeros((0, max(k, 1)), np.float32),
    )
  fw = f[warm]
  nbrs = np.zeros((cold.size, k), np.int32)
  weights = np.zeros((cold.size, k), np.float32)
  for lo in range(0, cold.size, block):
    sim = f[cold[lo : lo + block]] @ fw.T  # [b, W]
    top = np.argpartition(-sim, k - 1, axis=1)[:, :k]
    w = np.maximum(np.take_along_axis(sim, top, axis=1), 0.0)
    total = w.sum(axis=1, keepdims=True)
    nbrs[lo : lo + block] = warm[top]
    weights[lo : lo + block] = np.where(total > 0, w / np.maximum(total, 1e-12), 0.0)
  keep = weights.sum(axis=1) > 0
  return cold[keep].astype(np.int32), nbrs[keep], weights[keep]


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
    self.cold_neighbors = int(cfg.get("cold_neighbors", 0))
    if self.cold_neighbors < 0:
      raise ConfigError(f"model.cold_neighbors={self.cold_neighbors} must be >= 0 (0 = off)")

  @classmethod
  def fit_data(cls, model_cfg, info, mesh, *, num_users, num_items):
    data = fb.item_item_fit_data(model_cfg, info, mesh, num_users, num_items, num_matrices=4)
    modalities = tuple(sorted(info.features))
    if not modalities and int(model_cfg.get("cold_neighbors", 0)) > 0:
      raise ConfigError(
        f"model.cold_neighbors={model_cfg.cold_neighbors} finds neighbours by item content, "
        "but the run has no item features (data.modalities is empty)"
      )
    if modalities:
      ft = content_matrix(info, modalities, num_items)
      # gram() reads a matrix row-sharded over every device: pad d to a multiple.
      rows = -(-ft.shape[0] // mesh.size) * mesh.size
      ft = np.pad(ft, ((0, rows - ft.shape[0]), (0, 0)))
      spec = sharding.named_sharding(mesh, "users", None)
      data["content"] = jax.make_array_from_callback(ft.shape, spec, lambda idx: ft[idx])
      k = int(model_cfg.get("cold_neighbors", 0))
      if k > 0:
        counts = np.bincount(np.asarray(info.train_items, np.int64), minlength=info.num_items)
        cold, nbrs, weights = cold_neighbours(ft, counts[: info.num_items], k)
        if cold.size:
          # One [C, I] mixing matrix, columns (the neighbours) sharded like B's rows.
          mix = np.zeros((cold.size, num_items), np.float32)
          np.add.at(
            mix, (np.repeat(np.arange(cold.size), nbrs.shape[1]), nbrs.ravel()), weights.ravel()
          )
          data["cold_mix"] = jax.make_array_from_callback(
            mix.shape, fb.mixed_rows_sharding(mesh), lambda idx: mix[idx]
          )
          data["cold_ids"] = jax.make_array_from_callback(
            cold.shape, sharding.replicated(mesh), lambda idx: cold[idx]
          )
          logging.info("cease: %d cold items scored through %d content neighbours", cold.size, k)
    return data

  def fit_step(self, data, step):
    del step
    mesh = self.mesh
    g = fb.gram(data["x"], mesh)
    if "content" in data and self.content_weight > 0:
      g = g + self.content_weight * fb.gram(data["content"], mesh)
    p = fb.spd_inverse(fb.add_diagonal(g, self.reg, mesh), mesh)
    bt = fb.row_scaled_zero_diagonal(p, mesh)
    if "cold_mix" in data:
      bt = fb.replace_rows(bt, data["cold_ids"], data["cold_mix"], mesh)
    self.item_matrix.set_value(bt)
    return {"loss": jnp.zeros((), jnp.float32)}
