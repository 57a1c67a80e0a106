"""EASE with item content (models/cease.py) against its closed form in numpy.

``B`` of the jitted, row-sharded fit on 8 fake devices equals
``(X^T X + w F F^T + lambda I)^-1`` turned into EASE's ``B`` in numpy (and 1 device equals
8); without content (w = 0) it is EASE's; an item with no train interaction gets a
non-zero column through its content, while EASE's is zero; bad weights fail in one line.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest
from test_baselines import binary, ease_reference, fit
from toy import toy_info

from mmrec_jax import sharding
from mmrec_jax.errors import ConfigError
from mmrec_jax.models.cease import content_matrix


def cease_reference(x, f, lam, w):
  p = np.linalg.inv(x.T @ x + w * f @ f.T + lam * np.eye(x.shape[1]))
  b = -p / np.diag(p)[None, :]
  np.fill_diagonal(b, 0.0)
  return b


def _normalised(info):
  parts = []
  for m in sorted(info.features):
    f = np.where(info.feature_masks[m][:, None], info.features[m], 0.0).astype(np.float64)
    n = np.linalg.norm(f, axis=1, keepdims=True)
    parts.append(np.where(n > 0, f / np.maximum(n, 1e-12), 0.0) / np.sqrt(len(info.features)))
  return np.concatenate(parts, axis=1)


def test_cease_matches_numpy_on_8_and_1_devices():
  info = toy_info(num_users=40, num_items=30, num_edges=300)
  x, f = binary(info), _normalised(info)
  np.testing.assert_allclose(
    content_matrix(info, tuple(sorted(info.features)), 32)[:, :30], f.T, atol=1e-6
  )
  lam, w = 3.0, 5.0
  b = cease_reference(x, f, lam, w)
  _, _, _, items, _ = fit("cease", info, model__reg_weight=lam, model__content_weight=w)
  i = info.num_items
  tol = 3e-5 * max(1, np.abs(b).max())
  np.testing.assert_allclose(items[:i, :i], b.T, atol=tol)
  assert np.all(items[:, i:-1] == 0) and np.all(items[i:] == 0)
  one = sharding.make_mesh(1, 1, devices=jax.devices()[:1])
  _, _, _, items1, _ = fit("cease", info, mesh=one, model__reg_weight=lam, model__content_weight=w)
  np.testing.assert_allclose(items1[:i, :i], items[:i, :i], atol=tol)
  # The content term changes B; w = 0 is EASE.
  assert np.abs(b - ease_reference(x, lam)).max() > 1e-3
  _, _, _, items0, _ = fit("cease", info, model__reg_weight=lam, model__content_weight=0.0)
  np.testing.assert_allclose(items0[:i, :i], ease_reference(x, lam).T, atol=tol)


def test_a_cold_item_is_scored_through_its_content():
  info = toy_info(num_users=40, num_items=30, num_edges=300)
  keep = info.train_items != 7  # item 7 loses every train interaction
  info = dataclasses.replace(
    info, train_users=info.train_users[keep], train_items=info.train_items[keep]
  )
  info.feature_masks["text"][7] = True
  info.feature_masks["image"][7] = True
  x = binary(info)
  _, _, users, items, _ = fit("ease", info, model__reg_weight=3.0)
  assert np.all(items[7, :30] == 0)  # EASE: a cold item has no weights
  _, _, users, items, _ = fit("cease", info, model__reg_weight=3.0, model__content_weight=5.0)
  scores = users[:40, :30] @ items[:30, :30].T
  assert np.abs(items[7, :30]).max() > 1e-3
  np.testing.assert_allclose(
    scores[:, 7], x @ cease_reference(x, _normalised(info), 3.0, 5.0)[:, 7], atol=1e-4
  )


def test_default_weights_are_the_registry_defaults():
  info = toy_info(num_users=40, num_items=30, num_edges=300)
  x, f = binary(info), _normalised(info)
  _, _, _, items, _ = fit("cease", info)  # reg_weight = content_weight = -1
  b = cease_reference(x, f, 500.0, 30.0)
  np.testing.assert_allclose(items[:30, :30], b.T, atol=3e-5 * max(1, np.abs(b).max()))


def _cold_reference(b, x, f, k):
  """Columns of cold items (no train row, some content) = cosine-weighted mean of the k
  most similar trained items' columns (models/cease.py, cold items)."""
  b = b.copy()
  counts = x.sum(0)
  warm = np.flatnonzero(counts > 0)
  for j in np.flatnonzero((counts == 0) & np.any(f != 0, axis=1)):
    sim = f[warm] @ f[j]
    top = warm[np.argsort(-sim)[:k]]
    w = np.maximum(f[top] @ f[j], 0.0)
    if w.sum() > 0:
      b[:, j] = b[:, top] @ (w / w.sum())
      b[j, j] = 0.0
  return b


def test_cold_neighbours_score_a_new_item_like_the_trained_items_it_resembles():
  info = toy_info(num_users=40, num_items=30, num_edges=300)
  cold = [7, 12, 20]
  keep = ~np.isin(info.train_items, cold)
  info = dataclasses.replace(
    info, train_users=info.train_users[keep], train_items=info.train_items[keep]
  )
  for m in info.feature_masks:
    info.feature_masks[m][[7, 12]] = True
    info.feature_masks[m][20] = False  # no content at all: stays as the fit left it
    info.features[m][20] = 0.0
  x, f = binary(info), _normalised(info)
  lam, w, k = 3.0, 5.0, 4
  plain = cease_reference(x, f, lam, w)
  want = _cold_reference(plain, x, f, k)
  over = dict(model__reg_weight=lam, model__content_weight=w, model__cold_neighbors=k)
  _, _, users, items, _ = fit("cease", info, **over)
  tol = 3e-5 * max(1, np.abs(want).max())
  np.testing.assert_allclose(items[:30, :30], want.T, atol=tol)
  # Only the cold items' columns moved, and they moved onto the warm items' scale.
  changed = np.flatnonzero(np.abs(want - plain).max(axis=0) > 1e-6)
  assert changed.tolist() == [7, 12]
  scores = users[:40, :30] @ items[:30, :30].T
  warm = np.setdiff1d(np.arange(30), cold)
  # Mean scores here: warm 0.19, cold 0.17 with neighbours, 0.003 without.
  assert scores[:, [7, 12]].mean() > 0.5 * scores[:, warm].mean()
  assert (x @ plain)[:, [7, 12]].mean() < 0.1 * scores[:, warm].mean()
  # The same on one device.
  one = sharding.make_mesh(1, 1, devices=jax.devices()[:1])
  _, _, _, items1, _ = fit("cease", info, mesh=one, **over)
  np.testing.assert_allclose(items1[:30, :30], items[:30, :30], atol=tol)


def test_negative_cold_neighbours_fail_in_one_line():
  info = toy_info(num_users=40, num_items=30, num_edges=300)
  with pytest.raises(ConfigError, match=r"model.cold_neighbors=-1 must be >= 0"):
    fit("cease", info, model__cold_neighbors=-1)


def test_cold_neighbours_without_item_features_fail_in_one_line():
  info = dataclasses.replace(
    toy_info(num_users=40, num_items=30, num_edges=300), features={}, feature_masks={}
  )
  with pytest.raises(ConfigError, match=r"cold_neighbors=3 .*no item features"):
    fit("cease", info, data__modalities=(), model__cold_neighbors=3)
