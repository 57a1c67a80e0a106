"""Where a run's train steps come from: the grain pipeline or epochs made on device.

Both sources share one interface, so ``train.py`` has one loop: ``advance(task, state,
limit)`` runs the steps from the source's position up to at most ``limit`` and returns
``(state, metrics, n)``; ``get_state``/``set_state`` are the checkpointed position.

* :class:`GrainSteps` -- one step per call on a host batch from the grain pipeline
  (``data/pipeline.py``): streamed features, exclusion of positives, data bigger than the
  device.
* ``data.device_epoch.DeviceEpochs`` -- up to ``train.log_every_steps`` steps per jitted
  call on batches made on device.

:func:`make_step_source` picks one (``input.device_epochs``) and logs which and why.
"""

from __future__ import annotations

from typing import Any

import ml_collections
from absl import logging

from mmrec_jax import sharding
from mmrec_jax.data import device_epoch


class GrainSteps:
  """One step per call on the grain pipeline's next host batch."""

  chunked = False

  def __init__(self, pipe: Any, mesh: Any):
    self.pipe = pipe
    self.mesh = mesh
    self._it = None

  @property
  def steps_per_epoch(self) -> int:
    return self.pipe.steps_per_epoch

  def get_state(self) -> dict[str, Any]:
    return self.pipe.get_state()

  def set_state(self, state: dict[str, Any]) -> None:
    self.pipe.set_state(state)
    self._it = None

  def advance(self, task: Any, state: Any, limit: int) -> tuple[Any, Any, int]:
    del limit  # always one step
    if self._it is None:
      self._it = iter(self.pipe)
    batch = sharding.global_batch_from_local(self.mesh, next(self._it))
    state, metrics = task.train_step(state, batch)
    return state, metrics, 1

  def close(self) -> None:
    self.pipe.close()


class DeviceSteps:
  """``DeviceEpochs`` behind the loop's interface (see module doc)."""

  chunked = True

  def __init__(self, epochs: device_epoch.DeviceEpochs):
    self.epochs = epochs

  @property
  def steps_per_epoch(self) -> int:
    return self.epochs.steps_per_epoch

  def get_state(self) -> dict[str, Any]:
    return self.epochs.get_state()

  def set_state(self, state: dict[str, Any]) -> None:
    self.epochs.set_state(state)

  def advance(self, task: Any, state: Any, limit: int) -> tuple[Any, Any, int]:
    return self.epochs.advance(task, state, limit)

  def close(self) -> None:
    self.epochs.close()


def make_step_source(
  config: ml_collections.ConfigDict, task: Any, pipe: Any, mesh: Any
) -> GrainSteps | DeviceSteps:
  """The step source ``input.device_epochs`` asks for (logged, with the reason)."""
  use, why = device_epoch.choose(
    config,
    task.supports_device_epochs,
    len(pipe.device_epoch_inputs()["users"]),
    int(mesh.size),
    mesh.devices.flat[0].platform,
  )
  if use:
    logging.info("training input: epochs on device (%s)", why)
    epochs = device_epoch.DeviceEpochs.from_pipeline(
      pipe,
      mesh,
      max_chunk=int(config.train.log_every_steps),
      with_ratings="rating" in task.batch_keys(),
    )
    return DeviceSteps(epochs)
  logging.info("training input: grain pipeline (%s)", why)
  return GrainSteps(pipe, mesh)
