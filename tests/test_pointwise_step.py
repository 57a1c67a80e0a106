"""The pointwise regime: its loss and labels, sparse updates, 8 devices = 1, end to end.

* the step's BCE equals numpy's on the logits the ranker gives the batch's rows, with
  labels by ``data.label_threshold`` (rating > t; or positives + sampled negatives);
* rows of the ID and categorical tables the batch did not touch stay bit-identical;
* two steps on 8 fake devices (tables row-sharded) equal two steps on one device.

The experiment end to end (ML-1M-shaped files with users.dat, Parquet export and import)
runs in tests/test_ranking_two_stage.py, which trains the ranker once for both.
"""

from __future__ import annotations

import dataclasses
import pathlib

import jax
import numpy as np
import pytest
from toy import toy_batch, toy_config, toy_info

from mmrec_jax import sharding
from mmrec_jax.data.side_features import SideFeatures, encode_bags
from mmrec_jax.step import Task


def _side(info, seed=0):
  rng = np.random.default_rng(seed)
  genres = [
    [f"g{k}" for k in rng.choice(6, rng.integers(0, 3), replace=False)]
    for _ in range(info.num_items)
  ]
  occupation = [[f"o{rng.integers(0, 4)}"] for _ in range(info.num_users)]
  bags, names = {}, {}
  bags["genre"], names["genre"] = encode_bags(genres)
  bags["occupation"], names["occupation"] = encode_bags(occupation)
  return SideFeatures(
    kinds={"genre": "items", "occupation": "users"},
    bags=bags,
    vocab={k: len(v) for k, v in names.items()},
    names=names,
  )


def _task(name, threshold, mesh=None, **kw):
  info = toy_info()
  info = dataclasses.replace(info, side=_side(info))
  cfg = toy_config(name, data__label_threshold=threshold, **kw)
  return Task(cfg, info, mesh or sharding.make_mesh()), info


def _bce(logits, labels):
  z = np.asarray(logits, np.float64)
  return np.mean(np.maximum(z, 0) - z * labels + np.log1p(np.exp(-np.abs(z))))


@pytest.mark.parametrize("threshold", [3.0, -1.0])
def test_loss_is_bce_of_the_labelled_rows(threshold):
  task, info = _task("mlp_ranker", threshold)
  state = task.init(0)
  batch = toy_batch(task, info, np.random.default_rng(1), num_negatives=2)
  host = jax.device_get(batch)
  if threshold >= 0:
    users, items = host["user"], host["pos"]
    labels = (host["rating"] > threshold).astype(np.float64)
  else:
    users = np.concatenate([host["user"], np.repeat(host["user"], 2)])
    items = np.concatenate([host["pos"], host["neg"].reshape(-1)])
    labels = np.r_[np.ones(16), np.zeros(32)]
  put = lambda a: jax.device_put(a.astype(np.int32), sharding.named_sharding(task.mesh, "batch"))
  logits = task.regime.score_rows(state["params"], put(users), put(items))
  want = _bce(jax.device_get(logits), labels)
  _, metrics = task.train_step(state, batch)
  assert float(metrics["bce"]) == pytest.approx(want, rel=1e-5)
  assert float(metrics["label_mean"]) == pytest.approx(labels.mean())


def test_untouched_table_rows_stay_identical():
  task, info = _task("deepfm", 3.0)
  state = task.init(0)
  before = jax.device_get(state["params"]["tables"])
  batch = toy_batch(task, info, np.random.default_rng(2))
  host = jax.device_get(batch)
  state, _ = task.train_step(state, batch)
  after = jax.device_get(state["params"]["tables"])
  users, items = set(host["user"].tolist()), set(host["pos"].tolist())
  genres = set(info.side.bags["genre"][host["pos"]].ravel().tolist()) - {-1}
  touched = {"user_embed": users, "item_embed": items, "user_w": users, "item_w": items}
  for name, rows in touched.items():
    b, a = before[name]["embedding"], after[name]["embedding"]
    changed = {r for r in range(b.shape[0]) if not np.array_equal(a[r], b[r])}
    assert changed == rows, name
  for table in ("side", "side_w"):
    b, a = before[table]["genre"]["embedding"], after[table]["genre"]["embedding"]
    changed = {r for r in range(b.shape[0]) if not np.array_equal(a[r], b[r])}
    assert changed == genres, table


def test_eight_devices_equal_one():
  assert jax.device_count() == 8
  results = []
  for devices in (jax.devices()[:1], jax.devices()):
    mesh = sharding.make_mesh(devices=devices)
    task, info = _task("dlrm", 3.0, mesh=mesh)
    state = task.init(0)
    rng = np.random.default_rng(3)
    for _ in range(2):
      state, metrics = task.train_step(state, toy_batch(task, info, rng))
    results.append((jax.device_get(state["params"]), float(metrics["loss"])))
  (p1, l1), (p8, l8) = results
  assert l1 == pytest.approx(l8, rel=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), p1, p8)


def _write_ml1m(root: pathlib.Path) -> None:
  rng = np.random.default_rng(0)
  root.mkdir(parents=True)
  lines = []
  for u in range(1, 41):
    for k, i in enumerate(rng.choice(np.arange(1, 31), 12, replace=False)):
      lines.append(f"{u}::{i}::{int(rng.integers(1, 6))}::{1_000_000 + 100 * u + k}\n")
  (root / "ratings.dat").write_text("".join(lines))
  (root / "movies.dat").write_text(
    "".join(
      f"{i}::Movie {i} ({1950 + i})::{'Comedy' if i % 2 else 'Drama|Action'}\n"
      for i in range(1, 31)
    ),
    encoding="latin-1",
  )
  (root / "users.dat").write_text(
    "".join(
      f"{u}::{'MF'[u % 2]}::{(1, 18, 25, 35)[u % 4]}::{u % 7}::{10000 + u}\n" for u in range(1, 41)
    )
  )


def test_bfloat16_compute_matches_float32_loosely():
  losses = {}
  for dtype in ("float32", "bfloat16"):
    task, info = _task("dcn_v2", 3.0, train__compute_dtype=dtype)
    state = task.init(0)
    rng = np.random.default_rng(4)
    for _ in range(2):
      state, metrics = task.train_step(state, toy_batch(task, info, rng))
    losses[dtype] = float(metrics["bce"])
    assert state["params"]["tables"]["user_embed"]["embedding"].dtype == np.float32
  assert np.isfinite(losses["bfloat16"])
  assert losses["bfloat16"] == pytest.approx(losses["float32"], rel=2e-2)


def test_whole_table_and_distinct_row_updates_agree():
  """``optimizer.sparse_rows``: dense (whole small tables) and unique give one update."""
  one = sharding.make_mesh(devices=jax.devices()[:1])
  states, losses = {}, {}
  for mode in ("unique", "dense"):
    task, info = _task("dlrm", 3.0, mesh=one, optimizer__sparse_rows=mode, loss__l2=1e-2)
    state = task.init(0)
    rng = np.random.default_rng(5)
    for _ in range(3):
      state, metrics = task.train_step(state, toy_batch(task, info, rng))
    states[mode], losses[mode] = jax.device_get(state["params"]), float(metrics["loss"])
  assert losses["dense"] == pytest.approx(losses["unique"], rel=1e-5)
  jax.tree.map(
    lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
    states["dense"],
    states["unique"],
  )
