"""The `triton` back end of fastgan.ops.l1_loss: weight * mean(|input - target|).

Ops torch.ops.fastgan_triton.l1_loss / l1_loss_backward, the schemas of the native
fastgan::l1_loss / l1_loss_backward, with the same fake rules (ops/_l1_loss.py) and an
autograd rule whose backward is the Triton backward (itself differentiable).

Forward, deterministic, no float atomics:
  pass 1 (`_l1_partial_kernel`): P programs (P a function of numel only, at most
          MAX_PARTIALS) each sum |x - t| over a contiguous run of tiles of BLOCK
          elements, lane by lane (float64 lanes for float32/float64 inputs, float32
          for bf16/fp16), then the lanes in tl.sum's fixed tree: one float64 partial
          per program;
  pass 2 (`_l1_finalize_kernel`): one program adds the P partials in a fixed order
          and writes weight * (sum / numel) in the input's dtype.
Backward (`_l1_backward_kernel`): elementwise grad_input = scale * sign(x - t) and
grad_target = -grad_input, scale = (grad * weight) / numel rounded to the dtype,
grad read on the device (no host sync).

Memory traffic floor: forward 2 * numel * itemsize bytes read (+ 8 bytes per
partial); backward 2 * numel * itemsize read + 2 * numel * itemsize written.
Fraction of that floor reached on a GPU: make bench-kernels / benchmarks/gpu_suite.sh
record it (benchmarks/results/kernels_<card>.md).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from fastgan.ops._l1_loss import L1_LOSS, _backward_backward, _grad_like, _setup_context_backward, make_autograd
from fastgan.ops._layout import dense_pair
from fastgan.ops.triton import INTERPRET, triton_problem
from fastgan.ops.triton._common import define_op, join_f64, launcher, reduction_grid, round_f64, split_f64

# elements per tile (pass 1) and per program (backward); the interpreter (CPU tests) runs
# programs one after the other, so it gets fewer, larger ones
BLOCK = 8192 if INTERPRET else 1024
FINAL_BLOCK = 1024    # partials per step of pass 2


@triton.jit
def _l1_partial_kernel(x_ptr, t_ptr, partial_ptr, n, tiles_per_program,
                       BLOCK: tl.constexpr, ACC64: tl.constexpr):
    pid = tl.program_id(0).to(tl.int64)
    lanes = tl.arange(0, BLOCK)
    if ACC64:
        acc = tl.zeros([BLOCK], dtype=tl.float64)
    else:
        acc = tl.zeros([BLOCK], dtype=tl.float32)
    first = pid * tiles_per_program
    for i in range(0, tiles_per_program):
        offs = (first + i) * BLOCK + lanes
        mask = offs < n
        x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(acc.dtype)
        t = tl.load(t_ptr + offs, mask=mask, other=0.0).to(acc.dtype)
        acc += tl.abs(x - t)
    tl.store(partial_ptr + pid, tl.sum(acc.to(tl.float64), axis=0))


@triton.jit
def _l1_finalize_kernel(partial_ptr, out_ptr, n_partial, n, w_hi, w_mid, w_lo,
                        BLOCK: tl.constexpr, OUT64: tl.constexpr, BF16: tl.constexpr):
    lanes = tl.arange(0, BLOCK)
    acc = tl.zeros([BLOCK], dtype=tl.float64)
    for start in range(0, n_partial, BLOCK):
        offs = start + lanes
        acc += tl.load(partial_ptr + offs, mask=offs < n_partial, other=0.0)
    total = tl.sum(acc, axis=0)
    loss = join_f64(w_hi, w_mid, w_lo) * (total / tl.cast(n, tl.float64))
    tl.store(out_ptr, round_f64(loss, OUT64, BF16, out_ptr.dtype.element_ty))


@triton.jit
def _l1_backward_kernel(grad_ptr, x_ptr, t_ptr, gx_ptr, gt_ptr, n, w_hi, w_mid, w_lo,
                        BLOCK: tl.constexpr, F64: tl.constexpr, BF16: tl.constexpr):
    pid = tl.program_id(0).to(tl.int64)
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    g = tl.load(grad_ptr).to(tl.float64)
    # (grad * weight) / numel rounded once to the dtype, as the native kernels do
    scale = round_f64((g * join_f64(w_hi, w_mid, w_lo)) / tl.cast(n, tl.float64), F64, BF16, gx_ptr.dtype.element_ty)
    if F64:
        scale = scale.to(tl.float64)
        x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float64)
        t = tl.load(t_ptr + offs, mask=mask, other=0.0).to(tl.float64)
    else:
        scale = scale.to(tl.float32)
        x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        t = tl.load(t_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    sign = (x > t).to(scale.dtype) - (x < t).to(scale.dtype)
    v = sign * scale
    tl.store(gx_ptr + offs, v.to(gx_ptr.dtype.element_ty), mask=mask)
    tl.store(gt_ptr + offs, (-v).to(gt_ptr.dtype.element_ty), mask=mask)


def _check(op: str, input: torch.Tensor, target: torch.Tensor) -> None:
    torch._check(input.shape == target.shape, lambda: f"{op}: input and target must have the same shape, "
                                                      f"got {tuple(input.shape)} and {tuple(target.shape)}")
    torch._check(input.dtype == target.dtype, lambda: f"{op}: input and target must have the same dtype")
    torch._check(input.device == target.device, lambda: f"{op}: input and target must be on the same device")
    torch._check(input.dtype.is_floating_point, lambda: f"{op}: expected a floating point dtype, got {input.dtype}")


def _l1_loss(input: torch.Tensor, target: torch.Tensor, weight: float) -> torch.Tensor:
    _check("fastgan_triton::l1_loss", input, target)
    out = input.new_empty(())
    n = input.numel()
    if n == 0:  # the mean of nothing is NaN, as aten's (no kernel: nothing to point at)
        return out.fill_(float("nan"))
    x, t = dense_pair(input, target)
    programs, per_program = reduction_grid(n, BLOCK)
    partial = input.new_empty((programs,), dtype=torch.float64)
    w_hi, w_mid, w_lo = split_f64(weight)
    launcher(_l1_partial_kernel, x.device)[(programs,)](
        x, t, partial, n, per_program, BLOCK=BLOCK, ACC64=input.dtype in (torch.float32, torch.float64))
    launcher(_l1_finalize_kernel, x.device)[(1,)](
        partial, out, programs, n, w_hi, w_mid, w_lo, BLOCK=FINAL_BLOCK, OUT64=input.dtype == torch.float64,
        BF16=input.dtype == torch.bfloat16)
    return out


def _l1_loss_backward(grad: torch.Tensor, input: torch.Tensor, target: torch.Tensor,
                      weight: float) -> tuple[torch.Tensor, torch.Tensor]:
    _check("fastgan_triton::l1_loss_backward", input, target)
    torch._check(grad.numel() == 1, lambda: "fastgan_triton::l1_loss_backward: grad must hold one element")
    x, t = dense_pair(input, target)
    grad_input = torch.empty_like(x)
    grad_target = torch.empty_like(x)
    n = x.numel()
    if n > 0:
        w_hi, w_mid, w_lo = split_f64(weight)
        g = grad.reshape(1)
        launcher(_l1_backward_kernel, x.device)[(triton.cdiv(n, BLOCK),)](
            g, x, t, grad_input, grad_target, n, w_hi, w_mid, w_lo, BLOCK=BLOCK, F64=input.dtype == torch.float64,
            BF16=input.dtype == torch.bfloat16)
    return grad_input, grad_target


def _l1_loss_fake(input, target, weight):
    _check("fastgan_triton::l1_loss", input, target)
    return input.new_empty(())


def _l1_loss_backward_fake(grad, input, target, weight):
    _check("fastgan_triton::l1_loss_backward", input, target)
    return _grad_like(input, target), _grad_like(input, target)


l1_loss_op = define_op("fastgan_triton::l1_loss", _l1_loss, _l1_loss_fake)
l1_loss_backward_op = define_op("fastgan_triton::l1_loss_backward", _l1_loss_backward, _l1_loss_backward_fake)


_setup_context, _backward = make_autograd(l1_loss_backward_op)
l1_loss_op.register_autograd(_backward, setup_context=_setup_context)
l1_loss_backward_op.register_autograd(_backward_backward, setup_context=_setup_context_backward)


def l1_loss(input: torch.Tensor, target: torch.Tensor, weight: float = 1.0) -> torch.Tensor:
    """The l1_loss implementation of the triton back end."""
    return l1_loss_op(input, target, float(weight))


L1_LOSS.impl("triton", l1_loss, available=triton_problem)
