"""HTTP serving of a :class:`Recommender` (Starlette on uvicorn), with micro-batching.

Why these choices:
  * Starlette + uvicorn: well-kept, small ASGI stack; requests are parsed and validated
    by hand below so every bad request gets a precise status and a one-line message
    (``{"error": "..."}``) instead of a framework's generic 422 body.
  * Micro-batching: concurrent requests of the same kind are queued and ranked together
    in one device call (up to ``max_batch`` rows, waiting at most ``max_wait_ms`` for the
    batch to fill), because one ``[B, D] x [D, I]`` call costs little more than one row.
    Device work runs in a worker thread, so the event loop keeps accepting and refusing.
  * Back-pressure: at most ``max_inflight`` requests are admitted at once; the next one is
    answered 503 with ``Retry-After`` at once instead of queueing without bound. Bodies
    over ``max_body_bytes`` and lists over ``max_list`` ids are refused with 413.
  * Never crash on a request: validation errors are 400/404/413, anything unexpected is a
    500 with one line (and a logged traceback), and the server stays up.

Endpoints (JSON bodies):
  POST /recommend  {"user_id": "u1", "k": 10, "exclude_seen": true, "candidates": [...]}
                   or {"history": ["i1", "i2"], ...} for a new user (fold-in)
                -> {"user_id": ..., "items": [{"item_id": "i9", "score": 3.2}, ...]}
  POST /similar    {"item_id": "i1", "k": 10} -> {"item_id": ..., "items": [...]}
  GET  /health     -> {"status": "ok", "model": ..., "num_users": ..., "num_items": ...}
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import json
import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from mmrec_jax.errors import ConfigError, DataError
from mmrec_jax.serving.recommender import Recommender, UnknownIdError

log = logging.getLogger("mmrec_jax.serving")


@dataclasses.dataclass(frozen=True)
class ServerSettings:
  max_batch: int = 64  # requests ranked together in one device call
  max_wait_ms: float = 2.0  # how long a batch waits to fill
  max_inflight: int = 256  # admitted requests at once; more -> 503
  max_body_bytes: int = 65536  # larger bodies -> 413
  max_list: int = 1000  # ids in history / candidates; more -> 413
  max_k: int = 1000  # largest k accepted (also <= the catalogue)
  workers: int = 2  # threads running device calls


class HttpError(Exception):
  def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
    super().__init__(message)
    self.status, self.message, self.headers = status, message, headers or {}


class MicroBatcher:
  """Queues single requests and runs them in batches through ``fn(list) -> list``."""

  def __init__(
    self,
    fn: Callable[[list[Any]], list[Any]],
    max_batch: int,
    max_wait_s: float,
    executor: concurrent.futures.Executor,
  ):
    self.fn, self.max_batch, self.max_wait_s = fn, max_batch, max_wait_s
    self.executor = executor
    self.queue: asyncio.Queue | None = None
    self.task: asyncio.Task | None = None
    self.batches = 0
    self.rows = 0

  async def submit(self, item: Any) -> Any:
    if self.task is None:
      self.queue = asyncio.Queue()
      self.task = asyncio.get_running_loop().create_task(self._loop())
    fut = asyncio.get_running_loop().create_future()
    await self.queue.put((item, fut))
    return await fut

  async def _loop(self) -> None:
    loop = asyncio.get_running_loop()
    while True:
      batch = [await self.queue.get()]
      deadline = loop.time() + self.max_wait_s
      while len(batch) < self.max_batch:
        try:
          batch.append(self.queue.get_nowait())
          continue
        except asyncio.QueueEmpty:
          pass
        left = deadline - loop.time()
        if left <= 0:
          break
        try:
          batch.append(await asyncio.wait_for(self.queue.get(), left))
        except TimeoutError:
          break
      items = [b[0] for b in batch]
      try:
        results = await loop.run_in_executor(self.executor, self.fn, items)
        self.batches += 1
        self.rows += len(items)
        for (_, fut), res in zip(batch, results):
          if not fut.done():
            fut.set_result(res)
      except Exception as e:
        for _, fut in batch:
          if not fut.done():
            fut.set_exception(e)

  def close(self) -> None:
    if self.task is not None:
      self.task.cancel()


def _items(ids: np.ndarray, scores: np.ndarray) -> list[dict[str, Any]]:
  return [{"item_id": str(a), "score": float(b)} for a, b in zip(ids, scores) if np.isfinite(b)]


class Service:
  """Validation and batching around one Recommender (framework-independent)."""

  def __init__(self, rec: Recommender, settings: ServerSettings = ServerSettings()):
    self.rec, self.s = rec, settings
    self.executor = concurrent.futures.ThreadPoolExecutor(
      settings.workers, thread_name_prefix="mmrec-serve"
    )
    wait = settings.max_wait_ms / 1000.0
    self.known = MicroBatcher(self._run_known, settings.max_batch, wait, self.executor)
    self.history = MicroBatcher(self._run_history, settings.max_batch, wait, self.executor)
    self.similar_batcher = MicroBatcher(self._run_similar, settings.max_batch, wait, self.executor)
    self.inflight = 0
    self.served = 0
    self.refused = 0
    self.started = time.time()

  # ---------------------------------------------------------------- batch functions
  def _run_grouped(self, reqs: list[dict], field: str, rank: Callable) -> list[Any]:
    """Ranks requests sharing (exclude_seen, candidates) in one call with the largest k."""
    out: list[Any] = [None] * len(reqs)
    groups: dict[tuple, list[int]] = {}
    for n, r in enumerate(reqs):
      key = (r["exclude_seen"], None if r["candidates"] is None else tuple(r["candidates"]))
      groups.setdefault(key, []).append(n)
    for (excl, cands), idx in groups.items():
      res = rank(
        [reqs[n][field] for n in idx],
        k=max(reqs[n]["k"] for n in idx),
        exclude_seen=excl,
        candidates=None if cands is None else list(cands),
      )
      for row, n in enumerate(idx):
        kk = reqs[n]["k"]
        out[n] = _items(res.item_ids[row, :kk], res.scores[row, :kk])
    return out

  def _run_known(self, reqs: list[dict]) -> list[Any]:
    return self._run_grouped(reqs, "user_id", self.rec.recommend)

  def _run_history(self, reqs: list[dict]) -> list[Any]:
    return self._run_grouped(reqs, "history", self.rec.recommend_for_history)

  def _run_similar(self, reqs: list[dict]) -> list[Any]:
    k = max(r["k"] for r in reqs)
    res = self.rec.similar_items([r["item_id"] for r in reqs], k=k)
    return [_items(res.item_ids[n, : r["k"]], res.scores[n, : r["k"]]) for n, r in enumerate(reqs)]

  # ---------------------------------------------------------------- validation
  def parse(self, body: bytes, allowed: dict[str, type]) -> dict[str, Any]:
    try:
      data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
      raise HttpError(400, f"malformed JSON: {e}") from None
    if not isinstance(data, dict):
      raise HttpError(400, f"the body must be a JSON object, got {type(data).__name__}")
    unknown = sorted(set(data) - set(allowed))
    if unknown:
      raise HttpError(400, f"unknown field {unknown[0]!r} (valid: {', '.join(allowed)})")
    return data

  def check_k(self, data: dict, limit: int) -> int:
    k = data.get("k", 10)
    hi = min(self.s.max_k, limit)
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= hi:
      raise HttpError(400, f"k must be an integer in [1, {hi}], got {json.dumps(k)[:50]}")
    return k

  def check_id(self, data: dict, name: str) -> str:
    v = data.get(name)
    if isinstance(v, bool) or not isinstance(v, (str, int)):
      raise HttpError(400, f"{name} must be a string, got {json.dumps(v)[:50]}")
    return str(v)

  def check_list(self, data: dict, name: str) -> list[str] | None:
    v = data.get(name)
    if v is None:
      return None
    if not isinstance(v, list) or not all(
      isinstance(x, (str, int)) and not isinstance(x, bool) for x in v
    ):
      raise HttpError(400, f"{name} must be a list of id strings")
    if len(v) > self.s.max_list:
      raise HttpError(413, f"{name} has {len(v)} ids; the limit is {self.s.max_list}")
    if not v:
      raise HttpError(400, f"{name} must not be empty")
    return [str(x) for x in v]

  def check_bool(self, data: dict, name: str, default: bool) -> bool:
    v = data.get(name, default)
    if not isinstance(v, bool):
      raise HttpError(400, f"{name} must be true or false, got {json.dumps(v)[:50]}")
    return v

  # ---------------------------------------------------------------- handlers
  async def recommend(self, body: bytes) -> dict[str, Any]:
    data = self.parse(
      body, {"user_id": str, "history": list, "k": int, "exclude_seen": bool, "candidates": list}
    )
    if ("user_id" in data) == ("history" in data):
      raise HttpError(
        400, "give exactly one of user_id (a known user) or history (item ids of a new user)"
      )
    k = self.check_k(data, self.rec.num_items)
    excl = self.check_bool(data, "exclude_seen", True)
    cands = self.check_list(data, "candidates")
    try:
      if cands is not None:
        self.rec.item_index(cands)
      if "user_id" in data:
        user = self.check_id(data, "user_id")
        self.rec.user_index([user])
        items = await self.known.submit(
          {"user_id": user, "k": k, "exclude_seen": excl, "candidates": cands}
        )
        return {"user_id": user, "items": items}
      hist = self.check_list(data, "history")
      self.rec.item_index(hist)
      self._check_fold_in()
      items = await self.history.submit(
        {"history": hist, "k": k, "exclude_seen": excl, "candidates": cands}
      )
      return {"history_size": len(hist), "items": items}
    except UnknownIdError as e:
      raise HttpError(404, str(e)) from None

  def _check_fold_in(self) -> None:
    from mmrec_jax.serving import foldin  # noqa: PLC0415

    if self.rec.model_name and foldin.SUPPORT.get(self.rec.model_name) is None:
      raise HttpError(501, f"model {self.rec.model_name!r} does not support new users")

  async def similar(self, body: bytes) -> dict[str, Any]:
    data = self.parse(body, {"item_id": str, "k": int})
    if "item_id" not in data:
      raise HttpError(400, "item_id is required")
    item = self.check_id(data, "item_id")
    k = self.check_k(data, self.rec.num_items - 1)
    try:
      self.rec.item_index([item])
    except UnknownIdError as e:
      raise HttpError(404, str(e)) from None
    return {"item_id": item, "items": await self.similar_batcher.submit({"item_id": item, "k": k})}

  def health(self) -> dict[str, Any]:
    return {
      "status": "ok",
      "model": self.rec.model_name,
      "num_users": self.rec.num_users,
      "num_items": self.rec.num_items,
      "dim": self.rec.dim,
      "inflight": self.inflight,
      "served": self.served,
      "refused": self.refused,
      "batches": self.known.batches + self.history.batches + self.similar_batcher.batches,
      "batched_rows": self.known.rows + self.history.rows + self.similar_batcher.rows,
      "uptime_s": round(time.time() - self.started, 1),
    }

  def close(self) -> None:
    for b in (self.known, self.history, self.similar_batcher):
      b.close()
    self.executor.shutdown(wait=False, cancel_futures=True)


def make_app(rec: Recommender, settings: ServerSettings = ServerSettings()):
  """The Starlette ASGI app serving ``rec`` (run it with uvicorn)."""
  from starlette.applications import Starlette  # noqa: PLC0415
  from starlette.requests import Request  # noqa: PLC0415
  from starlette.responses import JSONResponse  # noqa: PLC0415
  from starlette.routing import Route  # noqa: PLC0415

  svc = Service(rec, settings)

  async def read_body(request: Request) -> bytes:
    size = request.headers.get("content-length")
    limit = settings.max_body_bytes
    if size is not None:
      try:
        n = int(size)
      except ValueError:
        raise HttpError(400, "bad Content-Length header") from None
      if n > limit:
        raise HttpError(413, f"request body of {n} bytes exceeds the limit of {limit}")
    chunks, total = [], 0
    async for chunk in request.stream():
      total += len(chunk)
      if total > limit:
        raise HttpError(413, f"request body exceeds the limit of {limit} bytes")
      chunks.append(chunk)
    return b"".join(chunks)

  def guarded(handler):
    async def endpoint(request: Request):
      if svc.inflight >= settings.max_inflight:
        svc.refused += 1
        return JSONResponse(
          {
            "error": f"server busy: {svc.inflight} requests in flight "
            f"(limit {settings.max_inflight}); retry later"
          },
          status_code=503,
          headers={"Retry-After": "1"},
        )
      svc.inflight += 1
      try:
        body = await read_body(request)
        result = await handler(body)
        svc.served += 1
        return JSONResponse(result)
      except HttpError as e:
        return JSONResponse({"error": e.message}, status_code=e.status, headers=e.headers)
      except (DataError, ConfigError) as e:
        return JSONResponse({"error": str(e)}, status_code=400)
      except Exception as e:
        log.exception("internal error on %s", request.url.path)
        return JSONResponse(
          {"error": f"internal error: {type(e).__name__}: {' '.join(str(e).split())[:200]}"},
          status_code=500,
        )
      finally:
        svc.inflight -= 1

    return endpoint

  async def health(request: Request):
    return JSONResponse(svc.health())

  async def not_found(request: Request, exc):
    status = getattr(exc, "status_code", 404)
    msg = {
      404: f"no such endpoint {request.url.path!r} (have /recommend, /similar, /health)",
      405: f"method {request.method} not allowed on {request.url.path}",
    }.get(status, str(exc))
    return JSONResponse({"error": msg}, status_code=status)

  @contextlib.asynccontextmanager
  async def lifespan(app):
    yield
    svc.close()

  app = Starlette(
    routes=[
      Route("/recommend", guarded(svc.recommend), methods=["POST"]),
      Route("/similar", guarded(svc.similar), methods=["POST"]),
      Route("/health", health, methods=["GET"]),
    ],
    exception_handlers={404: not_found, 405: not_found},
    lifespan=lifespan,
  )
  app.state.service = svc
  return app


def serve(
  rec: Recommender,
  host: str = "127.0.0.1",
  port: int = 8000,
  settings: ServerSettings = ServerSettings(),
) -> None:
  """Runs the app with uvicorn until interrupted (SIGINT/SIGTERM stop it cleanly)."""
  import uvicorn  # noqa: PLC0415

  app = make_app(rec, settings)
  uvicorn.run(
    app,
    host=host,
    port=port,
    log_level="warning",
    # uvicorn's own guard, above ours: connections beyond it get 503 at once.
    limit_concurrency=settings.max_inflight * 2 + 16,
    timeout_keep_alive=30,
  )
