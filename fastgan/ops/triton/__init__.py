"""The `triton` back end: Triton kernels for the fused ops.

On a GPU they run on CUDA tensors. With TRITON_INTERPRET=1 (set before triton is
imported) they also run on CPU tensors through Triton's interpreter: slow, but the
same kernel code, which is how CI tests them on machines without a GPU.
Each op's kernels live in a module of this package and register themselves with
`OP.impl("triton", fn, available=triton_problem)`.
"""

from __future__ import annotations

import os

import torch

from fastgan.ops import registry

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"

try:
    import triton  # noqa: F401
    import triton.language  # noqa: F401
except ImportError as e:  # triton ships with CUDA builds of torch; not with every build
    IMPORT_ERROR: BaseException | None = e
else:
    IMPORT_ERROR = None


def triton_problem() -> str | None:
    """None when Triton kernels can run here, else why not."""
    if IMPORT_ERROR is not None:
        return f"triton cannot be imported ({IMPORT_ERROR})"
    if not INTERPRET and not torch.cuda.is_available():
        return "no CUDA device (set TRITON_INTERPRET=1 before importing triton to run the kernels on the CPU)"
    return None


# The kernels' modules (which define the ops) are imported only where the kernels can run:
# elsewhere torch.library.triton_op's import of torch._inductor alone costs ~2 s a process.
LOAD_KERNELS = triton_problem() is None

# on CPU tensors too through TRITON_INTERPRET=1
registry.register_backend(
    "triton",
    devices=(("cpu", "cuda") if torch.cuda.is_available() else ("cpu",)) if INTERPRET else ("cuda",),
    check=triton_problem,
)
