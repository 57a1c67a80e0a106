"""Orbax checkpoints of a run: model + optimizer state, data-iterator state, loop state.

Two managers live in the workdir:
  * ``checkpoints/`` -- the latest steps (resume source; asynchronous saves);
  * ``best/``        -- the checkpoint with the best validation metric (model selection).
A step directory holds three items: ``state`` (the TrainState pytree, saved by every
process for its own shards, so it restores onto any mesh via target shardings),
``data`` (the grain pipeline state, JSON) and ``loop`` (epoch, best metric, patience,
history; JSON). Orbax writes each step to a temporary directory and renames it when
complete, so a run killed mid-save leaves the previous step intact.
"""

from __future__ import annotations

import pathlib
from typing import Any

import jax
import orbax.checkpoint as ocp


def _manager(directory: pathlib.Path, max_to_keep: int, use_async: bool) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(
      max_to_keep=max_to_keep, create=True, enable_async_checkpointing=use_async,
      cleanup_tmp_directories=True)
  return ocp.CheckpointManager(directory.absolute(), options=options)


class RunCheckpointer:
  """Saves/restores (state, data-iterator state, loop state) for one workdir."""

  def __init__(self, workdir: str | pathlib.Path, max_to_keep: int = 2, use_async: bool = True):
    workdir = pathlib.Path(workdir)
    self.latest = _manager(workdir / "checkpoints", max_to_keep, use_async)
    # The best checkpoint is written rarely; synchronous keeps it simple and durable.
    self.best = _manager(workdir / "best", 1, False)

  def latest_step(self) -> int | None:
    return self.latest.latest_step()

  def save(self, step: int, state: Any, data_state: dict, loop_state: dict,
           *, best: bool = False) -> None:
    args = ocp.args.Composite(state=ocp.args.StandardSave(state),
                              data=ocp.args.JsonSave(data_state),
                              loop=ocp.args.JsonSave(loop_state))
    self.latest.save(step, args=args, force=True)
    if best:
      self.latest.wait_until_finished()
      args = ocp.args.Composite(state=ocp.args.StandardSave(state),
                                data=ocp.args.JsonSave(data_state),
                                loop=ocp.args.JsonSave(loop_state))
      self.best.save(step, args=args, force=True)

  def _restore(self, manager: ocp.CheckpointManager, step: int | None,
               abstract_state: Any) -> tuple[Any, dict, dict]:
    step = manager.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"no checkpoint in {manager.directory}")
    out = manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state),
        data=ocp.args.JsonRestore(), loop=ocp.args.JsonRestore()))
    return out["state"], dict(out["data"]), dict(out["loop"])

  def restore_latest(self, abstract_state: Any) -> tuple[Any, dict, dict]:
    """Restores onto the shardings carried by ``abstract_state`` (any mesh)."""
    return self._restore(self.latest, None, abstract_state)

  def restore_best(self, abstract_state: Any) -> tuple[Any, dict, dict]:
    return self._restore(self.best, None, abstract_state)

  def has_best(self) -> bool:
    return self.best.latest_step() is not None

  def wait(self) -> None:
    self.latest.wait_until_finished()
    self.best.wait_until_finished()

  def close(self) -> None:
    self.wait()
    self.latest.close()
    self.best.close()


def abstract_with_shardings(state: Any) -> Any:
  """ShapeDtypeStructs with shardings for a concrete (or abstract) state tree."""
  return jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None)),
      state)
