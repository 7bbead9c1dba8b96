#!/usr/bin/env bash
# The GPU machine's one script, in this order: build fastgan._C against that machine's
# torch, measure the card's ceilings (copy bandwidth, bf16 matrix rate), the loaders'
# throughput (torch and the device cache; DALI too when its wheels were carried there
# in parts: tools/device_dali.sh), the GPU tests (pytest -m gpu: every back end's
# correctness on CUDA, CUDA-graph capture and replay), the end-to-end training
# throughput with a profile of each level (its top kernels, and its kernel time against
# its wall time: bound by the device or by the host?), the kernel benchmarks (one run
# per op) and each op's host time per call, judge the issues' GPU targets from those
# results (benchmarks/targets.py), and write a markdown summary.
#
# Made for the lent H100/H200: Python 3.12 with its own torch and triton, nvcc, pytest,
# pytest-benchmark, pytest-xdist and pytest-timeout, no DALI, no network. Each step has
# its own cap and the whole run a budget (GPU_SUITE_SECONDS, default 470 s: under 8
# minutes); a step that fails or is cut is reported and the next one runs.
#
# Results: logs and results files under build/gpu_suite/; with $OUT set (the device
# tool) they are packed, after every step, into $OUT/gpu_suite.tar.gz beside
# $OUT/gpu_summary.md (the tool brings back at most 8 files); without $OUT the results
# files are copied to benchmarks/results/.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
BUDGET=${GPU_SUITE_SECONDS:-470}
WORK=build/gpu_suite
RESULTS=$WORK/results
LOGS=$WORK/logs
SUMMARY=$WORK/gpu_summary.md
rm -rf "$WORK" && mkdir -p "$RESULTS" "$LOGS"
# a caller's thread cap or fastgan settings must not shape the build or the figures
unset OMP_NUM_THREADS FASTGAN_BACKEND FASTGAN_REFLECT_CONV2D FASTGAN_CONV FASTGAN_DEBUG
export PYTHONUNBUFFERED=1 TRITON_INTERPRET=0 FASTGAN_CUDA=1 MAX_JOBS=$(nproc --all)

pack() {  # what the device tool brings back, refreshed after every step
  [ -n "${OUT:-}" ] || return 0
  cp "$SUMMARY" "$OUT/gpu_summary.md"
  tar -czf "$OUT/gpu_suite.tar.gz" -C "$WORK" .
}

step() {  # step NAME CAP_SECONDS COMMAND...: run within min(cap, budget left), log to $LOGS/NAME.log
  local name=$1 cap=$2
  shift 2
  local left=$((BUDGET - SECONDS - 5))
  local limit=$((cap < left ? cap : left))
  if [ "$limit" -lt 10 ]; then
    echo "| $name | skipped: the suite's $BUDGET s were used up | 0 s |" >>"$SUMMARY"
    return 0
  fi
  local start=$SECONDS
  echo "== $name (limit $limit s)"
  timeout -k 5 "$limit" "$@" >"$LOGS/$name.log" 2>&1
  local rc=$? result=ok
  # 124: timeout's TERM ended it; 137: its KILL, 5 s later, for a step that ignored TERM
  if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
    result="CUT at its $limit s limit"
  elif [ $rc -ne 0 ]; then
    result="FAILED (exit $rc)"
  fi
  echo "| $name | $result | $((SECONDS - start)) s |" >>"$SUMMARY"
  tail -n 4 "$LOGS/$name.log"
  pack
  return 0
}

{
  echo "# fastgan GPU suite"
  echo
  echo '```'
  date -u
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv,noheader
  $PY -c "import sys, torch, triton; print('python', sys.version.split()[0], '| torch', torch.__version__, '| triton', triton.__version__, '|', torch.cuda.get_device_name(), '| sm', '%d.%d' % torch.cuda.get_device_capability())"
  nvcc --version | tail -n 2
  echo "CPUs: $(nproc --all)"
  # the device tool's copy of the tree has no .git: FASTGAN_COMMIT=<sha> names the code (and goes
  # into every results file's provenance)
  echo "commit: ${FASTGAN_COMMIT:-$(git rev-parse --short=12 HEAD 2>/dev/null || echo 'unknown (set FASTGAN_COMMIT)')}"
  echo '```'
  echo
  echo "| step | result | time |"
  echo "|---|---|---|"
} >"$SUMMARY" 2>&1
cat "$SUMMARY"
# no usable CUDA device: every step would fail in turn and use the budget; say so and stop
if ! timeout 60 $PY -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "| cuda | FAILED: torch sees no usable CUDA device; nothing was measured | 0 s |" >>"$SUMMARY"
  pack
  cat "$SUMMARY"
  exit 1
fi
export TORCH_CUDA_ARCH_LIST=$($PY -c "import torch; print('%d.%d' % torch.cuda.get_device_capability())")

# the pytest plugins the tests and benchmarks use, where the image has them
XDIST=$($PY -c "import xdist" 2>/dev/null && echo "-n 8")
TIMEOUT=$($PY -c "import pytest_timeout" 2>/dev/null && echo "--timeout 60")

# A clean build against this torch, for this card only (keeps the build short).
rm -rf build/temp* build/lib* fastgan/_C*.so
step build 200 $PY setup.py -q build_ext --inplace
step ceilings 20 $PY -m benchmarks.ceilings --out "$RESULTS"
LOADER_CAP=20
WITH_DALI=()  # the steps that use DALI run with its site first on the path; the others never see it
if [ -d build/dali_parts ]; then  # DALI's wheels, carried in parts (tools/device_dali.sh)
  step dali_install 60 bash tools/device_dali.sh install
  if grep -q "^DALI .* installed in /tmp/dali_site" "$LOGS/dali_install.log"; then
    WITH_DALI=(env "PYTHONPATH=/tmp/dali_site${PYTHONPATH:+:$PYTHONPATH}")
    LOADER_CAP=30  # DALI's pipelines build and warm up too
  fi
fi
CEILINGS=$(ls "$RESULTS"/ceilings_*.json 2>/dev/null | head -n 1)
# early: the loaders' rows (DALI's above all, carried at some cost) must not be the step the
# budget skips
step loader_throughput $LOADER_CAP "${WITH_DALI[@]}" $PY -m benchmarks.loader_throughput --images 300 --seconds 2 \
  --out "$RESULTS"
# tests/conftest.py: failures and each test's outcome logged as they happen (a cut run keeps
# them), and on a GPU the cases in breadth-first order (a cut run has run some of every test)
export FASTGAN_FAILURE_LOG="$LOGS/gpu_test_failures.log" FASTGAN_OUTCOME_LOG="$LOGS/gpu_test_outcomes.log"
# 8 workers, each with inductor's compile pool: 2 compile threads each, not one per CPU
step gpu_tests 70 "${WITH_DALI[@]}" env TORCHINDUCTOR_COMPILE_THREADS=2 $PY -m pytest -q -m gpu tests -p no:cacheprovider $XDIST $TIMEOUT -rfE \
  --durations=15 --junitxml="$RESULTS/gpu_tests.xml"
unset FASTGAN_FAILURE_LOG FASTGAN_OUTCOME_LOG
# each level's throughput, then 2 more iterations profiled on the same (compiled, captured) model
# after all timed rounds; batch 1 and batch 16 as two steps, so that a cut one leaves the other's
# rows. Each level that runs reflect_conv2d's Triton kernels in a new dtype pays their
# autotuning (~50 s on the H200 at a7debfe, more since merged passes run the generators at two
# batch sizes) and a compiled level its compile (~20 s): only the levels the targets judge (the
# uncompiled accelerate level is left to make bench: its time goes to the kernel steps)
step train_b1 130 $PY -m benchmarks.train_throughput --out "$RESULTS" --size 256 --batch 1 --tag b1 \
  --levels "eager,default (fp32),fast" --iters 20 --profile_iters 2 --top 10 ${CEILINGS:+--ceilings "$CEILINGS"}
step train_b16 80 $PY -m benchmarks.train_throughput --out "$RESULTS" --size 256 --batch 16 --tag b16 \
  --levels "eager,fast" --iters 15 --profile_iters 1 --top 10 ${CEILINGS:+--ceilings "$CEILINGS"}

# one benchmark run per op (not l1_loss, pix2pix's single L1 term, the least of an iteration:
# the time goes to the other three); each row is written as it is measured (--rows-jsonl), so
# a run cut at its cap keeps the rows it finished. On a GPU the batch-16 cases come first (their
# tensors exceed L2, as the bandwidth targets mean); the torch.compile baseline is left to
# make bench-kernels: each of its cases pays an inductor compile the budget cannot spare
for op in instance_norm_act cycle_losses reflect_conv2d; do
  step "kernels_$op" 30 $PY -m pytest benchmarks/kernels -q -p no:cacheprovider -k "$op and not compile" \
    --rows-jsonl="$WORK/kernels_$op.jsonl"
done
# the kernels' table from the rows measured (instant, and outside the budget as the targets are:
# a run whose kernel steps used it up still gets its kernels_<card>.md)
$PY -m benchmarks.kernels.report "$WORK"/kernels_*.jsonl --out "$RESULTS" ${CEILINGS:+--ceilings "$CEILINGS"} \
  >"$LOGS/kernel_report.log" 2>&1 || echo "| kernel_report | FAILED: see logs/kernel_report.log | 0 s |" >>"$SUMMARY"
# each op's host time per call outside a CUDA graph (what a batch-1 eager iteration waits on;
# reflect_conv2d's Triton kernels compile and autotune for its tiny shape first)
step host_overhead 25 $PY -m benchmarks.host_overhead --calls 100 --rounds 5 --out "$RESULTS"
# fastgan.test's forward pass: whether the fused modules pay at test time on a GPU, where
# fastgan.test keeps the reference's (their first call measures, and compiles Triton's kernels)
step inference 40 $PY -m benchmarks.inference_throughput --images 20 --rounds 5 --out "$RESULTS"
# the issues' GPU targets, met / missed / unmeasured, from this run's result files (instant:
# outside the budget, so a run that used it up still says where it stands)
$PY -m benchmarks.targets --results "$RESULTS" --device gpu >"$LOGS/targets.log" 2>&1
{
  echo
  echo "Total: $SECONDS s."
  echo
  for f in "$RESULTS"/targets.md "$RESULTS"/ceilings_*.md "$RESULTS"/kernels_*.md "$RESULTS"/loader_*.md "$RESULTS"/train_throughput_*.md \
           "$RESULTS"/host_overhead_*.md "$RESULTS"/inference_throughput_*.md; do
    [ -f "$f" ] && cat "$f" && echo
  done
  echo "## GPU tests"
  echo
  OUTCOMES="$LOGS/gpu_test_outcomes.log"
  COLLECTED=$(cat "$OUTCOMES.collected" 2>/dev/null)
  ENDED=$(cut -d' ' -f1 "$OUTCOMES" 2>/dev/null | sort | uniq -c | awk '{printf "%s%s %s", (NR > 1 ? ", " : ""), $1, $2}')
  echo "Ended: ${ENDED:-none}${COLLECTED:+ of $COLLECTED tests selected (the rest not reached)}."
  echo
  grep -E "^(FAILED|ERROR) |passed|failed" "$LOGS/gpu_tests.log" | tail -n 60
  [ -f "$LOGS/gpu_test_failures.log" ] && grep "^=== " "$LOGS/gpu_test_failures.log" | head -n 60
} >>"$SUMMARY"
pack
if [ -z "${OUT:-}" ]; then
  # the card's results files beside the others; the targets judged again over all of them (this
  # run's targets.md judges the GPU's alone); the test report (gpu_tests.xml) stays in $RESULTS
  cp "$RESULTS"/*_*.json "$RESULTS"/*_*.md benchmarks/results/
  $PY -m benchmarks.targets >/dev/null
fi
cat "$SUMMARY"
