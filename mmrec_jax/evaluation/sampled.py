"""Sampled-candidate top-K metrics: RecBole's ``uni100`` / ``pop100`` evaluation modes.

Why offered at all: published tables (RecBole, many papers before 2020) rank each held-out
item against 100 sampled negatives instead of the catalogue; rerunning their protocol
needs the same candidates. Full ranking (the default) is the sound one: sampled metrics
are not consistent with it (Krichene & Rendle, KDD 2020), so they are reported under their
own names, ``<metric>@<k>/<mode>``, never in place of the full-ranking ones.

Definition, per evaluated user ``u`` with relevant items ``P_u`` (the same relevance and
exclusions as the full ranking): ``N * |P_u|`` DISTINCT negatives (all of them when fewer
exist) are drawn without replacement from the items ``u`` has no row for in any split
(train, valid, test), uniformly (``uni<N>``) or with probability proportional to the
item's train interactions (``pop<N>``; items never in train are not drawn), from
``numpy.random.default_rng([seed, 0x53414D50])``. Distinct negatives keep the candidates
a subset of the full ranking's, so a sampled metric is never below its full-ranking
value (duplicates would count one strong negative several times). The candidates are
``P_u`` plus the negatives; they are ranked by score, a tie between a relevant item and a
negative going to the negative (pessimistic), and the top-K metrics of
:mod:`mmrec_jax.evaluation.metrics` are computed on that ranking with ``n = |P_u|``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from mmrec_jax.errors import ConfigError
from mmrec_jax.evaluation.metrics import metric_names, metrics_from_hits
from mmrec_jax.evaluation.result import CSR

_SEED_TAG = 0x53414D50


def parse_mode(mode: str) -> tuple[str, int]:
  """``'uni100'`` -> ``('uni', 100)``; ConfigError naming ``eval.sampled`` otherwise."""
  m = re.fullmatch(r"(uni|pop)(\d+)", str(mode))
  if not m or int(m.group(2)) < 1:
    raise ConfigError(
      f"config.eval.sampled={mode!r}: must be '' (off), 'uni<N>' or "
      "'pop<N>' with N >= 1, e.g. 'uni100'"
    )
  return m.group(1), int(m.group(2))


def sample_negatives(
  user: int,
  n: int,
  seen: np.ndarray,
  probs: np.ndarray | None,
  rng: np.random.Generator,
  num_items: int,
) -> np.ndarray:
  """``n`` distinct items not in ``seen`` (sorted ids), as many as exist (module doc)."""
  available = np.setdiff1d(np.arange(num_items), seen, assume_unique=True)
  if probs is not None:
    available = available[probs[available] > 0]
  if available.size == 0:
    raise ConfigError(f"eval.sampled: user {user} has no item left to draw as a negative")
  size = min(int(n), available.size)
  p = None
  if probs is not None:
    p = probs[available] / probs[available].sum()
  return rng.choice(available, size=size, replace=False, p=p)


def sampled_metrics(
  user_matrix: np.ndarray,
  item_matrix: np.ndarray,
  *,
  users: np.ndarray,
  truth: CSR,
  history: CSR,
  mode: str,
  ks: Sequence[int],
  metrics: Sequence[str],
  item_counts: np.ndarray,
  seed: int,
) -> tuple[dict[str, float], dict[str, np.ndarray]]:
  """(means, per-user values aligned with ``users``) named ``<metric>@<k>/<mode>``."""
  kind, per_pos = parse_mode(mode)
  names = metric_names(metrics, ks)
  num_items = item_matrix.shape[0]
  um = np.asarray(user_matrix, np.float32)
  im = np.asarray(item_matrix, np.float32)
  probs = None
  if kind == "pop":
    c = np.asarray(item_counts, np.float64)
    if c.sum() <= 0:
      raise ConfigError("eval.sampled=pop<N>: no item has train interactions")
    probs = c / c.sum()
  rng = np.random.default_rng([int(seed), _SEED_TAG])
  kmax = max(int(k) for k in ks)
  per_user = {n: np.zeros(len(users), np.float32) for n in names}
  for j, u in enumerate(np.asarray(users, np.int64)):
    pos_items = truth[1][truth[0][u] : truth[0][u + 1]].astype(np.int64)
    seen = history[1][history[0][u] : history[0][u + 1]].astype(np.int64)
    negs = sample_negatives(int(u), per_pos * pos_items.size, seen, probs, rng, num_items)
    cand = np.concatenate([pos_items, negs])
    s = im[cand] @ um[u]
    rel = np.arange(cand.size) < pos_items.size
    # score descending; a tie puts the negative first (pessimistic)
    order = np.lexsort((rel, -s))[:kmax]
    hits = np.zeros((1, kmax), bool)
    hits[0, : order.size] = rel[order]
    vals = metrics_from_hits(hits, np.array([pos_items.size]), ks, metrics)
    for n in names:
      per_user[n][j] = vals[n][0]
  out_names = {n: f"{n}/{mode}" for n in names}
  means = {out_names[n]: float(v.mean()) if v.size else float("nan") for n, v in per_user.items()}
  return means, {out_names[n]: v for n, v in per_user.items()}
