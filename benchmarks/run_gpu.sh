#!/usr/bin/env bash
# One call on a GPU machine (see ../shared/PLATFORM.md): build, GPU tests, benchmark.
#   bash benchmarks/run_gpu.sh [tests|bench|all] [extra benchmark args...]
# BENCH names the benchmark (default softlabel_proj: benchmarks/bench_$BENCH.py);
# TESTS the test paths (default tests), TEST_K a pytest -k filter.
# Logs and results go under $OUT (default /tmp/sgan_fast_out).
# BENCH=train (bench_train.py, training throughput): compiles take minutes, so run one case
# per call with the bench stage, e.g. `BENCH=train bash benchmarks/run_gpu.sh bench --cases
# biggan32`, then `... --cases biggan128`; it stops at CALL_S (default 600) less 30 s from
# this script's start, with the rows measured by then in $OUT/bench.csv and $OUT/table.md.
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
if [ "${BENCH:-}" = train ] && { [ "$stage" = bench ] || [ "$stage" = all ]; }; then
    left=$(( ${CALL_S:-600} - 30 - ($(date +%s) - t0) ))
    [ "$left" -gt 60 ] || left=60
    echo "bench_train: up to $left s"
    timeout -k 10 "$left" $PY benchmarks/bench_train.py --out "$OUT/bench.csv" --md "$OUT/table.md" \
        "$@" > "$OUT/bench.log" 2>&1
    echo "bench rc=$?"; grep -E "^  |^#" "$OUT/bench.log" | tail -12; cat "$OUT/table.md" 2>/dev/null
elif [ "$stage" = bench ] || [ "$stage" = all ]; then
    $PY benchmarks/bench_${BENCH:-softlabel_proj}.py --csv "$OUT/bench.csv" --md "$OUT/table.md" "$@" \
        > "$OUT/bench.log" 2>&1
    echo "bench rc=$?"; tail -5 "$OUT/bench.log"; cat "$OUT/table.md"
fi
exit $rc
