"""fastgan.ops.l1_loss: weight * mean(|input - target|), fused.

Back ends: `torch` (reference.l1_loss), `cpu` and `cuda` (the native op
torch.ops.fastgan.l1_loss, csrc/{cpu,cuda}/l1_loss.*). The native op gets here its fake
(meta) rule and its autograd rule, whose backward is the native
fastgan::l1_loss_backward (itself differentiable, for double backward), so that
torch.compile(fullgraph=True) traces it without graph breaks. In eager mode the same
kernels and rules run through a plain autograd.Function (fastgan/ops/_eager.py).
"""

from __future__ import annotations

import torch

from fastgan.ops import _native, reference, registry
from fastgan.ops._dtypes import promoted
from fastgan.ops._eager import eager_function, takes_eager_path
from fastgan.ops._layout import is_dense
from fastgan.ops._args import as_autocast_runs_l1, check_tensors, constant
from fastgan.ops._saved import save_tensors

L1_LOSS = registry.Op("l1_loss", reference.l1_loss)


def l1_loss(input: torch.Tensor, target: torch.Tensor, weight: float = 1.0) -> torch.Tensor:
    """weight * mean(|input - target|) as a 0-dim tensor of the inputs' (promoted) dtype.

    input and target: same shape and device (no broadcasting), any layout; of two
    dtypes (a bf16 output against a float32 target) both are promoted to the wider, as
    torch's l1_loss does; under autocast bf16/fp16 run in float32, as F.l1_loss does
    there (autocast's float32 list). Differentiable in both. weight is a
    constant: a Python number or a one-element tensor without grad. Runs on the back end
    chosen by fastgan.ops.use_backend / FASTGAN_BACKEND / auto (native kernels when
    built). The native kernels accumulate in float64 (float32 inputs; float32 for
    bf16/fp16) and are deterministic: the same bits for any number of threads.
    """
    check_tensors("l1_loss", input=input, target=target)
    if input.shape != target.shape:
        raise ValueError(f"l1_loss: input and target must have the same shape, got "
                         f"{tuple(input.shape)} and {tuple(target.shape)}")
    weight = constant("l1_loss", "weight", weight, "weight * l1_loss(input, target)")
    input, target = promoted(*as_autocast_runs_l1(input, target))
    if not input.dtype.is_floating_point:  # (every back end alike: torch's would take complex)
        raise ValueError(f"l1_loss: input and target are {input.dtype} (promoted); "
                         f"one of them must be floating point")
    return L1_LOSS(input, target, weight)


def _native_l1_loss(input: torch.Tensor, target: torch.Tensor, weight: float = 1.0) -> torch.Tensor:
    if takes_eager_path(input, target):
        return _EagerL1Loss.apply(input, target, float(weight))
    return torch.ops.fastgan.l1_loss(input, target, float(weight))


L1_LOSS.impl("cpu", _native_l1_loss, available=_native.kernel_check("l1_loss", "CPU"))
L1_LOSS.impl("cuda", _native_l1_loss, available=_native.kernel_check("l1_loss", "CUDA"))


def _grad_like(input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """An empty gradient laid out as the kernels lay it out (csrc/common.h dense_pair)."""
    if is_dense(input):
        return torch.empty_like(input)
    if is_dense(target):
        return torch.empty_like(target)
    return input.new_empty(input.shape)


def make_autograd(backward_op):
    """(setup_context, backward) of an l1_loss op (input, target, weight=1.0) whose backward op
    is `backward_op` (grad, input, target, weight) -> (grad_input, grad_target): the native
    op's and the Triton one's."""

    def setup_context(ctx, inputs, output):
        input, target = inputs[0], inputs[1]
        ctx.weight = float(inputs[2]) if len(inputs) > 2 else 1.0
        save_tensors(ctx, input, target)

    def backward(ctx, grad):
        input, target = ctx.saved_tensors
        grad_input, grad_target = backward_op(grad, input, target, ctx.weight)
        return (grad_input if ctx.needs_input_grad[0] else None,
                grad_target if ctx.needs_input_grad[1] else None,
                None)

    return setup_context, backward


def _setup_context_backward(ctx, inputs, output):
    grad, input, target, weight = inputs
    ctx.weight = float(weight)
    ctx.grad_meta = (grad.shape, grad.dtype)
    save_tensors(ctx, input, target)


def _backward_backward(ctx, grad_grad_input, grad_grad_target):
    """The l1_loss backward's own backward, for the native and the Triton op: grad_input =
    grad * w * sign(d) / n and grad_target = -grad_input are linear in grad and piecewise
    constant in input and target: their derivative is zeros (as F.l1_loss's; None would read
    as "not used in the graph" to autograd.grad). Summed in float64."""
    input, target = ctx.saved_tensors
    zero_input = torch.zeros_like(input) if ctx.needs_input_grad[1] else None
    zero_target = torch.zeros_like(target) if ctx.needs_input_grad[2] else None
    grad_grad = None
    if ctx.needs_input_grad[0]:
        shape, dtype = ctx.grad_meta
        d = 0.0
        if grad_grad_input is not None:
            d = grad_grad_input.double()
        if grad_grad_target is not None:
            d = d - grad_grad_target.double()
        total = (torch.sign(input.double() - target.double()) * d).sum()
        grad_grad = (total * (ctx.weight / max(input.numel(), 1))).to(dtype).reshape(shape)
    return grad_grad, zero_input, zero_target, None


if _native.LOADED:

    @torch.library.register_fake("fastgan::l1_loss")
    def _l1_loss_fake(input, target, weight=1.0):
        torch._check(input.shape == target.shape, lambda: "l1_loss: input and target shapes differ")
        torch._check(input.dtype == target.dtype, lambda: "l1_loss: input and target dtypes differ")
        torch._check(input.device == target.device,
                     lambda: f"l1_loss: input is on {input.device}, target on {target.device}")
        return input.new_empty(())

    @torch.library.register_fake("fastgan::l1_loss_backward")
    def _l1_loss_backward_fake(grad, input, target, weight):
        torch._check(input.shape == target.shape, lambda: "l1_loss_backward: input and target shapes differ")
        torch._check(input.dtype == target.dtype, lambda: "l1_loss_backward: input and target dtypes differ")
        return _grad_like(input, target), _grad_like(input, target)

    _setup_context, _backward = make_autograd(torch.ops.fastgan.l1_loss_backward)
    torch.library.register_autograd("fastgan::l1_loss", _backward, setup_context=_setup_context)
    _EagerL1Loss = eager_function("_EagerL1Loss", torch.ops.fastgan.l1_loss.default, _setup_context, _backward,
                                  outputs=1)

    torch.library.register_autograd("fastgan::l1_loss_backward", _backward_backward,
                                    setup_context=_setup_context_backward)

# The triton back end's kernels register themselves (L1_LOSS.impl("triton", ...)).
from fastgan.ops import triton as _triton  # noqa: E402

if _triton.LOAD_KERNELS:
    from fastgan.ops.triton import l1_loss as _triton_l1_loss  # noqa: E402, F401
