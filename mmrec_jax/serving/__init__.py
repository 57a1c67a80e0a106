"""From a trained run to recommendations: library, exports, HTTP server, batch top-K.

    from mmrec_jax.serving import Recommender
    rec = Recommender.load("runs/ml100k")
    rec.recommend(["196"], k=10).rows(0)          # [(raw item id, score), ...]
    rec.recommend_for_history([["242", "302"]])   # a new user, folded in
    rec.similar_items(["242"], k=5)

Commands: ``python -m mmrec_jax.serve --workdir=DIR --port=8000`` (HTTP),
``--mode=batch`` (top-K of every user to Parquet/TSV), ``--mode=export`` (embeddings,
ANN index, ``jax.export`` scorers). Model support for new users/items: ``foldin.SUPPORT``
and docs/serving.md.
"""

from mmrec_jax.serving.foldin import SUPPORT, FoldIn, ItemTower, Support
from mmrec_jax.serving.recommender import (
  Recommendations,
  Recommender,
  UnknownIdError,
  config_from_json,
)

__all__ = [
  "SUPPORT",
  "FoldIn",
  "ItemTower",
  "Recommendations",
  "Recommender",
  "Support",
  "UnknownIdError",
  "config_from_json",
]
