#!/usr/bin/env python
"""Compile every Triton kernel of fastgan/ops/triton/*.py for a real sm_90 GPU, ahead
of time, on a machine without one.

The CPU tests run the kernels through TRITON_INTERPRET=1, which executes their Python
and accepts programs the real compiler rejects (non power of 2 tl.arange, tl.dot tiles
below 16, mixed tl.where types, constexpr misuse, tiles that do not fit in shared
memory...). This tool:

  1. records, in a child process under TRITON_INTERPRET=1, every kernel launch the
     fastgan ops make (fastgan.ops.instance_norm_act / reflect_conv2d / l1_loss /
     cycle_losses, forward and backward, with use_backend("triton")) on CPU tensors of
     several dtypes, layouts and shapes: each argument's type (pointer dtype, int,
     float), the constexpr values and the launch options. The kernels themselves are
     not executed (only the launch is recorded: fast, and the shapes can be the real
     CycleGAN ones). The host code's interpreter-only choices are switched to their GPU
     values first (see _gpu_host_values);
  2. expands each launch to what a GPU would compile: for @triton.autotune kernels every
     GPU config of the list (not the single interpreter config), the @triton.heuristics
     recomputed per config; each in two specializations:
        gpu    the one the JIT makes on a GPU from those arguments (ints equal to 1
               become constexprs, ints and pointers divisible by 16 get
               tt.divisibility=16);
        plain  no value specialization (every int an i32/i64, no divisibility);
  3. compiles the variants with triton.compile(ASTSource(...),
     target=GPUTarget("cuda", 90, 32)) through TTIR, TTGIR, LLVM IR, PTX and ptxas to a
     cubin, and prints one line per variant: ok / FAILED, registers, spill store/load
     bytes, stack bytes (from ptxas -v: CompiledKernel.n_regs / n_spills need a GPU),
     shared memory bytes (metadata.shared; more than the 227 KiB an sm_90 block may
     use is a failure: the launch would raise OutOfResources), compile seconds, the
     variant. A failure prints the compiler's message and diagnostics under its line.

Which variants: the default scope compiles a covering subset of the distinct variants
(every autotune config of every kernel, each with every pointer dtype / precision,
every constexpr value and both specializations at least once, plus every config of
CycleGAN's 3x3 residual convolution in bf16 and tf32, channels_last: ~130 of ~1500;
about 2 minutes on 2 cores with an empty cache, ~35 s with a warm one); --select all
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

import argparse
import ast
import contextlib
import io
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

RECORD_FLAG = "--_record"  # internal: the child process that records the launches
if RECORD_FLAG not in sys.argv:
    # the compiling side must see the real JITFunctions and the GPU autotune configs
    os.environ.pop("TRITON_INTERPRET", None)
os.environ.setdefault("OMP_NUM_THREADS", "1")

KERNEL_MODULES = ["l1_loss", "cycle_losses", "instance_norm_act", "reflect_conv2d"]
PACKAGE = "fastgan.ops.triton"
# bytes of shared memory one block may use (opt-in maximum), per compute capability
MAX_SHARED = {80: 166912, 86: 101376, 87: 166912, 89: 101376, 90: 232448, 100: 232448, 103: 232448, 120: 101376}
SM90_MAX_SHARED = MAX_SHARED[90]  # 227 KiB
OPTION_KEYS = ("num_warps", "num_stages", "num_ctas", "maxnreg")


# =============================================================================== recording
# (runs in the child process, TRITON_INTERPRET=1)


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


def _dtypes():
    import torch

    return [torch.float32, torch.bfloat16, torch.float16, torch.float64]


def _make(shape, dtype, layout, requires_grad=False):
    import torch

    t = torch.empty(shape, dtype=dtype)  # values are never read: the kernels are not run
    if layout == "channels_last" and t.dim() == 4:
        t = t.contiguous(memory_format=torch.channels_last)
    return t.requires_grad_(requires_grad)


def _scenarios(scope):
    """(name, callable) pairs, each calling the fastgan ops forward and backward."""
    import torch

    import fastgan.ops as ops
    from fastgan.ops import _reflect_conv2d

    full = scope == "full"
    layouts = ["contiguous", "channels_last"]
    out = []

    # ------------------------------------------------------------------ l1_loss
    l1_shapes = [(1, 3, 256, 256), (2, 3, 5, 7)] + ([(7,), (3, 1000, 1111)] if full else [])
    for dtype in _dtypes():
        for shape in l1_shapes:
            for layout in layouts if len(shape) == 4 else ["contiguous"]:
                def run(shape=shape, dtype=dtype, layout=layout):
                    x = _make(shape, dtype, layout, True)
                    t = _make(shape, dtype, layout, True)
                    ops.l1_loss(x, t, 10.0).backward()
                out.append((f"l1_loss {dtype} {shape} {layout}", run))

    # -------------------------------------------------------------- cycle_losses
    cyc_shapes = [((1, 3, 256, 256), (1, 3, 256, 256)), ((2, 3, 5, 7), (2, 3, 5, 7))]
    if full:
        cyc_shapes += [((1, 3, 64, 64), (2, 3, 40, 40))]
    for dtype in _dtypes():
        for sa, sb in cyc_shapes:
            for layout in layouts:
                for idt in (True, False):
                    for real_grad in ((False, True) if full or dtype == torch.float32 else (False,)):
                        def run(sa=sa, sb=sb, dtype=dtype, layout=layout, idt=idt, real_grad=real_grad):
                            real_A = _make(sa, dtype, layout, real_grad)
                            real_B = _make(sb, dtype, layout, real_grad)
                            rec_A = _make(sa, dtype, layout, True)
                            rec_B = _make(sb, dtype, layout, True)
                            idt_A = _make(sb, dtype, layout, True) if idt else None
                            idt_B = _make(sa, dtype, layout, True) if idt else None
                            losses = ops.cycle_losses(real_A, rec_A, real_B, rec_B, idt_A, idt_B, 10.0, 10.0, 0.5)
                            losses.values.sum().backward()
                        out.append((f"cycle_losses {dtype} {sa}/{sb} {layout} idt={idt} real_grad={real_grad}", run))
    # only rec_A needs a gradient: REC_A alone, the others not written
    for dtype in _dtypes():
        def run(dtype=dtype):
            s = (2, 3, 8, 8)
            rec_A = _make(s, dtype, "contiguous", True)
            others = [_make(s, dtype, "contiguous") for _ in range(3)]
            ops.cycle_losses(others[0], rec_A, others[1], others[2]).values.sum().backward()
        out.append((f"cycle_losses {dtype} rec_A grad only", run))

    # ---------------------------------------------------------- instance_norm_act
    # (activation, affine weight, affine bias, residual): CycleGAN's generator (relu, no
    # affine; none + residual in a residual block), its discriminator (leaky_relu), the rest
    combos = [("relu", False, False, False), ("none", False, False, True), ("leaky_relu", False, False, False),
              ("relu", True, True, False), ("leaky_relu", True, False, True), ("none", False, True, False)]
    # NCHW: planes of up to SPLIT_NCHW = 4096 pixels are fused (64x64, 33x35, 5x7), larger
    # ones split (256x256, 300x300); channels_last: up to SPLIT_NHWC = 512 pixels (5x7,
    # 1x1 fused, the others split). BLOCK_C: 1 (NCHW), 32 (C >= 32), 4, 2, 1 (C = 3, 2, 1)
    in_shapes = [(1, 64, 256, 256), (1, 256, 64, 64), (1, 2, 300, 300), (2, 3, 5, 7), (3, 70, 33, 35),
                 (1, 40, 32, 32), (1, 1, 1, 1)]
    for dtype in _dtypes():
        for si, shape in enumerate(in_shapes):
            for li, layout in enumerate(layouts):
                picks = combos if full else [combos[(si * 2 + li) % len(combos)], combos[(si * 2 + li + 3) % len(combos)]]
                for act, w, b, res in picks:
                    def run(shape=shape, dtype=dtype, layout=layout, act=act, w=w, b=b, res=res):
                        C = shape[1]
                        x = _make(shape, dtype, layout, True)
                        weight = torch.empty(C, dtype=dtype).requires_grad_() if w else None
                        bias = torch.empty(C, dtype=dtype).requires_grad_() if b else None
                        residual = _make(shape, dtype, layout, True) if res else None
                        y = ops.instance_norm_act(x, weight, bias, 1e-5, act, 0.2, residual)
                        y.backward(torch.empty_like(y))
                    out.append((f"instance_norm_act {dtype} {shape} {layout} {act} w={w} b={b} res={res}", run))

    # ------------------------------------------------------------- reflect_conv2d
    # (N, C_in, C_out, H, W, kernel, stride, padding, bias): CycleGAN's stem, residual
    # block and head convolutions, a strided one and a 1x1 (no padding)
    convs = [(1, 3, 64, 256, 256, 7, 1, 3, True), (1, 256, 256, 64, 64, 3, 1, 1, True),
             (1, 64, 3, 256, 256, 7, 1, 3, True), (2, 32, 48, 17, 19, 3, 2, 1, False),
             (2, 16, 8, 9, 9, 1, 1, 0, False)]
    if full:
        convs += [(1, 128, 64, 128, 128, 3, 2, 1, True), (4, 3, 5, 6, 7, 3, 1, 2, True)]
    conv_runs = []
    for dtype in _dtypes():
        tf32s = (True, False) if dtype == torch.float32 else (False,)
        for tf32 in tf32s:
            for ci, (n, cin, cout, h, w, k, s, p, has_bias) in enumerate(convs):
                for li, layout in enumerate(layouts):
                    if not full and (ci + li + int(tf32)) % 2 and cin != 256:  # one layout per dtype
                        continue
                    conv_runs.append((dtype, tf32, (n, cin, cout, h, w, k, s, p, has_bias), layout))
    for dtype, tf32, (n, cin, cout, h, w, k, s, p, has_bias), layout in conv_runs:
        def run(dtype=dtype, tf32=tf32, n=n, cin=cin, cout=cout, h=h, w=w, k=k, s=s, p=p, has_bias=has_bias,
                layout=layout):
            saved = torch.backends.cudnn.allow_tf32
            torch.backends.cudnn.allow_tf32 = tf32
            try:
                x = _make((n, cin, h, w), dtype, layout, True)
                weight = _make((cout, cin, k, k), dtype, layout, True)
                bias = torch.empty(cout, dtype=dtype).requires_grad_() if has_bias else None
                with _reflect_conv2d.force_choice("triton"):
                    y = ops.reflect_conv2d(x, weight, bias, s, p)
                    y.backward(torch.empty_like(y))
            finally:
                torch.backends.cudnn.allow_tf32 = saved
        # core: CycleGAN's residual-block convolution in its training dtypes, channels_last:
        # every config of it is compiled whatever the selection
        core = (cin, cout, k) == (256, 256, 3) and layout == "channels_last" and (dtype == torch.bfloat16 or tf32)
        out.append((f"{'core ' if core else ''}reflect_conv2d {dtype}{' tf32' if tf32 else ''} N{n} {cin}->{cout} "
                    f"{h}x{w} k{k} s{s} p{p} bias={has_bias} {layout}", run))
    return out


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


# ============================================================================== compiling


def _kernel_chain(qualname: str):
    """(JITFunction, autotune configs or None, heuristics {name: fn}) of module:name."""
    import importlib

    from triton.runtime.autotuner import Autotuner, Heuristics
    from triton.runtime.jit import JITFunction

    module, name = qualname.split(":")
    obj = getattr(importlib.import_module(module), name)
    configs, heuristics = None, {}
    while not isinstance(obj, JITFunction):
        if isinstance(obj, Autotuner):
            configs = list(obj.configs)
        elif isinstance(obj, Heuristics):
            heuristics.update(obj.values)
        else:
            raise TypeError(f"{qualname}: unexpected wrapper {type(obj).__name__}")
        obj = obj.fn
    return obj, configs, heuristics


def _decode(desc):
    import triton.language as tl

    kind = desc["kind"]
    if kind == "dtype":
        return tl.dtype(desc["value"])
    if kind in ("int", "bool", "float", "str"):
        return desc["value"]
    if kind == "none":
        return None
    if kind == "tensor":
        return _TensorStandIn(desc)
    raise ValueError(f"cannot use argument {desc}")


class _TensorStandIn:
    """What a heuristic sees of a recorded tensor argument."""

    def __init__(self, desc):
        self.desc = desc
        self.dtype = desc["dtype"]


def _plain_type(desc):
    kind = desc["kind"]
    if kind == "tensor":
        return desc["spec"][0]
    if kind == "int":
        v = desc["value"]
        return "i32" if -2**31 <= v < 2**31 else ("i64" if -2**63 <= v < 2**63 else "u64")
    if kind == "float":
        return "fp32"
    if kind == "bool":
        return "u1"
    return None


def _fmt_value(v):
    import triton.language as tl

    if isinstance(v, tl.dtype):
        return v.name
    return repr(v) if isinstance(v, str) else str(v)


def expand(launches: list[dict], modes: list[str], problems: list[str]) -> list[dict]:
    """The distinct compile variants of the recorded launches (see the module docstring);
    launches that cannot be turned into a signature are described in `problems`."""
    variants: dict[str, dict] = {}
    chains = {}
    for launch in launches:
        qual = launch["kernel"]
        if qual not in chains:
            chains[qual] = _kernel_chain(qual)
        fn, configs, heuristics = chains[qual]
        args = dict(launch["args"])
        tuned_keys = set()
        for c in configs or []:
            tuned_keys |= set(c.kwargs)
        # the interpreter's tile config and the heuristics' values are recomputed below
        user = {k: v for k, v in args.items() if k not in tuned_keys and k not in heuristics}
        if configs:
            runs = [(dict(c.kwargs), {k: v for k, v in c.all_kwargs().items() if k in OPTION_KEYS and v is not None})
                    for c in configs]
        else:
            runs = [({}, {k: v for k, v in launch["options"].items() if k in OPTION_KEYS and v is not None})]
        for tile, options in runs:
            values = {k: _decode(v) for k, v in user.items() if v["kind"] != "unknown"}
            values.update(tile)
            for hname, hfn in heuristics.items():
                values[hname] = hfn(dict(values))
            for mode in modes:
                signature, constexprs, attrs, shown = {}, {}, {}, []
                ok = True
                for i, p in enumerate(fn.params):
                    name = p.name
                    if p.is_constexpr:
                        if name in values:
                            val = values[name]
                        elif p.has_default:
                            val = p.default
                        else:
                            ok = False
                            problems.append(f"{qual}: constexpr {name} not given ({launch['scenario']})")
                            break
                        signature[name] = "constexpr"
                        constexprs[name] = val
                        continue
                    desc = user.get(name)
                    if desc is None or desc["kind"] == "unknown":
                        ok = False
                        problems.append(f"{qual}: argument {name} missing or of an unknown type "
                                        f"{desc} ({launch['scenario']})")
                        break
                    if desc["kind"] == "none":
                        signature[name] = "constexpr"
                        constexprs[name] = None
                        shown.append("None")
                        continue
                    if mode == "gpu" and desc.get("spec") and not p.do_not_specialize:
                        ty, attr = desc["spec"]
                        if ty == "constexpr":
                            signature[name] = "constexpr"
                            constexprs[name] = attr
                            shown.append(f"={attr}")
                            continue
                        signature[name] = ty
                        if attr == "D" and not (p.do_not_specialize_on_alignment):
                            attrs[name] = "D"
                            shown.append(f"{ty}/16")
                        else:
                            shown.append(ty)
                    else:
                        signature[name] = _plain_type(desc)
                        shown.append(signature[name])
                if not ok:
                    continue
                key = json.dumps([qual, mode, sorted(signature.items()), sorted(attrs),
                                  sorted((k, _fmt_value(v)) for k, v in constexprs.items()), sorted(options.items())])
                core = str(launch["scenario"]).startswith("core ")
                if key in variants:
                    variants[key]["count"] += 1
                    variants[key]["core"] |= core
                    continue
                cx_shown = " ".join(f"{k}={_fmt_value(v)}" for k, v in constexprs.items()
                                    if signature.get(k) == "constexpr" and fn.params[fn.arg_names.index(k)].is_constexpr)
                variants[key] = {
                    "kernel": qual, "mode": mode, "signature": signature, "attrs": attrs,
                    "constexprs": {k: (("dtype", v.name) if hasattr(v, "primitive_bitwidth") else ("value", v))
                                   for k, v in constexprs.items()},
                    "options": options, "tile": tile, "count": 1, "core": core, "scenario": launch["scenario"],
                    "label": f"{qual.split('.')[-1]} [{mode}] w{options.get('num_warps', 4)}s{options.get('num_stages', 3)} "
                             f"{cx_shown} ({','.join(shown)})",
                }
    return list(variants.values())


_PTXAS_RE = {
    "regs": re.compile(r"Used (\d+) registers"),
    "spill_stores": re.compile(r"(\d+) bytes spill stores"),
    "spill_loads": re.compile(r"(\d+) bytes spill loads"),
    "stack": re.compile(r"(\d+) bytes stack frame"),
}


def _features(v: dict) -> set:
    """What a covering selection must see at least once per (kernel, config):
    the numeric types (pointer element types with the str/dtype constexprs, e.g.
    PRECISION and ACC_DTYPE: fp32 with tf32 is not fp32 with ieee), every other
    constexpr value, the specialization mode and every argument's specialization."""
    sig, cx = v["signature"], v["constexprs"]
    numeric = tuple(t for t in sig.values() if t.startswith("*")) + tuple(
        f"{k}={val}" for k, (kind, val) in sorted(cx.items()) if kind == "dtype" or isinstance(val, str))
    out = {("numeric", numeric), ("mode", v["mode"])}
    for k, (kind, val) in cx.items():
        if kind == "value" and not isinstance(val, str):
            out.add(("constexpr", k, repr(val)))
    for k, t in sig.items():
        if t != "constexpr":
            out.add(("arg", k, "ptr" if t.startswith("*") else t, v["attrs"].get(k, "")))
    return out


def select_covering(variants: list[dict]) -> list[dict]:
    """A subset of the variants that shows every feature (_features) of each (kernel,
    autotune config or launch options) group at least once: the core scenarios' gpu
    variants, then greedily the variant adding the most unseen features (ties: gpu
    specialization first, then the earlier recorded)."""
    groups: dict[str, list[dict]] = {}
    for v in variants:
        groups.setdefault(json.dumps([v["kernel"], sorted(v["options"].items()), sorted(v["tile"].items())]),
                          []).append(v)
    chosen = []
    for members in groups.values():
        members = sorted(members, key=lambda v: v["mode"] != "gpu")
        feats = [_features(v) for v in members]
        seen: set = set()
        for v, f in zip(members, feats):
            if v["core"] and v["mode"] == "gpu":
                chosen.append(v)
                seen |= f
        todo = set().union(*feats)
        while todo - seen:
            best = max(range(len(members)), key=lambda i: (len(feats[i] - seen), -i))
            chosen.append(members[best])
            seen |= feats[best]
    return chosen


def _ptxas_stats(log: str) -> dict:
    out = {}
    for k, rx in _PTXAS_RE.items():
        m = rx.search(log)
        if m:
            out[k] = int(m.group(1))
    return out


def _rerun_ptxas(ptx: str, arch: int) -> str:
    """ptxas -v on a cached kernel's PTX (Triton's flags), for its register and spill
    counts."""
    from triton.backends.nvidia import compiler as nv

    ptxas = nv.get_ptxas(arch).path if hasattr(nv, "get_ptxas") else nv.knobs.nvidia.ptxas.path
    with tempfile.TemporaryDirectory() as d:
        src = Path(d) / "k.ptx"
        src.write_text(ptx)
        r = subprocess.run([ptxas, "-lineinfo", "-v", "--regAllocOptLevel=2",
                            f"--gpu-name={nv.sm_arch_from_capability(arch)}", str(src), "-o", str(Path(d) / "k.o")],
                           capture_output=True, text=True)
        return r.stdout + r.stderr


class _CaptureStderr:
    """Captures file descriptor 2 (MLIR's diagnostics are written there from C++)."""

    def __enter__(self):
        sys.stderr.flush()
        self._tmp = tempfile.TemporaryFile()
        self._saved = os.dup(2)
        os.dup2(self._tmp.fileno(), 2)
        self.text = ""
        return self

    def __exit__(self, *exc):
        sys.stderr.flush()
        os.dup2(self._saved, 2)
        os.close(self._saved)
        self._tmp.seek(0)
        self.text = self._tmp.read().decode(errors="replace")
        self._tmp.close()
        return False


def _diagnostics(text: str, limit: int = 40) -> str:
    """The compiler's messages without the IR module dump that follows them."""
    lines = []
    for line in text.splitlines():
        if line.startswith(("module {", "#loc", "#blocked", "#shared", "#mma", "// -----")):
            break
        if line.strip():
            lines.append(line)
    return "\n".join(lines[:limit])


def _worker_init():
    os.environ.pop("TRITON_INTERPRET", None)
    import importlib

    for name in KERNEL_MODULES:
        importlib.import_module(f"{PACKAGE}.{name}")


def compile_variant(v: dict, arch: int = 90) -> dict:
    import triton
    import triton.language as tl
    from triton import knobs
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    target = GPUTarget("cuda", arch, 32)
    t0 = time.time()
    result = {"label": v["label"], "status": "ok"}
    try:
        from triton.compiler.compiler import make_backend

        fn, _, _ = _kernel_chain(v["kernel"])
        constexprs = {k: (tl.dtype(val) if kind == "dtype" else val) for k, (kind, val) in v["constexprs"].items()}
        backend = make_backend(target)
        attrs = {(fn.arg_names.index(k),): backend.parse_attr(a) for k, a in v["attrs"].items()}
        src = ASTSource(fn=fn, signature=dict(v["signature"]), constexprs=constexprs, attrs=attrs)
        knobs.nvidia.dump_ptxas_log = True
        buf = io.StringIO()
        failure = None
        with _CaptureStderr() as err, contextlib.redirect_stdout(buf):
            try:
                compiled = triton.compile(src, target=target, options=dict(v["options"]))
            except Exception as e:
                failure = e
        if failure is not None:  # with the compiler's diagnostics (written to fd 2)
            failure.add_note(_diagnostics(err.text))
            raise failure
        log = buf.getvalue()
        if "ptxas info" not in log:  # a cache hit: no ptxas ran
            log = _rerun_ptxas(compiled.asm["ptx"], arch)
        result.update(_ptxas_stats(log))
        result["shared"] = int(compiled.metadata.shared)
        result["num_warps"] = compiled.metadata.num_warps
        limit = MAX_SHARED.get(arch, SM90_MAX_SHARED)
        if result["shared"] > limit:
            result["status"] = "FAILED"
            result["error"] = (f"OutOfResources: shared memory {result['shared']} bytes > {limit} "
                               f"(what one block may use on sm_{arch}): the launch would fail")
    except Exception as e:
        result["status"] = "FAILED"
        notes = [n for n in getattr(e, "__notes__", []) if n.strip()]
        result["error"] = "\n".join([f"{type(e).__name__}: {e}", *notes])
    result["seconds"] = round(time.time() - t0, 2)
    return result


def _format(v: dict, r: dict) -> str:
    if r["status"] == "ok" or "regs" in r:
        stats = (f"regs {r.get('regs', '?'):>3} spill {r.get('spill_stores', '?')}/{r.get('spill_loads', '?')} B "
                 f"stack {r.get('stack', '?')} B smem {r.get('shared', '?')} B")
    else:
        stats = "regs - spill - stack - smem -"
    warn = ""
    if r.get("spill_stores"):
        warn = "  [SPILLS]"
    return f"{r['status']:<6} {stats:<44} {r['seconds']:>5.1f}s  {v['label']}{warn}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scope", choices=["default", "full"], default="default",
                    help="recorded scenarios: default, or full (more shapes, every activation/affine/layout "
                         "combination)")
    ap.add_argument("--select", choices=["cover", "all"], default=None,
                    help="cover: a subset showing every argument type, constexpr value and specialization of "
                         "each (kernel, config) at least once (default with --scope default); all: every "
                         "distinct variant (default with --scope full)")
    ap.add_argument("--modes", default="gpu,plain",
                    help="specializations to compile: gpu (as the JIT on a GPU), plain (none); default both")
    ap.add_argument("-k", dest="pattern", default=None, help="only variants whose label matches this regex")
    ap.add_argument("-j", "--jobs", type=int, default=min(4, os.cpu_count() or 1), help="compile processes")
    ap.add_argument("--arch", type=int, default=90, help="compute capability to compile for (90: sm_90a)")
    ap.add_argument("--fresh-cache", action="store_true", help="compile in an empty temporary Triton cache")
    ap.add_argument("--list", action="store_true", help="list the variants, compile nothing")
    ap.add_argument("--records", default=None, help="write the recorded launches (JSON) to this file")
    ap.add_argument("--load-records", default=None,
                    help="compile the launches of a --records file instead of recording (e.g. with another "
                         "Triton first on PYTHONPATH)")
    ap.add_argument("-v", "--verbose", action="store_true", help="full error messages")
    ap.add_argument(RECORD_FLAG, dest="record_out", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.record_out:
        return record_main(args.record_out, args.scope)

    t_start = time.time()
    if args.fresh_cache:
        import atexit
        import shutil

        fresh = tempfile.mkdtemp(prefix="triton_sm90_check_")
        os.environ["TRITON_CACHE_DIR"] = fresh
        atexit.register(shutil.rmtree, fresh, True)
    # 1. record (child process, interpreter)
    if args.load_records:
        recorded = json.loads(Path(args.load_records).read_text())
    else:
        recorded = _record(args)
        if recorded is None:
            return 1
    launches = recorded["launches"]
    how = (f"loaded from {args.load_records}" if args.load_records else
           f"recorded in {time.time() - t_start:.1f}s (TRITON_INTERPRET=1, kernels not run)")
    print(f"# {len(launches)} launches of {len({x['kernel'] for x in launches})} kernels {how}")
    for note in recorded["notes"]:
        print(f"#   host value: {note}")
    for e in recorded["errors"]:
        print(f"# RECORDING ERROR in scenario {e['scenario']}: {e['error']}")
        if args.verbose:
            print(e["traceback"])
    return _compile_all(args, recorded, t_start)


def _record(args):
    with tempfile.TemporaryDirectory() as d:
        out = args.records or str(Path(d) / "launches.json")
        env = dict(os.environ, TRITON_INTERPRET="1", OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
        cmd = [sys.executable, str(Path(__file__).resolve()), RECORD_FLAG, out, "--scope", args.scope]
        proc = subprocess.run(cmd, env=env, cwd=str(REPO), capture_output=True, text=True)
        if proc.returncode != 0 or not Path(out).exists():
            print(proc.stdout + proc.stderr)
            print("FAILED: recording the launches (TRITON_INTERPRET=1) failed")
            return None
        return json.loads(Path(out).read_text())


def _compile_all(args, recorded, t_start) -> int:
    launches = recorded["launches"]
    # 2. expand
    import triton

    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    problems: list[str] = []
    variants = expand(launches, modes, problems)
    problems = sorted(set(problems))
    for p in problems:
        print(f"# FAILED to build a signature: {p}")
    missing = sorted({f"{PACKAGE}.{m}" for m in KERNEL_MODULES} - {x["kernel"].split(":")[0] for x in launches})
    total = len(variants)
    if args.select == "cover" or (args.select is None and args.scope == "default"):
        variants = select_covering(variants)
    if args.pattern:
        rx = re.compile(args.pattern)
        variants = [v for v in variants if rx.search(v["label"]) or rx.search(v["kernel"])]
    # the heaviest first: the pool's tail is then short
    variants.sort(key=lambda v: (0 if "reflect_conv2d" in v["kernel"] else 1, v["kernel"], v["label"]))
    print(f"# {len(variants)} of {total} distinct variants to compile for GPUTarget('cuda', {args.arch}, 32) with triton "
          f"{triton.__version__} ({', '.join(modes)} specialization), {args.jobs} processes, "
          f"cache {os.environ.get('TRITON_CACHE_DIR', '~/.triton/cache')}")
    if args.list:
        for v in variants:
            print(f"list   {v['label']}   x{v['count']}  e.g. {v['scenario']}")
        return 0

    # 3. compile
    results = []
    if args.jobs > 1 and len(variants) > 1:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(args.jobs, mp_context=mp.get_context("spawn"), initializer=_worker_init) as pool:
            futures = [pool.submit(compile_variant, v, args.arch) for v in variants]
            for v, f in zip(variants, futures):
                r = f.result()
                results.append((v, r))
                _report(v, r, args.verbose)
    else:
        _worker_init()
        for v in variants:
            r = compile_variant(v, args.arch)
            results.append((v, r))
            _report(v, r, args.verbose)

    failed = [(v, r) for v, r in results if r["status"] != "ok"]
    spilling = [(v, r) for v, r in results if r.get("spill_stores")]
    print(f"# {len(results) - len(failed)} ok, {len(failed)} FAILED, {len(spilling)} with register spills; "
          f"{time.time() - t_start:.0f}s in all")
    if missing:
        print(f"# FAILED: no launch recorded from {', '.join(missing)}")
    if recorded["errors"]:
        print(f"# FAILED: {len(recorded['errors'])} scenarios raised while recording")
    by_kernel: dict[str, list] = {}
    for v, r in failed:
        by_kernel.setdefault(v["kernel"], []).append(r["error"].split("\n")[0][:200])
    for k, errs in by_kernel.items():
        print(f"#   {k}: {len(errs)} failed, e.g. {errs[0]}")
    return 1 if failed or missing or recorded["errors"] or problems else 0


def _report(v, r, verbose):
    print(_format(v, r), flush=True)
    if r["status"] != "ok":
        err = r["error"]
        if not verbose:
            lines = [ln for ln in err.split("\n") if ln.strip()]
            err = "\n".join(lines[:12]) + ("\n    ..." if len(lines) > 12 else "")
        print("    " + err.replace("\n", "\n    "))
        print(f"    (e.g. scenario: {v['scenario']}; signature {v['signature']}; options {v['options']})")


if __name__ == "__main__":
    sys.exit(main())
