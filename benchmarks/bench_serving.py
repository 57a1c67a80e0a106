r"""Bounded load test of the HTTP server on 127.0.0.1: requests/s and p50/p99 latency.

Why bounded: the test must end by itself and never leave the machine -- a fixed number
of requests per concurrency level, a wall-clock cap, the server bound to 127.0.0.1 and
stopped at the end.

The server is a child process (so the load generator does not share its interpreter):
  * default: synthetic vectors of ML-25M shape (162,541 users x 59,047 items, d=64,
    50 random seen items per user), NOT a trained model -- serving cost does not depend
    on what the numbers are;
  * ``--workdir=DIR``: a trained run, started exactly as users start it,
    ``python -m mmrec_jax.serve --workdir=DIR --port=P``.
Clients are ``--concurrency`` asyncio tasks sharing one aiohttp session (one connection
each; aiohttp, not httpx: with httpx's pool as the client, 64 clients got 68 requests/s
and the server saw 1.6 rows per device call -- the client, not the server, was the limit);
each
sends ``POST /recommend {"user_id": <random known user>, "k": 10}`` back to back until
``--requests`` have been sent (or ``--max_seconds`` passed). A request "fails" on any
status other than 200 or a transport error.

    .venv/bin/python benchmarks/bench_serving.py                       # 1, 8, 64 clients
    .venv/bin/python benchmarks/bench_serving.py --workdir=runs/ml100k --requests 1000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

import numpy as np

SYNTHETIC_SERVER = r"""
import sys, numpy as np
from mmrec_jax.serving import Recommender, server
nu, ni, d, port = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
rng = np.random.default_rng(0)
users = rng.normal(size=(nu, d)).astype(np.float32)
items = rng.normal(size=(ni, d)).astype(np.float32)
seen = 50
indptr = np.arange(nu + 1, dtype=np.int64) * seen
indices = rng.integers(0, ni, nu * seen).astype(np.int32)
rec = Recommender(users, items, [f"u{i}" for i in range(nu)], [f"i{i}" for i in range(ni)],
                  seen=(indptr, indices), model_name="bpr_mf")
print("ready", flush=True)
server.serve(rec, "127.0.0.1", port, server.ServerSettings(max_batch=64, max_wait_ms=2,
                                                           max_inflight=256))
"""


def get_json(url: str, timeout: float) -> dict:
  with urllib.request.urlopen(url, timeout=timeout) as r:
    return json.loads(r.read())


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


async def load(
  url: str, user_ids: list[str], concurrency: int, requests: int, max_seconds: float, k: int
) -> dict:
  """``concurrency`` clients sending /recommend back to back; latencies and failures."""
  import aiohttp

  lat, failed, sent = [], 0, 0
  rng = np.random.default_rng(concurrency)
  deadline = time.perf_counter() + max_seconds
  connector = aiohttp.TCPConnector(limit=concurrency)
  timeout = aiohttp.ClientTimeout(total=30)
  async with aiohttp.ClientSession(url, connector=connector, timeout=timeout) as client:

    async def worker():
      nonlocal failed, sent
      while sent < requests and time.perf_counter() < deadline:
        sent += 1
        body = {"user_id": user_ids[int(rng.integers(len(user_ids)))], "k": k}
        t = time.perf_counter()
        try:
          async with client.post("/recommend", json=body) as r:
            await r.read()
            ok = r.status == 200
        except (TimeoutError, aiohttp.ClientError):
          ok = False
        lat.append(time.perf_counter() - t)
        failed += not ok

    t0 = time.perf_counter()
    await asyncio.gather(*[worker() for _ in range(concurrency)])
    wall = time.perf_counter() - t0
  lat_ms = np.array(lat) * 1000
  return {
    "concurrency": concurrency,
    "requests": len(lat),
    "failed": failed,
    "seconds": wall,
    "rps": len(lat) / wall,
    "p50": float(np.percentile(lat_ms, 50)),
    "p99": float(np.percentile(lat_ms, 99)),
  }


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--workdir", default=None)
  p.add_argument("--users", type=int, default=162_541)
  p.add_argument("--items", type=int, default=59_047)
  p.add_argument("--dim", type=int, default=64)
  p.add_argument("--concurrency", default="1,8,64")
  p.add_argument("--requests", type=int, default=2000, help="per concurrency level")
  p.add_argument("--max_seconds", type=float, default=120.0, help="cap per level")
  p.add_argument("--k", type=int, default=10)
  a = p.parse_args()
  port = free_port()
  url = f"http://127.0.0.1:{port}"
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  env.setdefault("JAX_PLATFORMS", "cpu")
  if a.workdir:
    cmd = [sys.executable, "-m", "mmrec_jax.serve", f"--workdir={a.workdir}", f"--port={port}"]
  else:
    cmd = [
      sys.executable,
      "-c",
      SYNTHETIC_SERVER,
      str(a.users),
      str(a.items),
      str(a.dim),
      str(port),
    ]
  proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  try:
    t = time.time()
    while True:
      if proc.poll() is not None:
        raise SystemExit(f"server exited: {proc.stdout.read()[-2000:]}")
      try:
        health = get_json(f"{url}/health", 2)
        break
      except OSError:
        if time.time() - t > 600:
          raise SystemExit("server did not start in 600 s") from None
        time.sleep(0.5)
    print(f"server: {health}")
    n_users = health["num_users"]
    if a.workdir:
      import numpy as _np

      from mmrec_jax.data.prepare import prepare
      from mmrec_jax.serving import config_from_json

      ds = prepare(config_from_json(os.path.join(a.workdir, "config.json")).data)
      user_ids = [str(u) for u in _np.asarray(ds.user_raw_ids())]
    else:
      user_ids = [f"u{i}" for i in range(n_users)]
    # Warm-up: compile the batch shapes before timing.
    asyncio.run(load(url, user_ids, 64, 640, 120, a.k))
    asyncio.run(load(url, user_ids, 1, 50, 60, a.k))
    print(f"load average before: {os.getloadavg()}")
    print(
      "| clients | requests | failed | seconds | requests/s | p50 ms | p99 ms "
      "| rows per device call | load avg (1 min) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for c in (int(x) for x in a.concurrency.split(",")):
      h0 = get_json(f"{url}/health", 5)
      r = asyncio.run(load(url, user_ids, c, a.requests, a.max_seconds, a.k))
      h1 = get_json(f"{url}/health", 5)
      per_call = (h1["batched_rows"] - h0["batched_rows"]) / max(1, h1["batches"] - h0["batches"])
      print(
        f"| {c} | {r['requests']} | {r['failed']} | {r['seconds']:.1f} | {r['rps']:,.0f} | "
        f"{r['p50']:.1f} | {r['p99']:.1f} | {per_call:.1f} | {os.getloadavg()[0]:.2f} |",
        flush=True,
      )
    health = get_json(f"{url}/health", 5)
    print(
      f"server after: batches={health['batches']} rows={health['batched_rows']} "
      f"served={health['served']} refused={health['refused']}"
    )
  finally:
    proc.terminate()
    try:
      proc.wait(20)
    except subprocess.TimeoutExpired:
      proc.kill()


if __name__ == "__main__":
  main()
