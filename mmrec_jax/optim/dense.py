"""optax optimizers for the dense (replicated) layers, chosen by ``optimizer.name``.

Gradient clipping is not part of this chain: the train step clips by the global norm
over dense *and* table-row gradients together (``optimizer.grad_clip``), so one number
bounds the whole update.
"""

from __future__ import annotations

import optax

from mmrec_jax.errors import ConfigError
from mmrec_jax.optim.sparse import learning_rate_at

DENSE_OPTIMIZERS = ("adam", "adamw", "sgd", "adagrad")


def make_dense_optimizer(
  name: str,
  learning_rate: float,
  weight_decay: float = 0.0,
  schedule: str = "constant",
  decay_steps: int = 0,
) -> optax.GradientTransformation:
  """optax transformation for ``optimizer.name``; unknown names raise.

  ``weight_decay`` is decoupled for ``adamw`` and added to the gradient (L2) for the
  others, so it applies to dense layers only; tables use ``loss.l2`` on batch rows.
  ``schedule``/``decay_steps``: as the tables' (``optim/sparse.py``), through
  ``optax.linear_schedule`` (a step count joins the optimizer state).
  """
  if name not in DENSE_OPTIMIZERS:
    raise ConfigError(f"optimizer.name={name!r} is not one of {list(DENSE_OPTIMIZERS)}")
  learning_rate_at(learning_rate, schedule, decay_steps)  # checks the schedule's keys
  lr = float(learning_rate)
  if schedule == "linear":
    lr = optax.linear_schedule(lr, 0.0, int(decay_steps))
  if name == "adamw":
    return optax.adamw(lr, weight_decay=float(weight_decay))
  base = {"adam": optax.adam, "sgd": optax.sgd, "adagrad": optax.adagrad}[name](lr)
  if weight_decay > 0:
    return optax.chain(optax.add_decayed_weights(float(weight_decay)), base)
  return base
