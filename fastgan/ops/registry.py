"""Back ends of the fused ops, by name, and the choice among them.

A *back end* is a family of implementations with its own requirements:

    torch   the reference (ops/reference.py): plain aten, any device, always there
    cpu     native C++ kernels (csrc/cpu), in fastgan._C
    cuda    native CUDA kernels (csrc/cuda), in fastgan._C built with nvcc
    triton  Triton kernels (ops/triton) -- registered by its own module when it exists

An *op* (`Op`) has a reference and one implementation per back end it supports.
`auto` takes, for the device of the op's first tensor, the first usable back end in
that device type's preference order (`AUTO_ORDER`). An explicit
back end (`use_backend(name)`, `set_default_backend(name)` or the `FASTGAN_BACKEND`
environment variable, read at import) is used as is: if it cannot run the op on
that device, the call raises `BackendUnavailableError` saying why.

Adding an op needs no change here; instance_norm_act, for one, is added so:

    from fastgan.ops import registry, reference, _native
    INSTANCE_NORM_ACT = registry.Op("instance_norm_act", reference.instance_norm_act)
    INSTANCE_NORM_ACT.impl("cpu", _native_instance_norm_act,
                           available=_native.kernel_check("instance_norm_act", "CPU"))
    INSTANCE_NORM_ACT.impl("cuda", _native_instance_norm_act,
                           available=_native.kernel_check("instance_norm_act", "CUDA"))

    def instance_norm_act(x, ...):           # the public function in fastgan.ops
        return INSTANCE_NORM_ACT(x, ...)     # dispatches on x.device

and a new back end (triton) is one `register_backend("triton", ...)` call in its module
plus `op.impl("triton", fn)` for each op it implements; `AUTO_ORDER` already ranks it.

Choosing is plain Python over module state, so torch.compile traces through it (it
guards on the override) without graph breaks; availability checks run once and are
cached (torch.compiler.assume_constant_result's mark). The default is process-wide; a
use_backend block holds for its own thread only (modules pinned to a back end enter
one on every forward, and threads running different ones must not switch each other's).
"""

from __future__ import annotations

import contextlib
import os
import threading
import warnings
from dataclasses import dataclass, field
from typing import Callable, Iterator

import torch

from fastgan.ops._eager import under_a_transform

__all__ = [
    "AUTO_ORDER",
    "Backend",
    "BackendFallbackWarning",
    "BackendUnavailableError",
    "Op",
    "available_backends",
    "backend_for",
    "check_backend",
    "get_default_backend",
    "register_backend",
    "set_default_backend",
    "use_backend",
]

ENV_VAR = "FASTGAN_BACKEND"
AUTO = "auto"

# Preference of `auto` per device type, fastest first. Names not registered (or not
# implemented by an op) are skipped silently; "torch" ends every list.
AUTO_ORDER: dict[str, tuple[str, ...]] = {
    "cpu": ("cpu", "torch"),
    "cuda": ("cuda", "triton", "torch"),
}
_AUTO_ORDER_OTHER = ("torch",)


class BackendUnavailableError(RuntimeError):
    """An explicitly chosen back end cannot run (not built, no device, unknown, ...)."""


class BackendFallbackWarning(UserWarning):
    """`auto` skipped a faster back end that should have been there (e.g. not built)."""


@dataclass(frozen=True)
class Backend:
    """A back end: its name, the device types it runs on (None: any) and a check.

    `check()` returns None when the back end can be used in this process, else a
    sentence saying why not and what to do. It is called once and cached.
    """

    name: str
    devices: tuple[str, ...] | None
    check: Callable[[], str | None]

    def runs_on(self, device_type: str) -> bool:
        return self.devices is None or device_type in self.devices


_BACKENDS: dict[str, Backend] = {}
_OPS: dict[str, "Op"] = {}
_state = {"default": os.environ.get(ENV_VAR, "").strip() or AUTO}  # set_default_backend / FASTGAN_BACKEND
# .override: this thread's innermost use_backend(...), absent outside. A plain threading.local
# read through getattr: torch.compile (2.11 and 2.14) guards on that value, where it folds a
# threading.local subclass's class attribute into the graph as a constant (measured)
_thread = threading.local()
_check_cache: dict[tuple, str | None] = {}
_warned: set[str] = set()


def register_backend(name: str, *, devices: tuple[str, ...] | None, check: Callable[[], str | None]) -> Backend:
    """Declares a back end (once per name)."""
    if name == AUTO:
        raise ValueError(f"{AUTO!r} is not a back end name")
    if name in _BACKENDS:
        raise ValueError(f"back end {name!r} is already registered")
    backend = Backend(name, devices, check)
    _BACKENDS[name] = backend
    _check_cache.clear()
    return backend


def _constant_under_compile(fn):
    """torch.compiler.assume_constant_result's mark (the attribute it sets) without its import
    of torch._dynamo: 1.7 s of `import fastgan.ops` (and fastgan.nn, for accelerate()) where
    nothing else imports it (no Triton, or its interpreter; torchvision and torch.optim do).
    tests/ops/test_l1_loss.py holds the mark to torch's."""
    fn._dynamo_marked_constant = True
    return fn


@_constant_under_compile
def _backend_problem(name: str) -> str:
    """'' when back end `name` is usable in this process, else why not (cached). A constant
    under torch.compile, as _problem: a use_backend block inside a compiled function would
    otherwise fill the cache while dynamo traces, and fail the guard made on it at once."""
    key = ("backend", name)
    if key not in _check_cache:
        _check_cache[key] = _BACKENDS[name].check()
    return _check_cache[key] or ""


@_constant_under_compile
def _problem(op: str, backend: str, device_type: str) -> str:
    """'' when `op` can run on `backend` for tensors of `device_type`, else why not.

    Evaluated eagerly even under torch.compile and treated as a constant there (the
    answer does not change within a process).
    """
    key = (op, backend, device_type)
    if key in _check_cache:
        return _check_cache[key] or ""
    reason = None
    if backend not in _BACKENDS:
        source = f" set by {ENV_VAR}" if backend == os.environ.get(ENV_VAR, "").strip() else ""
        reason = f"unknown back end {backend!r}{source} (known: {', '.join(sorted(_BACKENDS))}, or {AUTO!r})"
    elif not _BACKENDS[backend].runs_on(device_type):
        runs = ", ".join(_BACKENDS[backend].devices or ())
        reason = f"back end {backend!r} runs on {runs} tensors, not {device_type}"
    else:
        reason = _backend_problem(backend) or None
        if reason is None:
            impl = _OPS[op]._impls.get(backend)
            if impl is None:
                have = ", ".join(sorted(_OPS[op]._impls))
                reason = f"{op} has no {backend!r} implementation (it has: {have})"
            elif impl.available is not None:
                reason = impl.available()
    _check_cache[key] = reason
    return reason or ""


@dataclass
class _Impl:
    fn: Callable
    available: Callable[[], str | None] | None


@dataclass
class Op:
    """One fused op: its reference (the `torch` back end) and its other back ends."""

    name: str
    reference: Callable
    _impls: dict[str, _Impl] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self):
        if self.name in _OPS:
            raise ValueError(f"op {self.name!r} is already registered")
        _OPS[self.name] = self
        self._impls["torch"] = _Impl(self.reference, None)

    def impl(self, backend: str, fn: Callable, *, available: Callable[[], str | None] | None = None) -> None:
        """Registers `fn` as this op's implementation on `backend`.

        `available()` (optional) returns None when this implementation can run, else
        why not; e.g. whether fastgan._C holds a kernel for it (`_native.kernel_check`).
        """
        if backend not in _BACKENDS:
            raise ValueError(f"unknown back end {backend!r}; register_backend() it first")
        if backend in self._impls:
            raise ValueError(f"{self.name} already has a {backend!r} implementation")
        self._impls[backend] = _Impl(fn, available)
        _check_cache.clear()

    def backends(self) -> list[str]:
        """Back ends this op has an implementation for (usable or not)."""
        return list(self._impls)

    def select(self, device_type: str, warn: bool = True) -> tuple[str, Callable]:
        """(back end name, implementation) for a tensor on `device_type`.

        `auto` warns once (BackendFallbackWarning) when it skips an implementation of
        this op that cannot run (e.g. fastgan._C not built), unless `warn` is False.
        """
        chosen = getattr(_thread, "override", None) or _state["default"]
        if chosen != AUTO:
            problem = _problem(self.name, chosen, device_type)
            if problem:
                raise BackendUnavailableError(
                    f"fastgan.ops.{self.name}: back end {chosen!r} is unavailable for {device_type} "
                    f"tensors: {problem}")
            return chosen, self._impls[chosen].fn
        order = AUTO_ORDER.get(device_type, _AUTO_ORDER_OTHER)
        for name in order:
            problem = _problem(self.name, name, device_type)
            if not problem:
                return name, self._impls[name].fn
            if warn and name in self._impls and not torch.compiler.is_compiling():
                _warn_fallback(self.name, name, problem)
        return "torch", self.reference

    def __call__(self, *args, **kwargs):
        device_type = _first_tensor(args, kwargs).device.type
        # torch.jit.trace records the torch composition, as fastgan.nn's modules do while it
        # records (fastgan/nn/tracing.py): a trace torch.jit.save can write, without Python ops
        if not torch.compiler.is_compiling() and (torch.jit.is_tracing()
                                                  or under_a_transform(*args, *kwargs.values())):
            return self.reference(*args, **kwargs)
        return self.select(device_type)[1](*args, **kwargs)


def _first_tensor(args, kwargs) -> torch.Tensor:
    for values in (args, kwargs.values()):  # (no joined tuple: this runs on every op call)
        for a in values:
            if isinstance(a, torch.Tensor):
                return a
    raise TypeError("a fastgan op needs at least one tensor argument")


def _warn_fallback(op: str, backend: str, problem: str) -> None:
    # One warning per reason (e.g. "fastgan._C is not built"), not one per op and call.
    if problem in _warned:
        return
    _warned.add(problem)
    warnings.warn(
        f"fastgan.ops: the {backend!r} back end is unavailable ({problem}); "
        f"{op} and other ops fall back to a slower one.",
        BackendFallbackWarning, stacklevel=5)  # the caller of fastgan.ops.<op>


def _validate(name: str) -> str:
    if not isinstance(name, str) or not name:
        raise ValueError(f"a back end name is a non-empty string, got {name!r}")
    if name == AUTO:
        return name
    if name not in _BACKENDS:
        raise ValueError(f"unknown back end {name!r} (known: {', '.join(sorted(_BACKENDS))}, or {AUTO!r})")
    problem = _backend_problem(name)
    if problem:
        raise BackendUnavailableError(f"back end {name!r} is unavailable: {problem}")
    return name


def check_backend(name: str) -> str:
    """`name` if it is "auto" or a back end that can run in this process; else the error
    use_backend would raise (ValueError, BackendUnavailableError)."""
    return _validate(name)


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[str]:
    """Within the block, every fastgan op uses back end `name` ("auto" to choose).

    Raises ValueError for an unknown name and BackendUnavailableError, at once, for a
    back end that cannot run in this process (not built, no device). Nests; the
    innermost wins; holds in this thread only (other threads keep their own choice).
    """
    _validate(name)
    previous = getattr(_thread, "override", None)
    _thread.override = name
    try:
        yield name
    finally:
        _thread.override = previous


def set_default_backend(name: str | None) -> None:
    """The back end used outside use_backend blocks; None: FASTGAN_BACKEND or "auto"."""
    if name is None:
        name = os.environ.get(ENV_VAR, "").strip() or AUTO
        _state["default"] = name  # validated at the first call, like the variable at import
        return
    _state["default"] = _validate(name)


def get_default_backend() -> str:
    return _state["default"]


def available_backends(device: str | torch.device | None = None, op: str | None = None) -> list[str]:
    """Names of the back ends usable in this process, registration order.

    With `device` ("cpu", "cuda", a torch.device), only those that run on it; with
    `op` (e.g. "l1_loss"), only those that implement that op and can run it.
    """
    device_type = None if device is None else torch.device(device).type
    names = []
    for name, backend in _BACKENDS.items():
        if _backend_problem(name):
            continue
        if device_type is not None and not backend.runs_on(device_type):
            continue
        if op is not None:
            if op not in _OPS:
                raise ValueError(f"unknown op {op!r} (known: {', '.join(sorted(_OPS))})")
            if device_type is not None:
                if _problem(op, name, device_type):
                    continue
            elif all(_problem(op, name, d) for d in (backend.devices or ("cpu",))):
                continue
        names.append(name)
    return names


def backend_for(op: str, device: str | torch.device) -> str:
    """The back end `op` would use now for a tensor on `device` (raises like a call would)."""
    if op not in _OPS:
        raise ValueError(f"unknown op {op!r} (known: {', '.join(sorted(_OPS))})")
    return _OPS[op].select(torch.device(device).type, warn=False)[0]


register_backend("torch", devices=None, check=lambda: None)  # the reference: plain aten (ops/reference.py)


def ops() -> dict[str, Op]:
    """The registered ops by name."""
    return dict(_OPS)
