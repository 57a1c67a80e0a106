"""Per-epoch training time of the graph models on MovieLens-100K and ML-1M-sized data.

For each (dataset, model): prepare the dataset of the experiment config, build the Task
(this includes the on-device kNN item graphs; its time is reported as ``setup_s``), feed
real batches from the trainer's step source (``loop.steps.make_step_source``: epochs made
on device on one CPU device, else the grain pipeline; the ``input`` column says which), run
``--warmup`` steps (compilation), then time ``--steps`` steps as one run ended with
``block_until_ready``. ``epoch_s`` = steps per epoch x mean step time (an epoch of ML-1M-sized data on a shared 2-core CPU is minutes, so it is
extrapolated from the timed steps, never hard-coded).

  .venv/bin/python benchmarks/bench_graph.py                          # both datasets
  .venv/bin/python benchmarks/bench_graph.py --datasets ml100k --models lightgcn,freedom
  .venv/bin/python benchmarks/bench_graph.py --propagation segment --batch 2048

Prints Markdown table rows.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

DATASETS = {
  # name -> (config file, variant, data.modalities for the multimodal models)
  "ml100k": ("experiments/ml100k_graph.py", None, ("text",)),
  "synthetic-ml1m": ("experiments/synthetic.py", None, ("text", "image")),
}


def _args():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--datasets", default="ml100k,synthetic-ml1m")
  p.add_argument("--models", default="lightgcn,freedom")
  p.add_argument("--warmup", type=int, default=3)
  p.add_argument("--steps", type=int, default=10)
  p.add_argument("--propagation", default="auto", help="model.propagation (see graph/propagation)")
  p.add_argument("--batch", type=int, default=0, help="input.batch_size (0 = the config's)")
  return p.parse_args()


def _run(source, task, state, done: int, n: int):
  """``n`` steps from position ``done``; returns (state, seconds, new position)."""
  import jax

  t = time.perf_counter()
  end = done + n
  while done < end:
    state, metrics, k = source.advance(task, state, end)
    done += k
  jax.block_until_ready((state, metrics))
  return state, time.perf_counter() - t, done


def main() -> int:
  a = _args()
  import importlib.util

  import jax
  import numpy as np
  from ml_collections import config_flags  # noqa: F401

  from mmrec_jax import sharding, train
  from mmrec_jax.data import pipeline as pipeline_lib
  from mmrec_jax.data import prepare as prepare_lib
  from mmrec_jax.loop.steps import make_step_source
  from mmrec_jax.models import registry
  from mmrec_jax.step import Task

  print(f"devices: {jax.device_count()} x {jax.devices()[0].platform}")
  print(
    "| dataset | model | propagation | users | items | train edges | batch | steps/epoch "
    "| setup_s | ms/step | epoch_s | load | input |"
  )
  print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
  for dname in a.datasets.split(","):
    path, variant, mods = DATASETS[dname]
    spec = importlib.util.spec_from_file_location("cfg", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    for model in a.models.split(","):
      c = mod.get_config(variant)
      c.unlock()
      c.model.name = model
      c.data.modalities = registry.model_modalities(model, mods)
      c.model.propagation = a.propagation
      if a.batch:
        c.input.batch_size = a.batch
      c.lock()
      ds = prepare_lib.prepare(c.data)
      ds, modalities = train.resolve_modalities(ds, c)
      mesh = sharding.make_mesh(c.mesh.data, c.mesh.model)
      info = train.build_data_info(ds, c, modalities)
      t0 = time.perf_counter()
      task = Task(c, info, mesh)
      state = task.init(0)
      jax.block_until_ready(state)
      setup = time.perf_counter() - t0
      pipe = pipeline_lib.make_train_pipeline(
        ds.split("train"), ds.num_users, ds.num_items, c.input, seed=0
      )
      # The trainer's own step source (input.device_epochs: epochs made on device on one
      # CPU device, else the grain pipeline): the warm-up steps in one run, then the
      # timed steps in one run (one jitted call on device epochs).
      source = make_step_source(c, task, pipe, mesh)
      state, _, done = _run(source, task, state, 0, a.warmup)
      state, secs, _ = _run(source, task, state, done, a.steps)
      ms = 1000 * secs / a.steps
      n_edges = int(
        np.unique(
          np.asarray(info.train_users, np.int64) * ds.num_items + np.asarray(info.train_items)
        ).size
      )
      print(
        f"| {dname} | {model} | {task.frozen['graph']['ui'].method} | {ds.num_users} | "
        f"{ds.num_items} | {n_edges} | {c.input.batch_size} | {pipe.steps_per_epoch} | "
        f"{setup:.1f} | {ms:.3g} | {pipe.steps_per_epoch * ms / 1000:.3g} | "
        f"{os.getloadavg()[0]:.2f} | {'device epochs' if source.chunked else 'grain'} |",
        flush=True,
      )
  return 0


if __name__ == "__main__":
  sys.exit(main())
