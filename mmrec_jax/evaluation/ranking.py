"""Full-ranking evaluation on device: users in chunks, catalogue sharded, top-k merged.

How one chunk of ``C`` users is scored (``mesh`` axes ``('data', 'model')``):

  1. The chunk's user rows ``[C, D]`` are gathered from ``user_matrix`` inside ``jit`` and
     constrained to ``P('data', None)``; the padded item matrix ``[I_pad, D]`` lives on
     ``P('model', None)`` for the whole call.
  2. In ``shard_map`` each device holds ``C/data`` users and ``I_pad/model`` items and loops
     (``lax.scan``) over item blocks of ``eval.item_chunk`` rows (one block by default):
     score block = users @ items.T (float32 accumulate, HIGHEST precision so TPUs do not
     round to bf16 and change the ranking), padded items -> ``-inf``, excluded items ->
     ``-inf``, ``lax.top_k``, merge with the running top-k.
  3. The ``model`` shards ``all_gather`` their k candidates (k * model per user, in shard =
     item-id order) and take ``top_k`` again: the distributed top-k merge. Ties stay
     lower-item-id-first because ``lax.top_k`` is stable by index.
  4. Hits, the metric reduction and ``per-user`` values are computed on device; only
     ``[M, C]`` metric values and ``[C, K]`` top-k ids (+ scores if asked) go to the host.

Exclusion and ground truth reach the device as *pair lists*, not masks: for every data
shard a padded list of ``(local user row, item id)`` pairs ``[data, L]`` (L bucketed to a
power of two so few shapes compile). Each device scatters only the pairs that fall into
its item block: exclusion straight into the score block (``-inf``), truth into a bool block
of the same shape whose values are gathered at the top-k positions. So host->device
traffic is O(interactions of the chunk), no ``[C, I]`` array ever exists on the host, and
device memory is O(C/data * item block) -- bounded by the chunk sizes, never users x items.

Multi-process: the host inputs of a chunk are identical on every process (deterministic)
and are placed with ``jax.make_array_from_callback``; results are gathered with
``process_allgather`` when not fully addressable.
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from mmrec_jax.errors import ConfigError, DataError
from mmrec_jax.evaluation import beyond as beyond_lib
from mmrec_jax.evaluation import full as full_lib
from mmrec_jax.evaluation import rating as rating_lib
from mmrec_jax.evaluation import sampled as sampled_lib
from mmrec_jax.evaluation.metrics import metric_names, metrics_from_hits
from mmrec_jax.evaluation.result import CSR, EvalResult  # also ranking.CSR/EvalResult
from mmrec_jax.evaluation.slices import evaluate_slices
from mmrec_jax.sharding import DATA, MODEL

# ----------------------------------------------------------------------------- CSR helpers


def csr_from_pairs(users: np.ndarray, items: np.ndarray, num_users: int) -> CSR:
  """Per-user sorted, de-duplicated item lists from interaction pairs (vectorised)."""
  users = np.asarray(users, np.int64)
  items = np.asarray(items, np.int64)
  if users.shape != items.shape:
    raise DataError("interactions", f"{users.size} users vs {items.size} items")
  if users.size and (users.min() < 0 or users.max() >= num_users):
    raise DataError("interactions", f"user id out of range [0, {num_users})")
  width = int(items.max(initial=0)) + 1
  key = np.unique(users * width + items)
  u, i = np.divmod(key, width)
  indptr = np.zeros(num_users + 1, np.int64)
  np.cumsum(np.bincount(u, minlength=num_users), out=indptr[1:])
  return indptr, i.astype(np.int32)


def csr_union(a: CSR, b: CSR) -> CSR:
  """Per-user union of two CSRs over the same users."""
  num_users = a[0].size - 1
  ua = np.repeat(np.arange(num_users), np.diff(a[0]))
  ub = np.repeat(np.arange(num_users), np.diff(b[0]))
  return csr_from_pairs(np.concatenate([ua, ub]), np.concatenate([a[1], b[1]]), num_users)


def _check_csr(name: str, csr: CSR, num_users: int, num_items: int) -> CSR:
  indptr, indices = np.asarray(csr[0], np.int64), np.asarray(csr[1])
  if (
    indptr.ndim != 1
    or indptr.size != num_users + 1
    or indptr[0] != 0
    or np.any(np.diff(indptr) < 0)
    or indptr[-1] != indices.size
  ):
    raise DataError(
      name,
      f"not a CSR over {num_users} users (indptr size {indptr.size}, "
      f"last {indptr[-1] if indptr.size else None}, indices {indices.size})",
    )
  if indices.size and (indices.min() < 0 or indices.max() >= num_items):
    raise DataError(name, f"item id out of range [0, {num_items})")
  return indptr, indices.astype(np.int32, copy=False)


def _bucket(n: int, minimum: int = 256) -> int:
  """Next power of two >= n (>= minimum): few distinct shapes, few compilations."""
  return max(minimum, 1 << max(0, int(n - 1).bit_length()))


def _chunk_pairs(
  csr: CSR, ids: np.ndarray, valid: np.ndarray, data: int
) -> tuple[np.ndarray, np.ndarray]:
  """Pair lists ``rows, items [data, L]`` of the chunk's users, one row per data shard.

  ``rows`` are user rows local to the data shard; padding pairs get row ``C/data``, which
  the device scatter drops.
  """
  indptr, indices = csr
  c_all = ids.size
  c = c_all // data
  lens = np.where(valid, indptr[ids + 1] - indptr[ids], 0)
  starts = indptr[ids]
  total = int(lens.sum())
  row = np.repeat(np.arange(c_all), lens)
  offs = np.cumsum(lens) - lens
  pos = np.arange(total) - np.repeat(offs, lens)
  items = indices[np.repeat(starts, lens) + pos]
  shard = row // c
  per_shard = np.bincount(shard, minlength=data)
  length = _bucket(int(per_shard.max(initial=0)))
  shard_start = np.cumsum(per_shard) - per_shard
  at = np.arange(total) - shard_start[shard]
  out_rows = np.full((data, length), c, np.int32)
  out_items = np.zeros((data, length), np.int32)
  out_rows[shard, at] = row - shard * c
  out_items[shard, at] = items
  return out_rows, out_items


# ----------------------------------------------------------------------------- device part


def _pad_items(item_matrix: jax.Array | np.ndarray, mesh: Mesh, padded: int) -> jax.Array:
  """``[I, D] -> [I_pad, D]`` zero rows appended, sharded ``P('model', None)``."""
  sharding = NamedSharding(mesh, P(MODEL, None))
  n = item_matrix.shape[0]
  if isinstance(item_matrix, np.ndarray):
    full = np.zeros((padded, item_matrix.shape[1]), item_matrix.dtype)
    full[:n] = item_matrix
    return jax.make_array_from_callback(full.shape, sharding, lambda idx: full[idx])
  return jax.jit(lambda x: jnp.pad(x, ((0, padded - n), (0, 0))), out_shardings=sharding)(
    item_matrix
  )


@functools.lru_cache(maxsize=64)
def _chunk_fn(
  mesh: Mesh,
  num_items: int,
  kmax: int,
  block: int,
  ks: tuple[int, ...],
  metrics: tuple[str, ...],
  host_users: bool,
):
  """The jitted per-chunk function for one mesh / catalogue / metric set."""
  n_model = mesh.shape[MODEL]
  neg_inf = jnp.float32(-jnp.inf)

  def local(u, items, ex_rows, ex_items, tr_rows, tr_items, n_truth):
    u = u.astype(jnp.float32)
    c = u.shape[0]
    i_local = items.shape[0]
    off = lax.axis_index(MODEL) * i_local
    nblk = i_local // block
    ex_rows, ex_items = ex_rows[0], ex_items[0]
    tr_rows, tr_items = tr_rows[0], tr_items[0]

    def scatter_idx(rows, its, start):
      li = its - start
      ok = (li >= 0) & (li < block)
      return jnp.where(ok, rows, c), jnp.where(ok, li, block)  # out of bounds -> dropped

    def score_block(carry, xs):
      b, item_blk = xs
      start = off + b * block
      s = lax.dot_general(
        u,
        item_blk.astype(jnp.float32),
        (((1,), (1,)), ((), ())),
        precision=lax.Precision.HIGHEST,
        preferred_element_type=jnp.float32,
      )  # [c, block]
      gid = start + jnp.arange(block, dtype=jnp.int32)
      s = jnp.where((gid < num_items)[None, :], s, neg_inf)
      r, li = scatter_idx(ex_rows, ex_items, start)
      s = s.at[r, li].set(neg_inf, mode="drop")
      r, li = scatter_idx(tr_rows, tr_items, start)
      t = jnp.zeros((c, block), jnp.bool_).at[r, li].set(True, mode="drop")
      kb = min(kmax, block)
      v, idx = lax.top_k(s, kb)
      f = jnp.take_along_axis(t, idx, axis=1)
      g = idx + start
      if carry is not None:  # earlier blocks (lower ids) first: ties stay lower-id-first
        v = jnp.concatenate([carry[0], v], axis=1)
        g = jnp.concatenate([carry[1], g], axis=1)
        f = jnp.concatenate([carry[2], f], axis=1)
        v, j = lax.top_k(v, kmax)
        g = jnp.take_along_axis(g, j, axis=1)
        f = jnp.take_along_axis(f, j, axis=1)
      return (v, g, f), None

    blocks = items.reshape(nblk, block, items.shape[1])
    carry, _ = score_block(None, (0, blocks[0]))
    if nblk > 1:
      carry, _ = lax.scan(score_block, carry, (jnp.arange(1, nblk), blocks[1:]))
    v, g, f = carry
    if n_model > 1:  # distributed top-k merge over the catalogue shards
      v = lax.all_gather(v, MODEL, axis=1, tiled=True)
      g = lax.all_gather(g, MODEL, axis=1, tiled=True)
      f = lax.all_gather(f, MODEL, axis=1, tiled=True)
      v, j = lax.top_k(v, kmax)
      g = jnp.take_along_axis(g, j, axis=1)
      f = jnp.take_along_axis(f, j, axis=1)
    hits = f & (v > neg_inf)
    vals = metrics_from_hits(hits, n_truth, ks, metrics, xp=jnp)
    return jnp.stack(list(vals.values())), g, v

  sharded = jax.shard_map(
    local,
    mesh=mesh,
    in_specs=(
      P(DATA, None),
      P(MODEL, None),
      P(DATA, None),
      P(DATA, None),
      P(DATA, None),
      P(DATA, None),
      P(DATA),
    ),
    out_specs=(P(None, DATA), P(DATA, None), P(DATA, None)),
    # After the all_gather merge every 'model' shard holds identical results; jax's
    # varying-axis check cannot infer that through all_gather + top_k, so it is off.
    check_vma=False,
  )
  row_sharding = NamedSharding(mesh, P(DATA, None))

  def run(user_src, ids, items, ex_rows, ex_items, tr_rows, tr_items, n_truth):
    u = user_src if host_users else user_src[ids]
    u = lax.with_sharding_constraint(u, row_sharding)
    return sharded(u, items, ex_rows, ex_items, tr_rows, tr_items, n_truth)

  return jax.jit(run)


def _put(mesh: Mesh, arr: np.ndarray, spec: P) -> jax.Array:
  """Places an identical-on-every-process host array with ``spec`` (multi-process safe)."""
  return jax.make_array_from_callback(arr.shape, NamedSharding(mesh, spec), lambda i: arr[i])


def _fetch(x: jax.Array) -> np.ndarray:
  if x.is_fully_addressable:
    return np.asarray(jax.device_get(x))
  from jax.experimental import multihost_utils  # noqa: PLC0415

  return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def evaluate_embeddings(
  user_matrix: jax.Array | np.ndarray,
  item_matrix: jax.Array | np.ndarray,
  *,
  users: np.ndarray,
  truth: CSR,
  exclude: CSR,
  ks: Sequence[int],
  metrics: Sequence[str],
  mesh: Mesh,
  user_chunk: int = 1024,
  return_topk: int = 0,
  item_chunk: int = 0,
) -> EvalResult:
  """Full-ranking evaluation of dot-product scores ``user_matrix @ item_matrix.T``.

  Args:
    user_matrix: [num_users, D] (jax.Array in any sharding, or numpy on the host).
    item_matrix: [num_items, D].
    users: candidate user ids; those with empty ``truth`` are dropped, the rest sorted.
    truth: CSR of ground-truth items per user (indptr over all num_users).
    exclude: CSR of items never to recommend per user (train, + valid when testing).
    ks: cut-offs; metrics: names from ``metrics.METRICS``.
    mesh: ('data', 'model') mesh; users split on 'data', catalogue on 'model'.
    user_chunk: users per chunk (rounded up to a multiple of the data axis).
    return_topk: keep the top-``return_topk`` ids/scores per user on the host (0 = no).
    item_chunk: items per scoring block on each device (0 = its whole catalogue shard);
      bounds device memory at ``user_chunk/data * item_chunk`` scores.

  Returns:
    EvalResult (see its docstring); metric definitions in ``evaluation.metrics``.
  """
  names = metric_names(metrics, ks)
  ks = tuple(int(k) for k in ks)
  num_users, dim = user_matrix.shape
  num_items = item_matrix.shape[0]
  if item_matrix.shape[1] != dim:
    raise DataError("item_matrix", f"width {item_matrix.shape[1]} != user width {dim}")
  truth = _check_csr("truth", truth, num_users, num_items)
  exclude = _check_csr("exclude", exclude, num_users, num_items)
  kmax = max(max(ks), int(return_topk))
  if kmax > num_items:
    raise DataError("eval.ks", f"cut-off {kmax} exceeds the {num_items} items")
  n_data, n_model = mesh.shape[DATA], mesh.shape[MODEL]

  users = np.unique(np.asarray(users, np.int64))
  if users.size and (users[0] < 0 or users[-1] >= num_users):
    raise DataError("users", f"user id out of range [0, {num_users})")
  n_truth_all = np.diff(truth[0])[:num_users]
  users = users[n_truth_all[users] > 0]
  n = users.size

  # Item layout: each model shard holds nblk blocks of `block` rows, at least kmax in all.
  per_shard = max(-(-num_items // n_model), kmax)
  block = per_shard if item_chunk <= 0 else min(int(item_chunk), per_shard)
  block = max(block, kmax)  # every block yields kmax candidates (fixed scan carry)
  per_shard = -(-per_shard // block) * block
  items = _pad_items(item_matrix, mesh, per_shard * n_model)

  chunk = max(1, min(int(user_chunk), n))
  chunk = -(-chunk // n_data) * n_data
  host_users = isinstance(user_matrix, np.ndarray)
  fn = _chunk_fn(mesh, num_items, kmax, block, ks, tuple(metrics), host_users)

  per_user = np.zeros((len(names), n), np.float32)
  keep = int(return_topk)
  top_items = np.zeros((n, kmax), np.int32)
  top_scores = np.zeros((n, kmax), np.float32)

  def collect(start, stop, out):
    vals, g, v = (_fetch(x) for x in out)
    m = stop - start
    per_user[:, start:stop] = vals[:, :m]
    top_items[start:stop] = g[:m]
    top_scores[start:stop] = v[:m]

  pending = None
  for start in range(0, n, chunk):
    stop = min(start + chunk, n)
    ids = np.zeros(chunk, np.int64)
    ids[: stop - start] = users[start:stop]
    valid = np.arange(chunk) < stop - start
    ex_rows, ex_items = _chunk_pairs(exclude, ids, valid, n_data)
    tr_rows, tr_items = _chunk_pairs(truth, ids, valid, n_data)
    n_truth = np.where(valid, n_truth_all[ids], 0).astype(np.int32)
    if host_users:
      src = _put(mesh, np.asarray(user_matrix[ids]), P(DATA, None))
    else:
      src = user_matrix
    out = fn(
      src,
      _put(mesh, ids.astype(np.int32), P(DATA)),
      items,
      _put(mesh, ex_rows, P(DATA, None)),
      _put(mesh, ex_items, P(DATA, None)),
      _put(mesh, tr_rows, P(DATA, None)),
      _put(mesh, tr_items, P(DATA, None)),
      _put(mesh, n_truth, P(DATA)),
    )
    if pending is not None:  # fetch the previous chunk while this one runs
      collect(*pending)
    pending = (start, stop, out)
  if pending is not None:
    collect(*pending)

  per_user_d = {name: per_user[j] for j, name in enumerate(names)}
  means = {
    name: float(per_user_d[name].mean(dtype=np.float64)) if n else float("nan") for name in names
  }
  coverage = {}
  for k in ks:
    seen = np.zeros(num_items + 1, bool)
    sel = top_items[:, :k][np.isfinite(top_scores[:, :k])]
    seen[sel] = True
    coverage[f"coverage@{k}"] = float(seen[:num_items].sum() / num_items)
  return EvalResult(
    metrics=means,
    per_user=per_user_d,
    users=users,
    coverage=coverage,
    num_items=num_items,
    topk_items=top_items[:, :keep] if keep else None,
    topk_scores=top_scores[:, :keep] if keep else None,
  )


# ----------------------------------------------------------------------------- dataset level

_SPLIT_CSR_CACHE: weakref.WeakKeyDictionary[Any, dict[str, CSR]] = weakref.WeakKeyDictionary()


def split_csr(ds: Any, name: str, threshold: float = -1.0) -> CSR:
  """CSR of one split of a PreparedDataset, built once per dataset object and cached.

  ``threshold >= 0`` keeps only the rows with rating >= threshold (the relevant rows of
  ``eval.relevance_threshold``); ``name`` may be ``'train+valid'`` (the union).
  """
  try:
    cache = _SPLIT_CSR_CACHE.setdefault(ds, {})
  except TypeError:  # not weak-referenceable: no cache
    cache = {}
  threshold = float(threshold)
  key = name if threshold < 0 else f"{name}@{threshold:g}"
  if key not in cache:
    if name == "train+valid":
      cache[key] = csr_union(split_csr(ds, "train", threshold), split_csr(ds, "valid", threshold))
    else:
      sp = ds.split(name)
      users, items = np.asarray(sp.users), np.asarray(sp.items)
      if threshold >= 0:
        keep = np.asarray(sp.ratings) >= threshold
        users, items = users[keep], items[keep]
      cache[key] = csr_from_pairs(users, items, ds.num_users)
  return cache[key]


def _eval_option(eval_cfg: Any, key: str, default: Any) -> Any:
  """``eval_cfg.key``, or ``default`` for an eval section written before the key existed."""
  try:
    return eval_cfg[key]
  except (KeyError, AttributeError):
    return getattr(eval_cfg, key, default)


def evaluate_split(
  user_matrix: jax.Array | np.ndarray,
  item_matrix: jax.Array | np.ndarray,
  ds: Any,
  split: str,
  eval_cfg: Any,
  mesh: Mesh,
  *,
  seed: int = 0,
) -> EvalResult:
  """Evaluates on ``ds.split(split)`` ('valid' or 'test') with the ``config.eval`` settings.

  Relevance and exclusions (``eval.relevance_threshold = t``): with ``t < 0`` every row of
  the split is relevant and the user's train items are excluded from the ranking (train +
  valid when testing if ``eval.mask_valid_in_test``, the default). With ``t >= 0``,
  Cornac's ``ranking_eval`` rule: relevant = the split's rows with rating >= t, excluded
  = the user's train (and valid) rows with rating >= t -- rated-but-disliked items stay
  in the ranking as negatives.

  ``res.metrics`` holds, besides the top-K metrics of ``eval.metrics`` x ``eval.ks``: the
  beyond-accuracy metrics of ``eval.beyond`` (``coverage@K``, ``gini@K``, ...), the
  whole-list metrics of ``eval.full_metrics`` (``auc``, ``gauc``, ``map``), the rating
  metrics of ``eval.rating_metrics`` (``mae``, ``rmse``) and, with ``eval.sampled``, the
  sampled top-K metrics (``ndcg@10/uni100``). Definitions sit in the module computing
  each (``metrics``, ``beyond``, ``full``, ``rating``, ``sampled``). Slices
  (``eval.slices``) and the top-``eval.export_topk`` lists are attached when asked for;
  every user of the dataset with relevant rows in the split is evaluated. ``seed`` seeds
  the sampled negatives.
  """
  if split not in ("valid", "test"):
    raise ConfigError(f"evaluation split {split!r} is not one of ['valid', 'test']")
  thr = float(_eval_option(eval_cfg, "relevance_threshold", -1.0))
  beyond = beyond_lib.check_beyond(tuple(_eval_option(eval_cfg, "beyond", ())))
  full = full_lib.check_full_metrics(tuple(_eval_option(eval_cfg, "full_metrics", ())))
  rating = rating_lib.check_rating_metrics(tuple(_eval_option(eval_cfg, "rating_metrics", ())))
  sampled = str(_eval_option(eval_cfg, "sampled", ""))
  if sampled:
    sampled_lib.parse_mode(sampled)
  truth = split_csr(ds, split, thr)
  mask = "train+valid" if split == "test" and eval_cfg.mask_valid_in_test else "train"
  exclude = split_csr(ds, mask, thr)
  ks = tuple(int(k) for k in eval_cfg.ks)
  metrics = tuple(eval_cfg.metrics)
  want_slices = bool(eval_cfg.slices)
  export = int(eval_cfg.export_topk)
  want_lists = any(m != "coverage" for m in beyond)
  keep = max(export, max(ks) if (want_slices or want_lists) else 0)
  res = evaluate_embeddings(
    user_matrix,
    item_matrix,
    users=np.arange(ds.num_users),
    truth=truth,
    exclude=exclude,
    ks=ks,
    metrics=metrics,
    mesh=mesh,
    user_chunk=int(eval_cfg.user_chunk),
    return_topk=keep,
    item_chunk=int(eval_cfg.item_chunk),
  )
  if want_slices:
    res.slices = evaluate_slices(res, truth, split_csr(ds, "train"), ks=ks, metrics=metrics)
  if beyond:
    train = ds.split("train")
    features = None
    if "ild" in beyond and ds.modalities:
      modality = str(_eval_option(eval_cfg, "ild_modality", "")) or ds.modalities[0]
      features = ds.features(modality).to_array()
    means, per_user = beyond_lib.beyond_metrics(
      res.topk_items if keep else np.zeros((res.users.size, 0), np.int32),
      res.topk_scores if keep else np.zeros((res.users.size, 0), np.float32),
      ks=ks if want_lists else (),
      metrics=beyond,
      num_items=res.num_items,
      train_users=np.asarray(train.users),
      train_items=np.asarray(train.items),
      features=features,
    )
    if "coverage" in beyond:
      means.update(res.coverage)
    res.metrics.update(
      {n: means[n] for m in beyond for k in ks for n in [f"{m}@{k}"] if n in means}
    )
    res.per_user.update(per_user)
  if full:
    means, per_user = full_lib.full_metrics(
      user_matrix,
      item_matrix,
      users=res.users,
      truth=truth,
      exclude=exclude,
      metrics=full,
      user_chunk=min(int(eval_cfg.user_chunk), 256),
    )
    res.metrics.update(means)
    res.per_user.update({k: v.astype(np.float32) for k, v in per_user.items()})
  if rating:
    rows = ds.split(split)
    r_users, r_items = np.asarray(rows.users), np.asarray(rows.items)
    train_r = np.asarray(ds.split("train").ratings)
    rating_range = (
      (float(train_r.min()), float(train_r.max())) if train_r.size else (-np.inf, np.inf)
    )
    link = str(_eval_option(eval_cfg, "rating_link", "identity"))
    lo, hi = rating_lib.check_link(link, _eval_option(eval_cfg, "rating_range", (1.0, 5.0)))
    pred = rating_lib.apply_link(
      rating_lib.predict(user_matrix, item_matrix, r_users, r_items).astype(np.float64),
      link,
      lo,
      hi,
    )
    res.metrics.update(
      rating_lib.rating_metrics(
        pred,
        np.asarray(rows.ratings),
        r_users,
        metrics=rating,
        rating_range=rating_range,
        user_based=bool(_eval_option(eval_cfg, "rating_user_based", True)),
      )
    )
  if sampled:
    history = csr_union(split_csr(ds, "train+valid"), split_csr(ds, "test"))
    counts = np.bincount(np.asarray(ds.split("train").items), minlength=res.num_items)
    means, per_user = sampled_lib.sampled_metrics(
      _host(user_matrix),
      _host(item_matrix),
      users=res.users,
      truth=truth,
      history=history,
      mode=sampled,
      ks=ks,
      metrics=metrics,
      item_counts=counts,
      seed=seed,
    )
    res.metrics.update(means)
    res.per_user.update(per_user)
  if keep and not export:  # top-k kept only for the slices / beyond metrics
    res.topk_items = res.topk_scores = None
  elif keep > export:
    res.topk_items, res.topk_scores = res.topk_items[:, :export], res.topk_scores[:, :export]
  return res


def _host(x: jax.Array | np.ndarray) -> np.ndarray:
  return x if isinstance(x, np.ndarray) else _fetch(x)
