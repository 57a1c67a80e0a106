# Sourced by the GPU run scripts (gpu_roofline.sh, gpu_unique_ab.sh) after OUT_DIR is set:
# installs the carried wheels (.whl/: grain, ml_collections, which the device image lacks)
# unless NO_WHEELS is set, puts the repository on PYTHONPATH, and writes the GPU and the
# load to $OUT_DIR/gpu.txt.
mkdir -p "$OUT_DIR"
if [ -z "$NO_WHEELS" ] && ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.mem,driver_version --format=csv \
  2>&1 | tee "$OUT_DIR/gpu.txt"
uptime | tee -a "$OUT_DIR/gpu.txt"
