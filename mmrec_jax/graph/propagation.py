"""Message passing over edge lists with segment sums: user-item and item-item graphs.

Why edge lists: a users x items adjacency (dense, or even a dense mask) grows with the
product of the catalogue sizes; an edge list grows with the number of interactions. One
propagation step is a gather of neighbour rows, a multiply by the edge weight and a
``jax.ops.segment_sum`` into the destination rows: O(edges x dim) work and memory.

Sharding: edge arrays are sharded on the mesh 'data' axis (padded with weight-0 edges to a
multiple of its size). :func:`segment_propagate` runs under ``jax.shard_map``: every
device sums the messages of *its* edges into a partial [num_dst, dim] result and a
``psum`` over 'data' combines the partial sums. The node embeddings enter replicated
(the gathers need any row), which is the same all-gather XLA would do for row-sharded
tables; for node counts whose [N, dim] does not fit on one device a ``psum_scatter``
variant would keep outputs row-sharded (not needed up to ML-25M sizes: 220k x 64 floats).

Normalisation is the symmetric one of GCN/LightGCN: ``w_ui = 1 / sqrt(deg_u deg_i)``,
degrees counted in the training graph (isolated nodes get no edges, so no division by 0),
computed once in numpy when the graph is built.

How the user-item products ``R x`` / ``R^T x`` run (``model.propagation``, a
:class:`BipartiteGraph` carries the choice; a bare :class:`EdgeList` always means
'segment'). Measured on the 2-core CPU of this project (benchmarks/RESULTS_graph_peers.md):
XLA:CPU runs a row gather ``x[idx]`` element by element (~4-6 ns per float: 150+ ms for
the 684k x 64 messages of an ML-1M-sized graph, 10x the scatter that follows), so every
formulation that gathers per edge inside XLA is slow there, however the scatter is
arranged (sorted CSR segments, fixed-width row chunks, degree-bucketed padded rows: all
measured, none faster than the plain segment sum).
  * ``segment`` -- the edge-list gather + ``segment_sum`` above (any backend, any size,
    differentiable w.r.t. the edge weights: LATTICE's learned item graph needs that);
  * ``dense`` -- the normalised block ``R`` [users, items] as a dense matrix (only the
    non-zero block of ``[[0, R], [R^T, 0]]``: U x I, not (U+I)^2), two matmuls per
    layer; rows sharded over every device like the user table, so ``R x`` stays
    row-sharded and ``R^T u`` is a local matmul plus a ``psum``. Built once in numpy for
    a fixed graph; rebuilt from the edge weights inside the step when they change
    (FREEDOM's pruning). For small graphs on accelerators, where matmuls are cheap;
  * ``host_csr`` -- CPU backend only: ``R`` and ``R^T`` in CSR on the host, the product
    computed by scipy's compiled CSR kernel through ``jax.pure_callback`` (a host
    callback on a CPU backend moves no data between devices). No [edges, d] message
    array; LightGCN value+grad 4x faster than 'segment' and 2-2.6x faster than 'dense'
    on this CPU at ML-100K and ML-1M sizes. Each device computes the
    output rows of its own row shard. The gradient w.r.t. x is the transposed product
    (custom VJP); edge weights are treated as constants (changed weights, e.g. FREEDOM's
    pruned graph, are passed in at every call, but get no gradient). On one device the
    whole LightGCN propagation is one host call forward and one backward
    (:func:`host_lightgcn`): per-call overhead outweighed the products at ML-100K size.
    Inside that call a layer's two products (``R i``, ``R^T u``) run on two threads
    (scipy releases the GIL; ``PARALLEL_MIN_WORK``), and the scipy matrices are built
    once per set of edge weights. Same-process A/Bs on one CPU device (stop 16,
    benchmarks/RESULTS_graph_peers.md): the threads took 18-27% off an ML-100K
    LightGCN epoch, the graph regime's device epochs another 10-25%;
  * ``auto`` -- ``host_csr`` on a CPU backend; elsewhere ``dense`` while ``R`` takes at
    most ``DENSE_MAX_BYTES`` per device, else ``segment`` (no accelerator was lent to
    this task, so the accelerator rule is not measured: override the key to compare).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import os
import threading
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse
from absl import logging
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from mmrec_jax import sharding
from mmrec_jax.errors import ConfigError, DataError

# 'host_csr' on one device runs a layer's two products on two threads when the host has
# more than one core and a product has at least this many multiply-adds (edges x dim):
# below it the hand-off (~50 us) outweighs the product.
PARALLEL_MIN_WORK = 1 << 20

# Values of ``model.propagation`` (see the module doc).
PROPAGATIONS = ("auto", "segment", "dense", "host_csr")
# 'auto' off CPU: the dense block while it takes at most this per device.
DENSE_MAX_BYTES = 256 << 20


class EdgeList(NamedTuple):
  """Directed weighted edges ``src -> dst``; padding edges have weight 0.

  For the user-item graph ``src`` holds users and ``dst`` items; propagation runs both
  ways over the same list (``to_items`` / ``to_users``), so no edge is stored twice.
  """

  src: jax.Array  # int32 [E]
  dst: jax.Array  # int32 [E]
  weight: jax.Array  # float32 [E]


def dedup_edges(src: np.ndarray, dst: np.ndarray, num_dst: int) -> tuple[np.ndarray, np.ndarray]:
  """Distinct (src, dst) pairs (repeat interactions count once in a graph)."""
  key = np.unique(np.asarray(src, np.int64) * num_dst + np.asarray(dst, np.int64))
  return (key // num_dst).astype(np.int32), (key % num_dst).astype(np.int32)


def sym_norm_weights(src: np.ndarray, dst: np.ndarray, num_src: int, num_dst: int) -> np.ndarray:
  """``1 / sqrt(deg_src deg_dst)`` per edge (the D^-1/2 A D^-1/2 of LightGCN)."""
  deg_s = np.bincount(src, minlength=num_src).astype(np.float64)
  deg_d = np.bincount(dst, minlength=num_dst).astype(np.float64)
  return (1.0 / np.sqrt(deg_s[src] * deg_d[dst])).astype(np.float32)


def pad_edges(
  src: np.ndarray, dst: np.ndarray, weight: np.ndarray, multiple: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Pads to a multiple of ``multiple`` (and >= 1 edge) with weight-0 edges 0 -> 0."""
  e = len(src)
  total = max(multiple, -(-e // multiple) * multiple)
  pad = total - e
  return (
    np.concatenate([src, np.zeros(pad, np.int32)]).astype(np.int32),
    np.concatenate([dst, np.zeros(pad, np.int32)]).astype(np.int32),
    np.concatenate([weight, np.zeros(pad, np.float32)]).astype(np.float32),
  )


def edge_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(sharding.DATA))


def place_edges(mesh: Mesh, src: np.ndarray, dst: np.ndarray, weight: np.ndarray) -> EdgeList:
  """Pads and puts an edge list on device, sharded on 'data'."""
  src, dst, weight = pad_edges(src, dst, weight, mesh.shape[sharding.DATA])
  sh = edge_sharding(mesh)
  put = lambda a: jax.make_array_from_callback(a.shape, sh, lambda idx: a[idx])
  return EdgeList(put(src), put(dst), put(weight))


def user_item_graph(
  users: np.ndarray,
  items: np.ndarray,
  num_users: int,
  num_items: int,
  mesh: Mesh | None = None,
  *,
  method: str | None = None,
) -> EdgeList | BipartiteGraph:
  """The normalised bipartite training graph (users -> items), deduplicated.

  ``users``/``items`` are the TRAIN interactions only (valid/test must not leak into
  the graph). Ids are checked against the (real) counts. ``method`` None returns the
  bare edge list (segment sums); a ``model.propagation`` value returns a
  :class:`BipartiteGraph` built for that method ('auto' resolved here, and logged).
  """
  users, items = np.asarray(users), np.asarray(items)
  if users.shape != items.shape or users.ndim != 1:
    raise DataError(
      "DataInfo.train_users/train_items",
      f"shapes {users.shape} and {items.shape}; expected equal 1-D arrays",
    )
  if users.size and (
    users.min() < 0 or users.max() >= num_users or items.min() < 0 or items.max() >= num_items
  ):
    raise DataError(
      "DataInfo.train_users/train_items",
      f"ids out of range for {num_users} users x {num_items} items",
    )
  src, dst = dedup_edges(users, items, num_items)
  w = sym_norm_weights(src, dst, num_users, num_items)
  if method is None:
    if mesh is None:
      return EdgeList(jnp.asarray(src), jnp.asarray(dst), jnp.asarray(w))
    return place_edges(mesh, src, dst, w)
  return bipartite_graph(src, dst, w, num_users, num_items, mesh, method)


# ------------------------------------------------------------------ method choice
def choose_propagation(
  requested: str, num_users: int, num_items: int, mesh: Mesh | None, backend: str | None = None
) -> str:
  """Resolves ``model.propagation`` (see the module doc for the rule and why)."""
  if requested not in PROPAGATIONS:
    raise ConfigError(f"model.propagation={requested!r} is not one of {list(PROPAGATIONS)}")
  backend = backend or jax.default_backend()
  if requested == "host_csr" and backend != "cpu":
    raise ConfigError(
      f"model.propagation='host_csr' runs on the host and needs the CPU backend "
      f"(this one is {backend!r}); use 'dense', 'segment' or 'auto'"
    )
  if requested != "auto":
    return requested
  if backend == "cpu":
    return "host_csr"
  per_device = num_users * num_items * 4 / (mesh.size if mesh is not None else 1)
  return "dense" if per_device <= DENSE_MAX_BYTES else "segment"


_POOLS: dict[int, concurrent.futures.ThreadPoolExecutor | None] = {}


def _helper_pool() -> concurrent.futures.ThreadPoolExecutor | None:
  """One helper thread for the host products (None on a single-core host).

  Decided once per process id (no affinity syscall per call): a forked child inherits
  the executor but not its thread, and a task submitted there would wait forever.
  """
  pid = os.getpid()
  if pid not in _POOLS:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    _POOLS[pid] = (
      concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="mmrec-host-csr")
      if (cores or 1) >= 2
      else None
    )
  return _POOLS[pid]


class HostCSR:
  """CSR structure of ``R`` (user-major) and ``R^T`` (item-major) held on the host.

  Static data of a :class:`BipartiteGraph` (jit treats it as part of the tree
  structure: compared by identity, so one graph compiles once). The values are not
  stored here: the edge weights are passed to every product, in edge-list order, which
  is ``R``'s CSR order (edges sorted by (user, item)); ``perm_t`` reorders them for
  ``R^T``.
  """

  def __init__(self, src: np.ndarray, dst: np.ndarray, num_users: int, num_items: int):
    src, dst = np.asarray(src, np.int64), np.asarray(dst, np.int64)
    if src.size and np.any(np.diff(src * num_items + dst) <= 0):
      raise ValueError("HostCSR needs edges sorted by (src, dst) without repeats")
    self.num_edges = int(src.size)
    self.shape = (int(num_users), int(num_items))
    self.indptr = np.searchsorted(src, np.arange(num_users + 1)).astype(np.int64)
    self.indices = dst.astype(np.int32)
    self.perm_t = np.argsort(dst, kind="stable")
    self.indptr_t = np.searchsorted(dst[self.perm_t], np.arange(num_items + 1)).astype(np.int64)
    self.indices_t = src[self.perm_t].astype(np.int32)
    # (weights, R values, R^T values, (R, R^T) scipy matrices or None) of the last call;
    # replaced whole under the lock (sharded runs call from several XLA threads at once).
    self._cache = (None, None, None, None)
    self._lock = threading.Lock()

  def _data(self, weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """CSR values of ``R`` and ``R^T``; reused while the weights do not change (a fixed
    graph: every call after the first skips the O(E) reordering for ``R^T``)."""
    return self._cached(weight, matrices=False)[1:3]

  def _csr(self, weight: np.ndarray) -> tuple[scipy.sparse.csr_matrix, scipy.sparse.csr_matrix]:
    """``R`` and ``R^T`` as scipy matrices, built once per set of weights (ML-100K, in
    isolation: 34 -> 8 us per call with the weight check; a small part of a ~1.4 ms call)."""
    return self._cached(weight, matrices=True)[3]

  def _cached(self, weight: np.ndarray, matrices: bool) -> tuple:
    w = np.asarray(weight[: self.num_edges], np.float32)
    with self._lock:
      last, data, data_t, mats = self._cache
      if last is None or not np.array_equal(last, w):
        # A copy: the callback's argument is a view of a buffer XLA may reuse.
        last = w.copy()
        data, data_t, mats = last, last[self.perm_t], None
      if matrices and mats is None:
        mats = (
          scipy.sparse.csr_matrix((data, self.indices, self.indptr), shape=self.shape, copy=False),
          scipy.sparse.csr_matrix(
            (data_t, self.indices_t, self.indptr_t), shape=self.shape[::-1], copy=False
          ),
        )
      self._cache = (last, data, data_t, mats)
      return self._cache

  def product(
    self, x: np.ndarray, weight: np.ndarray, transpose: bool, rows: tuple[int, int]
  ) -> np.ndarray:
    """``(R or R^T)[rows] @ x`` with edge weights ``weight`` (edge-list order)."""
    data, data_t = self._data(weight)
    if transpose:
      indptr, indices, data, ncols = self.indptr_t, self.indices_t, data_t, self.shape[0]
    else:
      indptr, indices, ncols = self.indptr, self.indices, self.shape[1]
    lo, hi = rows
    a, b = indptr[lo], indptr[hi]
    m = scipy.sparse.csr_matrix(
      (data[a:b], indices[a:b], indptr[lo : hi + 1] - a), shape=(hi - lo, ncols), copy=False
    )
    return np.asarray(m @ np.asarray(x, np.float32), np.float32)

  def lightgcn(
    self, u: np.ndarray, i: np.ndarray, weight: np.ndarray, num_layers: int
  ) -> tuple[np.ndarray, np.ndarray]:
    """Mean of layers 0..L of ``[u; i] <- [R i; R^T u]`` (all layers in one host call)."""
    r, rt = self._csr(weight)
    u, i = np.asarray(u, np.float32), np.asarray(i, np.float32)
    su, si = u.copy(), i.copy()
    # The two products of a layer are independent and scipy's CSR kernel releases the
    # GIL: on a multi-core host ``R^T u`` runs on a helper thread while this one computes
    # ``R i`` (the XLA step waits on this call, so the core is otherwise idle). Each
    # product is computed exactly as before: same values, bit for bit.
    pool = _helper_pool() if self.num_edges * u.shape[1] >= PARALLEL_MIN_WORK else None
    for _ in range(num_layers):
      if pool is None:
        u, i = r @ i, rt @ u
      else:
        to_items = pool.submit(rt.__matmul__, u)
        u, i = r @ i, to_items.result()
      su += u
      si += i
    scale = np.float32(1.0 / (num_layers + 1))
    su *= scale  # in place: the sums are this call's own arrays
    si *= scale
    return su, si

  def __hash__(self) -> int:
    return id(self)

  def __eq__(self, other) -> bool:
    return self is other


@functools.partial(
  jax.tree_util.register_dataclass,
  data_fields=("edges", "dense"),
  meta_fields=("method", "host", "num_users", "num_items"),
)
@dataclasses.dataclass(frozen=True)
class BipartiteGraph:
  """The user-item graph with the products it needs for one propagation method.

  ``edges`` is always kept (FREEDOM prunes it; 'segment' runs on it); ``dense`` is the
  [num_users, num_items] block for 'dense' (None until built, see
  :func:`materialize`); ``host`` is the host CSR structure for 'host_csr'.
  """

  edges: EdgeList
  dense: jax.Array | None
  method: str
  host: HostCSR | None
  num_users: int
  num_items: int

  def with_weights(self, weight: jax.Array) -> BipartiteGraph:
    """Same structure, new edge weights (the dense block is rebuilt from them)."""
    e = self.edges
    return dataclasses.replace(self, edges=EdgeList(e.src, e.dst, weight), dense=None)


def dense_sharding(mesh: Mesh) -> NamedSharding:
  """The dense block's rows are sharded like the user table (over every device)."""
  return NamedSharding(mesh, P(sharding.ALL_DEVICES, None))


def bipartite_graph(
  src: np.ndarray,
  dst: np.ndarray,
  weight: np.ndarray,
  num_users: int,
  num_items: int,
  mesh: Mesh | None,
  method: str,
) -> BipartiteGraph:
  """A :class:`BipartiteGraph` of deduplicated, sorted (src, dst) edges for ``method``."""
  chosen = choose_propagation(method, num_users, num_items, mesh)
  logging.info(
    "graph propagation: %s (model.propagation=%s, %s backend, %d x %d nodes, %d edges)",
    chosen,
    method,
    jax.default_backend(),
    num_users,
    num_items,
    len(src),
  )
  if mesh is None:
    edges = EdgeList(jnp.asarray(src), jnp.asarray(dst), jnp.asarray(weight))
  else:
    edges = place_edges(mesh, src, dst, weight)
  dense = host = None
  if chosen == "dense":
    r = np.zeros((num_users, num_items), np.float32)
    np.add.at(r, (src, dst), weight)
    if mesh is None:
      dense = jnp.asarray(r)
    else:
      sh = dense_sharding(mesh)
      dense = jax.make_array_from_callback(r.shape, sh, lambda idx: r[idx])
  elif chosen == "host_csr":
    host = HostCSR(src, dst, num_users, num_items)
  return BipartiteGraph(edges, dense, chosen, host, int(num_users), int(num_items))


# ------------------------------------------------------------------ segment sums
def _segment_sum_local(
  x: jax.Array, gather_idx: jax.Array, scatter_idx: jax.Array, weight: jax.Array, num_out: int
) -> jax.Array:
  # Edge ids are always valid (padding edges are 0 -> 0 with weight 0): no bounds
  # check / fill select per element.
  msg = x.at[gather_idx].get(mode="promise_in_bounds") * weight[:, None].astype(x.dtype)
  return jax.ops.segment_sum(msg, scatter_idx, num_segments=num_out)


def segment_propagate(
  x: jax.Array,
  gather_idx: jax.Array,
  scatter_idx: jax.Array,
  weight: jax.Array,
  num_out: int,
  mesh: Mesh | None = None,
) -> jax.Array:
  """``out[n] = sum_{e: scatter_idx[e] = n} weight[e] * x[gather_idx[e]]``.

  With a mesh, edges are split over 'data' and the per-device partial sums are
  combined with a ``psum`` (the output is replicated).
  """
  if mesh is None or mesh.shape[sharding.DATA] == 1:
    return _segment_sum_local(x, gather_idx, scatter_idx, weight, num_out)
  e = P(sharding.DATA)

  def body(x, g, s, w):
    return jax.lax.psum(_segment_sum_local(x, g, s, w, num_out), sharding.DATA)

  return jax.shard_map(body, mesh=mesh, in_specs=(P(), e, e, e), out_specs=P())(
    x, gather_idx, scatter_idx, weight
  )


# ------------------------------------------------------------------ dense block
def materialize(graph: BipartiteGraph, mesh: Mesh | None = None) -> BipartiteGraph:
  """For 'dense': the block ``R`` from the edge weights when it is not built yet."""
  if graph.method != "dense" or graph.dense is not None:
    return graph
  e = graph.edges
  r = (
    jnp.zeros((graph.num_users, graph.num_items), jnp.float32)
    .at[e.src, e.dst]
    .add(e.weight.astype(jnp.float32), mode="promise_in_bounds")
  )
  if mesh is not None:
    r = jax.lax.with_sharding_constraint(r, dense_sharding(mesh))
  return dataclasses.replace(graph, dense=r)


def _dense_to_users(r: jax.Array, item_x: jax.Array, mesh: Mesh | None) -> jax.Array:
  mm = lambda r, x: jnp.dot(r.astype(x.dtype), x, preferred_element_type=jnp.float32).astype(
    x.dtype
  )
  if mesh is None or mesh.size == 1:
    return mm(r, item_x)
  rows = P(sharding.ALL_DEVICES, None)
  return jax.shard_map(mm, mesh=mesh, in_specs=(rows, P()), out_specs=rows)(r, item_x)


def _dense_to_items(r: jax.Array, user_x: jax.Array, mesh: Mesh | None) -> jax.Array:
  def mm(r, u):
    return jnp.dot(r.T.astype(u.dtype), u, preferred_element_type=jnp.float32)

  if mesh is None or mesh.size == 1:
    return mm(r, user_x).astype(user_x.dtype)
  rows = P(sharding.ALL_DEVICES, None)

  def body(r, u):
    return jax.lax.psum(mm(r, u), sharding.ALL_DEVICES).astype(u.dtype)

  return jax.shard_map(body, mesh=mesh, in_specs=(rows, rows), out_specs=P())(r, user_x)


# ------------------------------------------------------------------ host CSR (CPU)
def _host_product(
  x: jax.Array, weight: jax.Array, host: HostCSR, transpose: bool, mesh: Mesh | None
) -> jax.Array:
  num_out = host.shape[1] if transpose else host.shape[0]
  d = x.shape[1]
  if mesh is None or mesh.size == 1:

    def cb(x, w):
      return host.product(x, w, transpose, (0, num_out)).astype(x.dtype, copy=False)

    out = jax.ShapeDtypeStruct((num_out, d), x.dtype)
    return jax.pure_callback(cb, out, x, weight)
  n = mesh.size
  if num_out % n:
    raise ValueError(f"host_csr: {num_out} output rows do not split over {n} devices")
  per = num_out // n

  def cb(x, w, shard):
    lo = int(shard) * per
    return host.product(x, w, transpose, (lo, lo + per)).astype(x.dtype, copy=False)

  def body(x, w):
    shard = jax.lax.axis_index(sharding.ALL_DEVICES)
    return jax.pure_callback(cb, jax.ShapeDtypeStruct((per, d), x.dtype), x, w, shard)

  rows = P(sharding.ALL_DEVICES, None)
  return jax.shard_map(body, mesh=mesh, in_specs=(P(), P()), out_specs=rows)(x, weight)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def host_spmm(
  x: jax.Array, weight: jax.Array, host: HostCSR, transpose: bool, mesh: Mesh | None
) -> jax.Array:
  """``R x`` (``transpose`` False: items -> users) or ``R^T x`` on the host (CSR).

  Differentiable w.r.t. ``x`` (the transposed product); ``weight`` gets no gradient.
  """
  return _host_product(x, weight, host, transpose, mesh)


def _host_spmm_fwd(x, weight, host, transpose, mesh):
  return _host_product(x, weight, host, transpose, mesh), weight


def _host_spmm_bwd(host, transpose, mesh, weight, g):
  return _host_product(g, weight, host, not transpose, mesh), jnp.zeros_like(weight)


host_spmm.defvjp(_host_spmm_fwd, _host_spmm_bwd)


def _host_lightgcn_call(u, i, weight, host, num_layers):
  def cb(u, i, w):
    pu, pi = host.lightgcn(u, i, w, num_layers)
    return pu.astype(u.dtype, copy=False), pi.astype(i.dtype, copy=False)

  out = (jax.ShapeDtypeStruct(u.shape, u.dtype), jax.ShapeDtypeStruct(i.shape, i.dtype))
  return jax.pure_callback(cb, out, u, i, weight)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def host_lightgcn(
  users0: jax.Array, items0: jax.Array, weight: jax.Array, host: HostCSR, num_layers: int
) -> tuple[jax.Array, jax.Array]:
  """LightGCN propagation in ONE host call (single device, 'host_csr').

  Per-call overhead (a host callback, the GIL, thread hand-offs) measured larger than
  the products themselves at ML-100K size, so the 2L products run in one call forward
  and one backward. LightGCN is linear, ``M = mean_k A^k`` with ``A`` symmetric, so the
  VJP is the same propagation applied to the cotangents. ``weight`` gets no gradient.
  """
  return _host_lightgcn_call(users0, items0, weight, host, num_layers)


def _host_lightgcn_fwd(users0, items0, weight, host, num_layers):
  return _host_lightgcn_call(users0, items0, weight, host, num_layers), weight


def _host_lightgcn_bwd(host, num_layers, weight, g):
  gu, gi = _host_lightgcn_call(g[0], g[1], weight, host, num_layers)
  return gu, gi, jnp.zeros_like(weight)


host_lightgcn.defvjp(_host_lightgcn_fwd, _host_lightgcn_bwd)


# ------------------------------------------------------------------ user <-> item
def to_items(
  user_x: jax.Array, graph: EdgeList | BipartiteGraph, num_items: int, mesh: Mesh | None = None
) -> jax.Array:
  """Items aggregate their users: ``A^T x`` over the bipartite graph."""
  if isinstance(graph, EdgeList):
    return segment_propagate(user_x, graph.src, graph.dst, graph.weight, num_items, mesh)
  if graph.method == "dense":
    return _dense_to_items(materialize(graph, mesh).dense, user_x, mesh)
  if graph.method == "host_csr":
    return host_spmm(user_x, graph.edges.weight, graph.host, True, mesh)
  return to_items(user_x, graph.edges, num_items, mesh)


def to_users(
  item_x: jax.Array, graph: EdgeList | BipartiteGraph, num_users: int, mesh: Mesh | None = None
) -> jax.Array:
  """Users aggregate their items: ``A x``."""
  if isinstance(graph, EdgeList):
    return segment_propagate(item_x, graph.dst, graph.src, graph.weight, num_users, mesh)
  if graph.method == "dense":
    return _dense_to_users(materialize(graph, mesh).dense, item_x, mesh)
  if graph.method == "host_csr":
    return host_spmm(item_x, graph.edges.weight, graph.host, False, mesh)
  return to_users(item_x, graph.edges, num_users, mesh)


def lightgcn_propagate(
  users0: jax.Array,
  items0: jax.Array,
  graph: EdgeList | BipartiteGraph,
  num_layers: int,
  mesh: Mesh | None = None,
) -> tuple[jax.Array, jax.Array]:
  """LightGCN (He et al., SIGIR 2020): mean of layers 0..L of ``E_{l+1} = A_hat E_l``.

  ``A_hat`` is the symmetric-normalised joint adjacency ``[[0, R], [R^T, 0]]``, applied
  as ``R x`` and ``R^T x`` with the graph's method (module doc).
  """
  if isinstance(graph, BipartiteGraph):
    if graph.method == "host_csr" and (mesh is None or mesh.size == 1):
      return host_lightgcn(users0, items0, graph.edges.weight, graph.host, num_layers)
    graph = materialize(graph, mesh)  # once per propagation, not per product
  u, i = users0, items0
  sum_u, sum_i = users0, items0
  for _ in range(num_layers):
    u, i = (to_users(i, graph, users0.shape[0], mesh), to_items(u, graph, items0.shape[0], mesh))
    sum_u, sum_i = sum_u + u, sum_i + i
  scale = 1.0 / (num_layers + 1)
  return sum_u * scale, sum_i * scale


def item_propagate(x: jax.Array, graph: EdgeList, mesh: Mesh | None = None) -> jax.Array:
  """``S x`` for an item-item graph whose edges are ``src`` (neighbour) -> ``dst`` (row).

  Always segment sums: item-item graphs are small (items x k edges) and LATTICE needs
  the gradient w.r.t. the learned edge weights.
  """
  return segment_propagate(x, graph.src, graph.dst, graph.weight, x.shape[0], mesh)


def degree_sensitive_prune(
  graph: EdgeList | BipartiteGraph,
  rng: jax.Array,
  keep_ratio: float,
  num_users: int,
  num_items: int,
) -> EdgeList | BipartiteGraph:
  """FREEDOM's degree-sensitive edge pruning, then re-normalisation of the kept graph.

  FREEDOM samples ``keep_ratio * E`` edges without replacement with probability
  proportional to ``1 / sqrt(deg_u deg_i)`` (the current weight). Here each edge is
  kept independently with ``p_e = min(1, keep_ratio * E * w_e / sum(w))`` -- the same
  expected kept count and inclusion proportions, O(E) and shape-static inside jit
  (an approximation of sampling without replacement, written down on purpose). The
  kept edges are re-weighted with the degrees of the pruned graph. A
  :class:`BipartiteGraph` keeps its method: only its edge weights change.
  """
  if isinstance(graph, BipartiteGraph):
    pruned = degree_sensitive_prune(graph.edges, rng, keep_ratio, num_users, num_items)
    return graph.with_weights(pruned.weight)
  w = graph.weight
  real = w > 0
  n_real = jnp.sum(real)
  p = jnp.minimum(1.0, keep_ratio * n_real * w / jnp.maximum(jnp.sum(w), 1e-12))
  keep = real & (jax.random.uniform(rng, w.shape) < p)
  ones = keep.astype(jnp.float32)
  deg_u = jax.ops.segment_sum(ones, graph.src, num_segments=num_users)
  deg_i = jax.ops.segment_sum(ones, graph.dst, num_segments=num_items)
  norm = jax.lax.rsqrt(jnp.maximum(deg_u[graph.src] * deg_i[graph.dst], 1.0))
  return EdgeList(graph.src, graph.dst, jnp.where(keep, norm, 0.0))
