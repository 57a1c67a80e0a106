"""Graph machinery: user-item propagation (segment sums, dense block, host CSR) and
on-device kNN item graphs.

(The 'graph' feature modality built from side data is extracted by
:mod:`mmrec_jax.features.side_graph`.)
"""

from mmrec_jax.graph.knn import combine, knn_edges, knn_graph
from mmrec_jax.graph.propagation import (
  PROPAGATIONS,
  BipartiteGraph,
  EdgeList,
  bipartite_graph,
  choose_propagation,
  degree_sensitive_prune,
  item_propagate,
  lightgcn_propagate,
  segment_propagate,
  to_items,
  to_users,
  user_item_graph,
)

__all__ = [
  "PROPAGATIONS",
  "BipartiteGraph",
  "EdgeList",
  "bipartite_graph",
  "choose_propagation",
  "combine",
  "degree_sensitive_prune",
  "item_propagate",
  "knn_edges",
  "knn_graph",
  "lightgcn_propagate",
  "segment_propagate",
  "to_items",
  "to_users",
  "user_item_graph",
]
