"""The persistent compilation cache: when it is on, and that a cached run is the same run."""

import json
import os
import pathlib
import subprocess
import sys

import jax
import pytest

from mmrec_jax import compile_cache
from mmrec_jax import config as config_lib
from mmrec_jax.errors import ConfigError

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _cfg(mode, cache_dir=""):
  c = config_lib.base_config()
  c.train.compile_cache = mode
  c.data.cache_dir = cache_dir
  return c


def test_the_mode_decides_and_auto_stays_off_with_several_cpu_devices(tmp_path, monkeypatch):
  monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR", raising=False)
  assert compile_cache.decide(_cfg("off"))[0] is None
  assert compile_cache.decide(_cfg(str(tmp_path / "x")))[0] == str(tmp_path / "x")
  # The test session has 8 fake CPU devices (conftest.py): auto leaves the cache off.
  assert len(jax.local_devices()) > 1
  path, why = compile_cache.decide(_cfg("auto", str(tmp_path)))
  assert path is None and "several CPU devices" in why
  monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(tmp_path / "user"))
  path, why = compile_cache.decide(_cfg("auto"))
  assert path is None and "outside mmrec_jax" in why
  with pytest.raises(ConfigError, match="train.compile_cache='-x'"):
    compile_cache.decide(_cfg("-x"))
  # A directory that cannot be made (here: under a file) leaves the cache off, the run on.
  (tmp_path / "file").write_text("")
  why = compile_cache.enable(_cfg(str(tmp_path / "file" / "xla")))
  assert why.startswith("compilation cache off: cannot create")
  assert jax.config.jax_compilation_cache_dir != str(tmp_path / "file" / "xla")


def _run(tmp_path, workdir):
  env = dict(os.environ)
  env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=1"
  env["JAX_LOG_COMPILES"] = "1"  # jax then logs cache hits at WARNING (stderr)
  env.pop("JAX_COMPILATION_CACHE_DIR", None)
  cmd = [
    sys.executable,
    "-m",
    "mmrec_jax.main",
    f"--config={ROOT / 'experiments/synthetic.py'}:smoke",
    f"--workdir={tmp_path / workdir}",
    f"--config.data.cache_dir={tmp_path / 'data'}",
    "--config.train.compile_cache=auto",
    "--config.input.device_epochs=on",
  ]
  out = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  results = json.loads((tmp_path / workdir / "results.json").read_text())
  return results, out.stderr


def test_a_second_process_loads_the_programs_and_trains_the_same_model(tmp_path):
  first, err1 = _run(tmp_path, "a")
  cached = list((tmp_path / "data" / "xla").iterdir())
  assert cached, "the first run wrote no compiled program"
  assert "Persistent compilation cache hit" not in err1
  second, err2 = _run(tmp_path, "b")
  assert "Persistent compilation cache hit" in err2
  assert first["test"] == second["test"] and first["valid"] == second["valid"]
  # A damaged entry (a writer killed mid-file: JAX does not write atomically) costs a
  # compile, never the run or its results.
  for f in (tmp_path / "data" / "xla").iterdir():
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
  third, err3 = _run(tmp_path, "c")
  assert "Persistent compilation cache hit" not in err3
  assert first["test"] == third["test"] and first["valid"] == third["valid"]
