"""Registry of the graph models (kept apart so models/__init__.py changes by one line)."""

from __future__ import annotations

from mmrec_jax.models.bm3 import BM3
from mmrec_jax.models.freedom import FREEDOM
from mmrec_jax.models.lattice import LATTICE
from mmrec_jax.models.lightgcn import LightGCN
from mmrec_jax.models.mmgcn import MMGCN

GRAPH_MODELS = {"lightgcn": LightGCN, "freedom": FREEDOM, "lattice": LATTICE,
                "bm3": BM3, "mmgcn": MMGCN}

# Graph models that consume item features (data.modalities).
GRAPH_USES_FEATURES: tuple[str, ...] = ("freedom", "lattice", "bm3", "mmgcn")
