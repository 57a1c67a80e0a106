#!/bin/bash
# The accelerator checks of issue #12 as one prepared run (benchmarks/README.md quotes it).
# On a GPU machine whose image has jax[cuda], flax, optax and orbax but not grain or
# ml_collections: carry their wheels in .whl/ (see the device notes) and run
#   bash benchmarks/gpu_roofline.sh [OUT_DIR]
set -o pipefail
OUT_DIR=${1:-${OUT:-/tmp/roofline_out}}
mkdir -p "$OUT_DIR"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 JAX_PLATFORMS=${JAX_PLATFORMS:-cuda}
nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.mem,driver_version --format=csv \
  2>&1 | tee "$OUT_DIR/gpu.txt"
uptime | tee -a "$OUT_DIR/gpu.txt"
python3 benchmarks/bench_roofline.py 2>&1 | tee "$OUT_DIR/roofline.txt"
python3 benchmarks/bench_step.py --items 100000,10000000 --no-dense --warmup 30 --rounds 6 \
  --steps 10 2>&1 | tee "$OUT_DIR/step.txt"
python3 benchmarks/bench_bpr_peers.py --parts epoch25m,epoch25m_two_tower 2>&1 \
  | tee "$OUT_DIR/epoch25m.txt"
uptime | tee -a "$OUT_DIR/gpu.txt"
