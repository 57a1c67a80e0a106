r"""Comparison runner: models x modality sets on one prepared dataset, one command.

  python -m mmrec_jax.compare --config=experiments/ml100k.py \
      --runs=bpr_mf,vbpr:text,two_tower,two_tower:text --baseline=bpr_mf \
      --workdir=runs/compare_ml100k [--config.train.num_epochs=...]

A run spec is ``model[:modality+modality]``; ``model:`` (empty) means IDs only and a bare
``model`` keeps the experiment's modalities. Each run trains in ``<workdir>/<run name>``
through :func:`mmrec_jax.train.train_and_evaluate` (so runs resume, and finished ones are
reused); model selection uses the validation split only and the test split is scored once
per finished model. Outputs in ``<workdir>``: ``comparison.md``, ``comparison.csv`` (mean of
each test metric, paired t-test and Wilcoxon p-values per user against the baseline,
training time and time per epoch), ``metrics.png`` (bars) and ``curves.png`` (validation curves).
"""

from __future__ import annotations

import csv
import io
import json
import pathlib
import sys
from collections.abc import Sequence

import numpy as np
from absl import app, flags
from ml_collections import config_flags

from mmrec_jax import (
  distributed,
  io_utils,
)
from mmrec_jax.errors import ConfigError
from mmrec_jax.evaluation.stats import paired_tests
from mmrec_jax.models import registry

FLAGS = flags.FLAGS


def define_flags() -> None:
  """Registers the command's flags in absl's global registry (``--config``, ``--runs``, ...).

  Called only when the module runs as the command, never at import: absl keeps one process-wide
  flag registry, so defining ``--config`` at import time made importing this module next to any
  other command module that also defines ``--config`` (``benchmarks/cross_validate.py``,
  ``mmrec_jax.main``) fail with ``DuplicateFlagError``.
  """
  config_flags.DEFINE_config_file("config", None, "Base experiment config file.", lock_config=True)
  flags.DEFINE_string("workdir", None, "Directory for the runs and the comparison table.")
  flags.DEFINE_list("runs", None, "Run specs: model[:mod+mod], e.g. bpr_mf,two_tower:text")
  flags.DEFINE_string(
    "baseline", None, "Run name the significance tests compare against (default: the first run)."
  )
  flags.DEFINE_string("split", "test", "Split whose metrics the table reports.")


def _baseline_name(names: Sequence[str], baseline: str | None) -> str | None:
  if baseline is None:
    return names[0] if names else None
  return next((n for n in names if n == baseline or n.split("-")[0] == baseline), None)


def check_runs(
  specs: Sequence[str], default_modalities: Sequence[str], baseline: str | None
) -> list[tuple[str, str, tuple[str, ...]]]:
  """Parses every run spec and checks the baseline; ValueError in one line otherwise."""
  if not specs:
    raise ValueError("--runs is empty: give model[:mod+mod] specs, e.g. bpr_mf,two_tower:text")
  parsed, names = [], []
  for spec in specs:
    try:
      name, model, modalities = parse_run(spec, default_modalities)
    except ConfigError as e:  # an unknown model name (the registry lists the valid ones)
      raise ValueError(f"--runs: {spec!r}: {e}") from None
    if name in names:
      raise ValueError(f"--runs: {spec!r} repeats run {name}")
    parsed.append((name, model, modalities))
    names.append(name)
  if _baseline_name(names, baseline) is None:
    raise ValueError(f"--baseline={baseline!r} is not one of the runs {names}")
  return parsed


def parse_run(spec: str, default_modalities: Sequence[str]) -> tuple[str, str, tuple[str, ...]]:
  """'two_tower:text+image' -> (run name, model, modalities)."""
  model, sep, mods = spec.partition(":")
  if not model:
    raise ValueError(f"--runs: empty model name in {spec!r}")
  modalities = tuple(m for m in mods.split("+") if m) if sep else tuple(default_modalities)
  modalities = registry.model_modalities(model, modalities)
  name = model + ("-" + "+".join(modalities) if modalities else "-ids")
  return name, model, modalities


def epoch_seconds(result: dict, run_dir: pathlib.Path, num_train: int | None) -> float:
  """Seconds per training epoch of a finished run.

  ``results.json`` has it since ``epoch_seconds`` was added; for older runs it is derived
  from the training time per step and ``num_train // batch_size`` steps per epoch (the
  pipeline's definition), with the batch size from the run's ``config.json``.
  """
  if "epoch_seconds" in result:
    return float(result["epoch_seconds"])
  cfg_path = run_dir / "config.json"
  if num_train is None or not cfg_path.exists() or not result.get("steps"):
    return float("nan")
  batch = json.loads(cfg_path.read_text())["input"]["batch_size"]
  return float(result["train_seconds"]) / result["steps"] * (num_train // batch)


def build_table(
  runs: dict[str, pathlib.Path], baseline: str, split: str, num_train: int | None = None
) -> tuple[list[str], list[list]]:
  """Rows of the comparison: metric means, p-values vs baseline, training time."""
  results = {n: json.loads((d / "results.json").read_text()) for n, d in runs.items()}
  per_user = {n: dict(np.load(d / f"per_user_{split}.npz")) for n, d in runs.items()}
  metrics = sorted(results[baseline][split])
  key = next((m for m in metrics if m.startswith("ndcg")), metrics[0])
  header = (
    ["run"] + metrics + [f"p_ttest({key})", f"p_wilcoxon({key})", "train_s", "epoch_s", "best_step"]
  )
  rows = []
  base_u = per_user[baseline]
  for name in runs:
    r = results[name]
    row: list = [name] + [r[split][m] for m in metrics]
    if name == baseline:
      row += ["-", "-"]
    else:
      pu = per_user[name]
      if not np.array_equal(pu["users"], base_u["users"]):
        raise ValueError(f"runs {name} and {baseline} were evaluated on different users")
      tests = paired_tests(pu[key], base_u[key])
      row += [tests["t_pvalue"], tests["wilcoxon_pvalue"]]
    row += [
      r.get("train_seconds", float("nan")),
      epoch_seconds(r, runs[name], num_train),
      r.get("best_step", -1),
    ]
    rows.append(row)
  return header, rows


def _fmt(v) -> str:
  if isinstance(v, float):
    return f"{v:.3g}" if v < 1e-3 and v != 0 else f"{v:.4f}"
  return str(v)


def write_outputs(
  workdir: pathlib.Path,
  header: list[str],
  rows: list[list],
  runs: dict[str, pathlib.Path],
  selection_metric: str,
  title: str,
) -> None:
  """comparison.md / .csv, metric bars and validation curves (atomic writes)."""
  md = [f"# {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  md += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in rows]
  md += [
    "",
    "p-values: two-sided paired tests over users against the baseline "
    "(first row marked '-'). Test split scored once per model, on the checkpoint "
    "with the best validation metric.",
  ]
  io_utils.atomic_write_text(workdir / "comparison.md", "\n".join(md) + "\n")
  buf = io.StringIO()
  w = csv.writer(buf)
  w.writerow(header)
  w.writerows(rows)
  io_utils.atomic_write_text(workdir / "comparison.csv", buf.getvalue())

  import matplotlib  # noqa: PLC0415

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # noqa: PLC0415

  metric_cols = [i for i, h in enumerate(header) if "@" in h and not h.startswith("p_")]
  fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(metric_cols)), 4))
  width = 0.8 / max(1, len(rows))
  for j, row in enumerate(rows):
    ax.bar(
      np.arange(len(metric_cols)) + j * width, [row[i] for i in metric_cols], width, label=row[0]
    )
  ax.set_xticks(np.arange(len(metric_cols)) + 0.4 - width / 2)
  ax.set_xticklabels([header[i] for i in metric_cols], rotation=30)
  ax.legend(fontsize=8)
  ax.set_title(title)
  fig.tight_layout()
  fig.savefig(workdir / "metrics.png", dpi=100)
  plt.close(fig)

  fig, ax = plt.subplots(figsize=(6, 4))
  for name, d in runs.items():
    pts = []
    with open(d / "metrics.jsonl") as f:
      for line in f:
        r = json.loads(line)
        if r.get("kind") == "valid" and selection_metric in r:
          pts.append((r["step"], r[selection_metric]))
    if pts:
      ax.plot(*zip(*pts), marker="o", label=name)
  ax.set(xlabel="step", ylabel=f"validation {selection_metric}", title="learning curves")
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(workdir / "curves.png", dpi=100)
  plt.close(fig)


def run_comparison(
  config,
  specs: Sequence[str],
  workdir: str | pathlib.Path,
  baseline: str | None = None,
  split: str = "test",
) -> pathlib.Path:
  """Trains every run spec and writes the comparison; returns the Markdown path."""
  from mmrec_jax import train  # noqa: PLC0415

  workdir = pathlib.Path(workdir)
  # Every argument is checked before the first run trains (a typo in --baseline used to
  # surface only after training all the runs).
  parsed = check_runs(specs, config.data.modalities, baseline)
  workdir.mkdir(parents=True, exist_ok=True)
  runs: dict[str, pathlib.Path] = {}
  for name, model, modalities in parsed:
    cfg = config.copy_and_resolve_references()
    cfg.unlock()
    cfg.model.name = model
    cfg.data.modalities = modalities
    cfg.lock()
    run_dir = workdir / name
    if not (run_dir / "results.json").exists():
      res = train.train_and_evaluate(cfg, run_dir)
      if res.get("status") != "finished":
        raise RuntimeError(f"run {name} did not finish ({res.get('status')}); rerun to resume")
    runs[name] = run_dir
  base = _baseline_name(list(runs), baseline)
  from mmrec_jax.data import prepare as prepare_lib  # noqa: PLC0415

  num_train = len(prepare_lib.prepare(config.data).split("train").users)
  header, rows = build_table(runs, base, split, num_train)
  dataset = config.data.source + (
    f" {config.data.variant}" if config.data.source == "movielens" else ""
  )
  title = f"{dataset}: {split} metrics (baseline {base})"
  write_outputs(workdir, header, rows, runs, config.train.selection_metric, title)
  return workdir / "comparison.md"


def main(argv) -> int:
  del argv
  distributed.initialize_from_flags()
  if not FLAGS.runs or not FLAGS.workdir:
    print("error: --runs and --workdir are required", file=sys.stderr)
    return 2
  from mmrec_jax.errors import MmrecError  # noqa: PLC0415

  try:
    check_runs(FLAGS.runs, FLAGS.config.data.modalities, FLAGS.baseline)
    path = run_comparison(FLAGS.config, FLAGS.runs, FLAGS.workdir, FLAGS.baseline, FLAGS.split)
  except MmrecError as e:
    print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
    return e.exit_code
  except ValueError as e:  # run specs and baseline (check_runs)
    print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
    return 2
  print(path.read_text())
  return 0


if __name__ == "__main__":
  define_flags()
  app.run(lambda argv: sys.exit(main(argv)))
