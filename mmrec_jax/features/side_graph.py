r"""A 'graph' (network) modality from side data: items linked by shared tags/genres.

Why a feature modality: every model (VBPR, the two-tower model, the graph models) reads
modalities as item feature tables, and the multimodal graph models (FREEDOM, LATTICE)
turn every modality into an item-item kNN graph by cosine similarity. The side-data graph
is therefore stored as the features whose cosine similarity IS the shared-tag graph:
the IDF-weighted, L2-normalised tag/genre incidence vector of each item. Two items are
similar in proportion to the (rarity-weighted) tags they share, so ``knn_graph`` of this
modality links each item to the k items with which it shares the most informative tags
(:func:`shared_tag_graph`), and FREEDOM/LATTICE take it as one more item-item graph
(``data.modalities=('text', 'graph')``; it shares the non-image mixing weight).

Sources (from a prepared dataset):
  * ``items.jsonl`` fields ``genres``, ``tags`` and ``genome_tags`` (MovieLens genres,
    user tags, the top tag-genome tags of each movie);
  * optionally the MovieLens tag genome (``genome-scores.csv``: movieId,tagId,relevance),
    whose L2-normalised relevance vectors are concatenated to the incidence vectors.
Items with no side data have zero rows and mask False (never linked, see knn.py).
When there are more distinct tags than ``max_dim``, the ``max_dim`` most frequent are kept.

It lives with the other feature extractors (it writes a modality's shards and registers it
like extract.py does); mmrec_jax.graph keeps only the graph computations it uses (knn.py).

  python -m mmrec_jax.features.side_graph --dataset=<prepared dir> [--max_dim=512] \
      [--genome=<ml-25m/genome-scores.csv>] [--name=graph]
"""

from __future__ import annotations

import argparse
import collections
import csv
import math
import pathlib
from collections.abc import Sequence

import jax.numpy as jnp
import numpy as np

from mmrec_jax.data.dataset import PreparedDataset
from mmrec_jax.data.feature_store import write_feature_shards
from mmrec_jax.errors import DataError
from mmrec_jax.features.extract import register_modality
from mmrec_jax.graph.knn import knn_graph
from mmrec_jax.graph.propagation import EdgeList

# ``genome_tags``: each MovieLens movie's most relevant tag-genome tags, written by
# preparation when the genome files are present (mmrec_jax/data/movielens.py).
FIELDS = ("genres", "tags", "genome_tags")


def tag_features(
  item_info: Sequence[dict], fields: Sequence[str] = FIELDS, max_dim: int = 512
) -> tuple[np.ndarray, np.ndarray, list[str]]:
  """IDF-weighted, L2-normalised tag incidence ``[items, n_tags]``, mask, tag names."""
  bags = []
  for row, rec in enumerate(item_info):
    tags = set()
    for f in fields:
      vals = rec.get(f) or []
      if not isinstance(vals, list):
        raise DataError(
          f"items.jsonl row {row}", f"field {f!r} must be a list, got {type(vals).__name__}"
        )
      tags.update(f"{f}:{str(v).strip().lower()}" for v in vals if str(v).strip())
    bags.append(tags)
  df = collections.Counter(t for b in bags for t in b)
  vocab = [t for t, _ in sorted(df.items(), key=lambda kv: (-kv[1], kv[0]))[:max_dim]]
  col = {t: j for j, t in enumerate(vocab)}
  n = len(item_info)
  x = np.zeros((n, max(1, len(vocab))), np.float32)
  for i, b in enumerate(bags):
    for t in b:
      if t in col:
        x[i, col[t]] = math.log((1 + n) / (1 + df[t])) + 1.0  # smoothed IDF
  norm = np.linalg.norm(x, axis=1, keepdims=True)
  mask = norm[:, 0] > 0
  x = np.where(mask[:, None], x / np.maximum(norm, 1e-12), 0).astype(np.float32)
  return x, mask, vocab


def genome_features(
  path: str | pathlib.Path, item_raw_ids: Sequence[str]
) -> tuple[np.ndarray, np.ndarray]:
  """MovieLens tag-genome relevance ``[items, n_genome_tags]`` (0 + mask False if absent)."""
  row_of = {str(r): i for i, r in enumerate(item_raw_ids)}
  entries, tag_ids = [], set()
  with open(path, newline="") as f:
    reader = csv.reader(f)
    header = next(reader, None)
    if header is None or [h.strip() for h in header[:3]] != ["movieId", "tagId", "relevance"]:
      raise DataError(str(path), f"header {header}, expected movieId,tagId,relevance")
    for line, rec in enumerate(reader, start=2):
      try:
        movie, tag, rel = rec[0], int(rec[1]), float(rec[2])
      except (IndexError, ValueError):
        raise DataError(f"{path}:{line}", f"bad row {rec}") from None
      if movie in row_of:
        entries.append((row_of[movie], tag, rel))
        tag_ids.add(tag)
  cols = {t: j for j, t in enumerate(sorted(tag_ids))}
  x = np.zeros((len(item_raw_ids), max(1, len(cols))), np.float32)
  for r, t, v in entries:
    x[r, cols[t]] = v
  mask = np.abs(x).sum(1) > 0
  return x, mask


def shared_tag_graph(features: np.ndarray, mask: np.ndarray, k: int = 10) -> EdgeList:
  """The normalised item-item kNN graph of the side data (on device, chunked top-k)."""
  return knn_graph(jnp.asarray(features), k, jnp.asarray(mask), weighted=True)


def add_graph_modality(
  dataset_dir: str | pathlib.Path,
  *,
  name: str = "graph",
  max_dim: int = 512,
  genome: str | None = None,
) -> pathlib.Path:
  """Writes the side-data features as modality ``name`` of a prepared dataset."""
  ds = PreparedDataset.open(dataset_dir)
  x, mask, _ = tag_features(ds.item_info(), max_dim=max_dim)
  if genome:  # both sources, each L2-normalised: cosine sums their similarities
    g, gmask = genome_features(genome, ds.item_raw_ids())
    g = g / np.maximum(np.linalg.norm(g, axis=1, keepdims=True), 1e-12)
    x, mask = np.concatenate([g, x], axis=1).astype(np.float32), mask | gmask
  if not mask.any():
    raise DataError(
      str(pathlib.Path(dataset_dir) / "items.jsonl"),
      f"no item has any of {list(FIELDS)}; cannot build a graph modality",
    )
  out = pathlib.Path(dataset_dir) / "features" / name
  write_feature_shards(out, x, mask, modality=name, num_items=ds.num_items)
  register_modality(dataset_dir, name, f"features/{name}")
  return out


def main(argv: Sequence[str] | None = None) -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--dataset", required=True)
  p.add_argument("--name", default="graph")
  p.add_argument("--max_dim", type=int, default=512)
  p.add_argument("--genome", default=None)
  a = p.parse_args(argv)
  out = add_graph_modality(a.dataset, name=a.name, max_dim=a.max_dim, genome=a.genome)
  print(f"wrote modality {a.name!r} to {out}")


if __name__ == "__main__":
  main()
