"""Loads the native library fastgan._C and declares the `cpu` and `cuda` back ends.

Importing fastgan._C runs the TORCH_LIBRARY registrations of csrc/ (torch.ops.fastgan.*).
When it is missing (not built) or does not load (built against another torch), this is
the one place that knows: `LOAD_ERROR` holds why, the `cpu`/`cuda` back ends report it
("run `make build`"), `auto` falls back to the torch reference with one
BackendFallbackWarning, and asking for `cpu`/`cuda` explicitly raises
BackendUnavailableError with that message.
"""

from __future__ import annotations

import torch

from fastgan.ops import registry

try:
    from fastgan import _C  # noqa: F401  (registers torch.ops.fastgan.*)
except (ImportError, OSError) as e:  # not built, or built against another torch
    LOAD_ERROR: BaseException | None = e
else:
    LOAD_ERROR = None

LOADED = LOAD_ERROR is None
BUILD_HINT = "run `make build` (python setup.py build_ext --inplace)"


def load_problem() -> str | None:
    """None when fastgan._C is loaded, else why not and what to do."""
    if LOADED:
        return None
    return f"the native extension fastgan._C is not available ({LOAD_ERROR}); {BUILD_HINT}"


def has_kernel(op: str, dispatch_key: str) -> bool:
    """Whether fastgan::<op> has a kernel for dispatch_key ("CPU", "CUDA") in fastgan._C."""
    if not LOADED:
        return False
    try:
        return torch._C._dispatch_has_kernel_for_dispatch_key(f"fastgan::{op}", dispatch_key)
    except RuntimeError:  # no such op: fastgan._C was built before it existed
        return False


def kernel_check(op: str, dispatch_key: str):
    """An `available` callable for Op.impl: None when the kernel is there, else why not."""

    def check() -> str | None:
        problem = load_problem()
        if problem:
            return problem
        if not has_kernel(op, dispatch_key):
            if dispatch_key == "CUDA":
                return (f"fastgan._C has no CUDA kernel for {op}: it was built without a CUDA toolkit; "
                        f"{BUILD_HINT} where nvcc is found")
            return f"fastgan._C has no {dispatch_key} kernel for {op}; {BUILD_HINT}"
        return None

    return check


def _cuda_check() -> str | None:
    problem = load_problem()
    if problem:
        return problem
    if not torch.cuda.is_available():
        return "no CUDA device is available"
    return None


# the native kernels in fastgan._C: C++ (csrc/cpu) and CUDA (csrc/cuda)
registry.register_backend("cpu", devices=("cpu",), check=load_problem)
registry.register_backend("cuda", devices=("cuda",), check=_cuda_check)
