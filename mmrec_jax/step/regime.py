"""What a training regime is: the interface ``rows.py``, ``graph.py``, ``rating.py`` implement.

A regime decides how a model's towers are obtained inside the step, which table rows
are differentiated and, for an objective other than ranking, which batch keys it reads.
The model's registry entry names its regime; ``Task`` looks it up in ``step.REGIMES``
once and never branches on it again.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import ml_collections
from jax.sharding import Mesh

from mmrec_jax.step.batch import BatchContract
from mmrec_jax.step.state import StateLayout
from mmrec_jax.step.types import DataInfo, Frozen, State
from mmrec_jax.step.update import RankObjective


@dataclasses.dataclass(frozen=True)
class Setup:
  """Everything a regime needs, validated and built once by ``Task``."""

  config: ml_collections.ConfigDict
  info: DataInfo
  mesh: Mesh
  layout: StateLayout
  contract: BatchContract
  objective: RankObjective
  modalities: tuple[str, ...]
  num_users: int
  num_items: int
  padded_users: int
  padded_items: int
  compute_dtype: Any
  model_class: type


class Regime:
  """Base of the training regimes (see module doc)."""

  def __init__(self, setup: Setup):
    self.s = setup

  @staticmethod
  def batch_contract(contract: BatchContract) -> BatchContract:
    """The batch contract the regime's step reads (default: the ranking contract as is)."""
    return contract

  @staticmethod
  def prepare_abstract(abstract, mesh) -> None:
    """Sets static attributes on the abstract model before its graph is split (none)."""
    del abstract, mesh

  def frozen_data(self, frozen: Frozen) -> Frozen:
    """Adds what the regime keeps on device beside the features (default: nothing)."""
    return frozen

  def train_fn(
    self, state: State, batch: dict[str, jax.Array], frozen: Frozen
  ) -> tuple[State, dict[str, jax.Array]]:
    raise NotImplementedError

  def eval_fn(self, params: State, frozen: Frozen) -> tuple[jax.Array, jax.Array]:
    """(users [U, D], items [I, D]) float32, padding item rows zeroed (jitted by Task)."""
    raise NotImplementedError

  def eval_reprs(self, params: State, frozen: Frozen, eval_jit) -> tuple[jax.Array, jax.Array]:
    """Evaluation towers; ``eval_jit`` is ``eval_fn`` jitted with the Task's shardings."""
    return eval_jit(params, frozen)
