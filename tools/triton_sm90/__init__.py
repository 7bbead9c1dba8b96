"""Compile every Triton kernel of fastgan/ops/triton/*.py for a real sm_90 GPU, ahead
of time, on a machine without one.

The package behind tools/triton_sm90_check.py (the command, its docstring the usage), a
module a phase:

  record.py     1. the kernel launches the fastgan ops make, recorded in a child process
                   under TRITON_INTERPRET=1 (the kernels not run), the host code's
                   interpreter-only choices switched to their GPU values first;
  scenarios.py     the op calls recorded (dtypes, layouts, shapes per scope);
  variants.py   2. each launch expanded to the variants a GPU would compile (every
                   autotune config, gpu and plain specializations) and the covering
                   subset the default scope compiles;
  compile.py    3. a variant compiled for GPUTarget("cuda", arch, 32) and its ptxas
                   stats (registers, spills, stack) and shared memory;
  cli.py        4. the command line: record, expand, select, compile, report.

The first paragraph above is the command's --help description (cli.main). Nothing here
imports triton at module level: the recording child runs under TRITON_INTERPRET=1, the
compiling side without it (tools/triton_sm90_check.py sets that before importing).
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

TOOL = REPO / "tools" / "triton_sm90_check.py"  # rerun with RECORD_FLAG for the recording child
RECORD_FLAG = "--_record"  # internal: the child process that records the launches

KERNEL_MODULES = ["l1_loss", "cycle_losses", "instance_norm_act", "reflect_conv2d"]
PACKAGE = "fastgan.ops.triton"
