"""New users and new items without retraining: what each model supports, and how.

Why this is per model: every model scores ``user . item``, but what a *new* user or item
vector may be depends on how the model defines its towers.

New users (a list of interacted raw item ids, "fold-in"): the user vector is solved
against the trained item vectors, implicit-ALS style (Hu, Koren & Volinsky, ICDM 2008):

    p = argmin_p  sum_i w_i (y_i - p . x_i - o_i)^2 + lam |p|^2,
    y_i = 1, w_i = 1 + alpha for the history;  y_i = 0, w_i = 1 for every other item,

closed form ``(X^T X + alpha X_H^T X_H + lam I) p = (1 + alpha) X_H^T 1 - X^T o
- alpha X_H^T o_H``, with ``X^T X`` and ``X^T o`` computed once per catalogue, so a
request costs O(|H| D^2 + D^3). ``o_i`` are the columns of the item vector that meet a
*constant* user column (BPR-MF's item bias against the user's 1, VBPR's content bias and
item bias): those user columns stay 1 and only the free part is solved. This is the
model's own scoring function with the item side frozen; for a user the model saw in
training, the folded-in vector ranks items like the trained one (tests measure how
closely). Graph models are folded in the same way against their *propagated* item
vectors: an approximation, since the user-item graph itself is not updated.

New items (feature rows per modality): only models whose item tower reads features can
embed an item they never saw. Two-tower runs its item tower with the item-ID source
marked absent (what modality dropout trains it for; exact when ``model.use_ids=False``);
VBPR uses its content part ``[0, E f, beta' f, 0]`` (the paper's cold-start form: no ID
factors, no item bias). ID-only models and graph models (whose item vectors come from
propagation over the training graph) cannot, and say so in one line.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from mmrec_jax.errors import ConfigError
from mmrec_jax.models import registry


@dataclasses.dataclass(frozen=True)
class Support:
  """What a model supports; ``None`` means unsupported, else how it is done."""

  fold_in: str | None
  new_items: str | None


def _support_of(spec: registry.ModelSpec) -> Support | None:
  return Support(spec.foldin, spec.new_items or None) if spec.foldin else None


class _Support(dict):
  """model name -> Support, read from each model's registry entry (also models added later)."""

  def get(self, name, default=None):
    spec = registry.MODELS.get(name)
    return default if spec is None or _support_of(spec) is None else _support_of(spec)

  def __getitem__(self, name):
    found = self.get(name)
    if found is None:
      raise KeyError(name)
    return found

  def __contains__(self, name):
    return self.get(name) is not None

  def __iter__(self):
    return iter([n for n in registry.MODELS if n in self])

  def __len__(self):
    return len(list(iter(self)))

  def keys(self):
    return list(iter(self))

  def items(self):
    return [(n, self[n]) for n in self]


SUPPORT: dict[str, Support] = _Support()


def support(model_name: str) -> Support:
  if model_name not in SUPPORT:
    raise ConfigError(f"model.name={model_name!r}: serving knows {sorted(SUPPORT.keys())}")
  return SUPPORT[model_name]


def fixed_user_columns(model_cfg) -> int:
  """Trailing user-vector columns that are the constant 1 (not solved by fold-in)."""
  return registry.get(model_cfg.name).user_constant_columns(model_cfg)


class FoldIn:
  """Implicit-ALS fold-in against a fixed item matrix (module docstring).

  Args:
    items: float32 [num_items, D] item vectors (real items only, no padding).
    fixed: trailing user columns that are constant 1.
    alpha: extra confidence of history items (``w = 1 + alpha``).
    lam: ridge weight.
  """

  def __init__(
    self, items: np.ndarray | jax.Array, fixed: int = 0, *, alpha: float = 20.0, lam: float = 0.1
  ):
    items = jnp.asarray(items, jnp.float32)
    d = items.shape[1]
    self.dim, self.fixed = d, int(fixed)
    self.free = d - self.fixed
    self.alpha, self.lam = float(alpha), float(lam)
    x = items[:, : self.free]
    o = jnp.sum(items[:, self.free :], axis=1)
    self._x, self._o = x, o
    hi = jax.lax.Precision.HIGHEST
    self._gram = jnp.matmul(x.T, x, precision=hi)
    self._xo = jnp.matmul(x.T, o, precision=hi)

  def __call__(self, histories: list[np.ndarray]) -> np.ndarray:
    """User vectors [n, D] for per-user lists of internal item ids."""
    n = len(histories)
    if n == 0:
      return np.zeros((0, self.dim), np.float32)
    width = _pow2(max(1, *(len(h) for h in histories)))
    rows = _pow2(n)
    hist = np.zeros((rows, width), np.int32)
    valid = np.zeros((rows, width), np.float32)
    for r, h in enumerate(histories):
      hist[r, : len(h)] = h
      valid[r, : len(h)] = 1.0
    out = _als_solve(
      self._gram,
      self._xo,
      self._x,
      self._o,
      jnp.asarray(hist),
      jnp.asarray(valid),
      self.alpha,
      self.lam,
      self.fixed,
    )
    return np.asarray(out)[:n]


@functools.partial(jax.jit, static_argnums=(8,))
def _als_solve(gram, xo, x, o, hist, valid, alpha, lam, fixed):
  """Batched closed-form fold-in (module docstring); ``hist``/``valid`` are [B, L]."""
  hi = jax.lax.Precision.HIGHEST
  xh = jnp.take(x, hist, axis=0) * valid[..., None]  # [B, L, F]
  oh = jnp.take(o, hist, axis=0) * valid  # [B, L]
  free = gram.shape[0]
  a = (
    gram[None]
    + alpha * jnp.einsum("blf,blg->bfg", xh, xh, precision=hi)
    + lam * jnp.eye(free)[None]
  )
  b = (
    (1 + alpha) * jnp.sum(xh, axis=1)
    - xo[None]
    - alpha * jnp.einsum("bl,blf->bf", oh, xh, precision=hi)
  )
  p = jnp.linalg.solve(a, b[..., None])[..., 0]
  return jnp.concatenate([p, jnp.ones((p.shape[0], fixed), p.dtype)], axis=1)


def _pow2(n: int) -> int:
  return max(1, 1 << max(0, int(n - 1).bit_length()))


class ItemTower:
  """Embeds new items from their feature rows with a feature model's own item tower.

  Args:
    model_name: ``config.model.name`` (must support new items, see ``SUPPORT``).
    graphdef, params: the model's nnx graphdef and ``state['params']``.
    modalities: the modalities the model reads, with their feature widths.
    embed_dim: ``config.model.embed_dim``.
  """

  def __init__(
    self, model_name: str, graphdef, params, modalities: Mapping[str, int], embed_dim: int
  ):
    if support(model_name).new_items is None:
      raise ConfigError(
        f"model {model_name!r} cannot embed new items from features "
        "(ID-only or graph model; see docs/serving.md)"
      )
    self.name = model_name
    self.dims = dict(modalities)
    self.embed_dim = int(embed_dim)
    self._graphdef = graphdef
    self._params = params
    self._jit = jax.jit(self._run)

  def _run(self, params, feats, masks):
    from flax import nnx  # noqa: PLC0415

    model = nnx.merge(self._graphdef, params["tables"], params["dense"])
    n = next(iter(feats.values())).shape[0]
    ids = jnp.zeros((n,), jnp.int32)  # some row; its ID part is removed below
    return model.content_item_repr(ids, feats, masks).astype(jnp.float32)

  def __call__(
    self, features: Mapping[str, np.ndarray], masks: Mapping[str, np.ndarray] | None = None
  ) -> np.ndarray:
    """Item vectors [n, D]; ``features[m]`` is [n, d_m]. A modality left out is absent."""
    from mmrec_jax.errors import DataError  # noqa: PLC0415

    unknown = sorted(set(features) - set(self.dims))
    if unknown:
      raise DataError(
        "features", f"unknown modalities {unknown}; the model reads {sorted(self.dims)}"
      )
    sizes = {np.asarray(v).shape[0] for v in features.values()}
    if len(sizes) != 1:
      raise DataError(
        "features",
        "give the same number of rows for every modality "
        f"(got {sorted(sizes)}) and at least one modality",
      )
    n = sizes.pop()
    feats, mask_d = {}, {}
    for m, d in self.dims.items():
      if m in features:
        f = np.asarray(features[m], np.float32)
        if f.ndim != 2 or f.shape[1] != d:
          raise DataError(f"features[{m!r}]", f"shape {f.shape}, expected [n, {d}]")
        if not np.all(np.isfinite(f)):
          raise DataError(f"features[{m!r}]", "holds NaN or inf")
        k = np.ones(n, bool) if masks is None or m not in masks else np.asarray(masks[m], bool)
      else:
        f, k = np.zeros((n, d), np.float32), np.zeros(n, bool)
      feats[m], mask_d[m] = f, k
    rows = _pow2(n)
    feats = {m: np.pad(f, ((0, rows - n), (0, 0))) for m, f in feats.items()}
    mask_d = {m: np.pad(k, (0, rows - n)) for m, k in mask_d.items()}
    return np.asarray(self._jit(self._params, feats, mask_d))[:n]
