"""fastgan.ops.cycle_losses: every L1 term of a CycleGAN iteration in one launch.

Back ends: `torch` (reference.cycle_losses: four l1 terms), `cpu` and `cuda` (the native
op torch.ops.fastgan.cycle_losses, csrc/{cpu,cuda}/cycle_losses.*), `triton`
(torch.ops.fastgan_triton.cycle_losses, ops/triton/cycle_losses.py). The native and
Triton ops share here their fake (meta) rules and their autograd rule, so that
torch.compile(fullgraph=True) traces them without graph breaks. In eager mode the native
op's kernels and rules run through a plain autograd.Function (fastgan/ops/_eager.py).

The forward reads the six images once and, when a gradient will be needed, writes one
byte per element holding the four 2-bit codes of sign(x - t) (csrc/cycle_losses.h); the
backward turns those bytes into the gradients. That moves fewer bytes than recomputing
the signs from the images in backward (n elements per image, s bytes per element,
identity terms on): 6ns + n (forward) + n + 4ns (backward) = 10ns + 2n, against
6ns + (6ns + 4ns) = 16ns: 42n against 64n bytes in float32, 22n against 32n in bf16.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import torch

from fastgan.ops import _native, reference, registry
from fastgan.ops._dtypes import promoted
from fastgan.ops._eager import eager_function, takes_eager_path
from fastgan.ops._layout import is_dense
from fastgan.ops._args import as_autocast_runs_l1, check_optional_tensors, check_tensors, constant
from fastgan.ops._saved import save_tensors

CYCLE_LOSSES = registry.Op("cycle_losses", reference.cycle_losses)


class CycleLosses(NamedTuple):
    """The four L1 terms, each a 0-dim view of `values` (a tensor of 4: the same order)."""

    cycle_A: torch.Tensor
    cycle_B: torch.Tensor
    idt_A: torch.Tensor
    idt_B: torch.Tensor
    values: torch.Tensor


def cycle_losses(real_A: torch.Tensor, rec_A: torch.Tensor, real_B: torch.Tensor, rec_B: torch.Tensor,
                 idt_A: torch.Tensor | None = None, idt_B: torch.Tensor | None = None,
                 lambda_A: float = 10.0, lambda_B: float = 10.0, lambda_identity: float = 0.5) -> CycleLosses:
    """The L1 terms of one CycleGAN iteration (REFERENCE.md, "CycleGAN iteration"):

        cycle_A = lambda_A * mean|rec_A - real_A|
        cycle_B = lambda_B * mean|rec_B - real_B|
        idt_A   = lambda_B * lambda_identity * mean|idt_A - real_B|    idt_A = G_A(real_B)
        idt_B   = lambda_A * lambda_identity * mean|idt_B - real_A|    idt_B = G_B(real_A)

    in one pass over the images (per back end), returned as CycleLosses(cycle_A,
    cycle_B, idt_A, idt_B, values): `values` is one tensor of the 4 (that order, the
    images' dtype) and the named terms are views of it. Sum what you backward through
    (`values.sum()`): one small op, and the gradients of all four terms come from one
    backward launch.

    Without identity terms (idt_A and idt_B None, or lambda_identity == 0) idt_A and
    idt_B are 0 and the identity images, if given, are not read and get no gradient.
    rec_A and idt_B must have real_A's shape, rec_B and idt_A real_B's (no
    broadcasting); one device; floating dtypes, promoted to the widest where they differ
    (bf16 outputs against float32 images), and under autocast bf16/fp16 in float32 (as
    F.l1_loss runs there); lambdas are constants (numbers
    or one-element tensors without grad); any layout. Differentiable in every
    image (usually only rec_* and idt_* require grad). The native and Triton back ends
    sum in a fixed order, the same bits on every run and for any number of CPU threads:
    cuda and triton in float64 (float32/float64 inputs; float32 for bf16/fp16), cpu in
    float32 vector lanes over blocks of 512 values (float64 for float64 inputs), the
    blocks' sums in float64 (about 1e-7 relative from the float64 sum at worst).
    """
    check_tensors("cycle_losses", real_A=real_A, rec_A=rec_A, real_B=real_B, rec_B=rec_B)
    check_optional_tensors("cycle_losses", idt_A=idt_A, idt_B=idt_B)
    if (idt_A is None) != (idt_B is None):
        raise ValueError("cycle_losses: give both idt_A and idt_B or neither, got "
                         + ("idt_A" if idt_A is not None else "idt_B") + " only")
    lambdas = [constant("cycle_losses", name, value, f"{name} * the term")
               for name, value in (("lambda_A", lambda_A), ("lambda_B", lambda_B),
                                   ("lambda_identity", lambda_identity))]
    if lambdas[2] == 0:
        idt_A = idt_B = None
    _check_shapes(real_A, rec_A, real_B, rec_B, idt_A, idt_B)
    real_A, rec_A, real_B, rec_B, idt_A, idt_B = promoted(*as_autocast_runs_l1(real_A, rec_A, real_B, rec_B,
                                                                                 idt_A, idt_B))
    values = CYCLE_LOSSES(real_A, rec_A, real_B, rec_B, idt_A, idt_B, *lambdas)
    cycle_a, cycle_b, idt_a, idt_b = values.unbind()
    return CycleLosses(cycle_a, cycle_b, idt_a, idt_b, values)


def _check_shapes(real_A, rec_A, real_B, rec_B, idt_A, idt_B) -> None:
    named = [("real_A", real_A), ("rec_A", rec_A), ("real_B", real_B), ("rec_B", rec_B)]
    pairs = [("rec_A", rec_A, "real_A", real_A), ("rec_B", rec_B, "real_B", real_B)]
    if idt_A is not None:
        named += [("idt_A", idt_A), ("idt_B", idt_B)]
        pairs += [("idt_A", idt_A, "real_B", real_B), ("idt_B", idt_B, "real_A", real_A)]
    for name, t in named:
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"cycle_losses: {name} must be a tensor, got {type(t).__name__}")
    for name, t, ref_name, ref in pairs:
        if t.shape != ref.shape:
            raise ValueError(f"cycle_losses: {name} and {ref_name} must have the same shape, got "
                             f"{tuple(t.shape)} and {tuple(ref.shape)}")
    for name, t in named:
        if not t.dtype.is_floating_point:
            raise ValueError(f"cycle_losses: {name} is {t.dtype}; the images must be floating point")
    for name, t in named[1:]:
        if t.device != real_A.device:
            raise ValueError(f"cycle_losses: every tensor must be on real_A's device {real_A.device}, "
                             f"{name} is on {t.device}")


def needs_signs(*tensors: torch.Tensor | None) -> bool:
    """Whether the forward should write the sign codes: a gradient may be asked for."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


# ------------------------------------------------------------------ fake (meta) rules
# Shared by the native ops and the Triton ones (same schemas): they predict exactly the
# shapes and strides the kernels produce (csrc/cycle_losses.h).


def check_op_inputs(op: str, real_A, rec_A, real_B, rec_B, idt_A, idt_B) -> None:
    """The native ops' argument checks (RuntimeError), for fake rules and Triton ops."""
    torch._check((idt_A is None) == (idt_B is None), lambda: f"{op}: give both idt_A and idt_B or neither")
    pairs = [(rec_A, real_A, "rec_A and real_A"), (rec_B, real_B, "rec_B and real_B")]
    if idt_A is not None:
        pairs += [(idt_A, real_B, "idt_A and real_B"), (idt_B, real_A, "idt_B and real_A")]
    for t, ref, names in pairs:
        torch._check(t.shape == ref.shape, lambda: f"{op}: {names} must have the same shape, got "
                                                   f"{tuple(t.shape)} and {tuple(ref.shape)}")
    torch._check(real_A.dtype.is_floating_point, lambda: f"{op}: expected a floating point dtype, got {real_A.dtype}")
    for t in (rec_A, real_B, rec_B, idt_A, idt_B):
        if t is not None:
            torch._check(t.dtype == real_A.dtype, lambda: f"{op}: every tensor must have the same dtype")
            torch._check(t.device == real_A.device, lambda: f"{op}: every tensor must be on the same device")


def side_order(rec: torch.Tensor, real: torch.Tensor, idt: torch.Tensor | None) -> torch.Tensor | None:
    """The tensor whose memory order a side is walked in (csrc/cycle_losses.h side_order)."""
    for t in (rec, idt, real):
        if t is not None and is_dense(t):
            return t
    return None


def side_grad(rec: torch.Tensor, real: torch.Tensor, idt: torch.Tensor | None) -> torch.Tensor:
    order = side_order(rec, real, idt)
    return torch.empty_like(order) if order is not None else real.new_empty(real.shape)


def cycle_losses_fake(real_A, rec_A, real_B, rec_B, idt_A, idt_B, lambda_A, lambda_B, lambda_identity,
                      compute_signs):
    check_op_inputs("cycle_losses", real_A, rec_A, real_B, rec_B, idt_A, idt_B)
    n_max = torch.sym_max(real_A.numel(), real_B.numel())
    return real_A.new_empty((4,)), real_A.new_empty((n_max if compute_signs else 0,), dtype=torch.uint8)


def backward_outputs(real_A, rec_A, real_B, rec_B, idt_A, idt_B, output_mask: Sequence[bool]):
    """The six gradients, uninitialized (csrc/cycle_losses.h backward_outputs)."""
    outs = []
    for i, on_a in enumerate((True, True, False, False, False, True)):
        if output_mask[i] and (i < 4 or idt_A is not None):
            outs.append(side_grad(rec_A, real_A, idt_B) if on_a else side_grad(rec_B, real_B, idt_A))
        else:
            outs.append(real_A.new_empty((0,)))
    return tuple(outs)


def cycle_losses_backward_fake(grad, signs, real_A, rec_A, real_B, rec_B, idt_A, idt_B, lambda_A, lambda_B,
                               lambda_identity, output_mask):
    check_op_inputs("cycle_losses_backward", real_A, rec_A, real_B, rec_B, idt_A, idt_B)
    torch._check(grad.numel() == 4, lambda: "cycle_losses_backward: grad must hold the 4 loss gradients")
    return backward_outputs(real_A, rec_A, real_B, rec_B, idt_A, idt_B, output_mask)


# ---------------------------------------------------------------------------- autograd


def make_autograd(forward_op, backward_op):
    """(setup_context, backward, setup_context_backward, backward_backward): the autograd
    rules of a (cycle_losses, cycle_losses_backward) op pair with the native schemas:
    backward from the saved sign codes; the backward op's own derivative (in grad only:
    it is piecewise constant in the images) for double backward."""

    def setup_context(ctx, inputs, output):
        real_A, rec_A, real_B, rec_B, idt_A, idt_B, lambda_A, lambda_B, lambda_identity, _ = inputs
        ctx.lambdas = (float(lambda_A), float(lambda_B), float(lambda_identity))
        save_tensors(ctx, real_A, rec_A, real_B, rec_B, idt_A, idt_B, output[1])

    def backward(ctx, grad, _grad_signs):
        real_A, rec_A, real_B, rec_B, idt_A, idt_B, signs = ctx.saved_tensors
        mask = [bool(m) for m in ctx.needs_input_grad[:6]]
        if idt_A is None:
            mask[4] = mask[5] = False
        if not any(mask):
            return (None,) * 10
        if signs.numel() != max(real_A.numel(), real_B.numel()):
            # the forward was told no gradient would be needed: compute the codes now
            signs = forward_op(real_A, rec_A, real_B, rec_B, idt_A, idt_B, *ctx.lambdas, True)[1]
        grads = backward_op(grad, signs, real_A, rec_A, real_B, rec_B, idt_A, idt_B, *ctx.lambdas, mask)
        return (*(g if m else None for g, m in zip(grads, mask)), None, None, None, None)

    def setup_context_backward(ctx, inputs, output):
        grad, _signs, real_A, rec_A, real_B, rec_B, idt_A, idt_B, lambda_A, lambda_B, lambda_identity, mask = inputs
        ctx.lambdas = (float(lambda_A), float(lambda_B), float(lambda_identity))
        ctx.mask = [bool(m) for m in mask]
        ctx.grad_meta = (grad.shape, grad.dtype)
        save_tensors(ctx, real_A, rec_A, real_B, rec_B, idt_A, idt_B)

    def backward_backward(ctx, *grad_grads):
        # grad_x = sign(x - real) * grad[j] * w_j / n and grad_real = -(its two terms):
        # linear in grad, piecewise constant in the images: their derivative is zeros (as
        # F.l1_loss's; None would read as "not used in the graph" to autograd.grad)
        images = ctx.saved_tensors
        zeros = tuple(torch.zeros_like(t) if t is not None and needed else None
                      for t, needed in zip(images, ctx.needs_input_grad[2:8]))
        if not ctx.needs_input_grad[0]:
            return (None, None, *zeros) + (None,) * 4
        real_A, rec_A, real_B, rec_B, idt_A, idt_B = images
        lambda_A, lambda_B, lambda_identity = ctx.lambdas
        gg = [g if (m and g is not None and g.numel() > 0) else None for g, m in zip(grad_grads, ctx.mask)]
        gg_real_A, gg_rec_A, gg_real_B, gg_rec_B, gg_idt_A, gg_idt_B = gg

        def term(x, real, weight, gg_x, gg_real):
            total = real_A.new_zeros((), dtype=torch.float64)
            if x is None or real.numel() == 0 or (gg_x is None and gg_real is None):
                return total
            d = gg_x.double() if gg_x is not None else 0.0
            if gg_real is not None:
                d = d - gg_real.double()
            return (torch.sign(x.double() - real.double()) * d).sum() * (weight / real.numel())

        values = torch.stack([
            term(rec_A, real_A, lambda_A, gg_rec_A, gg_real_A),
            term(rec_B, real_B, lambda_B, gg_rec_B, gg_real_B),
            term(idt_A, real_B, lambda_B * lambda_identity, gg_idt_A, gg_real_B),
            term(idt_B, real_A, lambda_A * lambda_identity, gg_idt_B, gg_real_A),
        ])
        shape, dtype = ctx.grad_meta
        return (values.to(dtype).reshape(shape), None, *zeros) + (None,) * 4

    return setup_context, backward, setup_context_backward, backward_backward


def register_autograd(forward_op, backward_op):
    """Registers make_autograd's rules on the op pair; returns them."""
    rules = make_autograd(forward_op, backward_op)
    setup_context, backward, setup_context_backward, backward_backward = rules
    torch.library.register_autograd(forward_op, backward, setup_context=setup_context)
    torch.library.register_autograd(backward_op, backward_backward, setup_context=setup_context_backward)
    return rules


# ----------------------------------------------------------------------- native kernels


def _native_cycle_losses(real_A, rec_A, real_B, rec_B, idt_A, idt_B, lambda_A, lambda_B, lambda_identity):
    images = (real_A, rec_A, real_B, rec_B, idt_A, idt_B)
    args = (*images, lambda_A, lambda_B, lambda_identity, needs_signs(*images))
    if takes_eager_path(*images):
        return _EagerCycleLosses.apply(*args)
    return torch.ops.fastgan.cycle_losses(*args)[0]


CYCLE_LOSSES.impl("cpu", _native_cycle_losses, available=_native.kernel_check("cycle_losses", "CPU"))
CYCLE_LOSSES.impl("cuda", _native_cycle_losses, available=_native.kernel_check("cycle_losses", "CUDA"))

if _native.LOADED and hasattr(torch.ops.fastgan, "cycle_losses"):
    torch.library.register_fake("fastgan::cycle_losses", cycle_losses_fake)
    torch.library.register_fake("fastgan::cycle_losses_backward", cycle_losses_backward_fake)
    _setup, _bwd, _, _ = register_autograd(torch.ops.fastgan.cycle_losses.default,
                                           torch.ops.fastgan.cycle_losses_backward.default)
    _EagerCycleLosses = eager_function("_EagerCycleLosses", torch.ops.fastgan.cycle_losses.default, _setup, _bwd,
                                       outputs=2)

# The triton back end's kernels register themselves (CYCLE_LOSSES.impl("triton", ...)).
from fastgan.ops import triton as _triton  # noqa: E402

if _triton.LOAD_KERNELS:
    from fastgan.ops.triton import cycle_losses as _triton_cycle_losses  # noqa: E402, F401
