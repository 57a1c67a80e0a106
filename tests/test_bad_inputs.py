"""The bad-input corpus: every file in tests/bad_inputs/ fails in one line, nothing half-done.

Why: a new user's first contact with the tool is often a file it cannot read. Each case
here is a real file of the corpus (a short row, latin-1 bytes, a zip posing as a TSV, a
NaN feature row, an MMRec item id of 10^12, ...) fed to preparation the way the command
line feeds it, and asserts what the user sees: the exit status (2: bad input), one line
naming the file -- and the line, where there is one -- and what is wrong, no traceback,
and that a dataset prepared earlier in the same cache is untouched with no temp files
left behind. A few cases go through ``python -m mmrec_jax.main`` end to end, to pin
the exit status and the absence of a traceback there; config and workdir mistakes are
checked the same way against an earlier run's files.
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from mmrec_jax import config as config_lib
from mmrec_jax.data import prepare as prepare_lib
from mmrec_jax.errors import MmrecError

REPO = pathlib.Path(__file__).resolve().parents[1]
CORPUS = REPO / "tests" / "bad_inputs"
GOOD = CORPUS / "good"


def data_config(cache: pathlib.Path, **fields):
  c = config_lib.base_config()
  c.data.cache_dir = str(cache)
  for k, v in fields.items():
    setattr(c.data, k, v)
  return c.data


def presplit(
  cache, train=GOOD / "train.tsv", valid=GOOD / "valid.tsv", test=GOOD / "test.tsv", items=""
):
  return data_config(
    cache,
    source="presplit",
    train=str(train),
    valid=str(valid),
    test=str(test),
    items_file=str(items),
  )


def mmrec(cache, tmp: pathlib.Path, inter="mmrec_good.inter", feat=None):
  d = tmp / "mmrec_ds"
  d.mkdir()
  shutil.copy(CORPUS / inter, d / "ds.inter")
  if feat:
    shutil.copy(CORPUS / feat, d / "image_feat.npy")
  return data_config(cache, source="mmrec", path=str(d), name="ds", modalities=("image",))


def tree_digest(root: pathlib.Path) -> dict[str, str]:
  return {
    str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
    for p in sorted(root.rglob("*"))
    if p.is_file()
  }


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> pathlib.Path:
  """A cache holding one good prepared dataset, which no failing case may touch."""
  cache = tmp_path_factory.mktemp("cache")
  prepare_lib.prepare(presplit(cache, items=GOOD / "items.tsv"))
  return cache


def fails_in_one_line(data_cfg, cache: pathlib.Path) -> tuple[int, str]:
  """Prepares ``data_cfg``; returns (exit status, line) as main shows them."""
  before = {p.name: tree_digest(p) for p in (cache / "prepared").iterdir()}
  with pytest.raises(MmrecError) as info:
    prepare_lib.prepare(data_cfg)
  line = f"error: {info.value}"
  assert "\n" not in line and len(line) < 600, line
  after = {p.name: tree_digest(p) for p in (cache / "prepared").iterdir()}
  assert after == before, "the earlier prepared dataset changed, or temp files remain"
  return info.value.exit_code, line


# (corpus file, role, regex the one line must match after "error: <path>")
PRESPLIT_CASES = [
  ("train_empty.tsv", "train", r": file is empty"),
  ("train_header_only.tsv", "train", r": file has no data rows"),
  ("train_all_blank_lines.tsv", "train", r": file has no data rows"),
  ("train_no_user_column.tsv", "train", r":1: header .* names no user column"),
  ("train_no_item_column.tsv", "train", r":1: header .* names no item column"),
  ("train_two_user_columns.tsv", "train", r":1: columns 1 and 2 both name user"),
  ("train_short_row.tsv", "train", r":4: expected 4 columns .*found 3"),
  ("train_long_row.tsv", "train", r":4: expected 4 columns .*found 5"),
  ("train_rating_not_number.tsv", "train", r":4: column 'rating': 'abc' is not a number"),
  ("train_rating_nan.tsv", "train", r":4: column 'rating': 'nan' is not a finite number"),
  ("train_rating_inf.tsv", "train", r":4: column 'rating': 'inf' is not a finite number"),
  ("train_timestamp_not_number.tsv", "train", r":4: column 'timestamp': 'yesterday'"),
  (
    "train_timestamp_overflow.tsv",
    "train",
    r":4: column 'timestamp': '1e400' is not a "
    "finite",
  ),
  ("train_empty_user_id.tsv", "train", r":4: column 'user' is empty"),
  ("train_empty_item_id.tsv", "train", r":4: column 'item' is empty"),
  ("train_nul_bytes.tsv", "train", r":4: column 'rating'"),
  ("train_gzip_garbage.tsv.gz", "train", r": gzip data is corrupt or truncated"),
  ("train_truncated.tsv.gz", "train", r": gzip data is corrupt or truncated"),
  ("train_zip.tsv", "train", r": is a zip-compressed file; decompress it first"),
  ("train_bzip2.tsv", "train", r": is a bzip2-compressed file"),
  ("train_xz.tsv", "train", r": is an xz-compressed file"),
  ("train_latin1.tsv", "train", r":5: not utf-8 text"),
  ("train_utf16.tsv", "train", r":1: not utf-8 text"),
  ("train_binary_garbage.tsv", "train", r":1: not utf-8 text"),
  (
    "train_recbole_untyped_field.tsv",
    "train",
    r":1: header field 'item_id' is not "
    "'name:type'",
  ),
  (
    "train_recbole_unknown_type.tsv",
    "train",
    r":1: header field 'user_id:tok': unknown "
    "type",
  ),
  ("valid_short_row.tsv", "valid", r":2: expected 4 columns"),
  ("valid_no_rating_column.tsv", "valid", r":1: has no rating column but another split"),
  ("test_latin1.tsv", "test", r":3: not utf-8 text"),
  ("items_empty.tsv", "items", r": file is empty"),
  ("items_latin1.tsv", "items", r":6: not utf-8 text"),
  ("items_binary_garbage.tsv", "items", r":2: not utf-8 text"),
  ("items_short_row.tsv", "items", r":6: expected 4 columns, found 2"),
  ("items_year_not_integer.tsv", "items", r":6: year 'nineteen' is not an integer"),
  ("items_no_id_column.tsv", "items", r":1: header .* names no item_id column"),
  ("items_zip.tsv", "items", r": is a zip-compressed file"),
]


@pytest.mark.parametrize("name,role,pattern", PRESPLIT_CASES, ids=[c[0] for c in PRESPLIT_CASES])
def test_presplit_corpus_file_fails_in_one_line(cache, name, role, pattern):
  files = {
    "train": GOOD / "train.tsv",
    "valid": GOOD / "valid.tsv",
    "test": GOOD / "test.tsv",
    "items": "",
  }
  files[role] = CORPUS / name
  code, line = fails_in_one_line(presplit(cache, **files), cache)
  assert code == 2
  assert re.match(rf"error: {re.escape(str(CORPUS / name))}{pattern}", line), line


MMREC_CASES = [
  (
    "mmrec_item_id_1e12.inter",
    None,
    r"/ds\.inter:62: item id 1000000000000: MMRec item "
    r"ids are dense",
  ),
  ("mmrec_negative_user.inter", None, r"/ds\.inter:62: user id '-1': MMRec ids must be"),
  ("mmrec_bad_x_label.inter", None, r"/ds\.inter:62: x_label 5 is not 0"),
  ("mmrec_no_x_label.inter", None, r"/ds\.inter:1: header .* has no x_label column"),
  ("mmrec_string_item_id.inter", None, r"/ds\.inter:62: item id 'B00XYZ'"),
  (
    "mmrec_id_overflows_int64.inter",
    None,
    r"/ds\.inter:62: item id "
    r"'99999999999999999999': MMRec ids must be",
  ),
  ("mmrec_good.inter", "mmrec_image_feat_nan.npy", r"/image_feat\.npy.*: row 6 has a NaN"),
  (
    "mmrec_good.inter",
    "mmrec_image_feat_inf.npy",
    r"/image_feat\.npy.*: row 2 has a NaN or "
    "infinite",
  ),
  (
    "mmrec_good.inter",
    "mmrec_image_feat_too_few_rows.npy",
    r"/image_feat\.npy.*: 6 rows "
    r"but num_items=10",
  ),
  (
    "mmrec_item_id_1e12.inter",
    "mmrec_image_feat_inf.npy",
    r"/ds\.inter:62: item id "
    r"1000000000000 has no row in image_feat\.npy \(10 rows",
  ),
  ("mmrec_good.inter", "mmrec_image_feat_1d.npy", r"/image_feat\.npy: expected a 2-D"),
  (
    "mmrec_good.inter",
    "mmrec_image_feat_garbage.npy",
    r"/image_feat\.npy: unreadable "
    r"\.npy",
  ),
]


@pytest.mark.parametrize(
  "inter,feat,pattern", MMREC_CASES, ids=[f"{c[0]}+{c[1]}" if c[1] else c[0] for c in MMREC_CASES]
)
def test_mmrec_corpus_file_fails_in_one_line(cache, tmp_path, inter, feat, pattern):
  code, line = fails_in_one_line(mmrec(cache, tmp_path, inter, feat), cache)
  assert code == 2
  assert re.match(rf"error: {re.escape(str(tmp_path / 'mmrec_ds'))}{pattern}", line), line


def test_corpus_is_at_least_40_files_and_all_are_used():
  used = (
    {c[0] for c in PRESPLIT_CASES}
    | {c[0] for c in MMREC_CASES}
    | {c[1] for c in MMREC_CASES if c[1]}
  )
  files = {p.name for p in CORPUS.iterdir() if p.is_file()}
  assert len(files) >= 40
  assert files - used == set(), "corpus files without a test"


def test_gzip_compressed_tsv_is_read_transparently(cache, tmp_path):
  import gzip

  gz = tmp_path / "train.tsv.gz"
  gz.write_bytes(gzip.compress((GOOD / "train.tsv").read_bytes()))
  plain = prepare_lib.prepare(presplit(cache))
  zipped = prepare_lib.prepare(presplit(cache, train=gz))
  assert list(zipped.user_raw_ids()) == list(plain.user_raw_ids())
  np.testing.assert_array_equal(zipped.split("train").items, plain.split("train").items)


def _ids_of(cache, tmp_path, rows: list[str], name: str) -> list[str]:
  train = tmp_path / f"{name}.tsv"
  train.write_text(
    "user_id\titem_id\trating\ttimestamp\n"
    + "".join(r.rstrip("\n") + f"\t1\t{k}\n" for k, r in enumerate(rows))
  )
  ds = prepare_lib.prepare(presplit(cache, train=train))
  return [str(u) for u in ds.user_raw_ids()]


def test_ids_are_tokens_whatever_the_other_rows_hold(cache, tmp_path):
  """Issue 14.6: "001" is never merged with "1", with or without non-numeric ids."""
  numeric = _ids_of(cache, tmp_path, ["001\t1\n", "1\t2\n"], "numeric")
  mixed = _ids_of(cache, tmp_path, ["001\t1\n", "1\t2\n", "u7\t3\n"], "mixed")
  assert {"001", "1"} <= set(numeric) and {"001", "1", "u7"} <= set(mixed)
  # "1" in the good valid/test files is the same user in both datasets.
  assert set(numeric) <= set(mixed)


def test_id_beyond_int64_is_a_token_not_a_traceback(cache, tmp_path):
  ids = _ids_of(cache, tmp_path, ["99999999999999999999\t1\n", "1\t2\n"], "big")
  assert "99999999999999999999" in ids


def test_nan_written_into_a_prepared_shard_is_named_at_load(cache, tmp_path):
  """Issue 14.7: a shard changed after preparation fails naming shard, row and item."""
  from mmrec_jax.data.dataset import PreparedDataset
  from mmrec_jax.loop import setup

  ds = prepare_lib.prepare(presplit(cache, items=GOOD / "items.tsv"))
  copy = tmp_path / "prepared"
  shutil.copytree(ds.path, copy)
  shard = sorted((copy / "features" / "text").glob("shard-*.npy"))[0]
  rows = np.load(shard)
  rows[3, 0] = np.nan
  np.save(shard, rows)
  ds2 = PreparedDataset.open(copy)
  config = config_lib.base_config()
  with pytest.raises(MmrecError) as info:
    setup.build_data_info(ds2, config, ("text",))
  msg = str(info.value)
  assert msg.startswith(f"{shard}: modality 'text': row 3 = item 3 (raw id "), msg
  assert "NaN or infinite" in msg and "\n" not in msg


# ------------------------------------------------------------------ config and workdir


@pytest.fixture
def earlier_run(tmp_path) -> pathlib.Path:
  """Stand-in files of a finished run that a failing command must leave as they are."""
  run = tmp_path / "run"
  (run / "checkpoints" / "4").mkdir(parents=True)
  (run / "checkpoints" / "4" / "x").write_bytes(b"state")
  (run / "results.json").write_text('{"status": "finished"}\n')
  return run


@pytest.mark.parametrize(
  "key,value,pattern",
  [
    ("model.embed_dim", 0, r"config\.model\.embed_dim=0: must be a number >= 1"),
    (
      "train.max_checkpoints",
      0,
      r"config\.train\.max_checkpoints=0: must be a number >= 1 "
      r"\(latest checkpoints kept",
    ),
    ("input.batch_size", -5, r"config\.input\.batch_size=-5: must be a number >= 1"),
    ("train.num_epochs", 0, r"config\.train\.num_epochs=0"),
    ("eval.ks", (0, 10), r"config\.eval\.ks=\(0, 10\): must be positive integers"),
    ("eval.user_chunk", 0, r"config\.eval\.user_chunk=0"),
  ],
)
def test_config_value_out_of_range_is_one_line_before_anything_runs(
  earlier_run, key, value, pattern
):
  from mmrec_jax.train import train_and_evaluate

  config = config_lib.base_config()
  section, field = key.split(".")
  config[section][field] = value
  before = tree_digest(earlier_run)
  with pytest.raises(MmrecError) as info:
    train_and_evaluate(config, earlier_run)
  assert info.value.exit_code == 2 and re.match(pattern, str(info.value)), str(info.value)
  assert tree_digest(earlier_run) == before


def test_workdir_that_is_a_file_is_one_line(tmp_path):
  from mmrec_jax.train import train_and_evaluate

  f = tmp_path / "notes.txt"
  f.write_text("mine")
  with pytest.raises(MmrecError) as info:
    train_and_evaluate(config_lib.base_config(), f)
  assert str(info.value) == f"--workdir={f}: exists and is not a directory"
  assert f.read_text() == "mine"


def test_workdir_that_cannot_be_created_is_one_line(tmp_path):
  from mmrec_jax.train import train_and_evaluate

  f = tmp_path / "notes.txt"
  f.write_text("mine")
  with pytest.raises(MmrecError) as info:
    train_and_evaluate(config_lib.base_config(), f / "run")
  assert str(info.value).startswith(f"--workdir={f / 'run'}: cannot write there (")


def test_full_disk_is_one_line_exit_1(tmp_path):
  """An OSError from the environment (ENOSPC, EROFS) is one line, exit 1, no traceback."""
  code = """if True:
    import errno, sys
    from mmrec_jax import main

    class Wrapped(Exception):
      pass

    def explode(*_):
      try:
        raise OSError(errno.ENOSPC, "No space left on device", "/w/checkpoints/4/state")
      except OSError as e:
        raise Wrapped("async save failed") from e   # as orbax wraps a background error
    main.distributed.initialize_from_flags = explode
    sys.exit(main.run([]))
  """
  out = subprocess.run(
    [sys.executable, "-c", code], check=False, cwd=REPO, capture_output=True, text=True, timeout=120
  )
  assert out.returncode == 1, out.stderr[-3000:]
  assert _only_error_line(out) == (
    "error: /w/checkpoints/4/state: No space left on device (errno ENOSPC)"
  )


def test_compare_checks_runs_and_baseline_before_training(tmp_path):
  from mmrec_jax import compare

  config = config_lib.base_config()
  with pytest.raises(ValueError, match=r"--baseline='nope' is not one of the runs"):
    compare.run_comparison(config, ["bpr_mf", "two_tower"], tmp_path / "cmp", baseline="nope")
  with pytest.raises(ValueError, match=r"--runs: 'bpr_mff': model.name='bpr_mff' is not one"):
    compare.run_comparison(config, ["bpr_mff"], tmp_path / "cmp")
  assert not (tmp_path / "cmp").exists()  # nothing trained, nothing created


def _main(*args, timeout=180) -> subprocess.CompletedProcess:
  return subprocess.run(
    [sys.executable, "-m", "mmrec_jax.main", *args],
    check=False,
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=timeout,
    env=dict(
      os.environ, MMREC_JAX_CACHE=os.environ.get("MMREC_JAX_CACHE", str(REPO / ".no-cache"))
    ),
  )


def _only_error_line(out: subprocess.CompletedProcess) -> str:
  assert "Traceback" not in out.stderr, out.stderr[-3000:]
  errors = [l for l in out.stderr.splitlines() if l.startswith("error:")]
  assert len(errors) == 1 and out.stderr.rstrip().splitlines()[-1] == errors[0], out.stderr
  return errors[0]


def test_end_to_end_bad_file_through_main(tmp_path):
  bad = CORPUS / "train_latin1.tsv"
  out = _main(
    "--config=experiments/synthetic.py:smoke",
    "--mode=prepare",
    f"--config.data.cache_dir={tmp_path / 'c'}",
    "--config.data.source=presplit",
    f"--config.data.train={bad}",
    f"--config.data.valid={GOOD / 'valid.tsv'}",
    f"--config.data.test={GOOD / 'test.tsv'}",
  )
  assert out.returncode == 2
  assert _only_error_line(out).startswith(f"error: {bad}:5: not utf-8 text")


@pytest.mark.parametrize(
  "args,pattern",
  [
    (("--config.model.embed_dim=0",), r"error: config\.model\.embed_dim=0: must be"),
    (("--config.train.max_checkpoints=0",), r"error: config\.train\.max_checkpoints=0"),
  ],
)
def test_end_to_end_bad_config_value_through_main(tmp_path, args, pattern):
  out = _main(
    "--config=experiments/synthetic.py:smoke",
    f"--workdir={tmp_path / 'w'}",
    f"--config.data.cache_dir={tmp_path / 'c'}",
    *args,
  )
  assert out.returncode == 2 and re.match(pattern, _only_error_line(out)), out.stderr
  assert not (tmp_path / "c").exists()  # failed before any data was prepared


def test_end_to_end_workdir_is_a_file_through_main(tmp_path):
  f = tmp_path / "file"
  f.write_text("x")
  out = _main(
    "--config=experiments/synthetic.py:smoke",
    f"--workdir={f}",
    f"--config.data.cache_dir={tmp_path / 'c'}",
  )
  assert out.returncode == 2
  assert _only_error_line(out) == f"error: --workdir={f}: exists and is not a directory"


def test_features_command_without_the_text_extra_is_one_line(cache, tmp_path):
  """Issue 14.8: `python -m mmrec_jax.features` without tokenizers/safetensors installed."""
  ds = prepare_lib.prepare(presplit(cache, items=GOOD / "items.tsv"))
  copy = tmp_path / "prepared"
  shutil.copytree(ds.path, copy)
  before = tree_digest(copy)
  code = f"""if True:
    import sys
    sys.modules["tokenizers"] = None     # as if the 'text' extra were not installed
    sys.modules["safetensors"] = None
    from absl import app
    from mmrec_jax.features import __main__ as cli
    sys.argv = ["features", "--dataset={copy}", "--modality=text", "--progress=false"]
    app.run(lambda argv: sys.exit(cli.main(argv)))
  """
  out = subprocess.run(
    [sys.executable, "-c", code], check=False, cwd=REPO, capture_output=True, text=True, timeout=300
  )
  assert out.returncode == 2, out.stderr[-3000:]
  line = _only_error_line(out)
  assert re.match(
    r"error: features: --modality=text needs the 'text' extra \(Python module "
    r"'(tokenizers|safetensors)' is not installed\): pip install -e '\.\[text\]'",
    line,
  ), line
  assert tree_digest(copy) == before
