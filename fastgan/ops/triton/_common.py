"""What the Triton kernels of fastgan share: how an op is defined so that torch.compile
sees it as one node, and small jit helpers.

On a GPU an op is a `torch.library.triton_op` (torch.compile sees the kernels inside
it; its fake rule is the op's own Python body, whose `wrap_triton` launches do nothing
on fake tensors). Under TRITON_INTERPRET=1 `wrap_triton` hands back the raw
interpreted kernel, which would run on fake tensors, so there the op is an opaque
`torch.library.custom_op` with the given fake rule instead: the same kernels, the same
schema, the same fake results.
"""

from __future__ import annotations

import contextlib
import math
import struct
from typing import Callable

import torch
import triton
import triton.language as tl
from torch.library import wrap_triton

from fastgan.ops.triton import INTERPRET

# Programs of a reduction's first pass at most: fixed (not taken from the device), so
# the summation order, hence the result, is the same on every GPU.
MAX_PARTIALS = 1024


def define_op(name: str, fn: Callable, fake: Callable):
    """The op `name` ("fastgan_triton::x") running `fn`; `fake` is its fake rule.

    The schema is inferred from fn's annotations: torch 2.11's triton_op ignores an
    explicit schema and infers it anyway, so the annotations must say it all."""
    if INTERPRET:
        op = torch.library.custom_op(name, fn, mutates_args=())
        op.register_fake(fake)
    else:
        op = torch.library.triton_op(name, fn, mutates_args=())
    return op


def launcher(kernel, device: torch.device):
    """What launches `kernel` inside an op, for tensors on `device`: wrap_triton(kernel) on a
    GPU (torch.compile traces the launch); under TRITON_INTERPRET=1 the interpreted kernel
    itself (the op is an opaque custom op there; torch 2.11's wrap_triton refuses
    interpreted kernels). `launcher(k, device)[grid](*args)` launches on `device`: Triton
    launches on the current CUDA device, which need not be the tensors' (cuda:1 while
    cuda:0 is current: an illegal address, or a read across unsynchronized streams)."""
    launch = kernel if INTERPRET else wrap_triton(kernel)
    return _OnDevice(launch, device) if device.type == "cuda" else launch


def on_device(device: torch.device):
    """A context that makes `device` the current CUDA device (nothing for other devices)."""
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


class _OnDevice:
    """kernel[grid](*args) run with `device` current."""

    def __init__(self, launch, device: torch.device):
        self.launch, self.device = launch, device

    def __getitem__(self, grid):
        def run(*args, **kwargs):
            with torch.cuda.device(self.device):
                return self.launch[grid](*args, **kwargs)
        return run


def split_f64(value: float, parts: int = 3) -> tuple[float, ...]:
    """value as a sum of `parts` float32s (Triton passes Python floats as float32), which
    the jit side adds in float64 (`join_f64`): three parts (72 bits of significand) carry
    a float64 in float32's normal range to its last bit, two to ~2^-48 relative. A value
    they carry less closely than 2^-46 is refused with a ValueError (inf or NaN; beyond
    float32's range, where the parts overflow to inf - inf = NaN; so small that they
    underflow): the kernels would compute NaN or 0 with it."""
    value = float(value)
    split, rest = [], value
    if math.isfinite(value):
        for _ in range(parts):
            split.append(_f32(rest))
            rest -= split[-1]
    if not (split and all(map(math.isfinite, split))
            and abs(math.fsum(split) - value) <= abs(value) * 2.0 ** -46):
        raise ValueError(f"the triton back end passes constants to its kernels as float32 parts, which cannot "
                         f"carry {value!r} (not finite, or outside float32's range); use the cpu or torch back end for it")
    return tuple(split)


def _f32(value: float) -> float:
    return struct.unpack("f", struct.pack("f", value))[0]


def reduction_grid(n: int, block: int) -> tuple[int, int]:
    """(programs, tiles per program) of a first pass over n elements in tiles of `block`:
    at most MAX_PARTIALS programs, a function of n only."""
    tiles = triton.cdiv(n, block)
    per_program = max(triton.cdiv(tiles, MAX_PARTIALS), 1)
    return max(triton.cdiv(tiles, per_program), 1), per_program


@triton.jit
def join_f64(hi, mid, lo):
    return (tl.cast(hi, tl.float64) + tl.cast(mid, tl.float64)) + tl.cast(lo, tl.float64)


@triton.jit
def round_f64(v, OUT64: tl.constexpr, BF16: tl.constexpr, out_dtype: tl.constexpr):
    """A float64 value rounded to the output dtype (through float32 below float64, as
    the CUDA kernels' to_scalar does), to nearest even. bf16 is rounded by hand: the
    Triton interpreter truncates float32 -> bf16, the GPU rounds to nearest even, and
    this way both give the same bits."""
    if OUT64:
        return v
    else:
        f = v.to(tl.float32)
        if BF16:
            f = round_bf16(f)
        return f.to(out_dtype)


@triton.jit
def rounded(v, out_dtype: tl.constexpr):
    """v in out_dtype to nearest even, bf16 by hand (through float32), as round_f64 and
    for its reason: the same bits from the interpreter as from a GPU."""
    if out_dtype == tl.bfloat16:
        return round_bf16(v.to(tl.float32)).to(out_dtype)
    else:
        return v.to(out_dtype)


@triton.jit
def round_bf16(f):
    """float32 -> the nearest bf16 (ties to even), still as a float32."""
    bits = f.to(tl.uint32, bitcast=True)
    bits = (bits + (0x7FFF + ((bits >> 16) & 1))) & 0xFFFF0000
    return tl.where(f != f, f, bits.to(tl.float32, bitcast=True))  # NaN stays NaN
