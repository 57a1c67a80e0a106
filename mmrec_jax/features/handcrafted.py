"""Handcrafted text-modality features from items.jsonl metadata (pure numpy + scipy).

The one extractor that needs no model: preparation (data/prepare.py) writes its output as
modality 'text' of every dataset with item side info; the pretrained extractors of this
package (extract.py) add other modalities later.

Why handcrafted: a text modality must exist without any pretrained model download
(MovieLens ships titles, genres and tags, nothing else), and it should be deterministic
so two runs of preparation write byte-identical feature shards. The vector per item is
the concatenation of three blocks, then L2-normalised as a whole:

  * genre multi-hot    one column per genre (lowercased, sorted); 1.0 where the item has it;
  * year one-hot       buckets between the ``year_buckets`` edges, plus "unknown";
  * TF-IDF             over tokens of the title, genres, tags and genome_tags (the
                       MovieLens tag genome's most relevant tags): lowercase, regex
                       ``[^\\W_]+``; sublinear tf ``1 + ln(count)``; smooth idf
                       ``ln((1 + n_docs) / (1 + df)) + 1`` with n_docs = items that have
                       text; each row L2-normalised. The vocabulary keeps tokens with
                       ``df >= min_df``, the ``max_vocab`` most frequent (ties by token),
                       ordered alphabetically.

An item has the modality when it has a non-empty title, genres, tags or genome_tags;
items without get an all-zero row and mask False (the feature-shard imputation).
MovieLens's "(no genres listed)" is read as no genres.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import scipy.sparse as sp

from mmrec_jax.errors import DataError

# Decade edges: buckets "<1930", "1930-1939", ..., "2010-2019", ">=2020", "unknown".
DEFAULT_YEAR_BUCKETS: tuple[int, ...] = tuple(range(1930, 2030, 10))
NO_GENRES = frozenset({"(no genres listed)"})
_TOKEN = re.compile(r"[^\W_]+")
_WHERE = "items.jsonl"


def tokenize(text: str) -> list[str]:
  """Lowercased runs of letters/digits (unicode aware); punctuation and '_' split."""
  return _TOKEN.findall(text.lower())


class HandcraftedText(NamedTuple):
  """The blocks before concatenation, with the names of their columns."""

  genres: np.ndarray  # float32 [n, len(genre_names)] multi-hot
  years: np.ndarray  # float32 [n, len(year_names)] one-hot (zeros when no text)
  tfidf: sp.csr_matrix  # float32 [n, len(terms)], rows L2-normalised
  mask: np.ndarray  # bool [n]
  genre_names: list[str]
  year_names: list[str]
  terms: list[str]
  idf: np.ndarray  # float64 [len(terms)]


def _year_names(edges: Sequence[int]) -> list[str]:
  if not edges:
    return ["year:any", "year:unknown"]
  names = [f"year<{edges[0]}"]
  names += [f"year:{a}-{b - 1}" for a, b in zip(edges[:-1], edges[1:])]
  return names + [f"year>={edges[-1]}", "year:unknown"]


def _clean(item_info: Sequence[dict[str, Any]]):
  """Validates records; returns (titles, genre lists, years, tag lists).

  The tag list of an item is its free-text ``tags`` followed by its ``genome_tags``: both
  are words describing the movie, and TF-IDF weighs them the same way.
  """
  titles, genres, years, tags = [], [], [], []
  for i, rec in enumerate(item_info):
    if not isinstance(rec, dict):
      raise DataError(f"{_WHERE} row {i}", f"expected a JSON object, got {type(rec).__name__}")
    title = rec.get("title")
    if title is not None and not isinstance(title, str):
      raise DataError(
        f"{_WHERE} row {i} key 'title'", f"must be a string or null, got {type(title).__name__}"
      )
    lists = []
    for key in ("genres", "tags", "genome_tags"):
      v = rec.get(key) or []
      if not isinstance(v, list) or not all(isinstance(s, str) for s in v):
        raise DataError(f"{_WHERE} row {i} key {key!r}", "must be a list of strings")
      lists.append([s.strip().lower() for s in v if s.strip()])
    year = rec.get("year")
    if year is not None and (isinstance(year, bool) or not isinstance(year, int)):
      raise DataError(f"{_WHERE} row {i} key 'year'", f"must be an int or null, got {year!r}")
    titles.append((title or "").strip())
    genres.append(sorted({g for g in lists[0] if g not in NO_GENRES}))
    tags.append(lists[1] + lists[2])
    years.append(year)
  return titles, genres, years, tags


def handcrafted_text_blocks(
  item_info: Sequence[dict[str, Any]],
  *,
  max_vocab: int = 2000,
  min_df: int = 2,
  year_buckets: Sequence[int] = DEFAULT_YEAR_BUCKETS,
) -> HandcraftedText:
  """Computes the three blocks (see the module docstring) without concatenating them."""
  if max_vocab < 0 or min_df < 1:
    raise ValueError(f"need max_vocab >= 0 and min_df >= 1, got {max_vocab}, {min_df}")
  edges = [int(e) for e in year_buckets]
  if any(b <= a for a, b in zip(edges[:-1], edges[1:])):
    raise ValueError(f"year_buckets must be strictly increasing, got {edges}")
  titles, genres, years, tags = _clean(item_info)
  n = len(titles)
  mask = np.array([bool(t or g or tg) for t, g, tg in zip(titles, genres, tags)], bool)

  genre_names = sorted({g for gs in genres for g in gs})
  gidx = {g: j for j, g in enumerate(genre_names)}
  genre_block = np.zeros((n, len(genre_names)), np.float32)
  for i, gs in enumerate(genres):
    genre_block[i, [gidx[g] for g in gs]] = 1.0

  year_names = _year_names(edges)
  year_block = np.zeros((n, len(year_names)), np.float32)
  yv = np.array([-1 if y is None else y for y in years], np.int64)
  col = np.searchsorted(np.asarray(edges, np.int64), yv, side="right")
  col[np.array([y is None for y in years], bool)] = len(year_names) - 1
  rows = np.flatnonzero(mask)
  year_block[rows, col[rows]] = 1.0

  # Token counts as a sparse [n, all tokens] matrix (duplicates summed by tocsr).
  token_id: dict[str, int] = {}
  doc_ids: list[int] = []
  tok_ids: list[int] = []
  for i in rows:
    toks = tokenize(titles[i])
    for s in genres[i] + tags[i]:
      toks += tokenize(s)
    for t in toks:
      doc_ids.append(i)
      tok_ids.append(token_id.setdefault(t, len(token_id)))
  all_tokens = np.array(list(token_id), dtype=object)
  counts = sp.coo_matrix(
    (np.ones(len(doc_ids), np.float64), (doc_ids, tok_ids)), shape=(n, len(token_id))
  ).tocsr()
  df = np.bincount(counts.indices, minlength=len(token_id))
  cand = np.flatnonzero(df >= min_df)
  # Most frequent first, ties by token string; then alphabetical column order.
  cand = sorted(cand.tolist(), key=lambda j: (-df[j], all_tokens[j]))[:max_vocab]
  cols = np.array(sorted(cand, key=lambda j: all_tokens[j]), np.int64)
  terms = [str(all_tokens[j]) for j in cols]
  n_docs = int(mask.sum())
  idf = np.log((1.0 + n_docs) / (1.0 + df[cols])) + 1.0 if cols.size else np.zeros(0)
  tf = counts[:, cols].tocsr() if cols.size else sp.csr_matrix((n, 0))
  tf.data = 1.0 + np.log(tf.data)
  tfidf = tf.multiply(idf[None, :]).tocsr() if cols.size else tf
  norms = np.sqrt(np.asarray(tfidf.multiply(tfidf).sum(axis=1)).ravel())
  scale = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
  tfidf = sp.diags(scale).dot(tfidf).tocsr().astype(np.float32)
  return HandcraftedText(genre_block, year_block, tfidf, mask, genre_names, year_names, terms, idf)


def handcrafted_text_features(
  item_info: Sequence[dict[str, Any]],
  *,
  max_vocab: int = 2000,
  min_df: int = 2,
  year_buckets: Sequence[int] = DEFAULT_YEAR_BUCKETS,
) -> tuple[np.ndarray, np.ndarray]:
  """Returns (float32 [n_items, d] features, bool [n_items] mask), rows L2-normalised.

  ``d = #genres + len(year_buckets) + 2 + #terms``; column names in
  :func:`handcrafted_feature_names`. Rows of items without text are zeros.
  """
  b = handcrafted_text_blocks(
    item_info, max_vocab=max_vocab, min_df=min_df, year_buckets=year_buckets
  )
  n = b.mask.shape[0]
  g, y, t = b.genres.shape[1], b.years.shape[1], b.tfidf.shape[1]
  out = np.zeros((n, g + y + t), np.float32)
  out[:, :g] = b.genres
  out[:, g : g + y] = b.years
  if t:
    out[:, g + y :] = b.tfidf.toarray()
  norms = np.linalg.norm(out, axis=1, keepdims=True)
  np.divide(out, norms, out=out, where=norms > 0)
  out[~b.mask] = 0.0
  return out, b.mask


def handcrafted_feature_names(
  item_info: Sequence[dict[str, Any]],
  *,
  max_vocab: int = 2000,
  min_df: int = 2,
  year_buckets: Sequence[int] = DEFAULT_YEAR_BUCKETS,
) -> list[str]:
  """Column names of :func:`handcrafted_text_features` ("genre:", "year...", "term:")."""
  b = handcrafted_text_blocks(
    item_info, max_vocab=max_vocab, min_df=min_df, year_buckets=year_buckets
  )
  return [f"genre:{g}" for g in b.genre_names] + b.year_names + [f"term:{t}" for t in b.terms]
