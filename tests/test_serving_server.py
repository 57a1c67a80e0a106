"""The HTTP server on 127.0.0.1: answers, bad requests, back-pressure, micro-batching.

Runs uvicorn in a thread over a Recommender built from small random matrices (no
training), so each test takes well under a second. After every bad request the test
checks that /health still answers: the server must never go down on input.
"""

import asyncio
import socket
import threading
import time

import numpy as np
import pytest

httpx = pytest.importorskip("httpx")
uvicorn = pytest.importorskip("uvicorn")


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.fixture(scope="module")
def rec():
  from mmrec_jax.serving import Recommender

  rng = np.random.default_rng(0)
  users = rng.normal(size=(30, 8)).astype(np.float32)
  items = rng.normal(size=(50, 8)).astype(np.float32)
  indptr = np.arange(31) * 2  # user u has seen items 2u % 50 and (2u + 1) % 50
  indices = (np.arange(60) % 50).astype(np.int32)
  return Recommender(
    users,
    items,
    [f"u{i}" for i in range(30)],
    [f"i{i}" for i in range(50)],
    seen=(indptr, indices),
    model_name="bpr_mf",
  )


@pytest.fixture(scope="module")
def server(rec):
  from mmrec_jax.serving import server as server_lib

  settings = server_lib.ServerSettings(
    max_batch=16, max_wait_ms=5, max_inflight=8, max_body_bytes=2048, max_list=20, max_k=40
  )
  app = server_lib.make_app(rec, settings)
  port = _free_port()
  srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
  thread = threading.Thread(target=srv.run, daemon=True)
  thread.start()
  url = f"http://127.0.0.1:{port}"
  for _ in range(200):
    try:
      if httpx.get(f"{url}/health").status_code == 200:
        break
    except httpx.TransportError:
      time.sleep(0.05)
  yield url, app
  srv.should_exit = True
  thread.join(10)


def _alive(url):
  r = httpx.get(f"{url}/health")
  assert r.status_code == 200 and r.json()["status"] == "ok"


def test_recommend_similar_health(server, rec):
  url, _ = server
  r = httpx.post(f"{url}/recommend", json={"user_id": "u3", "k": 5})
  assert r.status_code == 200, r.text
  expect = rec.recommend(["u3"], k=5)
  assert [x["item_id"] for x in r.json()["items"]] == expect.item_ids[0].tolist()
  np.testing.assert_allclose([x["score"] for x in r.json()["items"]], expect.scores[0], rtol=1e-6)
  r = httpx.post(f"{url}/recommend", json={"history": ["i1", "i2"], "k": 3})
  assert r.status_code == 200 and len(r.json()["items"]) == 3
  assert not {"i1", "i2"} & {x["item_id"] for x in r.json()["items"]}
  r = httpx.post(
    f"{url}/recommend", json={"user_id": "u3", "k": 2, "candidates": ["i10", "i11", "i12"]}
  )
  assert r.status_code == 200 and {x["item_id"] for x in r.json()["items"]} <= {"i10", "i11", "i12"}
  r = httpx.post(f"{url}/similar", json={"item_id": "i4", "k": 4})
  assert r.status_code == 200
  assert [x["item_id"] for x in r.json()["items"]] == rec.similar_items(["i4"], k=4).item_ids[
    0
  ].tolist()
  _alive(url)


BAD = [
  # (path, raw body, status, message fragment)
  ("/recommend", b'{"user_id": "nobody", "k": 5}', 404, "unknown user id"),
  ("/recommend", b'{"history": ["i1", "zzz"]}', 404, "unknown item id"),
  ("/similar", b'{"item_id": "zzz"}', 404, "unknown item id"),
  ("/recommend", b'{"user_id": "u1", "k": 0}', 400, "k must be an integer in [1, 40]"),
  ("/recommend", b'{"user_id": "u1", "k": 41}', 400, "k must be an integer"),
  ("/recommend", b'{"user_id": "u1", "k": "ten"}', 400, "k must be an integer"),
  ("/recommend", b'{"user_id": "u1", "k": true}', 400, "k must be an integer"),
  ("/recommend", b'{"user_id": "u1", "k": 2.5}', 400, "k must be an integer"),
  ("/recommend", b'{"user_id": ', 400, "malformed JSON"),
  ("/recommend", b"\xff\xfe", 400, "malformed JSON"),
  ("/recommend", b"[1, 2]", 400, "must be a JSON object"),
  ("/recommend", b'{"user": "u1"}', 400, "unknown field 'user'"),
  ("/recommend", b'{"k": 3}', 400, "exactly one of user_id"),
  ("/recommend", b'{"user_id": "u1", "history": ["i1"]}', 400, "exactly one of user_id"),
  ("/recommend", b'{"user_id": ["u1"]}', 400, "user_id must be a string"),
  ("/recommend", b'{"history": []}', 400, "must not be empty"),
  ("/recommend", b'{"history": "i1"}', 400, "must be a list"),
  ("/recommend", b'{"user_id": "u1", "exclude_seen": "yes"}', 400, "exclude_seen must be"),
  (
    "/recommend",
    ('{"history": [' + ",".join(['"i1"'] * 21) + "]}").encode(),
    413,
    "the limit is 20",
  ),
  (
    "/recommend",
    b'{"user_id": "u1", "pad": "' + b"x" * 3000 + b'"}',
    413,
    "exceeds the limit of 2048",
  ),
  ("/similar", b'{"k": 3}', 400, "item_id is required"),
  ("/similar", b'{"item_id": "i1", "k": 50}', 400, "k must be an integer in [1, 40]"),
  ("/nowhere", b"{}", 404, "no such endpoint"),
]


@pytest.mark.parametrize("path,body,status,message", BAD)
def test_bad_requests_get_status_and_message(server, path, body, status, message):
  url, _ = server
  r = httpx.post(f"{url}{path}", content=body, headers={"content-type": "application/json"})
  assert r.status_code == status, r.text
  assert message in r.json()["error"]
  assert "\n" not in r.json()["error"]
  _alive(url)


def test_wrong_method_and_chunked_oversized_body(server):
  url, _ = server
  r = httpx.get(f"{url}/recommend")
  assert r.status_code == 405 and "not allowed" in r.json()["error"]

  def chunks():  # no Content-Length: the limit is enforced while reading
    for _ in range(10):
      yield b" " * 500

  r = httpx.post(f"{url}/recommend", content=chunks())
  assert r.status_code == 413
  _alive(url)


def test_concurrent_requests_are_batched_and_bounded(server, rec):
  url, app = server
  svc = app.state.service
  before = svc.known.batches, svc.known.rows

  async def burst(n):
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
      return await asyncio.gather(
        *[client.post("/recommend", json={"user_id": f"u{i % 30}", "k": 3}) for i in range(n)]
      )

  # max_inflight=8: of 40 simultaneous requests some may be refused with 503 at once;
  # every answered one is right, and several rows went through one device call.
  responses = asyncio.run(burst(40))
  codes = [r.status_code for r in responses]
  assert set(codes) <= {200, 503}, codes
  assert codes.count(200) >= 8
  for i, r in enumerate(responses):
    if r.status_code == 200:
      assert [x["item_id"] for x in r.json()["items"]] == rec.recommend(
        [f"u{i % 30}"], k=3
      ).item_ids[0].tolist()
    else:
      assert "server busy" in r.json()["error"] and r.headers["retry-after"] == "1"
  batches, rows = svc.known.batches - before[0], svc.known.rows - before[1]
  assert rows == codes.count(200) and batches < rows  # micro-batching happened
  _alive(url)
