#!/usr/bin/env bash
# One call on a GPU machine (see ../shared/PLATFORM.md): build, GPU tests, benchmark.
#   bash benchmarks/run_gpu.sh [tests|bench|all] [extra benchmark args...]
# BENCH names the benchmark (default softlabel_proj: benchmarks/bench_$BENCH.py);
# TESTS the test paths (default tests), TEST_K a pytest -k filter.
# Logs and results go under $OUT (default /tmp/sgan_fast_out).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/sgan_fast_out}
mkdir -p "$OUT"
stage=${1:-all}
shift || true
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0} MAX_JOBS=${MAX_JOBS:-16}
export CUDA_HOME=${CUDA_HOME:-/usr/local/cuda} SGAN_FAST_CUDA=1 PYTHONUNBUFFERED=1
PY=${PY:-python3}
{ nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
  $PY -c "import sys, torch, triton; print(sys.version.split()[0], torch.__version__, torch.version.cuda, triton.__version__)"
  date -u; } | tee "$OUT/env.txt"
t0=$(date +%s)
if ! $PY -m pip install --no-build-isolation --no-deps -e . > "$OUT/build.log" 2>&1; then
    tail -60 "$OUT/build.log"; echo "BUILD FAILED"; exit 1
fi
echo "build: $(( $(date +%s) - t0 )) s"
$PY -m sgan_fast.cli info | tee "$OUT/info.txt"
rc=0
if [ "$stage" = tests ] || [ "$stage" = all ]; then
    t1=$(date +%s)
    timeout ${TEST_TIMEOUT:-360} $PY -m pytest -q -m gpu ${TESTS:-tests} ${TEST_K:+-k "$TEST_K"} \
        -p no:cacheprovider 2>&1 | tee "$OUT/gpu_tests.log" | tail -40
    rc=${PIPESTATUS[0]}
    echo "gpu tests: rc=$rc, $(( $(date +%s) - t1 )) s"
fi
if [ "$stage" = bench ] || [ "$stage" = all ]; then
    $PY benchmarks/bench_${BENCH:-softlabel_proj}.py --csv "$OUT/bench.csv" --md "$OUT/table.md" "$@" \
        > "$OUT/bench.log" 2>&1
    echo "bench rc=$?"; tail -5 "$OUT/bench.log"; cat "$OUT/table.md"
fi
exit $rc
