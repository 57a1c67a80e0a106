"""Where mmrec_jax caches what it fetches or builds: downloads, prepared datasets, weights.

One function, in a module of its own because both sides of the data/features split need
it: preparation (prepare.py: ``<cache>/downloads``, ``<cache>/prepared``) and the
MiniLM weights (features/minilm.py: ``<cache>/minilm``), and the feature extractors are
themselves imported by preparation, so neither may import the other for it.
"""

from __future__ import annotations

import os
import pathlib


def cache_dir_of(data) -> pathlib.Path:
  """``data.cache_dir``, else ``$MMREC_JAX_CACHE``, else ``~/.cache/mmrec_jax``."""
  d = data.cache_dir or os.environ.get("MMREC_JAX_CACHE") or "~/.cache/mmrec_jax"
  return pathlib.Path(os.path.expanduser(d))
