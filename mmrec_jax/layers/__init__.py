"""Building blocks: row-sharded tables, modality projections, fusion."""

from mmrec_jax.layers.embedding import Embed, Table, padded_rows
from mmrec_jax.layers.fusion import FUSIONS, make_fusion
from mmrec_jax.layers.projection import ModalityMLP, dense, dropout

__all__ = [
  "FUSIONS",
  "Embed",
  "ModalityMLP",
  "Table",
  "dense",
  "dropout",
  "make_fusion",
  "padded_rows",
]
