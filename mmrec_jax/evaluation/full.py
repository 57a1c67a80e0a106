"""Whole-list metrics: AUC, GAUC and MAP over every candidate item, without a cut-off.

Why a second pass beside the top-K ranking: AUC and (Cornac's) MAP need the rank of
every relevant item among *all* candidates, which the top-K lists do not hold. Users are
scored in chunks of ``C`` on device (``[C, I]`` scores, sorted along items), so memory is
bounded by the chunk, never ``users x items``; the cost is a sort of the catalogue per user.

Definitions, for one user ``u`` (``cand`` = every item not excluded for ``u``, the same
exclusions as the top-K ranking; ``P`` = relevant candidates; ``N = cand \\ P``;
``s_i`` the score):

  * ``auc``  ``AUC_u = (1 / (|P| |N|)) * sum_{p in P, n in N} [s_p > s_n] + 0.5 [s_p = s_n]``
    (the Mann-Whitney statistic, = scikit-learn's ``roc_auc_score`` on the user's
    candidates), averaged over users with ``|P| > 0`` and ``|N| > 0``. This is Cornac's
    ``AUC`` (``N`` = every unobserved item), except that Cornac counts a tie as 0 where
    this counts 1/2; with real-valued scores ties do not occur.
  * ``gauc`` ``sum_u |P_u| AUC_u / sum_u |P_u|`` over the same users: group AUC weighted
    by the user's number of relevant items (RecBole's ``GAUC``).
  * ``map``  ``AP_u = (1 / |P|) * sum_{p in P} L_p / R_p`` with ``R_p = |{c in cand: s_c >=
    s_p}|`` and ``L_p = |{q in P: s_q >= s_p}|`` (ties ranked pessimistically, as
    ``scipy.stats.rankdata(-s, 'max')``): exactly Cornac's ``MAP`` (no cut-off), averaged
    over users with ``|P| > 0``. ``map@K`` of the top-K metrics is a different metric.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from mmrec_jax.errors import ConfigError
from mmrec_jax.evaluation.result import CSR

FULL_METRICS = ("auc", "gauc", "map")


def check_full_metrics(names: Sequence[str]) -> tuple[str, ...]:
  """The names, validated against :data:`FULL_METRICS` (ConfigError naming the key)."""
  for n in names:
    if n not in FULL_METRICS:
      raise ConfigError(
        f"config.eval.full_metrics: unknown metric {n!r}; valid: {', '.join(FULL_METRICS)}"
      )
  return tuple(names)


@jax.jit
def _chunk(u: jax.Array, items: jax.Array, excl: jax.Array, truth: jax.Array):
  """Per-user (auc numerator, |P|, |N|, AP) of one chunk; masks are [C, I] bool."""
  s = jnp.dot(
    u.astype(jnp.float32), items.astype(jnp.float32).T, precision=jax.lax.Precision.HIGHEST
  )
  cand = ~excl
  pos = cand & truth
  neg = cand & ~truth
  n_pos = pos.sum(1)
  n_neg = neg.sum(1)
  n_cand = cand.sum(1)
  inf = jnp.float32(jnp.inf)
  search = jax.vmap(lambda a, v: jnp.searchsorted(a, v, side="left"))
  neg_sorted = jnp.sort(jnp.where(neg, s, inf), axis=1)  # negatives first
  less = search(neg_sorted, s)
  leq = jax.vmap(lambda a, v: jnp.searchsorted(a, v, side="right"))(neg_sorted, s)
  less = jnp.minimum(less, n_neg[:, None])
  leq = jnp.minimum(leq, n_neg[:, None])
  auc_num = jnp.sum(jnp.where(pos, less + 0.5 * (leq - less), 0.0), axis=1)
  # R_p = #cand with s >= s_p = n_cand - #cand with s < s_p (non-candidates sort first).
  cand_sorted = jnp.sort(jnp.where(cand, s, -inf), axis=1)
  pos_sorted = jnp.sort(jnp.where(pos, s, -inf), axis=1)
  n_item = s.shape[1]
  r = n_cand[:, None] - (search(cand_sorted, s) - (n_item - n_cand)[:, None])
  l_ = n_pos[:, None] - (search(pos_sorted, s) - (n_item - n_pos)[:, None])
  ap = jnp.sum(jnp.where(pos, l_ / jnp.maximum(r, 1), 0.0), axis=1) / jnp.maximum(n_pos, 1)
  return auc_num, n_pos, n_neg, ap


def _dense_rows(csr: CSR, ids: np.ndarray, num_items: int) -> np.ndarray:
  """bool [len(ids), num_items] membership rows of ``csr`` for the users ``ids``."""
  indptr, indices = csr
  out = np.zeros((ids.size, num_items), bool)
  starts, lens = indptr[ids], indptr[ids + 1] - indptr[ids]
  rows = np.repeat(np.arange(ids.size), lens)
  offs = np.arange(int(lens.sum())) - np.repeat(np.cumsum(lens) - lens, lens)
  out[rows, indices[np.repeat(starts, lens) + offs]] = True
  return out


def full_metrics(
  user_matrix,
  item_matrix,
  *,
  users: np.ndarray,
  truth: CSR,
  exclude: CSR,
  metrics: Sequence[str],
  user_chunk: int = 256,
) -> tuple[dict[str, float], dict[str, np.ndarray]]:
  """Whole-list metrics (module doc) of ``users``; (means, per-user values over ``users``).

  Per-user values are NaN for a user the metric leaves out (no negatives for AUC).
  """
  metrics = check_full_metrics(metrics)
  num_items = int(item_matrix.shape[0])
  users = np.asarray(users, np.int64)
  items = jnp.asarray(item_matrix)
  auc_num = np.zeros(users.size)
  n_pos = np.zeros(users.size)
  n_neg = np.zeros(users.size)
  ap = np.zeros(users.size)
  chunk = max(1, int(user_chunk))
  for start in range(0, users.size, chunk):
    ids = users[start : start + chunk]
    pad = np.zeros(chunk, np.int64)
    pad[: ids.size] = ids
    excl = _dense_rows(exclude, pad, num_items)
    tr = _dense_rows(truth, pad, num_items)
    u = jnp.asarray(
      user_matrix[jnp.asarray(pad)]
      if isinstance(user_matrix, jax.Array)
      else np.asarray(user_matrix)[pad]
    )
    out = [np.asarray(x)[: ids.size] for x in _chunk(u, items, excl, tr)]
    sl = slice(start, start + ids.size)
    auc_num[sl], n_pos[sl], n_neg[sl], ap[sl] = out
  ok = (n_pos > 0) & (n_neg > 0)
  auc_u = np.where(ok, auc_num / np.maximum(n_pos * n_neg, 1), np.nan)
  means, per_user = {}, {}
  for m in metrics:
    if m == "auc":
      per_user[m] = auc_u
      means[m] = float(np.mean(auc_u[ok])) if ok.any() else float("nan")
    elif m == "gauc":
      per_user[m] = auc_u
      means[m] = (
        float(np.sum(auc_u[ok] * n_pos[ok]) / np.sum(n_pos[ok])) if ok.any() else float("nan")
      )
    else:  # map
      has = n_pos > 0
      per_user[m] = np.where(has, ap, np.nan)
      means[m] = float(np.mean(ap[has])) if has.any() else float("nan")
  return means, per_user


def reference_full(
  scores: np.ndarray, truth: Sequence[int], exclude: Sequence[int]
) -> dict[str, float]:
  """One user's AUC and AP straight from the definitions (loops; tests only)."""
  s = np.asarray(scores, np.float64)
  ex = set(int(i) for i in exclude)
  cand = [i for i in range(s.size) if i not in ex]
  p = [i for i in cand if i in set(int(t) for t in truth)]
  n = [i for i in cand if i not in set(p)]
  out = {}
  if p and n:
    out["auc"] = sum((s[a] > s[b]) + 0.5 * (s[a] == s[b]) for a in p for b in n) / (len(p) * len(n))
  if p:
    out["map"] = float(
      np.mean([sum(s[q] >= s[a] for q in p) / sum(s[c] >= s[a] for c in cand) for a in p])
    )
  return out
