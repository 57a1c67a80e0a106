"""Synthetic interactions with planted structure, fast enough for the ML-25M shape.

The generative story (a topic model over items, i.e. a low-rank user x item affinity):

* item factors ``V[i] ~ N(0, I_d)`` (d = data.latent_dim) and K = 2d topic centroids
  ``C[k] ~ N(0, I_d)``;
* item popularity ``pop[i] = rank(i)^-popularity_exponent`` (ranks a random permutation);
* topic k chooses item i with ``p(i | k) ∝ pop[i] * exp(beta * V[i]·C[k] / sqrt(d))``;
* user u has a topic mixture ``theta[u] ~ Dirichlet(0.3)`` and a heavy-tailed
  (log-normal) number of interactions ``n[u]``, at least ``min(5, n_total // n_users)``
  and at most half the catalogue, summing exactly to data.num_interactions;
* user u's items are drawn from ``sum_k theta[u,k] p(. | k)`` WITHOUT replacement
  (draw, drop repeats, re-draw the shortfall -- a few vectorised rounds);
* timestamps are uniform inside a per-user activity window within 2009-2019; ratings
  1..5 grow with the affinity ``V[i]·U[u]`` (``U = theta @ C``) plus noise;
* item features: ``text = V @ A_t + noise``, ``image = V @ A_i + noise`` (random linear
  maps, noise std 0.5 of the signal's), so features carry what ids carry and unseen items
  can be scored from their features alone.

Everything is vectorised numpy in chunks of users/draws, so the 162,541 x 59,047 x 25M
shape runs in well under a minute and a couple of GB here (benchmarks/bench_prepare.py).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from mmrec_jax.errors import ConfigError

_T0 = 1_230_768_000  # 2009-01-01 UTC
_SPAN = 10 * 365 * 86_400  # ten years
_CHUNK = 1 << 21  # draws per vectorised chunk (bounds the temporaries)


@dataclasses.dataclass
class SyntheticData:
  users: np.ndarray  # int32 [n]
  items: np.ndarray  # int32 [n]
  timestamps: np.ndarray  # int64 [n]
  ratings: np.ndarray  # float32 [n]
  text: np.ndarray  # float32 [num_items, text_dim]
  image: np.ndarray  # float32 [num_items, image_dim]
  item_factors: np.ndarray  # float32 [num_items, latent_dim] (planted, for diagnostics)
  user_factors: np.ndarray  # float32 [num_users, latent_dim]
  item_topic: np.ndarray  # int32 [num_items]: the topic that likes the item most


def generate(
  *,
  num_users: int,
  num_items: int,
  num_interactions: int,
  latent_dim: int,
  text_dim: int,
  image_dim: int,
  popularity_exponent: float,
  seed: int,
) -> SyntheticData:
  """Draws one synthetic dataset; same arguments -> same arrays."""
  _check(
    num_users, num_items, num_interactions, latent_dim, text_dim, image_dim, popularity_exponent
  )
  rng = np.random.default_rng([seed, 0x5EED])
  d = latent_dim
  k = 2 * d
  v = rng.standard_normal((num_items, d)).astype(np.float32)
  c = rng.standard_normal((k, d)).astype(np.float32)
  ranks = rng.permutation(num_items) + 1.0
  log_pop = -popularity_exponent * np.log(ranks)
  beta = 2.0
  logits = log_pop[None, :] + beta * (c @ v.T) / np.sqrt(d)  # [K, N]
  logits -= logits.max(axis=1, keepdims=True)
  p = np.exp(logits)
  cdf = np.cumsum(p, axis=1)
  cdf /= cdf[:, -1:]
  cdf[:, -1] = 1.0
  item_topic = np.argmax(c @ v.T, axis=0).astype(np.int32)
  del logits, p

  alpha = np.full(k, 0.3)
  theta = rng.gamma(alpha, size=(num_users, k)) + 1e-12
  theta /= theta.sum(axis=1, keepdims=True)
  u_fac = (theta @ c).astype(np.float32)

  counts = _allocate(num_interactions, num_users, num_items, rng)
  keys = _sample_without_replacement(counts, theta, cdf, num_items, rng)
  del cdf
  users = (keys // num_items).astype(np.int32)
  items = (keys % num_items).astype(np.int32)
  del keys

  start = _T0 + rng.integers(0, _SPAN - 30 * 86_400, num_users)
  dur = np.minimum(
    _T0 + _SPAN - start, (86_400 * np.exp(rng.normal(4.0, 1.5, num_users))).astype(np.int64) + 3600
  )
  timestamps = np.empty(users.shape[0], np.int64)
  ratings = np.empty(users.shape[0], np.float32)
  for s in range(0, users.shape[0], _CHUNK):
    uu, ii = users[s : s + _CHUNK], items[s : s + _CHUNK]
    timestamps[s : s + _CHUNK] = start[uu] + (rng.random(uu.shape[0]) * dur[uu]).astype(np.int64)
    aff = np.einsum("nd,nd->n", u_fac[uu], v[ii]) / np.sqrt(d)
    ratings[s : s + _CHUNK] = np.clip(
      np.rint(3.5 + 2.0 * aff + rng.normal(0, 0.7, uu.shape[0])), 1, 5
    )

  text = _features(v, text_dim, rng)
  image = _features(v, image_dim, rng)
  return SyntheticData(users, items, timestamps, ratings, text, image, v, u_fac, item_topic)


def _check(num_users, num_items, num_interactions, latent_dim, text_dim, image_dim, expo):
  for key, val in (
    ("num_users", num_users),
    ("num_items", num_items),
    ("num_interactions", num_interactions),
    ("latent_dim", latent_dim),
    ("text_dim", text_dim),
    ("image_dim", image_dim),
  ):
    if isinstance(val, bool) or not isinstance(val, (int, np.integer)) or val < 1:
      raise ConfigError(f"data.{key}={val!r}: must be a positive integer")
  if not isinstance(expo, (int, float)) or not np.isfinite(expo) or expo < 0:
    raise ConfigError(f"data.popularity_exponent={expo!r}: must be a finite number >= 0")
  if num_interactions < num_users:
    raise ConfigError(
      f"data.num_interactions={num_interactions}: must be >= data.num_users="
      f"{num_users} (every synthetic user has at least one interaction)"
    )
  cap = max(1, num_items // 2)
  if num_interactions > num_users * cap:
    raise ConfigError(
      f"data.num_interactions={num_interactions}: more than num_users * "
      f"num_items / 2 = {num_users * cap} (users take at most half the items)"
    )


def _allocate(total: int, n: int, num_items: int, rng) -> np.ndarray:
  """Heavy-tailed per-user counts in [min_c, cap] that sum exactly to ``total``."""
  cap = max(1, num_items // 2)
  min_c = min(5, total // n, cap)
  w = np.exp(rng.normal(0.0, 1.0, n))
  counts = np.full(n, min_c, np.int64)
  rest = total - n * min_c
  while rest > 0:
    free = counts < cap
    ww = np.where(free, w, 0.0)
    share = ww / ww.sum() * rest
    add = np.minimum(np.floor(share).astype(np.int64), cap - counts)
    if add.sum() == 0:  # remainder smaller than one per free user: the heaviest get +1
      idx = np.flatnonzero(free)
      idx = idx[np.argsort(-w[idx], kind="stable")[:rest]]
      add = np.zeros(n, np.int64)
      add[idx] = 1
    counts += add
    rest -= int(add.sum())
  return counts


def _draw_keys(
  draws: np.ndarray, theta: np.ndarray, cdf: np.ndarray, n_items: int, rng
) -> np.ndarray:
  """``draws[u]`` items per user u from its topic mixture (with replacement), as keys.

  Topic counts per user come from one vectorised multinomial; then each topic's draws
  are a searchsorted into that topic's cdf (472 KB: stays in cache, unlike one big table).
  """
  n_users, k = theta.shape
  topic_counts = rng.multinomial(draws, theta)  # [n_users, K]
  out = np.empty(int(draws.sum()), np.int64)
  pos = 0
  owners = np.arange(n_users, dtype=np.int64)
  for z in range(k):
    m = int(topic_counts[:, z].sum())
    if m == 0:
      continue
    uu = np.repeat(owners, topic_counts[:, z])
    for s in range(0, m, _CHUNK):
      r = rng.random(min(_CHUNK, m - s))
      ii = np.minimum(np.searchsorted(cdf[z], r, side="right"), n_items - 1)
      out[pos + s : pos + s + r.shape[0]] = uu[s : s + r.shape[0]] * n_items + ii
    pos += m
  return out


def _sorted_unique(keys: np.ndarray) -> np.ndarray:
  """np.unique without its hash path (30x slower than a sort on 25M int64 here)."""
  keys = np.sort(keys)
  if keys.size:
    keep = np.empty(keys.shape[0], bool)
    keep[0] = True
    np.not_equal(keys[1:], keys[:-1], out=keep[1:])
    keys = keys[keep]
  return keys


def _sample_without_replacement(counts, theta, cdf, n_items, rng) -> np.ndarray:
  """Sorted unique keys user * n_items + item, exactly counts[u] per user."""
  n_users = counts.shape[0]
  need = counts.copy()
  have = np.empty(0, np.int64)
  for rnd in range(40):
    if not need.any():
      break
    factor = 1.0 if rnd == 0 else min(1.3 * 2.0 ** (rnd - 1), 64.0)
    draws = np.ceil(need * factor).astype(np.int64) + (rnd > 0)
    draws[need == 0] = 0
    keys = _sorted_unique(_draw_keys(draws, theta, cdf, n_items, rng))
    if have.size:  # sorted queries: numpy's binary search reuses the last bound
      pos = np.minimum(np.searchsorted(have, keys), have.size - 1)
      keys = keys[have[pos] != keys]
    owner = keys // n_items
    if rnd > 0:  # over-drawn: keep a random subset of need[u] per user
      order = np.lexsort((rng.random(keys.shape[0]), owner))
      keys, owner = keys[order], owner[order]
      first = np.searchsorted(owner, owner, side="left")
      keep = (np.arange(keys.shape[0]) - first) < need[owner]
      keys, owner = keys[keep], owner[keep]
      order = np.argsort(keys)
      keys, owner = keys[order], owner[order]
    need -= np.bincount(owner, minlength=n_users)
    del owner
    have = np.sort(np.concatenate([have, keys]), kind="stable")  # merge of two sorted runs
  if need.any():  # pathological skew: fill the rest uniformly from unseen items
    extra = []
    for u in np.flatnonzero(need):
      seen = have[(have >= u * n_items) & (have < (u + 1) * n_items)] - u * n_items
      pool = np.setdiff1d(np.arange(n_items), seen)
      extra.append(u * n_items + rng.choice(pool, need[u], replace=False))
    have = np.sort(np.concatenate([have] + extra))
  return have


def _features(v: np.ndarray, dim: int, rng) -> np.ndarray:
  a = rng.standard_normal((v.shape[1], dim)).astype(np.float32) / np.sqrt(v.shape[1])
  signal = v @ a
  noise = rng.standard_normal(signal.shape).astype(np.float32) * (0.5 * signal.std())
  return (signal + noise).astype(np.float32)
