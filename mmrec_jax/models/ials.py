"""iALS / WMF (Hu, Koren & Volinsky, ICDM 2008) with conjugate-gradient solves (as implicit's).

Objective over every (user, item) pair: ``sum_ui c_ui (p_ui - x_u . y_i)^2 + reg (|X|^2 +
|Y|^2)`` with ``p_ui = 1`` for train pairs (0 otherwise) and confidence ``c_ui = 1 + alpha
r_ui`` (``r_ui`` = the pair's multiplicity in train, 1 after dedup; 1 for unobserved pairs).
``alpha`` is ``model.confidence_alpha`` (-1 = the paper's 40), ``reg`` is
``model.reg_weight`` (-1 = implicit's 0.01), the rank is ``model.embed_dim``.

One step (= one epoch of the ``closed_form`` regime) is one ALS iteration: all users are
re-solved against the items, then all items against the users. Each solve is
``(Y^T Y + reg I + Y^T (C_u - I) Y) x_u = Y^T C_u p_u``, approximated by ``model.cg_steps``
conjugate-gradient steps warm-started from the current ``x_u`` -- the algorithm of
Takacs et al. (RecSys 2011) and of implicit's ``cg`` solver, step for step (same residual,
same early exit at ``|r|^2 < 1e-20``), vectorised over all users. ``Y^T (C_u - I) Y v`` is
never formed: it is a sum over the user's train pairs, computed on edge lists sharded over
the mesh's 'data' axis (a ``psum`` combines the devices' partial sums); the factor tables
are row-sharded like every embedding table. Initial factors: ``uniform[0, 0.01)`` (implicit).

Towers: the factors (score = ``x_u . y_i``).

Serving without retraining (``ials``, declared in models/registry.py): a new user is folded
in by an implicit-ALS solve against the item factors -- iALS's own user step; new items
cannot be embedded (no features).
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx
from jax import lax
from jax.sharding import PartitionSpec as P

from mmrec_jax import sharding
from mmrec_jax.errors import ConfigError
from mmrec_jax.layers.embedding import Table
from mmrec_jax.models import fitted_base as fb
from mmrec_jax.models.graph_base import hparam

DATA = sharding.DATA
LAYOUTS = ("auto", "dense", "edges")
# 'auto' keeps the confidences dense up to this many (padded) user x item entries (1 GiB in
# float32): on ML-100K (1k x 1.8k) a dense CG step is ~10x faster than gathering edge rows
# on a CPU (11 ms vs 0.1 s per matvec), and matmuls suit accelerators; past it (ML-25M:
# 162k x 59k) the edge lists, whose cost grows with the interactions, take over.
DENSE_MAX_ENTRIES = 1 << 28


def _mm(a, b):
  return jnp.dot(a, b, precision=fb.HIGHEST, preferred_element_type=jnp.float32)


class IALS(fb.FittedRecommender):
  one_shot = False

  def __init__(
    self,
    cfg: ml_collections.ConfigDict,
    *,
    num_users: int,
    num_items: int,
    feature_dims: Mapping[str, int],
    rngs: nnx.Rngs,
  ):
    del feature_dims
    self.modalities = ()
    self.reg = hparam(cfg, "reg_weight")
    self.cg_steps = int(cfg.cg_steps)
    if self.reg < 0:
      raise ConfigError(f"model.reg_weight={self.reg} must be >= 0 for iALS")
    if self.cg_steps < 1:
      raise ConfigError(f"model.cg_steps={cfg.cg_steps} must be >= 1")
    dim = int(cfg.embed_dim)
    init = lambda n: 0.01 * jax.random.uniform(rngs.params(), (n, dim), jnp.float32)
    self.user_factors = Table(init(num_users), out_sharding=("users", "embed"))
    self.item_factors = Table(init(num_items), out_sharding=("items", "embed"))

  @classmethod
  def fit_data(cls, model_cfg, info, mesh, *, num_users, num_items):
    alpha = hparam(model_cfg, "confidence_alpha")
    if alpha < 0:
      raise ConfigError(f"model.confidence_alpha={alpha} must be >= 0")
    layout = str(model_cfg.ials_layout)
    if layout not in LAYOUTS:
      raise ConfigError(f"model.ials_layout={layout!r} is not one of {list(LAYOUTS)}")
    if layout == "auto":
      layout = "dense" if num_users * num_items <= DENSE_MAX_ENTRIES else "edges"
    users, items, r = fb.train_pairs(info, info.num_users, info.num_items)
    conf = (1.0 + alpha * r).astype(np.float32)

    def valid(n, real, axis):
      v = (np.arange(n) < real).astype(np.float32)
      sh = sharding.named_sharding(mesh, axis)
      return jax.make_array_from_callback(v.shape, sh, lambda idx: v[idx])

    data = {
      "user_valid": valid(num_users, info.num_users, "users"),
      "item_valid": valid(num_items, info.num_items, "items"),
    }
    if layout == "dense":
      fb.check_memory(
        model_cfg.name,
        3 * 4.0 * num_users * num_items / mesh.size,
        f"dense [{num_users}, {num_items}] confidences; model.ials_layout='edges' avoids it",
      )
      data["conf"] = fb.interaction_matrix(mesh, users, items, num_users, num_items, conf)
      return data
    d = int(mesh.shape[DATA])
    total = max(d, -(-users.size // d) * d)
    pad = lambda a, dt: np.concatenate([a, np.zeros(total - a.size, a.dtype)]).astype(dt)
    edge_sh = jax.sharding.NamedSharding(mesh, P(DATA))
    put = lambda a: jax.make_array_from_callback(a.shape, edge_sh, lambda idx: a[idx])
    data.update(
      user=put(pad(users, np.int32)),
      item=put(pad(items, np.int32)),
      edge_conf=put(pad(conf, np.float32)),  # c; 0 on padding edges
    )
    return data

  # ---------------------------------------------------------------- the solver
  def _cg(self, x, y, valid_x, valid_y, pair_sum):
    """``cg_steps`` CG steps for every row of ``x`` against fixed ``y`` (implicit's ``cg``).

    ``pair_sum(v, with_target)`` = per row, the sum over its train pairs of ``(c - 1) (y .
    v) y`` (minus it, plus ``c y``, with ``with_target``: the residual's pair term).
    """
    y = y * valid_y[:, None]
    yty = _mm(y.T, y) + self.reg * jnp.eye(y.shape[1], dtype=jnp.float32)
    a_mult = lambda v: _mm(v, yty) + pair_sum(v, False)
    r = pair_sum(x, True) - _mm(x, yty)
    p = r
    rsold = jnp.sum(r * r, axis=1)
    active = rsold >= 1e-20
    for _ in range(self.cg_steps):
      ap = a_mult(p)
      pap = jnp.sum(p * ap, axis=1)
      alpha = jnp.where(active, rsold / jnp.where(active, pap, 1.0), 0.0)
      x = x + alpha[:, None] * p
      r = r - alpha[:, None] * ap
      rsnew = jnp.sum(r * r, axis=1)
      go = active & (rsnew >= 1e-20)
      beta = rsnew / jnp.where(go, rsold, 1.0)
      p = jnp.where(go[:, None], r + beta[:, None] * p, p)
      rsold = jnp.where(go, rsnew, rsold)
      active = go
    return x * valid_x[:, None]

  def _dense_pairs(self, conf, y, transpose):
    """Pair sums through the dense confidences ``conf`` [U, I] (0 = unobserved)."""
    cm1 = jnp.where(conf > 0, conf - 1.0, 0.0)

    def pair_sum(v, with_target):
      s = _mm(y, v.T) if transpose else _mm(v, y.T)  # [U, I]
      w = conf - cm1 * s if with_target else cm1 * s
      return _mm(w.T, y) if transpose else _mm(w, y)

    return pair_sum

  def _edge_pairs(self, data, y, transpose):
    """Pair sums over the train edges, split over 'data' (a psum combines the devices)."""
    rows, cols = (data["item"], data["user"]) if transpose else (data["user"], data["item"])
    conf = data["edge_conf"]
    n = (self.item_factors if transpose else self.user_factors)[...].shape[0]
    mesh = self.mesh
    # y's rows of every edge, gathered once per solve (y is fixed during it).
    yc = jax.shard_map(
      lambda y, c: jnp.take(y, c, axis=0),
      mesh=mesh,
      in_specs=(P(), P(DATA)),
      out_specs=P(DATA),
      check_vma=False,
    )(y, cols)

    def body(v, yc, r, c, with_target):
      t = (c - 1.0) * jnp.sum(yc * jnp.take(v, r, axis=0), axis=1)
      t = c - t if with_target else t
      t = jnp.where(c > 0, t, 0.0)  # padding edges
      return lax.psum(jax.ops.segment_sum(t[:, None] * yc, r, num_segments=n), DATA)

    def pair_sum(v, with_target):
      return jax.shard_map(
        lambda *a: body(*a, with_target),
        mesh=mesh,
        in_specs=(P(), P(DATA), P(DATA), P(DATA)),
        out_specs=P(),
        check_vma=False,
      )(v, yc, rows, conf)

    return pair_sum

  def _pairs(self, data, y, transpose):
    if "conf" in data:
      return self._dense_pairs(data["conf"], y, transpose)
    return self._edge_pairs(data, y, transpose)

  def fit_step(self, data, step):
    del step
    d = data
    x = self.user_factors[...]
    y = self.item_factors[...]
    uv, iv = d["user_valid"], d["item_valid"]
    x = self._cg(x, y, uv, iv, self._pairs(d, y * iv[:, None], False))
    y = self._cg(y, x, iv, uv, self._pairs(d, x, True))
    self.user_factors.set_value(x)
    self.item_factors.set_value(y)
    return {"loss": self._loss(x, y, d)}

  def _loss(self, x, y, d):
    """The objective per unit confidence (implicit's ``calculate_training_loss``)."""
    x = x * d["user_valid"][:, None]
    y = y * d["item_valid"][:, None]
    if "conf" in d:
      conf = d["conf"]
      s = _mm(x, y.T)
      obs = jnp.sum(jnp.where(conf > 0, conf * (1 - s) ** 2 - s**2, 0.0))
      total_c, nnz = jnp.sum(conf), jnp.sum(conf > 0)
    else:

      def f(x, y, u, i, c):
        s = jnp.sum(jnp.take(x, u, axis=0) * jnp.take(y, i, axis=0), axis=1)
        ok = c > 0
        return lax.psum(
          jnp.stack(
            [jnp.sum(jnp.where(ok, c * (1 - s) ** 2 - s**2, 0.0)), jnp.sum(c), jnp.sum(ok)]
          ),
          DATA,
        )

      obs, total_c, nnz = jax.shard_map(
        f,
        mesh=self.mesh,
        in_specs=(P(), P(), P(DATA), P(DATA), P(DATA)),
        out_specs=P(),
        check_vma=False,
      )(x, y, d["user"], d["item"], d["edge_conf"])
    all_pairs = jnp.sum(_mm(x, _mm(y.T, y)) * x)
    reg = self.reg * (jnp.sum(x * x) + jnp.sum(y * y))
    pairs = jnp.sum(d["user_valid"]) * jnp.sum(d["item_valid"])
    return (all_pairs + obs + reg) / (total_c + pairs - nnz)

  def towers(self, data):
    del data
    return self.user_factors[...], self.item_factors[...]
