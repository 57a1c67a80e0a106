"""From a trained run to recommendations: ``Recommender.load(workdir)``.

Why a separate object from the training ``Task``: serving needs only the two towers'
outputs (every model is a dot-product recommender), the raw-id maps and what each user has
already seen, plus -- for new users and items -- the model's own fold-in and item tower.
So ``load`` restores the best checkpoint once, on whatever devices this process has,
computes ``task.eval_reprs`` (the exact vectors the evaluator ranked with), and keeps

  * the item matrix row-sharded over the local devices (``serving.topk``), the user matrix
    on the host (a request sends only its rows);
  * raw id <-> internal id maps for users and items;
  * the "seen" lists excluded by ``exclude_seen``: by default exactly what the test
    evaluation masks (train, plus valid when ``eval.mask_valid_in_test``), so
    ``recommend(users, k)`` reproduces the run's ``topk_test.tsv`` row for row;
  * a fold-in solver and, for feature models, the item tower (``serving.foldin``).

Every method takes and returns raw ids; an unknown id raises :class:`UnknownIdError`
(one line naming the id), which the HTTP server answers with 404.
"""

from __future__ import annotations

import json
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import jax
import numpy as np

from mmrec_jax.errors import ConfigError, DataError, MmrecError
from mmrec_jax.serving import foldin as foldin_lib
from mmrec_jax.serving import topk as topk_lib


class UnknownIdError(DataError):
  """A raw user or item id that the run does not know (HTTP 404)."""


class Recommendations(NamedTuple):
  """Per query row: raw item ids and scores, best first.

  ``item_ids`` is a str array [n, k]; a position with nothing rankable left (fewer than
  k candidates after exclusions) holds ``''`` with score ``-inf``.
  """

  item_ids: np.ndarray
  scores: np.ndarray

  def rows(self, i: int) -> list[tuple[str, float]]:
    """Row ``i`` as ``[(item_id, score), ...]`` without the empty positions."""
    return [(str(a), float(b)) for a, b in zip(self.item_ids[i], self.scores[i]) if np.isfinite(b)]


def config_from_json(path: str | pathlib.Path):
  """The run's ConfigDict from ``workdir/config.json`` (``config.to_dict()`` of the run).

  Starts from ``config.base_config()`` so every field has its type; JSON lists become
  tuples where the schema has tuples. A key the schema no longer has is a ConfigError.
  """
  import ml_collections  # noqa: PLC0415

  from mmrec_jax import config as config_lib  # noqa: PLC0415

  path = pathlib.Path(path)
  if not path.is_file():
    raise DataError(str(path), "missing: is this the workdir of a finished training run?")
  try:
    saved = json.loads(path.read_text())
  except ValueError as e:
    raise DataError(str(path), f"not valid JSON ({e})") from None
  base = config_lib.base_config()

  def merge(node: ml_collections.ConfigDict, values: Mapping[str, Any], where: str):
    for key, value in values.items():
      if key not in node:
        raise ConfigError(
          f"{path}: {where}{key} is not a key of this mmrec_jax's config "
          "schema (the run was trained by another version?)"
        )
      if isinstance(node[key], ml_collections.ConfigDict):
        merge(node[key], value, f"{where}{key}.")
        continue
      if isinstance(node[key], tuple) and isinstance(value, list):
        value = tuple(value)
      try:
        node[key] = value
      except TypeError:
        raise ConfigError(f"{path}: {where}{key}={value!r} has the wrong type") from None

  merge(base, saved, "")
  return base


class Recommender:
  """Top-k recommendations, similar items and scores from fixed user and item vectors.

  Build with :meth:`load` (a training workdir) or directly from matrices (tests, exports).

  Args:
    user_vectors: float32 [num_users, D].
    item_vectors: float32 [num_items, D].
    user_ids, item_ids: raw id per row.
    seen: per-user CSR ``(indptr, indices)`` of internal item ids excluded by
      ``exclude_seen``; None = nothing seen.
    model_name: ``config.model.name`` (selects fold-in / new-item support).
    fixed_user_columns: trailing user columns that are the constant 1 (fold-in).
    item_tower: a :class:`foldin.ItemTower` for models that embed new items.
    mesh: 1-D mesh of local devices for the catalogue (default: all local devices).
    max_batch: query rows per device call (bigger requests are split).
  """

  def __init__(
    self,
    user_vectors: np.ndarray,
    item_vectors: np.ndarray,
    user_ids: Sequence[str],
    item_ids: Sequence[str],
    *,
    seen: tuple[np.ndarray, np.ndarray] | None = None,
    model_name: str = "",
    fixed_user_columns: int = 0,
    item_tower: Any = None,
    mesh: jax.sharding.Mesh | None = None,
    max_batch: int = 256,
    info: Mapping[str, Any] | None = None,
  ):
    users = np.ascontiguousarray(user_vectors, np.float32)
    items = np.ascontiguousarray(item_vectors, np.float32)
    if users.ndim != 2 or items.ndim != 2 or users.shape[1] != items.shape[1]:
      raise DataError(
        "vectors", f"users {users.shape} and items {items.shape} must be [n, D] with the same D"
      )
    self.user_raw = np.asarray(user_ids).astype(str)
    if self.user_raw.shape != (users.shape[0],):
      raise DataError("user_ids", f"{self.user_raw.size} ids for {users.shape[0]} vectors")
    self.model_name = model_name
    self.fixed_user_columns = int(fixed_user_columns)
    self.item_tower = item_tower
    self.mesh = topk_lib.local_mesh() if mesh is None else mesh
    self.max_batch = int(max_batch)
    self.info = dict(info or {})
    self._users = users
    self._user_index = {u: i for i, u in enumerate(self.user_raw.tolist())}
    if len(self._user_index) != users.shape[0]:
      raise DataError("user_ids", "raw user ids are not unique")
    nu = users.shape[0]
    if seen is None:
      seen = (np.zeros(nu + 1, np.int64), np.zeros(0, np.int32))
    self._seen = (np.asarray(seen[0], np.int64), np.asarray(seen[1], np.int32))
    if self._seen[0].shape != (nu + 1,):
      raise DataError("seen", f"CSR indptr of size {self._seen[0].size}, expected {nu + 1}")
    self._set_items(items, np.asarray(item_ids).astype(str))

  # ------------------------------------------------------------------ construction
  def _set_items(self, items: np.ndarray, raw: np.ndarray) -> None:
    if raw.shape != (items.shape[0],):
      raise DataError("item_ids", f"{raw.size} ids for {items.shape[0]} vectors")
    index = {x: i for i, x in enumerate(raw.tolist())}
    if len(index) != raw.size:
      raise DataError("item_ids", "raw item ids are not unique")
    self._items, self.item_raw, self._item_index = items, raw, index
    rows = topk_lib.padded_catalogue(items.shape[0], self.mesh)
    self._items_dev = topk_lib.put_rows(self.mesh, items, rows)
    norms = np.linalg.norm(items, axis=1, keepdims=True)
    self._items_unit = items / np.maximum(norms, 1e-12)
    self._items_unit_dev = topk_lib.put_rows(self.mesh, self._items_unit, rows)
    self._users_dev = None
    self._foldin = None

  @classmethod
  def load(
    cls,
    workdir: str | pathlib.Path,
    *,
    checkpoint: str = "best",
    seen_splits: Sequence[str] | None = None,
    max_batch: int = 256,
  ) -> Recommender:
    """Restores a training run for serving.

    Args:
      workdir: the run's workdir (``config.json`` and checkpoints).
      checkpoint: 'best' (the best-validation checkpoint, what test was scored with;
        falls back to the latest when the run kept none) or 'latest'.
      seen_splits: splits whose items ``exclude_seen`` removes; default: what the test
        evaluation masks (``('train', 'valid')`` if ``eval.mask_valid_in_test``).
      max_batch: query rows per device call.

    Works on any device count whose table padding matches the checkpoint's (every
    power of two up to 256, ``layers.embedding.ROW_MULTIPLE``); otherwise a ConfigError.
    """
    from mmrec_jax import checkpointing, sharding  # noqa: PLC0415
    from mmrec_jax.data import prepare as prepare_lib  # noqa: PLC0415
    from mmrec_jax.evaluation import csr_from_pairs  # noqa: PLC0415
    from mmrec_jax.step import Task  # noqa: PLC0415
    from mmrec_jax.train import build_data_info, resolve_modalities  # noqa: PLC0415

    workdir = pathlib.Path(workdir)
    config = config_from_json(workdir / "config.json")
    if checkpoint not in ("best", "latest"):
      raise ConfigError(f"checkpoint={checkpoint!r} is not one of ['best', 'latest']")
    from mmrec_jax.models import registry  # noqa: PLC0415

    if registry.get(config.model.name).regime == "pointwise":
      # A pointwise ranker scores (user, item, side features) with an MLP: its towers are
      # not a dot-product retrieval model, so top-K over them would be silently wrong.
      raise ConfigError(
        f"{workdir}: model {config.model.name!r} is a pointwise ranker, not a retrieval "
        "model; serve a retrieval run and re-rank its candidates (python -m mmrec_jax.two_stage)"
      )
    # Whatever mesh the run trained on, restore onto this process's devices (Orbax
    # reshards to the target shardings).
    mesh = sharding.make_mesh(-1, 1)
    ds = prepare_lib.prepare(config.data)
    ds, modalities = resolve_modalities(ds, config)
    info = build_data_info(ds, config, modalities)
    task = Task(config, info, mesh)
    if not (workdir / "checkpoints").is_dir() and not (workdir / "best").is_dir():
      raise DataError(str(workdir), "no checkpoints/ or best/ directory: not a training workdir")
    ckpt = checkpointing.RunCheckpointer(
      workdir, max_to_keep=config.train.max_checkpoints, use_async=False
    )
    try:
      try:
        state, used, step = _restore(ckpt, task.abstract_state(), checkpoint, workdir)
      except MmrecError:
        raise
      except (ValueError, KeyError) as e:
        first = " ".join(str(e).split())[:300]
        raise ConfigError(
          f"{workdir}: the checkpoint does not restore onto {jax.device_count()} devices ({first})"
        ) from None
    finally:
      ckpt.close()
    users, items = task.eval_reprs(state)
    users = _to_host(users)[: task.num_users]
    items = _to_host(items)[: task.num_items]
    if seen_splits is None:
      seen_splits = ("train", "valid") if config.eval.mask_valid_in_test else ("train",)
    su = [np.asarray(ds.split(s).users) for s in seen_splits]
    si = [np.asarray(ds.split(s).items) for s in seen_splits]
    seen = csr_from_pairs(
      np.concatenate(su) if su else np.zeros(0, np.int64),
      np.concatenate(si) if si else np.zeros(0, np.int64),
      ds.num_users,
    )
    tower = None
    support = foldin_lib.support(config.model.name)
    if support.new_items is not None:
      dims = {m: int(info.features[m].shape[1]) for m in task.modalities}
      tower = foldin_lib.ItemTower(
        config.model.name, _graphdef(task), state["params"], dims, int(config.model.embed_dim)
      )
    return cls(
      users,
      items,
      ds.user_raw_ids(),
      ds.item_raw_ids(),
      seen=seen,
      model_name=config.model.name,
      fixed_user_columns=foldin_lib.fixed_user_columns(config.model),
      item_tower=tower,
      max_batch=max_batch,
      info={
        "workdir": str(workdir.absolute()),
        "model": config.model.name,
        "checkpoint": used,
        "step": step,
        "seen_splits": list(seen_splits),
        "dataset": str(ds.path),
        "modalities": list(task.modalities),
      },
    )

  # ------------------------------------------------------------------ properties
  @property
  def num_users(self) -> int:
    return self._users.shape[0]

  @property
  def num_items(self) -> int:
    return self._items.shape[0]

  @property
  def dim(self) -> int:
    return self._items.shape[1]

  @property
  def user_vectors(self) -> np.ndarray:
    return self._users

  @property
  def item_vectors(self) -> np.ndarray:
    return self._items

  def user_index(self, user_ids: Sequence[str]) -> np.ndarray:
    """Internal ids of raw user ids; UnknownIdError names the first unknown one."""
    return _lookup(self._user_index, user_ids, "user")

  def item_index(self, item_ids: Sequence[str]) -> np.ndarray:
    return _lookup(self._item_index, item_ids, "item")

  def seen_items(self, user: int) -> np.ndarray:
    indptr, indices = self._seen
    return indices[indptr[user] : indptr[user + 1]]

  # ------------------------------------------------------------------ ranking
  def recommend(
    self,
    user_ids: Sequence[str],
    k: int = 10,
    exclude_seen: bool = True,
    candidates: Sequence[Sequence[str]] | Sequence[str] | None = None,
  ) -> Recommendations:
    """Top-``k`` items for known users.

    Args:
      user_ids: raw user ids.
      k: list length (1 .. number of items).
      exclude_seen: drop the items of ``seen_splits`` (see :meth:`load`).
      candidates: rank only these raw item ids: one list for every user, or one list per
        user; None = the whole catalogue.
    """
    users = self.user_index(user_ids)
    excl = [self.seen_items(u) for u in users] if exclude_seen else None
    return self._rank(self._users[users], k, excl, self._candidates(candidates, len(users)))

  def recommend_for_history(
    self,
    histories: Sequence[Sequence[str]],
    k: int = 10,
    exclude_seen: bool = True,
    candidates: Sequence[Sequence[str]] | Sequence[str] | None = None,
  ) -> Recommendations:
    """Top-``k`` for new users given as lists of interacted raw item ids (fold-in)."""
    hist = [self.item_index(h) for h in histories]
    vectors = self.fold_in_internal(hist)
    excl = hist if exclude_seen else None
    return self._rank(vectors, k, excl, self._candidates(candidates, len(hist)))

  def similar_items(self, item_ids: Sequence[str], k: int = 10) -> Recommendations:
    """The ``k`` items with the highest cosine similarity of item vectors (self excluded)."""
    items = self.item_index(item_ids)
    self._check_k(k, self.num_items - 1)
    out_i, out_s = [], []
    for s in range(0, len(items), self.max_batch):
      chunk = items[s : s + self.max_batch]
      i, v = self._topk(
        self._items_unit[chunk], self._items_unit_dev, k, [np.array([x]) for x in chunk]
      )
      out_i.append(i)
      out_s.append(v)
    return self._format(
      np.concatenate(out_i) if out_i else np.zeros((0, k), np.int32),
      np.concatenate(out_s) if out_s else np.zeros((0, k), np.float32),
    )

  def score(self, user_ids: Sequence[str], item_ids: Sequence[str]) -> np.ndarray:
    """``user . item`` per (user, item) pair; a single user or item is broadcast."""
    u = self.user_index(user_ids)
    i = self.item_index(item_ids)
    if len(u) == 1 and len(i) != 1:
      u = np.repeat(u, len(i))
    elif len(i) == 1 and len(u) != 1:
      i = np.repeat(i, len(u))
    if len(u) != len(i):
      raise DataError(
        "score", f"{len(u)} users for {len(i)} items: give equal lengths or a single user or item"
      )
    if self._users_dev is None:
      self._users_dev = topk_lib.put_rows(
        self.mesh, self._users, topk_lib.padded_catalogue(self.num_users, self.mesh)
      )
    fn = topk_lib.pair_score_fn(self.mesh)
    out = np.zeros(len(u), np.float32)
    step = 4096
    for s in range(0, len(u), step):
      n = len(u[s : s + step])
      rows = topk_lib.bucket(n)
      uu = np.zeros(rows, np.int32)
      ii = np.zeros(rows, np.int32)
      uu[:n], ii[:n] = u[s : s + step], i[s : s + step]
      out[s : s + n] = np.asarray(fn(self._users_dev, self._items_dev, uu, ii))[:n]
    return out

  # ------------------------------------------------------------------ new users / items
  def fold_in(self, histories: Sequence[Sequence[str]]) -> np.ndarray:
    """User vectors [n, D] for new users given by raw item ids (``serving.foldin``)."""
    return self.fold_in_internal([self.item_index(h) for h in histories])

  def fold_in_internal(self, histories: Sequence[np.ndarray]) -> np.ndarray:
    if self.model_name:
      foldin_lib.support(self.model_name)  # unknown model -> one line
    for h in histories:
      if len(h) == 0:
        raise DataError("history", "is empty: give at least one interacted item id")
    if self._foldin is None:
      self._foldin = foldin_lib.FoldIn(self._items, self.fixed_user_columns)
    return self._foldin(list(histories))

  def embed_items(
    self, features: Mapping[str, np.ndarray], masks: Mapping[str, np.ndarray] | None = None
  ) -> np.ndarray:
    """Item vectors [n, D] of new items from feature rows (feature models only)."""
    if self.item_tower is None:
      raise ConfigError(
        f"model {self.model_name or '(unknown)'!r} cannot embed new items "
        "from features (ID-only or graph model; see docs/serving.md)"
      )
    return self.item_tower(features, masks)

  def add_items(
    self,
    item_ids: Sequence[str],
    features: Mapping[str, np.ndarray],
    masks: Mapping[str, np.ndarray] | None = None,
  ) -> None:
    """Appends new items (embedded from features) to the catalogue served."""
    raw = np.asarray(item_ids).astype(str)
    dup = [x for x in raw.tolist() if x in self._item_index]
    if dup:
      raise DataError("item_ids", f"{dup[0]!r} is already in the catalogue")
    vecs = self.embed_items(features, masks)
    if vecs.shape[0] != raw.size:
      raise DataError("item_ids", f"{raw.size} ids for {vecs.shape[0]} feature rows")
    self._set_items(np.concatenate([self._items, vecs]), np.concatenate([self.item_raw, raw]))

  # ------------------------------------------------------------------ internals
  def _candidates(self, candidates, n: int) -> list[np.ndarray] | None:
    if candidates is None:
      return None
    if len(candidates) and all(isinstance(c, str) for c in candidates):
      one = self.item_index(candidates)
      return [one] * n
    if len(candidates) != n:
      raise DataError("candidates", f"{len(candidates)} lists for {n} users")
    return [self.item_index(c) for c in candidates]

  def _check_k(self, k: int, limit: int) -> None:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= limit:
      raise DataError("k", f"{k!r} must be an integer in [1, {limit}]")

  def _rank(
    self,
    queries: np.ndarray,
    k: int,
    exclude: list[np.ndarray] | None,
    candidates: list[np.ndarray] | None,
  ) -> Recommendations:
    self._check_k(k, self.num_items)
    n = queries.shape[0]
    out_i = np.zeros((n, k), np.int32)
    out_s = np.full((n, k), -np.inf, np.float32)
    for s in range(0, n, self.max_batch):
      e = slice(s, min(n, s + self.max_batch))
      ex = None if exclude is None else exclude[e]
      if candidates is None:
        out_i[e], out_s[e] = self._topk(queries[e], self._items_dev, k, ex)
      else:
        out_i[e], out_s[e] = self._topk_candidates(queries[e], k, ex, candidates[e])
    return self._format(out_i, out_s)

  def _topk(
    self, q: np.ndarray, items_dev: jax.Array, k: int, exclude: list[np.ndarray] | None
  ) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k of ``q`` over the catalogue on device (``serving.topk``)."""
    n = q.shape[0]
    rows = topk_lib.bucket(n)
    qp = np.zeros((rows, q.shape[1]), np.float32)
    qp[:n] = q
    lists = [np.zeros(0, np.int32)] * n if exclude is None else list(exclude)
    ex_rows, ex_items = topk_lib.exclusion_pairs(lists, rows)
    kb = min(topk_lib.bucket(k, 16), self.num_items)
    fn = topk_lib.topk_fn(self.mesh, self.num_items, kb)
    ids, scores = fn(
      topk_lib.replicate(self.mesh, qp),
      items_dev,
      topk_lib.replicate(self.mesh, ex_rows),
      topk_lib.replicate(self.mesh, ex_items),
    )
    return np.asarray(ids)[:n, :k], np.asarray(scores)[:n, :k]

  def _topk_candidates(self, q, k, exclude, candidates):
    n = q.shape[0]
    rows = topk_lib.bucket(n)
    width = topk_lib.bucket(max(len(c) for c in candidates), 16)
    cand = np.zeros((rows, width), np.int32)
    ok = np.zeros((rows, width), bool)
    for r, c in enumerate(candidates):
      c = np.asarray(c, np.int32)
      cand[r, : c.size] = c
      ok[r, : c.size] = True
      if exclude is not None and exclude[r].size:
        ok[r, : c.size] &= ~np.isin(c, exclude[r])
    qp = np.zeros((rows, q.shape[1]), np.float32)
    qp[:n] = q
    kc = min(k, width)
    j, v = topk_lib.candidates_fn(self.mesh, kc)(qp, self._items_dev, cand, ok)
    j, v = np.asarray(j)[:n], np.asarray(v)[:n]
    ids = np.take_along_axis(cand[:n], j, axis=1)
    out_i = np.zeros((n, k), np.int32)
    out_s = np.full((n, k), -np.inf, np.float32)
    out_i[:, :kc], out_s[:, :kc] = ids, v
    return out_i, out_s

  def _format(self, ids: np.ndarray, scores: np.ndarray) -> Recommendations:
    raw = self.item_raw[ids] if ids.size else np.zeros(ids.shape, str)
    raw = np.where(np.isfinite(scores), raw, "")
    return Recommendations(raw, scores)


def _lookup(index: Mapping[str, int], ids: Sequence[str], kind: str) -> np.ndarray:
  if isinstance(ids, (str, bytes)):
    raise DataError(f"{kind}_ids", "give a list of ids, not one string")
  out = np.empty(len(ids), np.int64)
  for n, x in enumerate(ids):
    j = index.get(str(x))
    if j is None:
      raise UnknownIdError(f"{kind} {str(x)[:100]!r}", f"unknown {kind} id")
    out[n] = j
  return out


def _best_step(workdir: pathlib.Path, ckpt: Any) -> int | None:
  """The step whose model the run's final test used: results.json, else the newest best."""
  try:
    step = int(json.loads((workdir / "results.json").read_text()).get("best_step", -1))
    if step >= 0:
      return step
  except (OSError, ValueError, TypeError):
    pass
  best = getattr(ckpt, "best", None)
  steps = list(best.all_steps()) if best is not None else []
  return max(steps) if steps else None


def _restore(ckpt: Any, abstract: Any, which: str, workdir: pathlib.Path) -> tuple[Any, str, int]:
  """(state, 'best'|'latest', step) restored through ``checkpointing.RunCheckpointer``."""
  import inspect  # noqa: PLC0415

  if which == "best":
    step = _best_step(workdir, ckpt)
    if step is not None:
      if len(inspect.signature(ckpt.restore_best).parameters) >= 2:
        return ckpt.restore_best(abstract, step), "best", step
      state = ckpt.restore_best(abstract)[0]  # older API: (state, data, loop)
      return state, "best", int(jax.device_get(state["step"]))
  if ckpt.latest_step() is None:
    raise DataError(str(workdir), "holds no checkpoint")
  state = ckpt.restore_latest(abstract)[0]
  return state, "latest", int(jax.device_get(state["step"]))


def _graphdef(task: Any) -> Any:
  """The model's nnx graph definition held by the training Task (wherever it keeps it)."""
  for owner in (task, getattr(task, "layout", None)):
    g = getattr(owner, "graphdef", None)
    if g is not None:
      return g
  raise ConfigError("this mmrec_jax's Task exposes no model graphdef: new items cannot be embedded")


def _to_host(x: jax.Array) -> np.ndarray:
  if x.is_fully_addressable:
    return np.asarray(jax.device_get(x), np.float32)
  from jax.experimental import multihost_utils  # noqa: PLC0415

  return np.asarray(multihost_utils.process_allgather(x, tiled=True), np.float32)
