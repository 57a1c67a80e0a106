r"""How long XLA:CPU takes to compile a BPR training run, from a cold process (issue #12).

Why: issue #12's cold-start target asks our BPR-MF, started in a fresh process on a
machine that has never compiled it, to reach Cornac's best test NDCG@10 on ML-100K in no
more time than Cornac's whole fit (0.84-1.11 s on the 2-core build VM). With the
compilation cache warm we do (0.70-0.84 s); on a first run we take 1.75-2.12 s. This
script measures where a first run's compile time goes and what the floor is, so the gap
can be judged against what any JAX program of this job would pay, not only ours.

Every case runs in its own fresh Python process (no compilation cache, nothing traced
before), ``--rounds`` times, alternating; medians and p25 are printed with the load:

* ``trivial``: ``jit(lambda x: x + 1)`` on a [943, 64] array: the fixed cost of a program.
* ``init_threefry`` / ``init_rbg``: a jitted init of two tables of ML-100K's shape
  (943 x 64, 1,682 x 64) from ``jax.random.normal``, with jax's default threefry PRNG
  and with ``jax_default_prng_impl=rbg`` (XLA's RngBitGenerator).
* ``minimal_bpr``: a 30-line hand-written BPR-SGD epoch (1 uniform negative with
  replacement, rows drawn by a counter hash with replacement, no exclusion of
  positives, no row-wise optimizer state, no metrics) as one ``fori_loop`` over 78
  steps of 1,024, plus the threefry init above; then 8 epochs run. The clock runs from
  the start of the process's work (after ``import jax``) to the 8th epoch's end: about
  the least a JAX program of this job can cost on this machine. Ids are random of
  ML-100K's size (compile time depends on shapes, not values).
* ``ours``: our trainer's two programs for the time-to-target run of
  ``bench_bpr_peers.py --parts target`` (ML-100K from the RecBole wheel copy, d=64, 4
  negatives drawn from each user's non-positives, rows shuffled without replacement,
  sparse rows, linear rate decay, metrics): the state init and the device-epoch loop,
  each lowered and compiled, with the loop's XLA compile split into its phases from a
  profiler trace (HLO passes, the fusion emitters, LLVM code generation).

  .venv/bin/python benchmarks/bench_compile_floor.py --rounds 3

The ``ours`` case reads ML-100K from the RecBole wheel's copy (``--recbole-dir``; fetch
it as bench_bpr_peers.py's docstring shows), or leave it out with ``--cases``.

Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import glob
import gzip
import json
import os
import pathlib
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
CASES = ("trivial", "init_threefry", "init_rbg", "minimal_bpr", "ours")
USERS, ITEMS, DIM, BATCH, ROWS = 943, 1682, 64, 1024, 80_808


def _args():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--rounds", type=int, default=3)
  p.add_argument("--cases", default=",".join(CASES))
  p.add_argument("--recbole-dir", default="/tmp/recbole_dl/recbole/dataset_example/ml-100k")
  p.add_argument("--child", default="", help=argparse.SUPPRESS)
  return p.parse_args()


def _timed_compile(fn, *args) -> tuple[object, float, float]:
  import jax

  t = time.perf_counter()
  lowered = jax.jit(fn).lower(*args)
  t1 = time.perf_counter()
  compiled = lowered.compile()
  return compiled, t1 - t, time.perf_counter() - t1


def _init_fn():
  import jax

  def init(key):
    k1, k2 = jax.random.split(key)
    return (
      0.01 * jax.random.normal(k1, (USERS, DIM)),
      0.01 * jax.random.normal(k2, (ITEMS, DIM)),
    )

  return init


def child_trivial() -> dict:
  import jax.numpy as jnp

  _, low, comp = _timed_compile(lambda x: x + 1, jnp.ones((USERS, DIM)))
  return {"lower_s": low, "compile_s": comp}


def child_init(prng: str) -> dict:
  import jax

  if prng != "threefry":
    jax.config.update("jax_default_prng_impl", prng)
  _, low, comp = _timed_compile(_init_fn(), jax.random.PRNGKey(0))
  return {"lower_s": low, "compile_s": comp}


def child_minimal_bpr() -> dict:
  import jax
  import jax.numpy as jnp
  import numpy as np

  t0 = time.perf_counter()
  steps = ROWS // BATCH

  def mix(x, k):  # murmur3's finaliser, as data/device_epoch.py uses
    x = x * jnp.uint32(0x9E3779B1) + k
    x = (x ^ (x >> 16)) * jnp.uint32(0x85EBCA6B)
    x = (x ^ (x >> 13)) * jnp.uint32(0xC2B2AE35)
    return x ^ (x >> 16)

  def epoch(p, q, users, items, e):
    def body(s, c):
      p, q = c
      j = s.astype(jnp.uint32) * BATCH + jnp.arange(BATCH, dtype=jnp.uint32)
      r = (mix(j, e) % ROWS).astype(jnp.int32)
      u, i = users[r], items[r]
      n = (mix(j, e + 7) % ITEMS).astype(jnp.int32)
      pu, qi, qn = p[u], q[i], q[n]
      g = jax.nn.sigmoid(-jnp.sum(pu * (qi - qn), -1))[:, None]
      p = p.at[u].add(0.05 * (g * (qi - qn) - 0.01 * pu))
      q = q.at[i].add(0.05 * (g * pu - 0.01 * qi)).at[n].add(0.05 * (-g * pu - 0.01 * qn))
      return p, q

    return jax.lax.fori_loop(0, steps, body, (p, q))

  rng = np.random.default_rng(0)
  users = jnp.asarray(rng.integers(0, USERS, ROWS), jnp.int32)
  items = jnp.asarray(rng.integers(0, ITEMS, ROWS), jnp.int32)
  init, ilow, icomp = _timed_compile(_init_fn(), jax.random.PRNGKey(0))
  p, q = init(jax.random.PRNGKey(0))
  loop, llow, lcomp = _timed_compile(epoch, p, q, users, items, jnp.uint32(0))
  t1 = time.perf_counter()
  for e in range(8):
    p, q = loop(p, q, users, items, jnp.uint32(e))
  jax.block_until_ready((p, q))
  t2 = time.perf_counter()
  return {
    "lower_s": ilow + llow,
    "compile_s": icomp + lcomp,
    "init_compile_s": icomp,
    "loop_compile_s": lcomp,
    "train_s": t2 - t1,
    "total_s": t2 - t0,
  }


def child_ours(recbole_dir: str) -> dict:
  import tempfile

  import jax
  import jax.numpy as jnp

  sys.path.insert(0, str(ROOT))
  sys.path.insert(0, str(ROOT / "benchmarks"))
  import bench_bpr_peers as peers

  from mmrec_jax import sharding

  with tempfile.TemporaryDirectory() as tmp:
    sys.argv = [sys.argv[0], f"--recbole-dir={recbole_dir}", f"--data-cache={tmp}/data"]
    args = peers._args()
    mesh = sharding.make_mesh()
    data, _ = peers.ml100k(args, args.data_cache)
    cfg = peers._target_config(args, data.users.size)
    task, epochs = peers.task_and_epochs(data, cfg, mesh)
    init = jax.jit(task.layout.init_fn, out_shardings=task.layout.shardings)
    t = time.perf_counter()
    lowered = init.lower(jax.random.PRNGKey(0))
    ilow = time.perf_counter() - t
    t = time.perf_counter()
    lowered.compile()
    icomp = time.perf_counter() - t
    loop = epochs._build_loop(task.step_fn, task.state_shardings, task.frozen)
    t = time.perf_counter()
    lowered = loop.lower(
      task.abstract_state(),
      epochs._ids,
      epochs._tables,
      task.frozen,
      jnp.int32(0),
      jnp.int32(1),
    )
    llow = time.perf_counter() - t
    trace_dir = pathlib.Path(tmp) / "trace"
    with jax.profiler.trace(str(trace_dir), create_perfetto_trace=True):
      t = time.perf_counter()
      compiled = lowered.compile()
      lcomp = time.perf_counter() - t
    phases = _compile_phases(trace_dir)
    fusions = compiled.as_text().count(" fusion(")
  return {
    "lower_s": ilow + llow,
    "compile_s": icomp + lcomp,
    "init_compile_s": icomp,
    "loop_compile_s": lcomp,
    "loop_fusions": fusions,  # fusion instructions in the compiled loop
    **phases,
  }


def _compile_phases(trace_dir: pathlib.Path) -> dict:
  """Wall time of the loop compile's phases, from XLA's own trace events."""
  files = glob.glob(f"{trace_dir}/**/*.trace.json.gz", recursive=True)
  if not files:
    return {}
  events = [e for e in json.load(gzip.open(files[0]))["traceEvents"] if e.get("ph") == "X"]

  def span(name):
    xs = [e for e in events if e["name"] == name]
    if not xs:
      return 0.0
    return (max(e["ts"] + e["dur"] for e in xs) - min(e["ts"] for e in xs)) / 1e6

  return {
    "hlo_passes_s": span("HLO passes through layout assignment (jit_many)")
    + span("HLO passes after layout assignment (jit_many)"),
    "fusion_emitters_s": span("FusionCompiler::Compile"),
    "llvm_codegen_s": span("JitCompiler::Compile"),
  }


def _run_child(case: str, a) -> dict:
  cmd = [sys.executable, str(pathlib.Path(__file__).resolve()), f"--child={case}"]
  cmd.append(f"--recbole-dir={a.recbole_dir}")
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=1")
  env.pop("JAX_COMPILATION_CACHE_DIR", None)
  out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
  if out.returncode:
    sys.exit(f"case {case} failed:\n{out.stderr[-3000:]}")
  return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
  a = _args()
  if a.child:
    fn = {
      "trivial": child_trivial,
      "init_threefry": lambda: child_init("threefry"),
      "init_rbg": lambda: child_init("rbg"),
      "minimal_bpr": child_minimal_bpr,
      "ours": lambda: child_ours(a.recbole_dir),
    }[a.child]
    print(json.dumps(fn()))
    return 0
  import numpy as np

  cases = [c for c in a.cases.split(",") if c]
  bad = set(cases) - set(CASES)
  if bad:
    sys.exit(f"--cases: unknown {sorted(bad)}; choose from {list(CASES)}")
  print(f"# load average before: {os.getloadavg()}")
  res: dict[str, list[dict]] = {c: [] for c in cases}
  for r in range(a.rounds):
    for c in cases:
      res[c].append(_run_child(c, a))
      print(f"  round {r} {c}: {res[c][-1]}", flush=True)
  print(f"# load average after: {os.getloadavg()}")
  keys = [
    "lower_s",
    "compile_s",
    "init_compile_s",
    "loop_compile_s",
    "hlo_passes_s",
    "fusion_emitters_s",
    "llvm_codegen_s",
    "loop_fusions",
    "train_s",
    "total_s",
  ]
  print("| case | " + " | ".join(keys) + " |")
  print("|---|" + "---:|" * len(keys))
  for c in cases:
    cells = []
    for k in keys:
      xs = [x[k] for x in res[c] if k in x]
      if not xs:
        cells.append("-")
      elif k == "loop_fusions":
        cells.append(str(int(np.median(xs))))
      else:
        cells.append(f"{np.median(xs):.3f} ({np.percentile(xs, 25):.3f})")
    print(f"| {c} | " + " | ".join(cells) + " |")
  print("cells: median (p25) over rounds, seconds; each round a fresh process per case")
  return 0


if __name__ == "__main__":
  sys.exit(main())
