"""Rating-prediction metrics: MAE and RMSE of ``score(u, i)`` against the held-out ratings.

Why here and not in the model: every model is a dot product (``models/base.py``), so a
rating model's prediction is ``user_repr(u) . item_repr(i)`` and the evaluator needs no
model code. Rating models put their biases into the towers (``models/rating_mf.py``).

Definitions, over the split's rows ``(u, i, r)`` (every row, whatever
``eval.relevance_threshold``; ratings are never thresholded here):

  * prediction ``r_hat = clip(link(user_u . item_i), r_min, r_max)`` with ``[r_min, r_max]``
    the range of the TRAIN ratings (Cornac's ``Recommender.rate(clipping=True)``) and
    ``link`` = ``eval.rating_link``: the identity, or ``lo + (hi - lo) * sigmoid(s)`` with
    ``(lo, hi) = eval.rating_range`` (Cornac's PMF); the rating regime trains through the
    same link (:func:`apply_link`);
  * ``mae  = mean |r - r_hat|``, ``rmse = sqrt(mean (r - r_hat)^2)``;
  * ``eval.rating_user_based=True`` (Cornac's ``Experiment`` default): each user's MAE /
    RMSE over their rows first, then the mean over users; False: one mean over all rows.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from mmrec_jax.errors import ConfigError

RATING_METRICS = ("mae", "rmse")
# Metrics where lower is better (model selection / early stopping must minimise these).
LOWER_IS_BETTER = frozenset(RATING_METRICS)
RATING_LINKS = ("identity", "sigmoid")
_ROWS_PER_CALL = 1 << 20


def check_rating_metrics(names: Sequence[str]) -> tuple[str, ...]:
  for n in names:
    if n not in RATING_METRICS:
      raise ConfigError(
        f"config.eval.rating_metrics: unknown metric {n!r}; valid: {', '.join(RATING_METRICS)}"
      )
  return tuple(names)


def check_link(link: str, rating_range) -> tuple[float, float]:
  """Validates ``eval.rating_link`` / ``eval.rating_range``; returns (lo, hi)."""
  if link not in RATING_LINKS:
    raise ConfigError(f"config.eval.rating_link={link!r} is not one of {list(RATING_LINKS)}")
  try:
    lo, hi = (float(x) for x in rating_range)
  except (TypeError, ValueError):
    raise ConfigError(f"config.eval.rating_range={rating_range!r}: must be (lo, hi)") from None
  if not lo < hi:
    raise ConfigError(f"config.eval.rating_range={rating_range!r}: needs lo < hi")
  return lo, hi


def apply_link(score, link: str, lo: float, hi: float, xp=np):
  """The rating a score stands for under ``link`` (numpy or jax.numpy via ``xp``)."""
  if link == "sigmoid":
    return lo + (hi - lo) / (1.0 + xp.exp(-score))
  return score


@jax.jit
def _dots(users: jax.Array, items: jax.Array, u: jax.Array, i: jax.Array) -> jax.Array:
  return jnp.sum(users[u].astype(jnp.float32) * items[i].astype(jnp.float32), axis=-1)


def predict(user_matrix, item_matrix, users: np.ndarray, items: np.ndarray) -> np.ndarray:
  """``user_matrix[u] . item_matrix[i]`` per row (float32, on device in blocks)."""
  out = np.zeros(users.shape[0], np.float32)
  um, im = jnp.asarray(user_matrix), jnp.asarray(item_matrix)
  for start in range(0, users.shape[0], _ROWS_PER_CALL):
    stop = min(start + _ROWS_PER_CALL, users.shape[0])
    n = stop - start
    size = 1 << max(0, (n - 1).bit_length())  # few distinct shapes
    u = np.zeros(size, np.int32)
    i = np.zeros(size, np.int32)
    u[:n], i[:n] = users[start:stop], items[start:stop]
    out[start:stop] = np.asarray(_dots(um, im, jnp.asarray(u), jnp.asarray(i)))[:n]
  return out


def rating_metrics(
  pred: np.ndarray,
  ratings: np.ndarray,
  users: np.ndarray,
  *,
  metrics: Sequence[str],
  rating_range: tuple[float, float],
  user_based: bool = True,
) -> dict[str, float]:
  """MAE/RMSE (module doc) of raw predictions ``pred`` against ``ratings``."""
  metrics = check_rating_metrics(metrics)
  if not pred.shape[0]:
    return {m: float("nan") for m in metrics}
  err = np.clip(pred.astype(np.float64), *rating_range) - np.asarray(ratings, np.float64)
  out = {}
  if user_based:
    _, inv, counts = np.unique(users, return_inverse=True, return_counts=True)
    abs_u = np.bincount(inv, np.abs(err)) / counts
    sq_u = np.bincount(inv, err * err) / counts
    vals = {"mae": abs_u.mean(), "rmse": np.sqrt(sq_u).mean()}
  else:
    vals = {"mae": np.abs(err).mean(), "rmse": np.sqrt(np.mean(err * err))}
  for m in metrics:
    out[m] = float(vals[m])
  return out
