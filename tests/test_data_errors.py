"""Bad inputs: each fails with one clear line naming the file/row or key and the problem."""

import json
import re

import numpy as np
import pytest

from mmrec_jax.data import prepare as prep
from mmrec_jax.data.dataset import PreparedDataset
from mmrec_jax.errors import ConfigError, DataError

INTER_H = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
GOOD = "1\t10\t4\t100\n1\t11\t3\t101\n2\t10\t5\t102\n"


def recbole(tmp, text, **kw):
  (tmp / "d").mkdir(exist_ok=True)
  (tmp / "d" / "d.inter").write_text(text)
  return {"source": "recbole", "path": str(tmp / "d"), **kw}


def presplit(
  tmp,
  train="user_id\titem_id\n1\t1\n2\t2\n",
  valid="user_id\titem_id\n1\t2\n",
  test="user_id\titem_id\n2\t1\n",
  **kw,
):
  for name, text in (("tr.tsv", train), ("va.tsv", valid), ("te.tsv", test)):
    if text is not None:
      (tmp / name).write_text(text)
  return {
    "source": "presplit",
    "train": str(tmp / "tr.tsv"),
    "valid": str(tmp / "va.tsv"),
    "test": str(tmp / "te.tsv"),
    **kw,
  }


def mmrec(tmp, feat=None, inter=None):
  d = tmp / "mm"
  d.mkdir(exist_ok=True)
  (d / "mm.inter").write_text(
    inter or "userID\titemID\tx_label\n0\t0\t0\n0\t1\t1\n1\t2\t2\n1\t0\t0\n"
  )
  np.save(d / "image_feat.npy", np.ones((3, 4), np.float32) if feat is None else feat)
  return {"source": "mmrec", "path": str(d)}


def ml1m(tmp, ratings):
  d = tmp / "ml"
  d.mkdir(exist_ok=True)
  (d / "ratings.dat").write_text(ratings)
  (d / "movies.dat").write_text("10::A (1990)::Drama\n11::B (1991)::Comedy\n")
  return {"source": "movielens", "variant": "1m", "path": str(d)}


def ml25m(
  tmp,
  movies_header="movieId,title,genres",
  ratings="1,10,4.0,5\n",
  genome_scores=None,
  genome_tags="tagId,tag\n1,dark\n2,funny\n",
):
  d = tmp / "ml25"
  d.mkdir(exist_ok=True)
  (d / "ratings.csv").write_text("userId,movieId,rating,timestamp\n" + ratings)
  (d / "movies.csv").write_text(f"{movies_header}\n10,A (1990),Drama\n")
  if genome_scores is not None:
    (d / "genome-scores.csv").write_text("movieId,tagId,relevance\n" + genome_scores)
    (d / "genome-tags.csv").write_text(genome_tags)
  return {"source": "movielens", "variant": "25m", "path": str(d)}


NAN_FEAT = np.ones((3, 4), np.float32)
NAN_FEAT[2, 1] = np.nan

CASES = [
  # (id, cfg builder, error type, regex the message must match)
  (
    "short_row",
    lambda t: recbole(t, INTER_H + GOOD + "3\t12\t5\n"),
    DataError,
    r"d\.inter:5: expected 4 columns \(user, item, rating, timestamp\), found 3",
  ),
  (
    "long_row",
    lambda t: recbole(t, INTER_H + "1\t10\t4\t100\t7\n" + GOOD),
    DataError,
    r"d\.inter:2: expected 4 columns .* found 5",
  ),
  (
    "rating_not_number",
    lambda t: recbole(t, INTER_H + GOOD + "3\t12\tfive\t9\n"),
    DataError,
    r"d\.inter:5: column 'rating': 'five' is not a number",
  ),
  (
    "timestamp_not_number",
    lambda t: recbole(t, INTER_H + "1\t1\t2\t1e3x\n"),
    DataError,
    r"d\.inter:2: column 'timestamp': '1e3x' is not a number",
  ),
  (
    "nan_rating",
    lambda t: recbole(t, INTER_H + GOOD + "\n3\t12\tnan\t9\n"),
    DataError,
    r"d\.inter:6: column 'rating': 'nan' is not a finite number",
  ),
  ("empty_file", lambda t: recbole(t, ""), DataError, r"d\.inter: file is empty"),
  ("header_only", lambda t: recbole(t, INTER_H), DataError, r"d\.inter: file has no data rows"),
  (
    "untyped_header",
    lambda t: recbole(t, "user_id\titem_id:token\n1\t2\n"),
    DataError,
    r"d\.inter:1: header field 'user_id' is not 'name:type'",
  ),
  (
    "unknown_type",
    lambda t: recbole(t, "user_id:token\titem_id:int\n1\t2\n"),
    DataError,
    r"d\.inter:1: header field 'item_id:int': unknown type 'int'",
  ),
  (
    "no_item_column",
    lambda t: presplit(t, train="user_id\tthing\n1\t2\n"),
    DataError,
    r"tr\.tsv:1: header \['user_id', 'thing'\] names no item column",
  ),
  (
    "missing_file",
    lambda t: presplit(t, valid=None),
    DataError,
    r"va\.tsv: file not found \(data\.valid\)",
  ),
  (
    "presplit_repeat",
    lambda t: presplit(t, test="user_id\titem_id\n\n1\t1\n"),
    DataError,
    r"te\.tsv:3: repeats \(user 1, item 1\) of .*tr\.tsv:2; .*data\.dedup=False",
  ),
  (
    "presplit_filtering",
    lambda t: presplit(t, user_core=2),
    ConfigError,
    r"data\.source='presplit' is kept exactly as given",
  ),
  (
    "mmrec_more_feature_rows",
    lambda t: mmrec(t, feat=np.ones((5, 4), np.float32)),
    DataError,
    r"image_feat\.npy.*5 rows but num_items=3",
  ),
  (
    "mmrec_fewer_feature_rows",
    lambda t: mmrec(t, feat=np.ones((2, 4), np.float32)),
    DataError,
    r"image_feat\.npy.*2 rows but num_items=3",
  ),
  (
    "mmrec_nan_feature",
    lambda t: mmrec(t, feat=NAN_FEAT),
    DataError,
    r"image_feat\.npy.*(non-finite|NaN)",
  ),
  (
    "mmrec_1d_feature",
    lambda t: mmrec(t, feat=np.ones(3, np.float32)),
    DataError,
    r"image_feat\.npy: expected a 2-D \[rows, dim\] array",
  ),
  (
    "mmrec_bad_label",
    lambda t: mmrec(t, inter="userID\titemID\tx_label\n0\t0\t0\n0\t1\t3\n1\t2\t0\n"),
    DataError,
    r"mm\.inter:3: x_label 3 is not 0 \(train\), 1 \(valid\) or 2 \(test\)",
  ),
  (
    "mmrec_string_id",
    lambda t: mmrec(t, inter="userID\titemID\tx_label\nu0\t0\t0\n"),
    DataError,
    r"mm\.inter:2: user id 'u0': MMRec ids must be 0-based integers",
  ),
  (
    "ml1m_bad_line",
    lambda t: ml1m(t, "1::10::4::5\n1::11::x::6\n"),
    DataError,
    r"ratings\.dat:2: column 'rating': 'x' is not a number",
  ),
  (
    "ml25m_movies_header",
    lambda t: ml25m(t, "id,title,genres"),
    DataError,
    r"movies\.csv:1: header \['id', 'title', 'genres'\], expected",
  ),
  (
    "ml1m_string_user",
    lambda t: ml1m(t, "1::10::4::5\nabc::11::3::6\n"),
    DataError,
    r"ratings\.dat:2: column 'user': 'abc' is not an integer",
  ),
  (
    "ml25m_string_item",
    lambda t: ml25m(t, ratings="1,10,4.0,5\n2,m11,3.0,6\n"),
    DataError,
    r"ratings\.csv:3: column 'item': 'm11' is not an integer",
  ),
  (
    "genome_relevance_not_number",
    lambda t: ml25m(t, genome_scores="10,1,0.5\n10,2,hi\n"),
    DataError,
    r"genome-scores\.csv:3: column 'relevance': 'hi' is not a number",
  ),
  (
    "genome_unknown_tag",
    lambda t: ml25m(t, genome_scores="10,1,0.5\n10,2,0.1\n10,9,0.2\n"),
    DataError,
    r"genome-scores\.csv:4: tagId 9 is not in .*genome-tags\.csv",
  ),
  (
    "genome_tags_header",
    lambda t: ml25m(t, genome_scores="10,1,0.5\n", genome_tags="id,name\n1,dark\n"),
    DataError,
    r"genome-tags\.csv:1: header \['id', 'name'\], expected \['tagId', 'tag'\]",
  ),
  (
    "unknown_key",
    lambda t: {"source": "synthetic", "num_user": 3},
    ConfigError,
    r"data\.num_user: unknown key \(valid: ",
  ),
  (
    "unknown_source",
    lambda t: {"source": "netflix"},
    ConfigError,
    r"data\.source='netflix' is not one of \['movielens'",
  ),
  (
    "unknown_split",
    lambda t: recbole(t, INTER_H + GOOD, split="by_magic"),
    ConfigError,
    r"data\.split='by_magic' is not one of",
  ),
  (
    "unknown_variant",
    lambda t: {"source": "movielens", "variant": "7m"},
    ConfigError,
    r"data\.variant='7m' is not one of \['100k'",
  ),
  (
    "ratios_sum",
    lambda t: recbole(t, INTER_H + GOOD, split_ratios=(0.8, 0.2, 0.2)),
    ConfigError,
    r"data\.split_ratios=\(0\.8, 0\.2, 0\.2\): must sum to 1",
  ),
  (
    "bad_cut",
    lambda t: recbole(t, INTER_H + GOOD, split="global_temporal", global_cut=(0.9, 0.5)),
    ConfigError,
    r"data\.global_cut=",
  ),
  (
    "negative_core",
    lambda t: recbole(t, INTER_H + GOOD, user_core=-1),
    ConfigError,
    r"data\.user_core=-1: must be an integer >= 0",
  ),
  (
    "kcore_empties",
    lambda t: recbole(t, INTER_H + GOOD, user_core=5),
    DataError,
    r"no interactions left after k-core filtering \(user_core=5, item_core=0\)",
  ),
  (
    "threshold_without_ratings",
    lambda t: recbole(t, "user_id:token\titem_id:token\n1\t2\n", rating_threshold=4.0),
    ConfigError,
    r"data\.rating_threshold=4\.0: source recbole:d has no ratings",
  ),
  (
    "synthetic_too_few",
    lambda t: {"source": "synthetic", "num_users": 10, "num_interactions": 5},
    ConfigError,
    r"data\.num_interactions=5: must be >= data\.num_users=10",
  ),
  (
    "wrong_type",
    lambda t: {"source": "synthetic", "user_core": 2.5},
    ConfigError,
    r"data\.user_core=2\.5: expected type int",
  ),
  (
    "synthetic_none",
    lambda t: {"source": "synthetic", "num_users": None},
    ConfigError,
    r"data\.num_users=None: must be a positive integer",
  ),
  (
    "recbole_missing_path",
    lambda t: {"source": "recbole", "path": str(t / "nope.inter")},
    DataError,
    r"nope\.inter: file not found \(data\.path\)",
  ),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input(tmp_path, case):
  _, build, err, pattern = case
  cfg = build(tmp_path)
  cfg.setdefault("cache_dir", str(tmp_path / "cache"))
  with pytest.raises(err) as info:
    prep.prepare(cfg)
  msg = str(info.value)
  assert "\n" not in msg
  assert re.search(pattern, msg), msg


# ---------------------------------------------------------------- damaged prepared dirs
@pytest.fixture
def prepared(tmp_path):
  return prep.prepare(
    {
      "source": "synthetic",
      "num_users": 20,
      "num_items": 15,
      "num_interactions": 120,
      "latent_dim": 2,
      "text_dim": 3,
      "image_dim": 2,
      "cache_dir": str(tmp_path),
    }
  ).path


def _truncate(p):
  f = p / "train" / "item.npy"
  f.write_bytes(f.read_bytes()[:-10])


def _bad_version(p):
  m = json.loads((p / "manifest.json").read_text())
  m["format_version"] = 2
  (p / "manifest.json").write_text(json.dumps(m))


def _out_of_range(p):
  f = p / "test" / "item.npy"
  a = np.load(f)
  a[1] = 999
  np.save(f, a)


def _short_ids(p):
  f = p / "user_ids.txt"
  f.write_text("\n".join(f.read_text().splitlines()[:-1]) + "\n")


def _truncated_shard(p):
  f = p / "features" / "text" / "shard-00000.npy"
  f.write_bytes(f.read_bytes()[:-8])


def _bad_json(p):
  (p / "manifest.json").write_text("{not json")


def _wrong_dtype(p):
  np.save(p / "valid" / "user.npy", np.load(p / "valid" / "user.npy").astype(np.int64))


DAMAGE = [
  ("truncated_split_array", _truncate, r"train/item\.npy: unreadable or truncated \.npy"),
  ("format_version", _bad_version, r"manifest\.json: format_version 2 is not supported"),
  (
    "id_out_of_range",
    _out_of_range,
    r"test/item\.npy row 1: id 999 outside \[0, "
    r"num_items=15\)",
  ),
  ("id_map_lines", _short_ids, r"user_ids\.txt: 19 lines, expected 20"),
  (
    "truncated_shard",
    _truncated_shard,
    r"features/text/shard-00000\.npy: unreadable or "
    r"truncated shard \(",
  ),
  ("manifest_json", _bad_json, r"manifest\.json: not valid JSON"),
  ("split_dtype", _wrong_dtype, r"valid/user\.npy: dtype int64, expected int32"),
]


@pytest.mark.parametrize("case", DAMAGE, ids=[c[0] for c in DAMAGE])
def test_damaged_prepared_dir(prepared, case):
  _, damage, pattern = case
  damage(prepared)
  with pytest.raises(DataError) as info:
    PreparedDataset.open(prepared)
  msg = str(info.value)
  assert "\n" not in msg and msg.strip() == msg, repr(msg)
  assert re.search(pattern, msg), msg


def test_verify_detects_changed_bytes(prepared):
  f = prepared / "train" / "rating.npy"
  a = np.load(f)
  a[0] += 1
  np.save(f, a)
  PreparedDataset.open(prepared)  # shapes still fine
  with pytest.raises(DataError, match=r"train/rating\.npy: sha256 .* does not match"):
    PreparedDataset.open(prepared, verify=True)


def test_unknown_split_and_modality(prepared):
  ds = PreparedDataset.open(prepared)
  with pytest.raises(ConfigError, match=r"split 'dev' is not one of \['train', 'valid', "):
    ds.split("dev")
  with pytest.raises(
    ConfigError,
    match=r"modality 'audio' is not in the dataset .* \(has "
    r"\['image', 'text'\]\)",
  ):
    ds.features("audio")
