#!/usr/bin/env bash
# The GPU machine's one script: build fastgan._C against that machine's torch, run the
# GPU tests (pytest -m gpu: every back end's correctness on CUDA, CUDA-graph capture and
# replay), the kernel benchmarks, the end-to-end training throughput and the loaders'
# throughput (no DALI there: torch and the device cache), and write a markdown summary and JSON to $OUT (else benchmarks/results).
# Made for the lent H100/H200: Python 3.12 with its own torch and triton, nvcc, pytest
# and pytest-benchmark, no DALI, no network. Each step has its own time limit so the
# whole run stays under 8 minutes; a failing step is reported and the next one runs.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR=${OUT:-benchmarks/results}
PY=${PYTHON:-python3}
mkdir -p "$OUT_DIR" build
SUMMARY="$OUT_DIR/gpu_summary.md"
export PYTHONUNBUFFERED=1

step() {  # step NAME SECONDS COMMAND...: run, log to $OUT_DIR/NAME.log, record the status
  local name=$1 limit=$2
  shift 2
  local start=$SECONDS
  timeout "$limit" "$@" >"$OUT_DIR/$name.log" 2>&1
  local rc=$?
  echo "| $name | $([ $rc -eq 0 ] && echo ok || echo "FAILED (exit $rc)") | $((SECONDS - start)) s |" >>"$SUMMARY"
  tail -n 5 "$OUT_DIR/$name.log"
  return 0
}

{
  echo "# fastgan GPU suite"
  echo
  echo '```'
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  $PY -c "import torch, triton; print('torch', torch.__version__, '| triton', triton.__version__, '|', torch.cuda.get_device_name())"
  echo '```'
  echo
  echo "| step | result | time |"
  echo "|---|---|---|"
} >"$SUMMARY"

# Hopper only (sm_90), to keep the build short; a clean build against this torch.
rm -rf build/temp* fastgan/_C*.so
step build 150 env TORCH_CUDA_ARCH_LIST="9.0" $PY setup.py -q build_ext --inplace
step gpu_tests 110 $PY -m pytest -q -m gpu tests -p no:cacheprovider --junitxml="$OUT_DIR/gpu_tests.xml"
step kernel_benchmarks 80 $PY -m pytest benchmarks/kernels -q -p no:cacheprovider \
  --benchmark-json=build/kernels_run.json
step kernel_report 15 $PY -m benchmarks.kernels.report build/kernels_run.json "$OUT_DIR"
step train_throughput 90 $PY -m benchmarks.train_throughput --out "$OUT_DIR"
step loader_throughput 35 $PY -m benchmarks.loader_throughput --images 300 --seconds 2 --out "$OUT_DIR"

{
  echo
  [ -f "$OUT_DIR/kernels_$($PY -c 'from benchmarks.machine import machine_slug; print(machine_slug())').md" ] &&
    cat "$OUT_DIR"/kernels_*.md
  cat "$OUT_DIR"/train_throughput_*.md "$OUT_DIR"/loader_*.md 2>/dev/null
} >>"$SUMMARY"
cat "$SUMMARY"
