#!/usr/bin/env python
"""Compile every Triton kernel of fastgan/ops/triton/*.py for a real sm_90 GPU, ahead
of time, on a machine without one.

The CPU tests run the kernels through TRITON_INTERPRET=1, which executes their Python
and accepts programs the real compiler rejects (non power of 2 tl.arange, tl.dot tiles
below 16, mixed tl.where types, constexpr misuse, tiles that do not fit in shared
memory...). This tool (the command; the code is the package tools/triton_sm90/, a
module a phase, each saying more):

  1. records, in a child process under TRITON_INTERPRET=1 (this file rerun), every
     kernel launch the fastgan ops make, forward and backward, on CPU tensors of
     several dtypes, layouts and shapes, the kernels not run, the host code's
     interpreter-only choices switched to their GPU values first (triton_sm90/record.py,
     the op calls in triton_sm90/scenarios.py);
  2. expands each launch to what a GPU would compile: for @triton.autotune kernels every
     GPU config, each in two specializations, gpu (as the JIT makes it on a GPU) and
     plain (none) (triton_sm90/variants.py);
  3. compiles the variants with triton.compile(ASTSource(...),
     target=GPUTarget("cuda", 90, 32)) through TTIR, TTGIR, LLVM IR, PTX and ptxas to a
     cubin (triton_sm90/compile.py), and prints one line per variant: ok / FAILED,
     registers, spill store/load bytes, stack bytes (from ptxas -v), shared memory
     bytes (more than the 227 KiB an sm_90 block may use is a failure: the launch would
     raise OutOfResources), compile seconds, the variant. A failure prints the
     compiler's message and diagnostics under its line (triton_sm90/cli.py).

Which variants: the default scope compiles a covering subset of the distinct variants
(every autotune config of every kernel, each with every pointer dtype / precision,
every constexpr value and both specializations at least once, plus every config of
CycleGAN's 3x3 residual convolution in bf16 and tf32, channels_last: ~130 of ~1500;
2 to 6 minutes on 2 cores: 351 s with an empty cache, 138 s with a warm one, as every
variant's ptxas runs again for its stats, both measured beside other work); --select all
compiles all of them (~15 min), --scope full records more shapes and compiles all
(~2900, ~30 min). Exit status 1 when any variant fails, when a scenario raised while
recording, or when a kernel module had no launch recorded.

    .venv/bin/python tools/triton_sm90_check.py               # the default scope
    .venv/bin/python tools/triton_sm90_check.py --select all  # every distinct variant
    .venv/bin/python tools/triton_sm90_check.py --list        # the variants, no compile
    .venv/bin/python tools/triton_sm90_check.py -k conv --modes gpu -v

Another Triton (e.g. the GPU machine's 3.6) without touching the venv:
    .venv/bin/python -m pip install --no-deps --target /tmp/triton36 triton==3.6.0
    PYTHONPATH=/tmp/triton36 .venv/bin/python tools/triton_sm90_check.py

Compiled kernels go to Triton's cache (TRITON_CACHE_DIR, else ~/.triton/cache): a rerun
only compiles what changed; --fresh-cache compiles everything again in a temporary
cache. Needs ptxas: Triton's bundled one (triton/backends/nvidia/bin), or
TRITON_PTXAS_PATH (e.g. /usr/local/cuda/bin/ptxas).
"""


from __future__ import annotations

import os
import sys
from pathlib import Path

TOOLS = Path(__file__).resolve().parent
if str(TOOLS) not in sys.path:  # the package next to this file, from any cwd and when loaded by path
    sys.path.insert(0, str(TOOLS))

from triton_sm90 import KERNEL_MODULES, PACKAGE, RECORD_FLAG, REPO  # noqa: E402  (puts REPO on sys.path)

if RECORD_FLAG not in sys.argv:
    # the compiling side must see the real JITFunctions and the GPU autotune configs
    os.environ.pop("TRITON_INTERPRET", None)
os.environ.setdefault("OMP_NUM_THREADS", "1")

from triton_sm90.cli import main  # noqa: E402
from triton_sm90.compile import MAX_SHARED, SM90_MAX_SHARED, compile_variant  # noqa: E402
from triton_sm90.record import record_main  # noqa: E402
from triton_sm90.variants import OPTION_KEYS, expand, select_covering  # noqa: E402

# what the module offered before it became a package (tests load it by path for compile_variant)
__all__ = ["KERNEL_MODULES", "MAX_SHARED", "OPTION_KEYS", "PACKAGE", "RECORD_FLAG", "REPO", "SM90_MAX_SHARED",
           "compile_variant", "expand", "main", "record_main", "select_covering"]

if __name__ == "__main__":
    sys.exit(main())
