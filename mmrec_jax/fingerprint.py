"""The run fingerprint: what a checkpoint was trained on, checked before a resume.

Why: the same command on the same workdir resumes, and before this a rerun on changed
files (item ids shifted by one) said "resumed from step 4" while every embedding row now
belonged to another item. Every checkpoint now stores this fingerprint in its loop state
(``checkpointing``) and a resume whose fingerprint differs fails with one line naming what
changed, before any array is read.

What is compared -- what makes restored parameters mean something else:
  * ``dataset``: sha256 over the prepared dataset's manifest checksums (ids, splits,
    items) and the feature-shard checksums of the modalities the model uses;
    ``num_users`` / ``num_items`` are kept beside it for a readable message;
  * ``model``: the ``config.model`` section and the modalities;
  * ``shapes``: shape and dtype of every array of the TrainState (parameters and
    optimizer state), so e.g. a changed optimizer layout is caught too.
Settings a resume may change on purpose are left out: step counts (``train.max_steps``,
``num_epochs`` to train longer), learning rates, evaluation and logging settings.
"""

from __future__ import annotations

import hashlib
import json
import pathlib
from typing import Any

import jax
import ml_collections

from mmrec_jax.errors import ConfigError


def _sha(obj: Any) -> str:
  return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def dataset_checksum(ds: Any, modalities: tuple[str, ...]) -> str:
  """sha256 of the prepared dataset's file checksums and its used feature shards."""
  manifest = dict(getattr(ds, "manifest", {}) or {})
  parts: dict[str, Any] = {
    "checksums": {
      k: v for k, v in (manifest.get("checksums") or {}).items() if not k.startswith("features/")
    },
    "fingerprint": manifest.get("fingerprint"),
  }
  for m in modalities:
    shards = ds.features(m)
    parts[f"features/{m}"] = [s.get("sha256") for s in shards.manifest.get("shards", [])]
  return _sha(parts)


def run_fingerprint(
  config: ml_collections.ConfigDict, ds: Any, modalities: tuple[str, ...], abstract_state: Any
) -> dict[str, Any]:
  """The fingerprint stored with every checkpoint of this run (JSON-serialisable)."""
  shapes = {
    jax.tree_util.keystr(p): f"{x.dtype}{list(x.shape)}"
    for p, x in jax.tree_util.tree_leaves_with_path(abstract_state)
  }
  return {
    "dataset": dataset_checksum(ds, modalities),
    "dataset_path": str(getattr(ds, "path", "")),
    "num_users": int(ds.num_users),
    "num_items": int(ds.num_items),
    "model": json.loads(json.dumps(config.model.to_dict(), default=list)),
    "modalities": list(modalities),
    "shapes": shapes,
  }


def differences(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
  """Human-readable list of what differs between two fingerprints (empty: same run)."""
  out = []
  if saved.get("dataset") != current.get("dataset"):
    sizes = ""
    for key in ("num_users", "num_items"):
      if saved.get(key) != current.get(key):
        sizes += f", {key} {saved.get(key)} -> {current.get(key)}"
    out.append(
      f"the dataset (checksum {str(saved.get('dataset'))[:12]} -> "
      f"{str(current.get('dataset'))[:12]}{sizes})"
    )
  old_m, new_m = saved.get("model") or {}, current.get("model") or {}
  for key in sorted(set(old_m) | set(new_m)):
    if old_m.get(key) != new_m.get(key):
      out.append(f"model.{key} {old_m.get(key)!r} -> {new_m.get(key)!r}")
  if saved.get("modalities") != current.get("modalities"):
    out.append(f"modalities {saved.get('modalities')} -> {current.get('modalities')}")
  if not out and saved.get("shapes") != current.get("shapes"):
    old_s, new_s = saved.get("shapes") or {}, current.get("shapes") or {}
    for key in sorted(set(old_s) | set(new_s)):
      if old_s.get(key) != new_s.get(key):
        out.append(f"state{key} {old_s.get(key)} -> {new_s.get(key)}")
        break
  return out


def check_resume(saved: dict[str, Any], current: dict[str, Any], workdir: pathlib.Path) -> None:
  """ConfigError (one line) unless ``saved`` and ``current`` describe the same run."""
  changes = differences(saved, current)
  if changes:
    workdir = pathlib.Path(workdir)
    raise ConfigError(
      f"{workdir}: cannot resume, its checkpoints were trained on something else; "
      f"changed: {'; '.join(changes[:3])}{' ...' if len(changes) > 3 else ''}. To start "
      f"fresh use another --workdir, or delete {workdir / 'checkpoints'} and "
      f"{workdir / 'best'}"
    )
