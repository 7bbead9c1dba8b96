"""Phase 1: record, in a child process under TRITON_INTERPRET=1, every kernel launch
the fastgan ops make (fastgan.ops.instance_norm_act / reflect_conv2d / l1_loss /
cycle_losses, forward and backward, with use_backend("triton")) on CPU tensors of
several dtypes, layouts and shapes (scenarios.py): each argument's type (pointer dtype,
int, float), the constexpr values and the launch options. The kernels themselves are
not executed (only the launch is recorded: fast, and the shapes can be the real
CycleGAN ones). The host code's interpreter-only choices are switched to their GPU
values first (see _gpu_host_values).

record_main runs in the child (tools/triton_sm90_check.py rerun with RECORD_FLAG, see
cli._record) and writes the launches, the scenarios' errors and the host value notes
as JSON.
"""

from __future__ import annotations

import ast
import json
import os
import traceback
from pathlib import Path

from . import KERNEL_MODULES, PACKAGE
from .scenarios import _scenarios

# (all of it runs in the child process, TRITON_INTERPRET=1)


def _describe(value):
    """A JSON description of one launch argument (with the JIT's GPU specialization)."""
    import torch
    import triton.language as tl

    spec = _specialize(value)
    if isinstance(value, torch.Tensor):
        return {"kind": "tensor", "spec": spec, "dtype": str(value.dtype)}
    if isinstance(value, bool):
        return {"kind": "bool", "value": value, "spec": spec}
    if isinstance(value, int):
        return {"kind": "int", "value": value, "spec": spec}
    if isinstance(value, float):
        return {"kind": "float", "value": value, "spec": spec}
    if isinstance(value, str):
        return {"kind": "str", "value": value}
    if value is None:
        return {"kind": "none"}
    if isinstance(value, tl.dtype):
        return {"kind": "dtype", "value": value.name}
    return {"kind": "unknown", "value": repr(value)}


_SPECIALIZE = None


def _specialize(value):
    """(type, attribute) as the JIT computes it for a non-constexpr parameter on a CUDA
    device: ("i32", "D") for an int divisible by 16, ("constexpr", 1) for 1, ("*bf16",
    "D") for a 16-byte aligned bf16 tensor..."""
    global _SPECIALIZE
    if _SPECIALIZE is None:
        try:
            from triton._C.libtriton import native_specialize_impl
            from triton.backends.nvidia.compiler import CUDABackend

            _SPECIALIZE = lambda v: native_specialize_impl(CUDABackend, v, False, True, True)  # noqa: E731
        except ImportError:  # older Triton: the Python rules (triton <= 3.3)
            _SPECIALIZE = _py_specialize
    try:
        out = _SPECIALIZE(value)
    except Exception:  # a value the JIT would not accept as a runtime argument
        return None
    return [out[0], out[1] if len(out) > 1 and isinstance(out[1], (str, int, float, bool, type(None))) else None]


def _py_specialize(v):
    import torch

    if v is None:
        return ("constexpr", None)
    if isinstance(v, bool):
        return ("u1", None)
    if isinstance(v, int):
        if v == 1:
            return ("constexpr", 1)
        ty = "i32" if -2**31 <= v < 2**31 else ("i64" if -2**63 <= v < 2**63 else "u64")
        return (ty, "D" if v % 16 == 0 else "")
    if isinstance(v, float):
        return ("fp32", None)
    if isinstance(v, torch.Tensor):
        names = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16", torch.float64: "fp64",
                 torch.uint8: "u8", torch.int8: "i8", torch.int32: "i32", torch.int64: "i64", torch.bool: "i1"}
        return ("*" + names[v.dtype], "D" if v.data_ptr() % 16 == 0 else "")
    raise TypeError(type(v))


def _gpu_host_values(log):
    """Make the kernel modules' host code take the values it takes on a GPU.

    Every `NAME = <expr using INTERPRET>` at the top level of a kernel module (e.g.
    `BLOCK = 8192 if INTERPRET else 1024`) is evaluated again with INTERPRET False, and
    the module's INTERPRET is set to False so that functions reading it at launch time
    (reflect_conv2d._widen) answer as on a GPU. Decisions made at import (define_op,
    the autotune configs) stay the interpreter's: the compiling side takes the GPU
    autotune configs from its own (non-interpreter) import.
    reflect_conv2d._precision is made to answer as for a CUDA tensor (tf32 for float32
    when torch.backends.cudnn.allow_tf32, the scenarios run both settings)."""
    import importlib

    import torch

    for name in KERNEL_MODULES:
        mod = importlib.import_module(f"{PACKAGE}.{name}")
        if not hasattr(mod, "INTERPRET"):
            continue
        tree = ast.parse(Path(mod.__file__).read_text())
        namespace = dict(vars(mod), INTERPRET=False)
        for node in tree.body:
            if not isinstance(node, (ast.Assign, ast.AnnAssign)) or node.value is None:
                continue
            if not any(isinstance(n, ast.Name) and n.id == "INTERPRET" for n in ast.walk(node.value)):
                continue
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            value = eval(compile(ast.Expression(node.value), mod.__file__, "eval"), namespace)
            for t in targets:
                if isinstance(t, ast.Name):
                    log.append(f"{name}.{t.id}: {getattr(mod, t.id, None)!r} -> {value!r} (GPU value)")
                    setattr(mod, t.id, value)
        mod.INTERPRET = False
        log.append(f"{name}.INTERPRET -> False (launch-time host decisions as on a GPU)")
    conv = importlib.import_module(f"{PACKAGE}.reflect_conv2d")
    original = conv._precision
    cuda = torch.device("cuda")
    conv._precision = lambda dtype, device: original(dtype, cuda)
    log.append("reflect_conv2d._precision: as for a CUDA tensor (tf32 when cudnn.allow_tf32)")


def record_main(out_path: str, scope: str) -> int:
    assert os.environ.get("TRITON_INTERPRET") == "1", "the recording runs under TRITON_INTERPRET=1"
    import importlib

    import torch
    from triton.runtime.interpreter import InterpretedFunction

    import fastgan.ops as ops

    for name in KERNEL_MODULES:
        importlib.import_module(f"{PACKAGE}.{name}")
    notes: list[str] = []
    _gpu_host_values(notes)

    launches: list[dict] = []
    current = {"scenario": None}

    def recording_run(self, *args, grid, warmup, **kwargs):  # records, does not run the kernel
        names = self.arg_names
        bound = dict(zip(names, args))
        bound.update({k: v for k, v in kwargs.items() if k in names})
        options = {k: v for k, v in kwargs.items() if k not in names}
        launches.append({
            "kernel": f"{self.fn.__module__}:{self.fn.__qualname__}",
            "args": {k: _describe(v) for k, v in bound.items()},
            "options": {k: v for k, v in options.items() if isinstance(v, (int, float, str, bool, type(None)))},
            "scenario": current["scenario"],
        })
        return None

    InterpretedFunction.run = recording_run
    errors = []
    torch.manual_seed(0)
    with ops.use_backend("triton"):
        for name, fn in _scenarios(scope):
            current["scenario"] = name
            try:
                fn()
            except Exception as e:  # recorded launches so far are kept
                errors.append({"scenario": name, "error": f"{type(e).__name__}: {e}",
                               "traceback": traceback.format_exc(limit=6)})
    Path(out_path).write_text(json.dumps({"launches": launches, "errors": errors, "notes": notes}))
    return 0

