#!/bin/bash
# Issue #12's second accelerator check as one prepared run: how a sparse step finds its
# distinct ids on the GPU (optim/sparse.py unique_ids: 'jnp' = jnp.unique's pair sort,
# 'sort_search' = a sort of the ids + binary search, the CPU default), alternating the
# two methods in fresh processes, two rounds, with optimizer.sparse_rows=unique (the
# mode in which every step sorts the item ids) and auto; then the graph models'
# per-epoch time on the ML-1M-shaped synthetic set. Same wheel carrying as
# gpu_roofline.sh:  bash benchmarks/gpu_unique_ab.sh [OUT_DIR]
set -o pipefail
OUT_DIR=${1:-${OUT:-/tmp/unique_ab_out}}
ITEMS=${ITEMS:-59047,10000000}
BATCHES=${BATCHES:-65536,1048576}
INTER=${INTER:-20100000}
GRAPH_STEPS=${GRAPH_STEPS:-20}
source "$(dirname "$0")/gpu_env.sh"
PY=${PY:-python3}
for r in 1 2; do
  for m in jnp sort_search; do
    for rows in unique auto; do
      echo "## round $r, unique $m, sparse_rows $rows" | tee -a "$OUT_DIR/unique_ab.txt"
      $PY benchmarks/bench_roofline.py --unique $m --sparse-rows $rows --items "$ITEMS" \
        --batches "$BATCHES" --interactions "$INTER" --copy-gib 1 2>&1 \
        | grep -v "^WARNING\|^I0000\|^W0000" | tee -a "$OUT_DIR/unique_ab.txt"
    done
  done
done
uptime | tee -a "$OUT_DIR/gpu.txt"
$PY benchmarks/bench_graph.py --datasets synthetic-ml1m --steps "$GRAPH_STEPS" 2>&1 \
  | tee "$OUT_DIR/graph.txt"
uptime | tee -a "$OUT_DIR/gpu.txt"
