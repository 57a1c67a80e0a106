"""``Task``: a model, a loss and two optimizers as sharded, jitted functions.

``Task`` ties a model (``mmrec_jax.models``), a loss (``mmrec_jax.losses``), the sparse
row-wise optimizer for tables (``mmrec_jax.optim.sparse``) and an optax optimizer for
dense layers into three jitted functions with explicit shardings: ``init``,
``train_step`` and ``eval_reprs``. The training loop (``mmrec_jax/train.py``) owns
iteration, checkpoints and evaluation cadence.

It only wires parts together: the state layout (``state.py``), frozen data
(``placement.py``), the batch contract (``batch.py``) and the training regime the
model's registry entry names (``rows.py``, ``graph.py`` or ``rating.py``), chosen once
here.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

import jax
import ml_collections
from flax import nnx
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from mmrec_jax import losses, sharding
from mmrec_jax.errors import ConfigError, DataError
from mmrec_jax.layers.embedding import padded_rows
from mmrec_jax.models import registry
from mmrec_jax.models.build import build_model
from mmrec_jax.optim.dense import make_dense_optimizer
from mmrec_jax.optim.sparse import make_sparse_optimizer
from mmrec_jax.step import placement
from mmrec_jax.step.batch import BatchContract
from mmrec_jax.step.closed_form import ClosedFormRegime
from mmrec_jax.step.graph import GraphRegime
from mmrec_jax.step.pointwise import PointwiseRegime
from mmrec_jax.step.rating import RatingRegime
from mmrec_jax.step.regime import Regime, Setup
from mmrec_jax.step.rows import RowsRegime
from mmrec_jax.step.state import StateLayout
from mmrec_jax.step.types import COMPUTE_DTYPES, DataInfo, State
from mmrec_jax.step.update import RankObjective

# Training regimes by the name a model's registry entry gives (models/registry.py).
REGIMES: dict[str, type[Regime]] = {
  "rows": RowsRegime,
  "graph": GraphRegime,
  "rating": RatingRegime,
  "pointwise": PointwiseRegime,
  "closed_form": ClosedFormRegime,
}


def check_modalities(config: ml_collections.ConfigDict, info: DataInfo) -> tuple[str, ...]:
  """The sorted modalities the model uses, checked against the data's feature tables."""
  wanted = config.data.modalities if info.modalities is None else info.modalities
  mods = registry.model_modalities(config.model.name, tuple(sorted(wanted)))
  for m in mods:
    if m not in info.features or m not in info.feature_masks:
      raise ConfigError(
        f"data.modalities has {m!r} but the dataset has features for {sorted(info.features)}"
      )
    f, k = info.features[m], info.feature_masks[m]
    if f.ndim != 2 or f.shape[0] != info.num_items:
      raise DataError(
        f"DataInfo.features[{m!r}]", f"shape {f.shape}, expected [{info.num_items}, dim]"
      )
    if k.shape != (info.num_items,):
      raise DataError(
        f"DataInfo.feature_masks[{m!r}]", f"shape {k.shape}, expected [{info.num_items}]"
      )
  return mods


class Task:
  """Model + loss + optimizers with sharded ``init``/``train_step``/``eval_reprs``."""

  def __init__(self, config: ml_collections.ConfigDict, info: DataInfo, mesh: Mesh):
    self.config = config
    self.info = info
    self.mesh = mesh
    self.spec = registry.get(config.model.name)
    self.num_users = int(info.num_users)
    self.num_items = int(info.num_items)
    self.padded_users = padded_rows(self.num_users, mesh.size)
    self.padded_items = padded_rows(self.num_items, mesh.size)
    losses.check_loss_name(config.loss.name)
    if config.train.compute_dtype not in COMPUTE_DTYPES:
      raise ConfigError(
        f"train.compute_dtype={config.train.compute_dtype!r} is not one of {list(COMPUTE_DTYPES)}"
      )
    self.modalities = check_modalities(config, info)
    in_batch = config.input.negative_sampler == "in_batch"
    feature_dims = {m: int(info.features[m].shape[1]) for m in self.modalities}
    regime_cls = REGIMES[self.spec.regime]
    self.contract = regime_cls.batch_contract(
      BatchContract(
        in_batch=in_batch,
        stream=bool(config.input.stream_features),
        use_logq=(
          config.loss.name == "sampled_softmax" and in_batch and bool(config.loss.logq_correction)
        ),
        modalities=self.modalities,
        feature_dims=feature_dims,
      )
    )
    build = functools.partial(
      build_model,
      config.model,
      num_users=self.padded_users,
      num_items=self.padded_items,
      feature_dims=feature_dims,
      # Extra model arguments a regime derives from the data (pointwise: side vocabularies).
      **getattr(regime_cls, "model_kwargs", lambda info: {})(info),
    )
    with nnx.use_eager_sharding(False):
      abstract = nnx.eval_shape(lambda: build(rngs=nnx.Rngs(0)))
    regime_cls.prepare_abstract(abstract, mesh)
    self.layout = StateLayout(
      build,
      abstract,
      mesh,
      make_sparse_optimizer(
        config.optimizer.sparse,
        config.optimizer.sparse_learning_rate,
        config.optimizer.get("schedule", "constant"),
        int(config.optimizer.get("decay_steps", 0)),
      ),
      make_dense_optimizer(
        config.optimizer.name,
        config.optimizer.learning_rate,
        config.optimizer.weight_decay,
        config.optimizer.get("schedule", "constant"),
        int(config.optimizer.get("decay_steps", 0)),
      ),
    )
    self.regime = regime_cls(
      Setup(
        config=config,
        info=info,
        mesh=mesh,
        layout=self.layout,
        contract=self.contract,
        objective=RankObjective(
          config.loss.name, in_batch, self.contract.use_logq, float(config.loss.temperature)
        ),
        modalities=self.modalities,
        num_users=self.num_users,
        num_items=self.num_items,
        padded_users=self.padded_users,
        padded_items=self.padded_items,
        compute_dtype=COMPUTE_DTYPES[config.train.compute_dtype],
        model_class=type(abstract),
      )
    )
    self._frozen = self.regime.frozen_data(
      placement.place_features(
        mesh,
        info.features,
        info.feature_masks,
        self.modalities,
        self.padded_items,
        stream=self.contract.stream,
        item_counts=info.item_counts,
      )
    )
    frozen_shardings = jax.tree.map(lambda a: a.sharding, self._frozen)
    shardings = self.layout.shardings
    self._train_jit = jax.jit(
      self.regime.train_fn,
      donate_argnums=0,
      in_shardings=(shardings, NamedSharding(mesh, P(sharding.DATA)), frozen_shardings),
      out_shardings=(shardings, sharding.replicated(mesh)),
    )
    self._eval_jit = jax.jit(
      self.regime.eval_fn,
      in_shardings=(shardings["params"], frozen_shardings),
      out_shardings=(
        sharding.named_sharding(mesh, "users", "embed"),
        sharding.named_sharding(mesh, "items", "embed"),
      ),
    )

  @property
  def state_shardings(self) -> State:
    """NamedShardings of the state on this task's mesh (Orbax restore targets)."""
    return self.layout.shardings

  def abstract_state(self) -> State:
    """ShapeDtypeStructs of the state, each with its ``.sharding``."""
    return self.layout.abstract_state()

  def init(self, seed: int) -> State:
    """Fresh state, created directly in its shards (jit with ``out_shardings``)."""
    init = jax.jit(self.layout.init_fn, out_shardings=self.layout.shardings)
    return init(jax.random.PRNGKey(seed))

  def batch_keys(self) -> tuple[str, ...]:
    """Keys ``train_step`` reads from a batch (others are ignored)."""
    return self.contract.keys()

  def train_step(
    self, state: State, batch: Mapping[str, jax.Array]
  ) -> tuple[State, dict[str, jax.Array]]:
    """One update. ``state`` is donated; metrics are device scalars (no host sync)."""
    return self._train_jit(state, self.contract.select(batch), self._frozen)

  @property
  def supports_device_epochs(self) -> bool:
    """True when the regime's step reads only ids (``data/device_epoch.py`` may feed it)."""
    return bool(getattr(self.regime, "device_epochs", False))

  @property
  def frozen(self):
    """The frozen on-device data the step reads (features, graph), placed once."""
    return self._frozen

  def step_fn(self, state: State, batch: Mapping[str, jax.Array], frozen):
    """The un-jitted step, for loops compiled around it (``data/device_epoch.py``)."""
    return self.regime.train_fn(state, self.contract.select(batch), frozen)

  def eval_reprs(self, state: State) -> tuple[jax.Array, jax.Array]:
    """(users [padded_users, D], items [padded_items, D]), row-sharded, deterministic.

    ``score(u, i) = users[u] . items[i]``. Rows >= num_users / num_items are padding
    (item padding rows are zeros): the evaluator must exclude them from rankings.
    """
    return self.regime.eval_reprs(state["params"], self._frozen, self._eval_jit)

  def lower_train_step(self, batch_size: int, num_negatives: int = 1):
    """``jax.jit(...).lower`` of the step on abstract inputs (compile-only checks)."""
    return self._train_jit.lower(
      self.abstract_state(), self.abstract_batch(batch_size, num_negatives), self._frozen
    )

  def abstract_batch(
    self, batch_size: int, num_negatives: int = 1
  ) -> dict[str, jax.ShapeDtypeStruct]:
    """ShapeDtypeStructs of a global batch (for lowering and tests)."""
    return self.contract.abstract(self.mesh, batch_size, num_negatives)


__all__ = ["REGIMES", "Task", "check_modalities"]
