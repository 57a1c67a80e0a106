"""io_utils: hashing, atomic writes (a failure keeps the old file), dir swaps, manifests."""

import hashlib
import json
import os
import pathlib

import numpy as np
import pytest

from mmrec_jax import io_utils
from mmrec_jax.errors import DataError


def _siblings(path: pathlib.Path) -> list[str]:
  return sorted(p.name for p in path.parent.iterdir())


def test_sha256_file_matches_hashlib(tmp_path):
  path = tmp_path / "blob.bin"
  data = np.random.default_rng(0).bytes(3 * 1024 + 17)
  path.write_bytes(data)
  want = hashlib.sha256(data).hexdigest()
  assert io_utils.sha256_file(path) == want
  assert io_utils.sha256_file(path, chunk=1000) == want  # several blocks
  (tmp_path / "empty").write_bytes(b"")
  assert io_utils.sha256_file(tmp_path / "empty") == hashlib.sha256(b"").hexdigest()
  # a known answer, independent of hashlib
  (tmp_path / "abc").write_bytes(b"abc")
  assert io_utils.sha256_file(str(tmp_path / "abc")) == (
    "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
  )


def test_atomic_writes_replace_and_leave_no_temp_files(tmp_path):
  path = tmp_path / "out.json"
  io_utils.atomic_write_bytes(path, b"old")
  assert path.read_bytes() == b"old"
  io_utils.atomic_write_text(path, "nouveau é")
  assert path.read_text(encoding="utf-8") == "nouveau é"
  io_utils.atomic_write_json(path, {"b": 1, "a": [1, 2]})
  assert path.read_text() == json.dumps({"b": 1, "a": [1, 2]}, indent=1) + "\n"
  io_utils.atomic_write_json(path, {"b": 1, "a": 2}, indent=2, sort_keys=True)
  assert path.read_text() == '{\n  "a": 2,\n  "b": 1\n}\n'
  assert _siblings(path) == ["out.json"]


def test_atomic_write_gets_the_usual_permissions(tmp_path):
  umask = os.umask(0o022)
  os.umask(umask)
  io_utils.atomic_write_bytes(tmp_path / "f", b"x")
  plain = tmp_path / "g"
  plain.write_bytes(b"x")
  assert (tmp_path / "f").stat().st_mode & 0o777 == plain.stat().st_mode & 0o777


def test_failure_mid_write_keeps_the_old_file(tmp_path):
  path = tmp_path / "results.json"
  io_utils.atomic_write_json(path, {"v": 1})
  before = path.read_bytes()

  class Boom(Exception):
    pass

  with pytest.raises(Boom):
    with io_utils.atomic_path(path) as tmp:
      with open(tmp, "w") as f:
        f.write('{"v": 2, "half')  # half written, then the writer dies
      raise Boom()
  assert path.read_bytes() == before
  assert _siblings(path) == ["results.json"]

  class Unserialisable:
    pass

  with pytest.raises(TypeError):
    io_utils.atomic_write_json(path, {"v": Unserialisable()})
  assert path.read_bytes() == before and _siblings(path) == ["results.json"]


def test_atomic_path_keeps_the_suffix_for_format_sniffing_writers(tmp_path):
  path = tmp_path / "arr.npy"
  with io_utils.atomic_path(path) as tmp:
    assert tmp.parent == tmp_path and tmp.suffix == ".npy" and tmp.name.startswith(".")
    np.save(tmp, np.arange(3))  # np.save would append .npy otherwise
  np.testing.assert_array_equal(np.load(path), np.arange(3))
  assert _siblings(path) == ["arr.npy"]
  with pytest.raises(FileNotFoundError):  # nothing written: nothing replaced
    with io_utils.atomic_path(tmp_path / "never.txt"):
      pass
  assert not (tmp_path / "never.txt").exists() and _siblings(path) == ["arr.npy"]


def test_replace_dir_installs_new_and_removes_old(tmp_path):
  target = tmp_path / "ds"
  new = tmp_path / ".ds.tmp-1"
  new.mkdir()
  (new / "a").write_text("1")
  io_utils.replace_dir(new, target)  # no old directory: one rename
  assert (target / "a").read_text() == "1" and not new.exists()
  newer = tmp_path / ".ds.tmp-2"
  newer.mkdir()
  (newer / "b").write_text("2")
  io_utils.replace_dir(newer, target)
  assert sorted(p.name for p in target.iterdir()) == ["b"]
  assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]  # old one deleted


def test_replace_dir_failure_restores_the_old_dir(tmp_path, monkeypatch):
  target = tmp_path / "ds"
  target.mkdir()
  (target / "a").write_text("old")
  new = tmp_path / ".ds.tmp-1"
  new.mkdir()
  real_rename = os.rename
  calls = []

  def flaky_rename(src, dst):
    calls.append((pathlib.Path(src).name, pathlib.Path(dst).name))
    if pathlib.Path(src) == new:
      raise OSError("disk gone")
    return real_rename(src, dst)

  monkeypatch.setattr(io_utils.os, "rename", flaky_rename)
  with pytest.raises(OSError, match="disk gone"):
    io_utils.replace_dir(new, target)
  assert (target / "a").read_text() == "old"
  assert calls[0][1].startswith(".ds.old-")  # the name data/prepare.py restores from
  assert sorted(p.name for p in tmp_path.iterdir()) == [".ds.tmp-1", "ds"]


@pytest.mark.parametrize(
  "content, problem",
  [
    (None, "file not found"),
    ("{not json", "not valid JSON"),
    (b"\xff\xfe{}", "not valid JSON"),
    ("[1, 2]", "expected a JSON object, got list"),
  ],
)
def test_read_json_errors_are_one_line_naming_the_file(tmp_path, content, problem):
  path = tmp_path / "manifest.json"
  if isinstance(content, bytes):
    path.write_bytes(content)
  elif content is not None:
    path.write_text(content)
  with pytest.raises(DataError) as e:
    io_utils.read_json(path)
  msg = str(e.value)
  assert "\n" not in msg and str(path) in msg and problem in msg


def test_read_json_of_a_directory_is_a_data_error(tmp_path):
  with pytest.raises(DataError, match="unreadable"):
    io_utils.read_json(tmp_path)


def test_read_json_reads_an_object(tmp_path):
  path = tmp_path / "manifest.json"
  io_utils.atomic_write_json(path, {"num_items": 3, "modalities": {"text": "features/text"}})
  assert io_utils.read_json(path) == {"num_items": 3, "modalities": {"text": "features/text"}}
