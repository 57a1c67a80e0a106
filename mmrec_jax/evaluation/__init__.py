"""Full-ranking evaluation: metrics, chunked sharded ranking, slices, exports, significance.

    from mmrec_jax.evaluation import evaluate_embeddings, evaluate_split
    res = evaluate_split(user_matrix, item_matrix, ds, "valid", config.eval, mesh)
    res.metrics["ndcg@10"], res.coverage["coverage@10"], res.slices["cold_items"]

Metric definitions, each next to its code: top-K ranking metrics
:mod:`~mmrec_jax.evaluation.metrics`; whole-list AUC / GAUC / MAP
:mod:`~mmrec_jax.evaluation.full`; MAE / RMSE :mod:`~mmrec_jax.evaluation.rating`;
sampled-candidate (uni100 / pop100) metrics :mod:`~mmrec_jax.evaluation.sampled`;
coverage / Gini / novelty / popularity / intra-list diversity
:mod:`~mmrec_jax.evaluation.beyond`; the relevance rule (``eval.relevance_threshold``,
Cornac's) in :func:`evaluate_split`. How ranking runs on device:
:mod:`mmrec_jax.evaluation.ranking`; slice definitions: :mod:`mmrec_jax.evaluation.slices`;
k-fold tables: :mod:`mmrec_jax.evaluation.crossval`.
"""

from mmrec_jax.evaluation.beyond import BEYOND_METRICS, beyond_metrics
from mmrec_jax.evaluation.crossval import fold_markdown, fold_table
from mmrec_jax.evaluation.export import read_topk, write_topk
from mmrec_jax.evaluation.full import FULL_METRICS, full_metrics
from mmrec_jax.evaluation.metrics import METRICS, metric_names, metrics_from_hits
from mmrec_jax.evaluation.ranking import (
  csr_from_pairs,
  csr_union,
  evaluate_embeddings,
  evaluate_split,
  split_csr,
)
from mmrec_jax.evaluation.rating import LOWER_IS_BETTER, RATING_METRICS, rating_metrics
from mmrec_jax.evaluation.result import CSR, EvalResult
from mmrec_jax.evaluation.sampled import sampled_metrics
from mmrec_jax.evaluation.slices import evaluate_slices, slice_metrics, slices_table
from mmrec_jax.evaluation.stats import compare, holm, paired_tests

__all__ = [
  "BEYOND_METRICS",
  "CSR",
  "FULL_METRICS",
  "LOWER_IS_BETTER",
  "METRICS",
  "RATING_METRICS",
  "EvalResult",
  "beyond_metrics",
  "compare",
  "csr_from_pairs",
  "csr_union",
  "evaluate_embeddings",
  "evaluate_slices",
  "evaluate_split",
  "fold_markdown",
  "fold_table",
  "full_metrics",
  "holm",
  "metric_names",
  "metrics_from_hits",
  "paired_tests",
  "rating_metrics",
  "read_topk",
  "sampled_metrics",
  "slice_metrics",
  "slices_table",
  "split_csr",
  "write_topk",
]
