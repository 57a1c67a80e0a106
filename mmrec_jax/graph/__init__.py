"""Graph machinery: edge-list propagation and on-device kNN item graphs.

(The 'graph' feature modality built from side data is extracted by
:mod:`mmrec_jax.features.side_graph`.)
"""

from mmrec_jax.graph.knn import combine, knn_edges, knn_graph
from mmrec_jax.graph.propagation import (
  EdgeList,
  degree_sensitive_prune,
  item_propagate,
  lightgcn_propagate,
  segment_propagate,
  to_items,
  to_users,
  user_item_graph,
)

__all__ = [
  "EdgeList",
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
