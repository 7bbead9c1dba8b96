"""The `triton` back end of fastgan.ops.cycle_losses: every L1 term of a CycleGAN
iteration in one pass (see ops/_cycle_losses.py and csrc/cycle_losses.h for the term
order, the two sides and the packed sign codes).

Ops torch.ops.fastgan_triton.cycle_losses / cycle_losses_backward, the schemas of the
native fastgan::cycle_losses / cycle_losses_backward, sharing their fake and autograd
rules (ops/_cycle_losses.py).

Forward, deterministic, no float atomics:
  pass 1 (`_cycle_partial_kernel`): P programs (P a function of the element count
          only, at most MAX_PARTIALS) each walk a contiguous run of tiles of BLOCK
          element indices, reading the six images once, summing the four |x - t| lane
          by lane (float64 lanes for float32/float64 inputs, float32 for bf16/fp16) and,
          when asked, writing the code byte of each index; then the lanes in tl.sum's
          fixed tree: four float64 partials per program;
  pass 2 (`_cycle_finalize_kernel`): one program adds the P partials of each term in
          a fixed order and writes weight_j * (sum_j / numel_j) in the images' dtype.
Backward (`_cycle_backward_kernel`): elementwise from the code bytes,
grad = sign * scale_j with scale_j = (grad[j] * weight_j) / numel_j rounded to the dtype,
grad read on the device (no host sync); real images' gradients -(their two terms).

Memory traffic floor (n elements per image, s bytes each, identity terms on, real
images without grad): forward 6ns read + n written (codes) (+ 32 bytes per partial);
backward n read + 4ns written. Recomputing the signs in backward instead would move
16ns. Fraction of the floor reached on a GPU: make bench-kernels / benchmarks/gpu_suite.sh
record it (benchmarks/results/kernels_<card>.md).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from fastgan.ops._cycle_losses import (
    CYCLE_LOSSES,
    backward_outputs,
    check_op_inputs,
    cycle_losses_backward_fake,
    cycle_losses_fake,
    needs_signs,
    register_autograd,
    side_order,
)
from fastgan.ops._layout import in_order
from fastgan.ops.triton import INTERPRET, triton_problem
from fastgan.ops.triton._common import (
    define_op,
    launcher,
    join_f64,
    reduction_grid,
    round_bf16,
    round_f64,
    split_f64,
)

# element indices per tile (pass 1) and per program (backward); the interpreter (CPU
# tests) runs programs one after the other, so it gets fewer, larger ones
BLOCK = 8192 if INTERPRET else 1024
FINAL_BLOCK = 256    # partials per step of pass 2


@triton.jit
def _code(x, t, shift: tl.constexpr):
    return ((x > t).to(tl.int32) << shift) | ((x < t).to(tl.int32) << (shift + 1))


@triton.jit
def _cycle_partial_kernel(xa_ptr, ra_ptr, ib_ptr, xb_ptr, rb_ptr, ia_ptr, codes_ptr, partial_ptr,
                          n_A, n_B, n_max, tiles_per_program,
                          HAS_IDT: tl.constexpr, CODES: tl.constexpr, ACC64: tl.constexpr, BLOCK: tl.constexpr):
    # side A: xa = rec_A, ra = real_A, ib = idt_B; side B: xb = rec_B, rb = real_B, ia = idt_A
    pid = tl.program_id(0).to(tl.int64)
    lanes = tl.arange(0, BLOCK)
    if ACC64:
        s0 = tl.zeros([BLOCK], dtype=tl.float64)
    else:
        s0 = tl.zeros([BLOCK], dtype=tl.float32)
    s1 = tl.zeros_like(s0)
    s2 = tl.zeros_like(s0)
    s3 = tl.zeros_like(s0)
    first = pid * tiles_per_program
    for i in range(0, tiles_per_program):
        offs = (first + i) * BLOCK + lanes
        in_a = offs < n_A
        in_b = offs < n_B
        ra = tl.load(ra_ptr + offs, mask=in_a, other=0.0).to(s0.dtype)
        xa = tl.load(xa_ptr + offs, mask=in_a, other=0.0).to(s0.dtype)
        rb = tl.load(rb_ptr + offs, mask=in_b, other=0.0).to(s0.dtype)
        xb = tl.load(xb_ptr + offs, mask=in_b, other=0.0).to(s0.dtype)
        s0 += tl.abs(xa - ra)
        s1 += tl.abs(xb - rb)
        code = _code(xa, ra, 0) | _code(xb, rb, 2)
        if HAS_IDT:
            ia = tl.load(ia_ptr + offs, mask=in_b, other=0.0).to(s0.dtype)
            ib = tl.load(ib_ptr + offs, mask=in_a, other=0.0).to(s0.dtype)
            s2 += tl.abs(ia - rb)
            s3 += tl.abs(ib - ra)
            code = code | _code(ia, rb, 4) | _code(ib, ra, 6)
        if CODES:
            tl.store(codes_ptr + offs, code.to(tl.uint8), mask=offs < n_max)
    out = partial_ptr + pid * 4
    tl.store(out + 0, tl.sum(s0.to(tl.float64), axis=0))
    tl.store(out + 1, tl.sum(s1.to(tl.float64), axis=0))
    tl.store(out + 2, tl.sum(s2.to(tl.float64), axis=0))
    tl.store(out + 3, tl.sum(s3.to(tl.float64), axis=0))


@triton.jit
def _cycle_finalize_kernel(partial_ptr, out_ptr, n_partial, n_A, n_B,
                           w0_hi, w0_mid, w0_lo, w1_hi, w1_mid, w1_lo, w2_hi, w2_mid, w2_lo, w3_hi, w3_mid, w3_lo,
                           HAS_IDT: tl.constexpr, OUT64: tl.constexpr, BF16: tl.constexpr,
                           BLOCK: tl.constexpr):
    rows = tl.arange(0, BLOCK)
    terms = tl.arange(0, 4)
    acc = tl.zeros([BLOCK, 4], dtype=tl.float64)
    for start in range(0, n_partial, BLOCK):
        r = start + rows
        acc += tl.load(partial_ptr + r[:, None] * 4 + terms[None, :], mask=(r < n_partial)[:, None], other=0.0)
    total = tl.sum(acc, axis=0)
    w = tl.where(terms == 0, join_f64(w0_hi, w0_mid, w0_lo),
                 tl.where(terms == 1, join_f64(w1_hi, w1_mid, w1_lo),
                          tl.where(terms == 2, join_f64(w2_hi, w2_mid, w2_lo), join_f64(w3_hi, w3_mid, w3_lo))))
    # term j's element count: numel_A for cycle_A (0) and idt_B (3), numel_B otherwise
    numel = tl.where((terms == 0) | (terms == 3), tl.cast(n_A, tl.float64), tl.cast(n_B, tl.float64))
    loss = w * (total / numel)
    if not HAS_IDT:
        loss = tl.where(terms >= 2, 0.0, loss)
    tl.store(out_ptr + terms, round_f64(loss, OUT64, BF16, out_ptr.dtype.element_ty))


@triton.jit
def _sign(code, shift: tl.constexpr, dtype: tl.constexpr):
    return ((code >> shift) & 1).to(dtype) - ((code >> (shift + 1)) & 1).to(dtype)


@triton.jit
def _scale(grad_ptr, j: tl.constexpr, w_hi, w_mid, w_lo, numel, F64: tl.constexpr, BF16: tl.constexpr,
           out_dtype: tl.constexpr):
    g = tl.load(grad_ptr + j).to(tl.float64)
    s = round_f64((g * join_f64(w_hi, w_mid, w_lo)) / tl.cast(numel, tl.float64), F64, BF16, out_dtype)
    if F64:
        return s.to(tl.float64)
    else:
        return s.to(tl.float32)


@triton.jit
def _cycle_backward_kernel(grad_ptr, codes_ptr,
                           g_real_a_ptr, g_rec_a_ptr, g_real_b_ptr, g_rec_b_ptr, g_idt_a_ptr, g_idt_b_ptr,
                           n_A, n_B,
                           w0_hi, w0_mid, w0_lo, w1_hi, w1_mid, w1_lo, w2_hi, w2_mid, w2_lo, w3_hi, w3_mid, w3_lo,
                           REAL_A: tl.constexpr, REC_A: tl.constexpr, REAL_B: tl.constexpr,
                           REC_B: tl.constexpr, IDT_A: tl.constexpr, IDT_B: tl.constexpr,
                           HAS_IDT: tl.constexpr, F64: tl.constexpr, BF16: tl.constexpr,
                           BLOCK: tl.constexpr):
    # every pointer (a gradient or its stand-in) has the gradients' element type
    dtype = g_real_a_ptr.dtype.element_ty
    pid = tl.program_id(0).to(tl.int64)
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    in_a = offs < n_A
    in_b = offs < n_B
    code = tl.load(codes_ptr + offs, mask=in_a | in_b, other=0).to(tl.int32)
    if F64:
        compute = tl.float64
    else:
        compute = tl.float32
    if REC_A or REAL_A:
        v0 = _sign(code, 0, compute) * _scale(grad_ptr, 0, w0_hi, w0_mid, w0_lo, n_A, F64, BF16, dtype)
        if REC_A:
            tl.store(g_rec_a_ptr + offs, v0.to(dtype), mask=in_a)
    if REC_B or REAL_B:
        v1 = _sign(code, 2, compute) * _scale(grad_ptr, 1, w1_hi, w1_mid, w1_lo, n_B, F64, BF16, dtype)
        if REC_B:
            tl.store(g_rec_b_ptr + offs, v1.to(dtype), mask=in_b)
    if HAS_IDT and (IDT_A or REAL_B):
        v2 = _sign(code, 4, compute) * _scale(grad_ptr, 2, w2_hi, w2_mid, w2_lo, n_B, F64, BF16, dtype)
        if IDT_A:
            tl.store(g_idt_a_ptr + offs, v2.to(dtype), mask=in_b)
    if HAS_IDT and (IDT_B or REAL_A):
        v3 = _sign(code, 6, compute) * _scale(grad_ptr, 3, w3_hi, w3_mid, w3_lo, n_A, F64, BF16, dtype)
        if IDT_B:
            tl.store(g_idt_b_ptr + offs, v3.to(dtype), mask=in_a)
    if REAL_A:
        if HAS_IDT:
            v = -(v0 + v3)
        else:
            v = -v0
        if BF16:
            v = round_bf16(v)  # (v0 + v3 is the one sum here that needs rounding)
        tl.store(g_real_a_ptr + offs, v.to(dtype), mask=in_a)
    if REAL_B:
        if HAS_IDT:
            v = -(v1 + v2)
        else:
            v = -v1
        if BF16:
            v = round_bf16(v)
        tl.store(g_real_b_ptr + offs, v.to(dtype), mask=in_b)


def _weights(lambda_A: float, lambda_B: float, lambda_identity: float, has_idt: bool) -> list[float]:
    """The four weights as (hi, mid, lo) float32 triples, flattened (csrc term_weights)."""
    w = [lambda_A, lambda_B, lambda_B * lambda_identity if has_idt else 0.0,
         lambda_A * lambda_identity if has_idt else 0.0]
    return [part for value in w for part in split_f64(value)]


def _cycle_losses(real_A: torch.Tensor, rec_A: torch.Tensor, real_B: torch.Tensor, rec_B: torch.Tensor,
                  idt_A: torch.Tensor | None, idt_B: torch.Tensor | None, lambda_A: float, lambda_B: float,
                  lambda_identity: float, compute_signs: bool) -> tuple[torch.Tensor, torch.Tensor]:
    check_op_inputs("fastgan_triton::cycle_losses", real_A, rec_A, real_B, rec_B, idt_A, idt_B)
    has_idt = idt_A is not None
    order_a = side_order(rec_A, real_A, idt_B)
    order_b = side_order(rec_B, real_B, idt_A)
    xa, ra = in_order(rec_A, order_a), in_order(real_A, order_a)
    xb, rb = in_order(rec_B, order_b), in_order(real_B, order_b)
    ib = in_order(idt_B, order_a) if has_idt else ra  # (not read without identity terms)
    ia = in_order(idt_A, order_b) if has_idt else rb
    n_A, n_B = real_A.numel(), real_B.numel()
    n_max = max(n_A, n_B)
    losses = real_A.new_empty((4,))
    signs = real_A.new_empty((n_max if compute_signs else 0,), dtype=torch.uint8)
    if n_max == 0:  # means of nothing are NaN, as aten's (no kernel: nothing to point at)
        losses.fill_(float("nan"))
        if not has_idt:
            losses[2:] = 0.0
        return losses, signs
    # an empty side (the other one is not) reads nothing: any valid pointer stands in
    if n_A == 0:
        xa, ra, ib = xb, rb, ia
    if n_B == 0:
        xb, rb, ia = xa, ra, ib
    programs, per_program = reduction_grid(n_max, BLOCK)
    partial = real_A.new_empty((programs * 4,), dtype=torch.float64)
    wide = real_A.dtype in (torch.float32, torch.float64)
    launcher(_cycle_partial_kernel, real_A.device)[(programs,)](
        xa, ra, ib, xb, rb, ia, signs if compute_signs else partial, partial, n_A, n_B, n_max, per_program,
        HAS_IDT=has_idt, CODES=bool(compute_signs), ACC64=wide, BLOCK=BLOCK)  # (n_max > 0 here)
    launcher(_cycle_finalize_kernel, real_A.device)[(1,)](
        partial, losses, programs, n_A, n_B, *_weights(lambda_A, lambda_B, lambda_identity, has_idt),
        HAS_IDT=has_idt, OUT64=real_A.dtype == torch.float64, BF16=real_A.dtype == torch.bfloat16,
        BLOCK=FINAL_BLOCK)
    return losses, signs


def _cycle_losses_backward(grad: torch.Tensor, signs: torch.Tensor, real_A: torch.Tensor, rec_A: torch.Tensor,
                           real_B: torch.Tensor, rec_B: torch.Tensor, idt_A: torch.Tensor | None,
                           idt_B: torch.Tensor | None, lambda_A: float, lambda_B: float, lambda_identity: float,
                           output_mask: list[bool]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor,
                                                             torch.Tensor, torch.Tensor, torch.Tensor]:
    op = "fastgan_triton::cycle_losses_backward"
    check_op_inputs(op, real_A, rec_A, real_B, rec_B, idt_A, idt_B)
    n_A, n_B = real_A.numel(), real_B.numel()
    n_max = max(n_A, n_B)
    torch._check(grad.numel() == 4, lambda: f"{op}: grad must hold the 4 loss gradients")
    torch._check(signs.dtype == torch.uint8 and signs.dim() == 1 and signs.numel() == n_max,
                 lambda: f"{op}: signs must be the uint8 codes of the forward ({n_max} of them)")
    has_idt = idt_A is not None
    outs = backward_outputs(real_A, rec_A, real_B, rec_B, idt_A, idt_B, output_mask)
    # from the mask, not from the outputs' sizes: constexprs must be plain bools when
    # torch.compile traces with symbolic sizes
    write = [bool(m) and (i < 4 or has_idt) for i, m in enumerate(output_mask)]
    if n_max == 0 or not any(write):
        return outs
    # Each gradient not written gets its own stand-in (of the gradients' dtype, never
    # touched): a compiled graph's functionalization of the kernel must see no aliasing
    # pointer arguments.
    ptrs = [o if w else real_A.new_empty((1,)) for o, w in zip(outs, write)]
    g = grad.reshape(4).contiguous()
    launcher(_cycle_backward_kernel, real_A.device)[(triton.cdiv(n_max, BLOCK),)](
        g, signs, *ptrs, n_A, n_B, *_weights(lambda_A, lambda_B, lambda_identity, has_idt),
        REAL_A=write[0], REC_A=write[1], REAL_B=write[2], REC_B=write[3],
        IDT_A=write[4], IDT_B=write[5], HAS_IDT=has_idt, F64=real_A.dtype == torch.float64,
        BF16=real_A.dtype == torch.bfloat16, BLOCK=BLOCK)
    return outs


define_op("fastgan_triton::cycle_losses", _cycle_losses, cycle_losses_fake)
define_op("fastgan_triton::cycle_losses_backward", _cycle_losses_backward, cycle_losses_backward_fake)
register_autograd(torch.ops.fastgan_triton.cycle_losses.default,
                  torch.ops.fastgan_triton.cycle_losses_backward.default)


def cycle_losses(real_A, rec_A, real_B, rec_B, idt_A, idt_B, lambda_A, lambda_B, lambda_identity):
    """The cycle_losses implementation of the triton back end (the 4 values)."""
    losses, _ = torch.ops.fastgan_triton.cycle_losses(
        real_A, rec_A, real_B, rec_B, idt_A, idt_B, lambda_A, lambda_B, lambda_identity,
        needs_signs(real_A, rec_A, real_B, rec_B, idt_A, idt_B))
    return losses


CYCLE_LOSSES.impl("triton", cycle_losses, available=triton_problem)
