"""Loads the native library fastgan._C and declares the `cpu` and `cuda` back ends.

Importing fastgan._C runs the TORCH_LIBRARY registrations of csrc/ (torch.ops.fastgan.*).
When it is missing (not built), does not load (built against another torch), was built
from other sources than the checkout's csrc/ holds (fastgan/build_info.py), or another
library already registered fastgan's ops in this process, this is the one place that
knows: `LOAD_ERROR` holds why, the `cpu`/`cuda` back ends report it ("run `make build`"),
`auto` falls back to the torch reference with one BackendFallbackWarning, and asking for
`cpu`/`cuda` explicitly raises BackendUnavailableError with that message.
"""

from __future__ import annotations

import sys

import torch

from fastgan import build_info
from fastgan.ops import registry


class StaleBuildError(RuntimeError):
    """fastgan._C was built from other sources than the checkout's csrc/."""


def _registered_elsewhere() -> bool:
    """Whether fastgan's native ops are registered already, by a library other than fastgan._C
    (the CMake build's libfastgan_ops.so through torch.ops.load_library): a second
    registration of the namespace aborts the process."""
    return "fastgan._C" not in sys.modules and bool(torch._C._jit_get_schemas_for_operator("fastgan::l1_loss"))


def _load():
    """(fastgan._C or None, why it is not used or None)."""
    if _registered_elsewhere():
        return None, RuntimeError("fastgan's native ops were registered by another library in this process "
                                  "(a torch.ops.load_library of the CMake build's libfastgan_ops.so?), and "
                                  "fastgan._C cannot register them again")
    try:
        from fastgan import _C  # (registers torch.ops.fastgan.*)
    except (ImportError, OSError) as e:  # not built, or built against another torch
        return None, e
    csrc = build_info.checkout_csrc()
    if csrc is not None:
        try:
            now = build_info.csrc_hash(csrc)
        except OSError as e:  # (an unreadable source file)
            return _C, StaleBuildError(f"which sources {_C.__file__} was built from cannot be told: {csrc} cannot "
                                       f"be read ({e})")
        built = getattr(_C, "SOURCE_HASH", "none")
        if built != now:  # its kernels and op schemas are not those the Python code expects
            return _C, StaleBuildError(f"{_C.__file__} was built from other sources than {csrc} holds now "
                                       f"(source hash {built}, now {now}): csrc/ changed since the build")
    return _C, None


_C, LOAD_ERROR = _load()

LOADED = LOAD_ERROR is None
BUILD_HINT = "run `make build` (python setup.py build_ext --inplace)"


def source_hash() -> str:
    """The loaded fastgan._C's source hash ("" when it is not used)."""
    return "" if not LOADED else getattr(_C, "SOURCE_HASH", "")


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
