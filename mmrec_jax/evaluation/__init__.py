"""Full-ranking evaluation: metrics, chunked sharded ranking, slices, exports, significance.

    from mmrec_jax.evaluation import evaluate_embeddings, evaluate_split
    res = evaluate_split(user_matrix, item_matrix, ds, "valid", config.eval, mesh)
    res.metrics["ndcg@10"], res.coverage["coverage@10"], res.slices["cold_items"]

Metric definitions: :mod:`mmrec_jax.evaluation.metrics`; how ranking runs on device:
:mod:`mmrec_jax.evaluation.ranking`; slice definitions: :mod:`mmrec_jax.evaluation.slices`.
"""

from mmrec_jax.evaluation.export import read_topk, write_topk
from mmrec_jax.evaluation.metrics import METRICS, metric_names, metrics_from_hits
from mmrec_jax.evaluation.ranking import (csr_from_pairs, csr_union, evaluate_embeddings,
                                          evaluate_split, split_csr)
from mmrec_jax.evaluation.result import CSR, EvalResult
from mmrec_jax.evaluation.slices import evaluate_slices, slice_metrics, slices_table
from mmrec_jax.evaluation.stats import compare, holm, paired_tests

__all__ = [
    "CSR", "EvalResult", "METRICS", "compare", "csr_from_pairs", "csr_union",
    "evaluate_embeddings", "evaluate_slices", "evaluate_split", "holm", "metric_names",
    "metrics_from_hits", "paired_tests", "read_topk", "slice_metrics", "slices_table",
    "split_csr", "write_topk",
]
