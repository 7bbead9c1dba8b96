#!/usr/bin/env bash
# The GPU machine's software stack checked on this CPU, before a GPU session spends its
# minutes on it: the lent H100/H200 runs torch 2.11 and triton 3.6, this machine's venv
# torch 2.14 and triton 3.8, and an API that moved between them fails only there.
#
#   bash tools/gpu_stack_check.sh        # or: make gpu-stack-check
#
# In build/gpu_stack/: a venv with that torch and triton (PyPI's CUDA 13.0 builds,
# ~4 GB the first time), a copy of the working tree, fastgan._C built there against that
# torch (C++ and CUDA), then the op, module, model and engine tests (the Triton kernels
# through the interpreter, as in CI) and tools/triton_sm90_check.py, which compiles
# every Triton kernel for sm_90 with that Triton. Not the data tests: the GPU machine has
# no DALI and neither has this venv. numpy below 2.3: triton 3.6's interpreter turns
# 1-element arrays into loop bounds with int(), which numpy 2.4 refuses.
set -euo pipefail
cd "$(dirname "$0")/.."
TORCH=${GPU_STACK_TORCH:-2.11.0}
TRITON=${GPU_STACK_TRITON:-3.6.0}
TORCHVISION=${GPU_STACK_TORCHVISION:-0.26.0}
ROOT=$PWD/build/gpu_stack
PY=$ROOT/venv/bin/python

[ -x "$PY" ] || python3 -m venv "$ROOT/venv"
"$PY" -m pip install -q "torch==$TORCH" "triton==$TRITON" "torchvision==$TORCHVISION" "numpy<2.3" \
  pillow scikit-image tqdm pytest pytest-benchmark ninja
"$PY" -c "import torch, triton; print('torch', torch.__version__, '| triton', triton.__version__)"

# the working tree as git sees it (tracked and untracked, not ignored), built apart from ./fastgan
rm -rf "$ROOT/tree" && mkdir -p "$ROOT/tree"
git ls-files -co --exclude-standard -z | xargs -0 cp --parents -t "$ROOT/tree"
cd "$ROOT/tree"
echo "building fastgan._C against torch $TORCH (log: $ROOT/build.log)"
MAX_JOBS=${MAX_JOBS:-2} "$PY" setup.py -q build_ext --inplace >"$ROOT/build.log" 2>&1 \
  || { tail -n 40 "$ROOT/build.log"; exit 1; }
OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} "$PY" -m pytest -q -p no:cacheprovider tests/ops tests/nn tests/models tests/engine
"$PY" tools/triton_sm90_check.py
echo "gpu stack check: torch $TORCH, triton $TRITON: passed"
