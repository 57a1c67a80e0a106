"""Load and run an exported mmrec_jax scorer with nothing but numpy and jax.

Why a file with no mmrec_jax import: a serving tier (or another team) should run the
trained model's scoring without the training code, its config schema or its data
pipeline. ``mmrec_jax.serving.export`` writes this file into every export directory as
``scorer.py`` beside the embeddings and the ``jax.export``-serialised functions, so

    import sys; sys.path.insert(0, "EXPORT_DIR"); import scorer
    s = scorer.load("EXPORT_DIR")
    items, scores = s.topk(["u1", "u2"], k=10)          # raw ids in and out
    s.score(["u1"], ["i7"])

works in a process that never imported mmrec_jax. The serialised functions
(``topk.jaxexport``, ``score.jaxexport``) are StableHLO with the ranking semantics of the
library: float32 dot products at HIGHEST precision, excluded items (``exclude[b, l]``,
-1 = padding) at ``-inf``, ties to the lower item index.
"""

from __future__ import annotations

import json
import pathlib

import numpy as np


class ExportedScorer:
  """The exported scoring functions with the embeddings and raw-id maps of one run."""

  def __init__(self, directory: str | pathlib.Path):
    import jax  # noqa: PLC0415
    from jax import export as jax_export  # noqa: PLC0415

    d = pathlib.Path(directory)
    self.meta = json.loads((d / "export.json").read_text())
    self.users = np.load(d / "user_embeddings.npy")
    self.items = np.load(d / "item_embeddings.npy")
    self.user_ids = np.load(d / "user_ids.npy")
    self.item_ids = np.load(d / "item_ids.npy")
    self._user_index = {u: i for i, u in enumerate(self.user_ids.tolist())}
    self._item_index = {u: i for i, u in enumerate(self.item_ids.tolist())}
    self._topk = jax_export.deserialize(bytearray((d / "topk.jaxexport").read_bytes()))
    self._score = jax_export.deserialize(bytearray((d / "score.jaxexport").read_bytes()))
    self.max_k = int(self.meta["max_k"])
    self._users_dev = jax.device_put(self.users)
    self._items_dev = jax.device_put(self.items)
    seen = d / "seen.npz"
    self._seen = dict(np.load(seen)) if seen.exists() else None

  def _index(self, index, ids, kind):
    try:
      return np.asarray([index[str(x)] for x in ids], np.int32)
    except KeyError as e:
      raise KeyError(f"unknown {kind} id {e.args[0]!r}") from None

  def topk_internal(
    self, user_rows: np.ndarray, exclude: np.ndarray
  ) -> tuple[np.ndarray, np.ndarray]:
    """The serialised top-``max_k``: internal ids [B, max_k] and scores."""
    ids, scores = self._topk.call(
      self._users_dev,
      self._items_dev,
      np.asarray(user_rows, np.int32),
      np.asarray(exclude, np.int32),
    )
    return np.asarray(ids), np.asarray(scores)

  def topk(self, user_ids, k: int = 10, exclude_seen: bool = True):
    """Raw item ids [B, k] and scores for raw user ids (seen items excluded)."""
    if not 1 <= k <= self.max_k:
      raise ValueError(f"k={k} must be in [1, {self.max_k}]")
    rows = self._index(self._user_index, user_ids, "user")
    lists = []
    for r in rows:
      if exclude_seen and self._seen is not None:
        p = self._seen["indptr"]
        lists.append(self._seen["indices"][p[r] : p[r + 1]])
      else:
        lists.append(np.zeros(0, np.int32))
    width = max(1, max((len(x) for x in lists), default=1))
    exclude = np.full((len(rows), width), -1, np.int32)
    for n, x in enumerate(lists):
      exclude[n, : len(x)] = x
    ids, scores = self.topk_internal(rows, exclude)
    ids, scores = ids[:, :k], scores[:, :k]
    return np.where(np.isfinite(scores), self.item_ids[ids], ""), scores

  def score(self, user_ids, item_ids) -> np.ndarray:
    u = self._index(self._user_index, user_ids, "user")
    i = self._index(self._item_index, item_ids, "item")
    return np.asarray(self._score.call(self._users_dev, self._items_dev, u, i))


def load(directory: str | pathlib.Path) -> ExportedScorer:
  return ExportedScorer(directory)
