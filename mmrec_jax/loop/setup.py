"""Setting up a run before its first step: mesh, checks, data for the model, pipeline.

Checks that need no data run first (mesh shape, batch size over the mesh), so a config
that cannot run fails in a second, before the data is prepared.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging

from mmrec_jax import sharding
from mmrec_jax.data import pipeline as pipeline_lib
from mmrec_jax.data import prepare as prepare_lib
from mmrec_jax.data.dataset import PreparedDataset
from mmrec_jax.data.side_features import build_side_features
from mmrec_jax.errors import ConfigError
from mmrec_jax.features.auto import ensure_modalities
from mmrec_jax.loop.steps import make_step_source
from mmrec_jax.models import registry
from mmrec_jax.step import DataInfo, Task


def build_data_info(
  ds: PreparedDataset, config: ml_collections.ConfigDict, modalities: tuple[str, ...]
) -> DataInfo:
  """Loads what the model keeps on device: feature tables (unless streamed), counts."""
  train = ds.split("train")
  item_counts = np.bincount(np.asarray(train.items), minlength=ds.num_items).astype(np.int64)
  features, masks = {}, {}
  for m in modalities:
    shards = ds.features(m)
    # NaN/inf never reaches training: named here (shard, row, item), not as a divergence.
    shards.check_finite(ds.item_raw_ids())
    masks[m] = np.asarray(shards.mask, dtype=bool)
    if not config.input.stream_features:
      features[m] = shards.to_array().astype(np.float32)
    else:
      # Streamed: batches carry the rows. The model still needs [num_items, dim] for its
      # dims and for chunked evaluation, which reads rows through this lazy view.
      features[m] = shards.rows()
  # Train-split edges: graph models build their user-item graph from these only.
  return DataInfo(
    num_users=ds.num_users,
    num_items=ds.num_items,
    features=features,
    feature_masks=masks,
    item_counts=item_counts,
    train_users=np.asarray(train.users),
    train_items=np.asarray(train.items),
    train_timestamps=np.asarray(train.timestamps) if ds.manifest["has_timestamp"] else None,
    modalities=tuple(modalities),
    # Categorical side features (pointwise rankers); None unless data.side_features.
    side=build_side_features(ds, config.data, tuple(config.data.side_features)),
  )


def resolve_modalities(
  ds: PreparedDataset, config: ml_collections.ConfigDict
) -> tuple[PreparedDataset, tuple[str, ...]]:
  """The dataset (reopened if features were added) and the modality names to use."""
  wanted = registry.model_modalities(config.model.name, config.data.modalities)
  if not wanted:
    return ds, ()
  ds, wanted = ensure_modalities(ds, config.data, wanted)
  missing = [m for m in wanted if m not in ds.modalities]
  if missing:
    raise ConfigError(
      f"config.data.modalities: {missing} not in the dataset at {ds.path} "
      f"(it has {list(ds.modalities)})"
    )
  return ds, wanted


def make_mesh(config: ml_collections.ConfigDict):
  """The ('data', 'model') mesh of ``config.mesh``; a bad shape is a one-line ConfigError."""
  try:
    return sharding.make_mesh(config.mesh.data, config.mesh.model)
  except ValueError as e:
    raise ConfigError(f"config.mesh: {e}") from None


def check_batch_fits_mesh(
  batch_size: int, mesh: Any, *, process_index: int | None = None, process_count: int | None = None
) -> None:
  """ConfigError unless the GLOBAL batch splits evenly over the mesh's 'data' axis.

  Each process builds ``batch_size / process_count`` rows and
  ``sharding.global_batch_from_local`` lays them over the 'data' rows of the mesh that
  its devices hold. A size that does not divide would only fail inside the first train
  step, as an XLA shape error, after the data was prepared and the model initialised;
  this says which setting to change before any of that.

  Args:
    batch_size: ``config.input.batch_size`` (global, over all processes).
    mesh: the training mesh (``shape`` and ``devices`` are used).
    process_index, process_count: default ``jax.process_index()/process_count()``.
  """
  pid = jax.process_index() if process_index is None else process_index
  nproc = jax.process_count() if process_count is None else process_count
  data = int(mesh.shape[sharding.DATA])
  devices = np.asarray(mesh.devices)
  if batch_size <= 0 or batch_size % data:
    lower, upper = batch_size // data * data, (batch_size // data + 1) * data
    fix = f"{lower} or {upper}" if lower > 0 else f"{upper}"
    raise ConfigError(
      f"input.batch_size={batch_size} does not divide over the mesh's "
      f"'data' axis of size {data} ({devices.size} devices, mesh.model="
      f"{mesh.shape[sharding.MODEL]}): use a multiple of {data}, e.g. {fix}"
    )
  # The 'data' rows (mesh.devices[i]) holding a device of this process: it feeds exactly
  # those rows, batch_size / data examples each, from its batch_size / nproc examples.
  rows = sum(1 for row in devices if any(d.process_index == pid for d in row.ravel()))
  if rows * nproc != data:
    raise ConfigError(
      f"mesh.model={mesh.shape[sharding.MODEL]}: process {pid} of {nproc} "
      f"holds {rows} of the {data} rows of the mesh's 'data' axis, but each "
      f"process feeds its own input.batch_size/{nproc} examples, which "
      f"needs {data / nproc:g} rows; "
      "keep the 'model' axis within a process (lower mesh.model)"
    )
  # Now batch_size / nproc = rows * (batch_size / data): this process's rows divide evenly.


@dataclasses.dataclass
class RunSetup:
  """What the loop needs: mesh, dataset, modalities, task, pipeline and step counts.

  ``steps`` is where train steps come from (``loop/steps.py``): the grain pipeline
  ``pipe`` or epochs made on device from the same checked ids.
  """

  mesh: Any
  ds: PreparedDataset
  modalities: tuple[str, ...]
  task: Task
  pipe: Any
  steps_per_epoch: int
  total_steps: int
  eval_every: int
  steps: Any = None


def _resolve_decay_steps(config: ml_collections.ConfigDict, num_train: int):
  """``optimizer.decay_steps=0`` of a decaying schedule -> the run's total steps (a copy).

  The total is ``train.num_epochs`` epochs of ``num_train // input.batch_size`` steps (the
  pipelines' epoch), capped by ``train.max_steps``: the rate reaches 0 at the run's end.
  """
  opt = config.optimizer
  if opt.get("schedule", "constant") == "constant" or int(opt.get("decay_steps", 0)) > 0:
    return config
  total = max(1, num_train // int(config.input.batch_size)) * int(config.train.num_epochs)
  if config.train.max_steps > 0:
    total = min(total, int(config.train.max_steps))
  config = config.copy_and_resolve_references()
  with config.unlocked():
    config.optimizer.decay_steps = total
  logging.info("optimizer.schedule=%r decays to 0 over %d steps", opt.schedule, total)
  return config


def set_up(config: ml_collections.ConfigDict) -> RunSetup:
  """Checks, prepares the data, builds the task and the train pipeline."""
  mesh = make_mesh(config)
  check_batch_fits_mesh(int(config.input.batch_size), mesh)
  logging.info(
    "mesh %s over %d devices (%d processes)",
    dict(mesh.shape),
    jax.device_count(),
    jax.process_count(),
  )
  ds = prepare_lib.prepare(config.data)
  ds, modalities = resolve_modalities(ds, config)
  info = build_data_info(ds, config, modalities)
  config = _resolve_decay_steps(config, len(ds.split("train").users))
  task = Task(config, info, mesh)
  features = expected_dims = None
  if config.input.stream_features:
    features = {m: ds.features(m) for m in modalities}
    # The feature width each modality's tower was built for: the pipeline streams exactly
    # these modalities and checks the shards against them when it is built.
    expected_dims = {m: int(info.features[m].shape[1]) for m in task.modalities}
  pipe = pipeline_lib.make_train_pipeline(
    ds.split("train"),
    ds.num_users,
    ds.num_items,
    config.input,
    seed=config.seed,
    features=features,
    expected_dims=expected_dims,
    process_index=jax.process_index(),
    process_count=jax.process_count(),
  )
  steps_per_epoch = pipe.steps_per_epoch
  # A regime that fits by whole-data sweeps (closed_form) counts one step per epoch and
  # may cap the epochs (a one-shot fit is complete after one).
  steps_per_epoch = getattr(task.regime, "steps_per_epoch_override", None) or steps_per_epoch
  total_steps = steps_per_epoch * config.train.num_epochs
  max_epochs = getattr(task.regime, "max_epochs", None)
  if max_epochs:
    total_steps = min(total_steps, steps_per_epoch * max_epochs)
  if config.train.max_steps > 0:
    total_steps = min(total_steps, config.train.max_steps)
  eval_every = int(config.train.get("eval_every_steps", 0)) or max(
    1, steps_per_epoch * config.train.eval_every_epochs
  )
  steps = make_step_source(config, task, pipe, mesh)
  return RunSetup(mesh, ds, modalities, task, pipe, steps_per_epoch, total_steps, eval_every, steps)
