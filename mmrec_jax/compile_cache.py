"""JAX's persistent compilation cache: compiled programs kept on disk between runs.

Why: on CPU, compiling a small model's programs costs more than training it. A BPR-MF
run on ML-100K spends ~1.5 s compiling (the jitted init, the device-epoch loop, the
evaluator) and ~0.7 s training to Cornac's best NDCG (benchmarks/RESULTS_bpr_peers.md);
with the cache warm, a second run of the same shapes loads the executables in
milliseconds. Accelerators gain more: a TPU/GPU compile takes seconds to minutes.

``train.compile_cache``:
  * ``auto`` (default): on, in ``<cache>/xla`` (``<cache>`` = ``data.cache_dir``, else
    ``$MMREC_JAX_CACHE``, else ``~/.cache/mmrec_jax``: the dataset cache's root), except
    on CPU with several devices or processes (fake devices: tests; gloo), where loading
    the device-epoch loop from the cache aborted XLA:CPU's in-process collectives with
    jax 0.10.2 (data/device_epoch.py) and cross-process runs were never tried with it;
    also left alone when the user configured JAX's cache already
    (``JAX_COMPILATION_CACHE_DIR`` or ``jax_compilation_cache_dir``);
  * ``off``: never;
  * a directory: on, there (any process; the user takes the multi-CPU-device risk).

The cache is keyed by JAX on the program, the compile options, the backend and the jax
version, so a stale entry is never used for a different program; an unreadable entry
makes JAX recompile (a warning), it does not fail the run. Programs that compile in
under ``MIN_COMPILE_SECONDS`` are not written (eager ops, tiny jits: files for nothing).
"""

from __future__ import annotations

import os
import pathlib

import jax
import ml_collections
from jax.experimental.compilation_cache import compilation_cache as jax_cc

from mmrec_jax.data.cache import cache_dir_of
from mmrec_jax.errors import ConfigError

MIN_COMPILE_SECONDS = 0.1


def decide(config: ml_collections.ConfigDict) -> tuple[str | None, str]:
  """(cache directory or None, why) for ``train.compile_cache``; no side effects."""
  mode = str(config.train.get("compile_cache", "auto"))
  if mode == "off":
    return None, "train.compile_cache='off'"
  if mode != "auto":
    if not mode.strip() or mode.startswith("-"):
      raise ConfigError(
        f"train.compile_cache={mode!r} is not 'auto', 'off' or a directory for the cache"
      )
    return str(pathlib.Path(mode).expanduser()), f"train.compile_cache={mode!r}"
  if os.environ.get("JAX_COMPILATION_CACHE_DIR") or jax.config.jax_compilation_cache_dir:
    return None, "JAX's compilation cache is configured outside mmrec_jax (left as it is)"
  local = jax.local_devices()
  if local[0].platform == "cpu" and (len(local) > 1 or jax.process_count() > 1):
    return None, "several CPU devices: loading cached multi-device loops can abort XLA:CPU"
  return str(cache_dir_of(config.data) / "xla"), "train.compile_cache='auto'"


def enable(config: ml_collections.ConfigDict) -> str:
  """Turns the cache on or leaves it off as ``train.compile_cache`` says; returns why.

  Programs compiled before this call are not cached; those after are.
  """
  path, why = decide(config)
  if path is None:
    return f"compilation cache off: {why}"
  try:
    pathlib.Path(path).mkdir(parents=True, exist_ok=True)
  except OSError as e:
    # A read-only home must not stop a training run: compile every time instead.
    return f"compilation cache off: cannot create {path} ({e.strerror or e})"
  jax.config.update("jax_compilation_cache_dir", path)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_SECONDS)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
  # JAX decides at its first compile whether the process uses the cache; a compile made
  # before this (an eager op) would have decided "no" for good.
  jax_cc.reset_cache()
  return f"compilation cache on: {path} ({why})"


__all__ = ["MIN_COMPILE_SECONDS", "decide", "enable"]
