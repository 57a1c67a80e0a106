"""What a run shows its user: JSONL + TensorBoard metrics, results.json, a curve PNG, a table.

Only process 0 writes (multi-host runs would otherwise write N copies).
"""

from __future__ import annotations

import json
import pathlib
from collections.abc import Mapping
from typing import Any

import jax

from mmrec_jax import io_utils


def write_json_atomic(path: pathlib.Path, obj: Any) -> None:
  """Writes a run's JSON (sorted keys) via a temp file + rename: never half a file."""
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  io_utils.atomic_write_json(path, obj, indent=2, sort_keys=True)


class MetricsWriter:
  """Appends metrics rows to ``metrics.jsonl`` and TensorBoard event files."""

  def __init__(self, workdir: pathlib.Path, resume_step: int = 0):
    self.enabled = jax.process_index() == 0
    self.path = pathlib.Path(workdir) / "metrics.jsonl"
    self._tb = None
    if not self.enabled:
      return
    self.path.parent.mkdir(parents=True, exist_ok=True)
    # On resume, rows logged after the restored step belong to the lost timeline, and
    # the final rows of an interrupted final report are written again. Rewritten
    # atomically: a kill here leaves the old file, and a torn last line (a kill mid-
    # append) is dropped instead of failing every later run.
    if self.path.exists():
      rows = [
        r
        for r in self._read_tolerant(self.path)
        if r.get("step", 0) <= resume_step and not str(r.get("kind", "")).startswith("final_")
      ]
      io_utils.atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in rows))
    try:
      from tensorboardX import SummaryWriter  # noqa: PLC0415

      self._tb = SummaryWriter(str(pathlib.Path(workdir) / "tensorboard"))
    except ImportError:  # TensorBoard files are a nicety; JSONL is the record.
      self._tb = None

  @staticmethod
  def _read_tolerant(path: pathlib.Path) -> list[dict]:
    rows = []
    with open(path, encoding="utf-8", errors="replace") as f:
      for line in f:
        try:
          row = json.loads(line)
        except ValueError:
          continue
        if isinstance(row, dict):
          rows.append(row)
    return rows

  @staticmethod
  def read(path: pathlib.Path) -> list[dict]:
    with open(path) as f:
      return [json.loads(line) for line in f if line.strip()]

  def write(self, step: int, kind: str, values: Mapping[str, float]) -> None:
    if not self.enabled:
      return
    row = {"step": int(step), "kind": kind, **{k: float(v) for k, v in values.items()}}
    with open(self.path, "a") as f:
      f.write(json.dumps(row) + "\n")
    if self._tb is not None:
      for k, v in values.items():
        self._tb.add_scalar(f"{kind}/{k}", float(v), int(step))

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()


def plot_learning_curves(metrics_path: pathlib.Path, out_png: pathlib.Path, metric: str) -> None:
  """Training loss and the validation selection metric against steps."""
  import matplotlib  # noqa: PLC0415

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # noqa: PLC0415

  rows = MetricsWriter.read(metrics_path) if pathlib.Path(metrics_path).exists() else []
  train = [(r["step"], r["loss"]) for r in rows if r["kind"] == "train" and "loss" in r]
  valid = [(r["step"], r[metric]) for r in rows if r["kind"] == "valid" and metric in r]
  fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
  if train:
    axes[0].plot(*zip(*train))
  axes[0].set(title="training loss", xlabel="step")
  if valid:
    axes[1].plot(*zip(*valid), marker="o")
  axes[1].set(title=f"validation {metric}", xlabel="step")
  fig.tight_layout()
  try:
    with io_utils.atomic_path(out_png) as tmp:
      fig.savefig(tmp, dpi=100)
  finally:
    plt.close(fig)


def metrics_table(results: Mapping[str, Mapping[str, float]]) -> str:
  """A Markdown table: one row per split, one column per metric."""
  splits = [s for s in ("valid", "test") if s in results]
  cols = sorted(
    {k for s in splits for k in results[s]},
    key=lambda k: (
      k.split("@")[0],
      int(k.split("@")[1]) if "@" in k and k.split("@")[1].isdigit() else 0,
    ),
  )
  lines = ["| split | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
  for s in splits:
    lines.append(
      f"| {s} | " + " | ".join(f"{results[s].get(c, float('nan')):.4f}" for c in cols) + " |"
    )
  return "\n".join(lines)
