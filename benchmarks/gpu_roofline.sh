#!/bin/bash
# The accelerator checks of issue #12 as one prepared run (benchmarks/README.md quotes it).
# On a GPU machine whose image has jax[cuda], flax, optax and orbax but not grain or
# ml_collections: carry their wheels in .whl/ (see the device notes) and run
#   bash benchmarks/gpu_roofline.sh [OUT_DIR]
set -o pipefail
OUT_DIR=${1:-${OUT:-/tmp/roofline_out}}
source "$(dirname "$0")/gpu_env.sh"
export JAX_PLATFORMS=${JAX_PLATFORMS:-cuda}
python3 benchmarks/bench_roofline.py 2>&1 | tee "$OUT_DIR/roofline.txt"
python3 benchmarks/bench_step.py --items 100000,10000000 --no-dense --warmup 30 --rounds 6 \
  --steps 10 2>&1 | tee "$OUT_DIR/step.txt"
python3 benchmarks/bench_bpr_peers.py --parts epoch25m,epoch25m_two_tower 2>&1 \
  | tee "$OUT_DIR/epoch25m.txt"
uptime | tee -a "$OUT_DIR/gpu.txt"
