"""Compile-only check of the ml25m train step on 64 fake devices (a TPU v4-128 / 8x8 GPUs).

Nothing of ml25m's size is allocated: the state is ``Task.abstract_state()``
(ShapeDtypeStructs with shardings) and the batch ``Task.abstract_batch``; the step is
lowered and compiled with ``jax.jit(...).lower(...).compile()`` (maxtext's habit). Only the
frozen text-feature table is concrete (``Task`` places it on device); it uses a small
width here (FEATURE_DIM) -- the width changes one dense layer and the feature table's
bytes, not the sharding of the step.

Checked:
  * the step compiles for a ('data'=64, 'model'=1) mesh over 64 devices;
  * the compiled HLO has no all-gather whose result has the rows of a whole embedding
    table or optimizer-state table (a table gathered onto every device would need
    162,560 x 64 x 4 B = 41.6 MB on every device for the user table, and defeat the sharding);
  * per-device bytes of every table (from ``sharding.shard_shape``) equal the table's
    bytes / 64 within 1% (row padding to a multiple of 256 rows adds <= 0.2%).
The device count is fixed per process, so the check runs in a subprocess
(``python tests/test_compile_64.py`` prints its measurements as JSON).
"""

from __future__ import annotations

import importlib.util
import json
import os
import pathlib
import re
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parent.parent
NUM_DEVICES = 64
NUM_USERS, NUM_ITEMS = 162_541, 59_047  # MovieLens-25M after the rating >= 4 filter
FEATURE_DIM = 32
# "f32[162560,64]{1,0} all-gather(" or "(f32[..], f32[..]) all-gather-start(".
_ALL_GATHER = re.compile(r"=\s*(\(?[^=]*?\)?)\s+all-gather(?:-start)?\(")
_SHAPE = re.compile(r"([a-z]+[0-9]*)\[([0-9,]*)\]")


def load_config(path: pathlib.Path, arg: str | None = None):
  spec = importlib.util.spec_from_file_location(path.stem, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def all_gather_shapes(hlo: str) -> list[tuple[str, tuple[int, ...]]]:
  """(dtype, shape) of every all-gather result in an HLO module's text."""
  out = []
  for m in _ALL_GATHER.finditer(hlo):
    for dtype, dims in _SHAPE.findall(m.group(1)):
      out.append((dtype, tuple(int(d) for d in dims.split(",") if d)))
  return out


def probe(feature_dim: int = FEATURE_DIM) -> dict:
  """Compiles the ml25m step for this process's devices; returns the measurements.

  ``python tests/test_compile_64.py [FEATURE_DIM]`` with XLA_FLAGS setting N CPU devices
  gives the per-device figures of docs/cloud.md for N devices.
  """
  import jax
  import numpy as np

  from mmrec_jax import sharding
  from mmrec_jax.step import DataInfo, Task

  config = load_config(REPO / "experiments" / "ml25m.py")
  mesh = sharding.make_mesh(config.mesh.data, config.mesh.model)
  info = DataInfo(
    num_users=NUM_USERS,
    num_items=NUM_ITEMS,
    features={"text": np.zeros((NUM_ITEMS, feature_dim), np.float32)},
    feature_masks={"text": np.ones((NUM_ITEMS,), bool)},
    item_counts=np.ones((NUM_ITEMS,), np.int64),
  )
  task = Task(config, info, mesh)
  state = task.abstract_state()
  # The step's own jit (explicit in/out shardings), lowered on abstract state and batch;
  # the frozen feature table is its third argument.
  compiled = task.lower_train_step(config.input.batch_size, config.input.num_negatives).compile()
  hlo = compiled.as_text()

  # Negative control: replicating the user table must show up as a whole-table all-gather,
  # so the parser below cannot pass by matching nothing.
  user_table = state["params"]["tables"]["user_embed"]["embedding"]
  control = (
    jax.jit(lambda t: t * 2, out_shardings=sharding.replicated(mesh))
    .lower(user_table)
    .compile()
    .as_text()
  )

  leaves = []
  for path, leaf in jax.tree_util.tree_leaves_with_path(state):
    shard = leaf.sharding.shard_shape(leaf.shape)
    itemsize = np.dtype(leaf.dtype).itemsize
    leaves.append(
      {
        "path": jax.tree_util.keystr(path),
        "shape": list(leaf.shape),
        "dtype": str(np.dtype(leaf.dtype)),
        "bytes": int(np.prod(leaf.shape)) * itemsize,
        "per_device_bytes": int(np.prod(shard)) * itemsize,
      }
    )
  mem = compiled.memory_analysis()
  memory = {
    k: int(getattr(mem, k))
    for k in (
      "argument_size_in_bytes",
      "output_size_in_bytes",
      "temp_size_in_bytes",
      "alias_size_in_bytes",
      "generated_code_size_in_bytes",
    )
    if hasattr(mem, k)
  }
  return {
    "devices": jax.device_count(),
    "mesh": dict(mesh.shape),
    "padded_users": task.padded_users,
    "padded_items": task.padded_items,
    "batch_size": config.input.batch_size,
    "feature_dim": feature_dim,
    "leaves": leaves,
    "all_gathers": all_gather_shapes(hlo),
    "control_all_gathers": all_gather_shapes(control),
    "hlo_all_gather_count": hlo.count("all-gather"),
    "memory": memory,
  }


def run_probe() -> dict:
  env = {
    **os.environ,
    "JAX_PLATFORMS": "cpu",
    "XLA_FLAGS": f"--xla_force_host_platform_device_count={NUM_DEVICES}",
  }
  out = subprocess.run(
    [sys.executable, str(pathlib.Path(__file__).resolve())],
    capture_output=True,
    text=True,
    env=env,
    timeout=600,
    check=False,
  )
  assert out.returncode == 0, out.stderr[-4000:]
  return json.loads(out.stdout.strip().splitlines()[-1])


def test_all_gather_parser():
  hlo = (
    "  %ag = f32[162560,64]{1,0} all-gather(f32[2544,64]{1,0} %p), dimensions={0}\n"
    "  %s = (f32[8,4]{1,0}, s32[16]{0}) all-gather-start(%a, %b)\n"
    "  %x = f32[4]{0} all-reduce(%y)\n"
  )
  assert all_gather_shapes(hlo) == [("f32", (162560, 64)), ("f32", (8, 4)), ("s32", (16,))]


def test_ml25m_step_compiles_sharded_on_64_devices():
  r = run_probe()
  assert r["devices"] == NUM_DEVICES and r["mesh"] == {"data": 64, "model": 1}
  table_rows = {r["padded_users"], r["padded_items"]}
  tables = [l for l in r["leaves"] if l["shape"] and l["shape"][0] in table_rows]
  # The user and item tables, their optimizer state (row-wise Adagrad: one float per row).
  assert {tuple(l["shape"]) for l in tables} >= {
    (r["padded_users"], 64),
    (r["padded_items"], 64),
    (r["padded_users"],),
    (r["padded_items"],),
  }
  for l in tables:
    assert l["per_device_bytes"] * NUM_DEVICES == l["bytes"], l  # evenly cut
    real_rows = NUM_USERS if l["shape"][0] == r["padded_users"] else NUM_ITEMS
    real_bytes = l["bytes"] * real_rows / l["shape"][0]
    assert abs(l["per_device_bytes"] - real_bytes / NUM_DEVICES) <= 0.01 * real_bytes / 64, l
  # No all-gather rebuilds a whole table (or optimizer-state table) on a device.
  assert [["f32", [r["padded_users"], 64]]] == r["control_all_gathers"]
  whole = [(dt, s) for dt, s in r["all_gathers"] if s and s[0] in table_rows]
  assert not whole, f"all-gathers of whole tables: {whole}"
  # Everything that is not a table is small (dense layers, counters): replicated is fine.
  small = [l for l in r["leaves"] if l not in tables]
  assert sum(l["per_device_bytes"] for l in small) < 2 << 20, small


if __name__ == "__main__":
  print(json.dumps(probe(*(int(a) for a in sys.argv[1:2]))))
