"""Orbax checkpoints of a run: model + optimizer state, data-iterator state, loop state.

Two managers live in the workdir:
  * ``checkpoints/`` -- the latest steps (resume source; asynchronous saves);
  * ``best/``        -- the checkpoints with the best validation metric (model selection).
A step directory holds three items: ``state`` (the TrainState pytree, saved by every
process for its own shards, so it restores onto any mesh via target shardings),
``data`` (the grain pipeline state, JSON) and ``loop`` (epoch, best metric, patience,
history, the run fingerprint and a checksum of ``state``; JSON). Orbax writes each step
to a temporary directory and renames it when complete, so a run killed mid-save leaves
the previous step intact.

Why the rules below (each was a way to end a crashed run with a wrong result):

* **The best model is saved before the latest checkpoint of the same step.** The loop
  state of ``checkpoints/<s>`` says ``best_step=s`` when step ``s`` improved; saving
  ``best/<s>`` first (synchronously) means any ``checkpoints/<s>`` on disk implies its
  ``best/<s>`` is complete, so no crash point pairs a loop state with an older best model.
  The final evaluation restores ``best/<best_step>`` by its step (never "the newest best"),
  and a resume removes ``best/`` steps newer than the step it resumes from: they belong to
  the lost timeline and are recomputed identically.
* **Restore walks back past damage.** Each checkpoint's loop state carries a checksum of
  every array of ``state`` (a wrap-around integer sum of the raw bits, exact on any mesh);
  a checkpoint whose files cannot be read, whose JSON is garbage or whose arrays do not
  match their checksum is logged, moved to ``<workdir>/damaged/`` and the next older one
  is tried. Only when none is intact does restoring fail, with one line.
* **A step is saved once.** A preemption save at a step that validation just saved is a
  no-op instead of Orbax's ``StepAlreadyExistsError``.
* **The run fingerprint is checked before any array is read**, so a resume on other data
  or another model shape fails with one line saying what changed (``fingerprint``).
"""

from __future__ import annotations

import pathlib
import shutil
import time
from typing import Any

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp
from absl import logging

from mmrec_jax import fingerprint as fingerprint_lib
from mmrec_jax.errors import CheckpointError
from mmrec_jax.loop import signals

# Loop-state keys written by this module (the rest belongs to the training loop).
CHECKSUM_KEY = "state_checksum"
FINGERPRINT_KEY = "fingerprint"


def _manager(directory: pathlib.Path, max_to_keep: int, use_async: bool) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(
    max_to_keep=max_to_keep,
    create=True,
    enable_async_checkpointing=use_async,
    cleanup_tmp_directories=True,
  )
  return ocp.CheckpointManager(directory.absolute(), options=options)


def _leaf_checksum(x: jax.Array) -> jax.Array:
  """Wrap-around uint32 sum of the raw bits of ``x``: exact, so equal on any sharding."""
  if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
    x = jax.random.key_data(x)
  if x.dtype == jnp.bool_:
    u = x.astype(jnp.uint32)
  else:
    width = x.dtype.itemsize * 8
    u = jax.lax.bitcast_convert_type(
      x, {8: jnp.uint8, 16: jnp.uint16, 32: jnp.uint32, 64: jnp.uint64}[width]
    )
    if width == 64:
      u = u ^ (u >> 32)
    u = u.astype(jnp.uint32)
  # Weighting by position (mod 2^32) also catches rows moved around, not only changed.
  pos = jax.lax.broadcasted_iota(jnp.uint32, u.shape, 0) if u.ndim else jnp.uint32(0)
  return jnp.sum(u, dtype=jnp.uint32) + jnp.sum(
    u * (pos * jnp.uint32(2654435761) + 1), dtype=jnp.uint32
  )


@jax.jit
def _tree_checksums(state: Any) -> list[jax.Array]:
  return [_leaf_checksum(x) for x in jax.tree.leaves(state)]


def state_checksum(state: Any) -> dict[str, int]:
  """{leaf path: checksum} of a TrainState (concrete arrays, any mesh)."""
  paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(state)]
  sums = jax.device_get(_tree_checksums(state))
  return {p: int(s) for p, s in zip(paths, sums)}


def _first_line(e: BaseException) -> str:
  text = " ".join(str(e).split())
  return f"{type(e).__name__}: {text[:200]}" if text else type(e).__name__


class _Damaged(Exception):
  """A checkpoint that cannot be used; the message says why (one line)."""


class RunCheckpointer:
  """Saves/restores (state, data-iterator state, loop state) for one workdir.

  Args:
    workdir: the run's directory (``checkpoints/``, ``best/`` and ``damaged/`` go there).
    max_to_keep: latest checkpoints kept (>= 1).
    use_async: write ``checkpoints/`` in a background thread.
    fingerprint: the run fingerprint (``fingerprint.run_fingerprint``) stored with every
      checkpoint and compared on restore; None stores and checks nothing.
  """

  def __init__(
    self,
    workdir: str | pathlib.Path,
    max_to_keep: int = 2,
    use_async: bool = True,
    fingerprint: dict | None = None,
  ):
    self.workdir = pathlib.Path(workdir)
    self.max_to_keep = max(1, int(max_to_keep))
    self.use_async = use_async
    self.fingerprint = fingerprint
    self._open()

  def _open(self) -> None:
    self.latest = _manager(self.workdir / "checkpoints", self.max_to_keep, self.use_async)
    # The best checkpoint is written rarely; synchronous keeps it simple and durable. Two
    # are kept, so the previous best survives while the newest one is being replaced.
    self.best = _manager(self.workdir / "best", 2, False)

  def latest_step(self) -> int | None:
    return self.latest.latest_step()

  def has_checkpoints(self) -> bool:
    return bool(self.latest.all_steps())

  # ------------------------------------------------------------------ saving
  def _args(self, state: Any, data_state: dict, loop_state: dict) -> ocp.args.Composite:
    return ocp.args.Composite(
      state=ocp.args.StandardSave(state),
      data=ocp.args.JsonSave(data_state),
      loop=ocp.args.JsonSave(loop_state),
    )

  def save(
    self, step: int, state: Any, data_state: dict, loop_state: dict, *, best: bool = False
  ) -> bool:
    """Saves step ``step`` (and ``best/<step>`` first when ``best``); False if already saved.

    A step saved before (validation, then a preemption at the same step) is not written
    again: both saves would hold the same state.
    """
    if step in self.latest.all_steps() and not (best and step not in self.best.all_steps()):
      return False
    loop_state = dict(loop_state)
    loop_state[CHECKSUM_KEY] = state_checksum(state)
    if self.fingerprint is not None:
      loop_state[FINGERPRINT_KEY] = self.fingerprint
    if best and step not in self.best.all_steps():
      # best/<step> is complete before checkpoints/<step> (whose loop state names it as
      # the best) exists: see the module docstring. The previous latest save finishes
      # first, so a crash here resumes from it.
      self.latest.wait_until_finished()
      self.best.save(step, args=self._args(state, data_state, loop_state), force=True)
      self.best.wait_until_finished()
      signals.fault_point("best_save", step)
    if step not in self.latest.all_steps():
      self.latest.save(step, args=self._args(state, data_state, loop_state), force=True)
    return True

  # ------------------------------------------------------------------ restoring
  def _read_loop(self, manager: ocp.CheckpointManager, step: int) -> dict:
    try:
      out = manager.restore(step, args=ocp.args.Composite(loop=ocp.args.JsonRestore()))
      loop = out["loop"]
    except Exception as e:  # (orbax/JSON/OS errors)
      raise _Damaged(f"loop state unreadable ({_first_line(e)})") from None
    if not isinstance(loop, dict):
      raise _Damaged(f"loop state is {type(loop).__name__}, not a JSON object")
    return dict(loop)

  def _read_all(
    self, manager: ocp.CheckpointManager, step: int, abstract_state: Any, loop: dict
  ) -> tuple[Any, dict]:
    try:
      out = manager.restore(
        step,
        args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore()
        ),
      )
      state, data = out["state"], out["data"]
    except Exception as e:  # (tensorstore/orbax/OS errors)
      raise _Damaged(f"arrays unreadable ({_first_line(e)})") from None
    want = loop.get(CHECKSUM_KEY)
    if want is not None:
      got = state_checksum(state)
      bad = sorted(k for k in set(want) | set(got) if want.get(k) != got.get(k))
      if bad:
        raise _Damaged(f"{len(bad)} array(s) do not match their checksum (first: {bad[0]})")
    return state, dict(data or {})

  def _check_fingerprint(self, loop: dict, where: pathlib.Path) -> None:
    saved = loop.get(FINGERPRINT_KEY)
    if self.fingerprint is None or saved is None:
      if saved is None and self.fingerprint is not None:
        logging.warning(
          "%s has no run fingerprint (written by an older version): "
          "resuming without checking that data and model match",
          where,
        )
      return
    fingerprint_lib.check_resume(saved, self.fingerprint, self.workdir)

  def _set_aside(self, manager: ocp.CheckpointManager, step: int, reason: str) -> None:
    src = pathlib.Path(manager.directory) / str(step)
    dest = self.workdir / "damaged" / f"{src.parent.name}-{step}-{int(time.time())}"
    logging.warning("checkpoint %s is damaged (%s): skipped, moved to %s", src, reason, dest)
    if jax.process_index() == 0 and src.exists():
      dest.parent.mkdir(parents=True, exist_ok=True)
      shutil.move(str(src), str(dest))

  def _reopen(self) -> None:
    self.latest.close()
    self.best.close()
    self._open()

  def restore_latest(self, abstract_state: Any) -> tuple[Any, dict, dict]:
    """The newest intact checkpoint, restored onto ``abstract_state``'s shardings.

    Damaged newer checkpoints are logged and moved to ``<workdir>/damaged/``; ``best/``
    steps newer than the restored step are removed (the rerun recomputes them).

    Raises:
      ConfigError: the checkpoints were written by a run with another fingerprint.
      CheckpointError: checkpoints exist but none is intact.
    """
    skipped = []
    restored = None
    for step in sorted(self.latest.all_steps(), reverse=True):
      try:
        loop = self._read_loop(self.latest, step)
        self._check_fingerprint(loop, self.workdir / "checkpoints" / str(step))
        state, data = self._read_all(self.latest, step, abstract_state, loop)
      except _Damaged as e:
        skipped.append((step, str(e)))
        continue
      restored = (step, state, data, loop)
      break
    for step, reason in skipped:
      self._set_aside(self.latest, step, reason)
    if restored is None:
      steps = ", ".join(f"{s} ({r})" for s, r in skipped)
      raise CheckpointError(
        f"{self.workdir / 'checkpoints'}: no intact checkpoint (damaged: {steps}); the "
        f"damaged ones were moved to {self.workdir / 'damaged'}: rerun to start this "
        "workdir from scratch, or use another --workdir"
      )
    step, state, data, loop = restored
    for b in self.best.all_steps():
      if b > step:
        logging.warning(
          "best checkpoint %d is newer than the resumed step %d (a crash "
          "before its step was saved): removed, the rerun recomputes it",
          b,
          step,
        )
        if jax.process_index() == 0:
          shutil.rmtree(pathlib.Path(self.best.directory) / str(b), ignore_errors=True)
    if skipped or any(b > step for b in self.best.all_steps()):
      self._reopen()
    if skipped:
      logging.warning(
        "resuming from step %d, the newest intact checkpoint (skipped %s)",
        step,
        ", ".join(str(s) for s, _ in skipped),
      )
    # The loop state as the caller saved it (this module's own keys removed).
    loop = {k: v for k, v in loop.items() if k not in (CHECKSUM_KEY, FINGERPRINT_KEY)}
    return state, data, loop

  def restore_best(self, abstract_state: Any, best_step: int) -> Any:
    """The state of step ``best_step`` from ``best/`` (or ``checkpoints/`` if it is damaged).

    Raises:
      CheckpointError: neither copy of that step is intact.
    """
    reasons = []
    for manager in (self.best, self.latest):
      if best_step not in manager.all_steps():
        reasons.append(f"{pathlib.Path(manager.directory).name}/{best_step} missing")
        continue
      try:
        loop = self._read_loop(manager, best_step)
        state, _ = self._read_all(manager, best_step, abstract_state, loop)
        return state
      except _Damaged as e:
        logging.warning("%s/%d is damaged (%s)", manager.directory, best_step, e)
        reasons.append(f"{pathlib.Path(manager.directory).name}/{best_step}: {e}")
    raise CheckpointError(
      f"{self.workdir}: the best-validation model of step {best_step} cannot be restored "
      f"({'; '.join(reasons)}); move {self.workdir / 'checkpoints'} and "
      f"{self.workdir / 'best'} away and rerun to train again"
    )

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
    lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None)), state
  )
