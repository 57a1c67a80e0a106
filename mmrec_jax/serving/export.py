"""Exports of a trained run for serving tiers that do not run mmrec_jax.

``export(rec, out_dir)`` writes::

    user_embeddings.npy / item_embeddings.npy   float32 [n, D] (row i = raw id i below)
    user_ids.npy / item_ids.npy                 raw ids (unicode arrays, no pickle)
    user_embeddings.parquet / item_embeddings.parquet
                                                columns ``id`` (string), ``embedding``
                                                (fixed_size_list<float32>[D])
    seen.npz                                    indptr/indices: what exclude_seen removes
    items.faiss + ann.json                      HNSW (8-bit SQ) inner-product index
    topk.jaxexport / score.jaxexport            jax.export-serialised scoring functions
    scorer.py                                   loader using only numpy + jax
                                                (``serving/standalone.py``)
    export.json                                 shapes, model, k, settings

Why faiss HNSW over 8-bit scalar-quantised vectors: measured against faiss HNSW-Flat,
faiss IVF-Flat and usearch HNSW on the same vectors and queries
(``benchmarks/bench_ann.py``, results in benchmarks/README.md), it reached recall@10 >=
0.95 at the highest queries/s. ``efSearch`` is tuned here
on the run's own user vectors against exact search, to the smallest value whose
recall@10 reaches ``ann_recall`` (stored in ``ann.json`` with the measured recall).
"""

from __future__ import annotations

import json
import pathlib
import shutil
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from mmrec_jax.errors import ConfigError

EF_SEARCH_GRID = (16, 24, 32, 48, 64, 96, 128, 256)


def _write_parquet(path: pathlib.Path, ids: np.ndarray, vectors: np.ndarray) -> None:
  import pyarrow as pa  # noqa: PLC0415
  import pyarrow.parquet as pq  # noqa: PLC0415

  flat = pa.array(np.ascontiguousarray(vectors, np.float32).reshape(-1))
  emb = pa.FixedSizeListArray.from_arrays(flat, vectors.shape[1])
  pq.write_table(pa.table({"id": pa.array(ids.astype(str)), "embedding": emb}), path)


def read_parquet_embeddings(path: str | pathlib.Path) -> tuple[np.ndarray, np.ndarray]:
  """(raw ids, float32 [n, D]) of a file written by :func:`export`."""
  import pyarrow.parquet as pq  # noqa: PLC0415

  t = pq.read_table(path)
  emb = t.column("embedding").combine_chunks()
  dim = emb.type.list_size
  vecs = emb.flatten().to_numpy(zero_copy_only=False).reshape(-1, dim).astype(np.float32)
  return np.asarray(t.column("id").to_pylist(), dtype=str), vecs


# ----------------------------------------------------------------------------- ANN


ANN_KINDS = ("hnsw_sq8", "hnsw")


def build_ann_index(
  items: np.ndarray,
  queries: np.ndarray,
  *,
  kind: str = "hnsw_sq8",
  target_recall: float = 0.95,
  m: int = 24,
  ef_construction: int = 200,
  k: int = 10,
  max_queries: int = 2000,
  seed: int = 0,
):
  """faiss HNSW (inner product) over ``items``, efSearch tuned on ``queries``.

  ``kind``: 'hnsw_sq8' (graph over 8-bit scalar-quantised vectors: the fastest at
  recall@10 >= 0.95 in benchmarks/bench_ann.py) or 'hnsw' (float32 vectors).

  Returns ``(index, info)``; ``info`` has the parameters, the efSearch chosen and its
  measured recall@k against exact search on up to ``max_queries`` of the queries.
  """
  import faiss  # noqa: PLC0415

  items = np.ascontiguousarray(items, np.float32)
  rng = np.random.default_rng(seed)
  if queries.shape[0] > max_queries:
    queries = queries[rng.choice(queries.shape[0], max_queries, replace=False)]
  queries = np.ascontiguousarray(queries, np.float32)
  k = min(k, items.shape[0])
  t = time.perf_counter()
  if kind not in ANN_KINDS:
    raise ConfigError(f"ann kind={kind!r} is not one of {list(ANN_KINDS)}")
  if kind == "hnsw_sq8":
    index = faiss.IndexHNSWSQ(
      items.shape[1], faiss.ScalarQuantizer.QT_8bit, m, faiss.METRIC_INNER_PRODUCT
    )
    index.train(items)
  else:
    index = faiss.IndexHNSWFlat(items.shape[1], m, faiss.METRIC_INNER_PRODUCT)
  index.hnsw.efConstruction = ef_construction
  index.add(items)
  build_s = time.perf_counter() - t
  flat = faiss.IndexFlatIP(items.shape[1])
  flat.add(items)
  _, truth = flat.search(queries, k)
  chosen, recall = EF_SEARCH_GRID[-1], 0.0
  for ef in EF_SEARCH_GRID:
    index.hnsw.efSearch = ef
    _, found = index.search(queries, k)
    recall = float(np.mean([len(set(a) & set(b)) for a, b in zip(found, truth)])) / k
    chosen = ef
    if recall >= target_recall:
      break
  index.hnsw.efSearch = chosen
  info = {
    "library": "faiss",
    "faiss_version": faiss.__version__,
    "index": type(index).__name__,
    "kind": kind,
    "metric": "inner_product",
    "M": m,
    "efConstruction": ef_construction,
    "efSearch": chosen,
    "recall_at_k": recall,
    "k": k,
    "tuning_queries": int(queries.shape[0]),
    "build_seconds": round(build_s, 3),
  }
  return index, info


def load_ann_index(directory: str | pathlib.Path):
  """(faiss index with its tuned efSearch, info) from an export directory."""
  import faiss  # noqa: PLC0415

  d = pathlib.Path(directory)
  info = json.loads((d / "ann.json").read_text())
  index = faiss.read_index(str(d / "items.faiss"))
  index.hnsw.efSearch = int(info["efSearch"])
  return index, info


# ----------------------------------------------------------------------------- jax.export


def _topk_body(max_k: int):
  def topk(users, items, user_rows, exclude):
    """(ids [B, max_k], scores) of users[user_rows] over items, exclude[b] -> -inf."""
    q = jnp.take(users, user_rows, axis=0).astype(jnp.float32)
    s = lax.dot_general(
      q,
      items.astype(jnp.float32),
      (((1,), (1,)), ((), ())),
      precision=lax.Precision.HIGHEST,
      preferred_element_type=jnp.float32,
    )
    n_items = items.shape[0]
    rows = jnp.broadcast_to(jnp.arange(q.shape[0])[:, None], exclude.shape)
    cols = jnp.where(exclude < 0, n_items, exclude)
    s = s.at[rows, cols].set(-jnp.inf, mode="drop")
    v, idx = lax.top_k(s, max_k)
    return idx.astype(jnp.int32), v

  return topk


def _score_body(users, items, u, i):
  a = jnp.take(users, u, axis=0).astype(jnp.float32)
  b = jnp.take(items, i, axis=0).astype(jnp.float32)
  return jnp.einsum("nd,nd->n", a, b, precision=lax.Precision.HIGHEST)


def export_scorers(
  num_users: int, num_items: int, dim: int, max_k: int, platforms: tuple[str, ...] = ("cpu",)
) -> dict[str, bytes]:
  """``jax.export`` of top-k and pair scoring; batch and exclusion widths symbolic."""
  from jax import export as jax_export  # noqa: PLC0415

  b, l = jax_export.symbolic_shape("b, l")
  (n,) = jax_export.symbolic_shape("n")
  users = jax.ShapeDtypeStruct((num_users, dim), jnp.float32)
  items = jax.ShapeDtypeStruct((num_items, dim), jnp.float32)
  out = {}
  exp = jax_export.export(jax.jit(_topk_body(max_k)), platforms=platforms)(
    users, items, jax.ShapeDtypeStruct((b,), jnp.int32), jax.ShapeDtypeStruct((b, l), jnp.int32)
  )
  out["topk"] = exp.serialize()
  exp = jax_export.export(jax.jit(_score_body), platforms=platforms)(
    users, items, jax.ShapeDtypeStruct((n,), jnp.int32), jax.ShapeDtypeStruct((n,), jnp.int32)
  )
  out["score"] = exp.serialize()
  return out


# ----------------------------------------------------------------------------- all


def export(
  rec,
  out_dir: str | pathlib.Path,
  *,
  max_k: int = 100,
  ann: bool = True,
  ann_kind: str = "hnsw_sq8",
  ann_recall: float = 0.95,
  platforms: tuple[str, ...] = ("cpu", "cuda", "tpu"),
) -> pathlib.Path:
  """Writes everything listed in the module docstring for a ``Recommender``."""
  import faiss  # noqa: PLC0415

  out = pathlib.Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  max_k = min(int(max_k), rec.num_items)
  if max_k < 1:
    raise ConfigError(f"max_k={max_k} must be >= 1")
  users, items = rec.user_vectors, rec.item_vectors
  np.save(out / "user_embeddings.npy", users)
  np.save(out / "item_embeddings.npy", items)
  np.save(out / "user_ids.npy", rec.user_raw)
  np.save(out / "item_ids.npy", rec.item_raw)
  _write_parquet(out / "user_embeddings.parquet", rec.user_raw, users)
  _write_parquet(out / "item_embeddings.parquet", rec.item_raw, items)
  indptr, indices = rec._seen
  np.savez(out / "seen.npz", indptr=indptr, indices=indices)
  meta = {
    "format_version": 1,
    "num_users": rec.num_users,
    "num_items": rec.num_items,
    "dim": rec.dim,
    "max_k": max_k,
    "platforms": list(platforms),
    "jax_version": jax.__version__,
    "run": rec.info,
    "score": "dot product users[u] . items[i], float32, HIGHEST precision",
  }
  if ann:
    index, info = build_ann_index(items, users, kind=ann_kind, target_recall=ann_recall)
    faiss.write_index(index, str(out / "items.faiss"))
    (out / "ann.json").write_text(json.dumps(info, indent=1))
    meta["ann"] = info
  for name, blob in export_scorers(rec.num_users, rec.num_items, rec.dim, max_k, platforms).items():
    (out / f"{name}.jaxexport").write_bytes(blob)
  shutil.copyfile(pathlib.Path(__file__).with_name("standalone.py"), out / "scorer.py")
  (out / "export.json").write_text(json.dumps(meta, indent=1))
  return out
