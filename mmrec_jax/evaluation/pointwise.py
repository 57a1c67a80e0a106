"""AUC, per-user GAUC and LogLoss of a pointwise ranker on held-out labelled rows.

Why streamed: ML-25M's held-out 20% is 5M rows; the predictions never sit on one host.
Rows (grouped by user, ``data/labelled.py``) are scored in chunks that end on user
boundaries; each chunk's logits stay on device, sharded on 'data', and a jitted reducer
turns them into small sums that are accumulated on device:

  * **AUC** from two score histograms (positives, negatives) of ``AUC_BINS`` equal bins
    of ``sigmoid(logit)``: ``AUC = sum_b pos_b (neg_below_b + neg_b / 2) / (P N)``. Equal
    scores share a bin, so ties count one half, as in the Mann-Whitney definition (and
    scikit-learn); distinct scores closer than 1/AUC_BINS are also counted as ties, an
    error below ``(pairs in shared bins) / (P N)`` -- ``tests/test_pointwise_metrics.py``
    measures it against sklearn. (Logits above ~16 saturate float32 sigmoid and tie.)
  * **GAUC** exact per user: inside a chunk rows are sorted by (user, score); each
    positive counts the user's negatives below it plus half of those tied with it;
    ``GAUC = sum_u n_u AUC_u / sum_u n_u`` over users with both labels, ``n_u`` the
    user's held-out rows (Zhou et al., DIN, KDD 2018 weight by impressions).
  * **LogLoss** the mean binary cross-entropy of the logits.

Only the histograms (``2 x AUC_BINS`` int32) and a handful of scalars leave the device.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from mmrec_jax import sharding

AUC_BINS = 1 << 20
POINTWISE_METRICS = ("auc", "gauc", "logloss")


def chunk_bounds(users: np.ndarray, chunk: int) -> list[tuple[int, int]]:
  """[start, stop) ranges of about ``chunk`` rows that never cut a user's rows apart."""
  n = users.shape[0]
  if n == 0:
    return []
  starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])  # first row of each user
  if np.unique(users[starts]).shape[0] != starts.shape[0]:
    raise ValueError("held-out rows must be grouped by user (each user's rows contiguous)")
  bounds, s = [], 0
  while s < n:
    if s + chunk >= n:
      e = n
    else:
      # The last user start at or before s + chunk; a user longer than chunk goes whole.
      e = int(starts[np.searchsorted(starts, s + chunk, side="right") - 1])
      if e <= s:
        nxt = np.searchsorted(starts, s, side="right")
        e = int(starts[nxt]) if nxt < starts.shape[0] else n
    bounds.append((s, e))
    s = e
  return bounds


def _reduce(logits, users, labels, valid, bins: int):
  """Sums of one chunk: histograms, BCE, per-user AUC numerators (module doc)."""
  valid_f = valid.astype(jnp.float32)
  pos = labels * valid_f
  neg = (1.0 - labels) * valid_f
  p = jax.nn.sigmoid(logits)
  b = jnp.clip(jnp.floor(p * bins).astype(jnp.int32), 0, bins - 1)
  hist_pos = jax.ops.segment_sum(pos.astype(jnp.int32), b, num_segments=bins)
  hist_neg = jax.ops.segment_sum(neg.astype(jnp.int32), b, num_segments=bins)
  bce = jnp.sum(optax.sigmoid_binary_cross_entropy(logits, labels) * valid_f)

  # Per user: rows sorted by (user, logit); ties of equal (user, logit) share a group.
  n = logits.shape[0]
  order = jnp.lexsort((logits, users))
  u, s, ps, ns = users[order], logits[order], pos[order], neg[order]
  first = jnp.arange(n) == 0
  new_user = first | (u != jnp.roll(u, 1))
  new_group = new_user | (s != jnp.roll(s, 1))
  uid = jnp.cumsum(new_user) - 1
  gid = jnp.cumsum(new_group) - 1
  neg_before = jnp.cumsum(ns) - ns  # negatives strictly earlier in the sorted order
  group_start = jax.ops.segment_min(neg_before, gid, num_segments=n)[gid]
  user_start = jax.ops.segment_min(neg_before, uid, num_segments=n)[uid]
  tied = jax.ops.segment_sum(ns, gid, num_segments=n)[gid]
  wins = ps * (group_start - user_start + 0.5 * tied)
  num = jax.ops.segment_sum(wins, uid, num_segments=n)
  p_u = jax.ops.segment_sum(ps, uid, num_segments=n)
  n_u = jax.ops.segment_sum(ns, uid, num_segments=n)
  both = (p_u > 0) & (n_u > 0)
  auc_u = jnp.where(both, num / jnp.where(both, p_u * n_u, 1.0), 0.0)
  w = jnp.where(both, p_u + n_u, 0.0)
  return {
    "hist_pos": hist_pos,
    "hist_neg": hist_neg,
    "bce": bce,
    "count": jnp.sum(valid_f),
    "gauc_num": jnp.sum(w * auc_u),
    "gauc_den": jnp.sum(w),
    "gauc_users": jnp.sum(both.astype(jnp.float32)),
  }


def auc_from_histograms(hist_pos: np.ndarray, hist_neg: np.ndarray) -> float:
  """Mann-Whitney AUC of binned scores (equal bins = ties, counted one half)."""
  hp = np.asarray(hist_pos, np.float64)
  hn = np.asarray(hist_neg, np.float64)
  total_p, total_n = hp.sum(), hn.sum()
  if total_p == 0 or total_n == 0:
    return float("nan")
  below = np.cumsum(hn) - hn
  return float(np.sum(hp * (below + 0.5 * hn)) / (total_p * total_n))


def _put(mesh: Mesh, arr: np.ndarray) -> jax.Array:
  """A host array as a global array sharded on 'data' (each device reads its slice)."""
  sh = NamedSharding(mesh, P(sharding.DATA))
  return jax.make_array_from_callback(arr.shape, sh, lambda idx: arr[idx])


def pointwise_metrics(
  score: Callable[[jax.Array, jax.Array], jax.Array],
  users: np.ndarray,
  items: np.ndarray,
  labels: np.ndarray,
  mesh: Mesh,
  *,
  chunk: int = 65536,
  bins: int = AUC_BINS,
) -> dict[str, float]:
  """AUC, GAUC and LogLoss of ``score(users, items) -> logits`` over labelled rows.

  Args:
    score: jitted scorer; takes and returns arrays sharded on 'data'.
    users, items, labels: the held-out rows, grouped by user (``data/labelled.py``).
    mesh: the run's mesh; chunks are padded to a multiple of its size.
    chunk: rows per scored chunk (bigger users go whole).
    bins: histogram bins of the global AUC.
  """
  users = np.asarray(users, np.int32)
  items = np.asarray(items, np.int32)
  labels = np.asarray(labels, np.float32)
  rep = sharding.replicated(mesh)
  reduce = jax.jit(
    lambda lg, u, y, v: _reduce(lg, u, y, v, bins),
    out_shardings=rep,
  )
  add = jax.jit(lambda a, b: jax.tree.map(jnp.add, a, b), donate_argnums=0, out_shardings=rep)
  total = None
  mult = int(mesh.size)
  for s, e in chunk_bounds(users, chunk):
    n = e - s
    size = max(chunk, -(-n // mult) * mult)
    size = -(-size // mult) * mult
    pad = size - n
    # Padding rows: user -1 (sorts first, never valid), item 0.
    u = np.concatenate([users[s:e], np.full(pad, -1, np.int32)])
    it = np.concatenate([items[s:e], np.zeros(pad, np.int32)])
    y = np.concatenate([labels[s:e], np.zeros(pad, np.float32)])
    v = np.concatenate([np.ones(n, bool), np.zeros(pad, bool)])
    u_dev = _put(mesh, u)
    logits = score(_put(mesh, np.maximum(u, 0)), _put(mesh, it))
    part = reduce(logits, u_dev, _put(mesh, y), _put(mesh, v))
    total = part if total is None else add(total, part)
  if total is None:
    return {"auc": float("nan"), "gauc": float("nan"), "logloss": float("nan")}
  t = jax.device_get(total)
  count = float(t["count"])
  return {
    "auc": auc_from_histograms(t["hist_pos"], t["hist_neg"]),
    "gauc": float(t["gauc_num"] / t["gauc_den"]) if t["gauc_den"] > 0 else float("nan"),
    "logloss": float(t["bce"] / count) if count else float("nan"),
    "gauc_users": float(t["gauc_users"]),
    "rows": count,
    "positive_rate": float(np.sum(t["hist_pos"]) / count) if count else float("nan"),
  }
