"""fastgan.ops.instance_norm_act: instance norm + affine + activation [+ residual], fused.

Back ends: `torch` (reference.instance_norm_act), `cpu` and `cuda` (the native op
torch.ops.fastgan.instance_norm_act, csrc/{cpu,cuda}/instance_norm_act.*), `triton`
(fastgan/ops/triton/instance_norm_act.py). The native op returns (out, mean, rstd);
here it gets its fake (meta) rule and its autograd rule:

    forward saves  x (the caller's tensor, no copy), mean and rstd ((N, C) float32,
                   float64 for float64 x) -- one float each per plane; never the
                   normalized tensor nor the output. x is needed anyway for dweight
                   and dx, so recomputing the activation's mask from it costs no
                   extra saved memory (saving the output instead would not give the
                   mask when a residual was added).
    backward       fastgan::instance_norm_act_backward(grad, x, weight, bias, mean,
                   rstd, ...) -> (dx, dweight, dbias); the residual's gradient is
                   grad itself.

The native op's autograd rule is C++ (csrc/instance_norm_act_autograd.cpp: host time,
which a Python rule spent more of than the kernels at batch 1); the Triton op's is
make_autograd's, here. The backward op is itself differentiable (double backward, e.g. a
gradient penalty through a discriminator with instance norm): its derivative is taken
through an aten composition of the same formulas (`_composite_backward`).
"""

from __future__ import annotations

import torch

from fastgan.ops import _native, reference, registry
from fastgan.ops._args import check_optional_tensors, check_tensors, number
from fastgan.ops._dtypes import promoted
from fastgan.ops._saved import save_tensors

INSTANCE_NORM_ACT = registry.Op("instance_norm_act", reference.instance_norm_act)
ACTIVATIONS = reference.INSTANCE_NORM_ACTIVATIONS


def instance_norm_act(x: torch.Tensor, weight: torch.Tensor | None = None, bias: torch.Tensor | None = None,
                      eps: float = 1e-5, activation: str = "relu", negative_slope: float = 0.2,
                      residual: torch.Tensor | None = None) -> torch.Tensor:
    """[residual +] act(instance_norm(x) * weight + bias), one fused op.

    x: (N, C, H, W), floating (float32, bfloat16, float16, float64), any layout; the
    output keeps x's layout when it is contiguous or channels_last. Each (n, c) plane
    is normalized over H x W with its mean and biased variance (nn.InstanceNorm2d
    without running stats), eps added to the variance (a constant plane with eps 0
    normalizes to 0, with zero dx, as torch's instance_norm). weight, bias: (C,) or None.
    activation: "relu", "leaky_relu" (with negative_slope) or "none". residual: None
    or a tensor of x's shape, added after the activation (the end of a ResNet block:
    activation "none"); of another floating dtype, x and it are promoted to the wider
    (x then normalized in it), whose dtype norm(x) + residual has. Differentiable in x, weight, bias and residual,
    twice in x, weight and bias. Runs on the back end chosen by
    fastgan.ops.use_backend / FASTGAN_BACKEND / auto; the native and Triton kernels
    accumulate in float32 (float64 for float64 inputs) and are deterministic.
    """
    check_tensors("instance_norm_act", x=x)
    check_optional_tensors("instance_norm_act", weight=weight, bias=bias, residual=residual)
    eps, negative_slope = number("instance_norm_act", "eps", eps), number("instance_norm_act", "negative_slope",
                                                                          negative_slope)
    if activation not in ACTIVATIONS:
        raise ValueError(f"instance_norm_act: activation must be one of {ACTIVATIONS}, got {activation!r}")
    if x.dim() != 4:
        raise ValueError(f"instance_norm_act: expected a 4-D (N, C, H, W) input, got shape {tuple(x.shape)}")
    for name, p in (("x", x), ("weight", weight), ("bias", bias)):
        if p is not None and not p.dtype.is_floating_point:  # (every back end alike: the torch one would cast)
            raise ValueError(f"instance_norm_act: {name} is {p.dtype}; x, weight and bias must be floating point")
    for name, p in (("weight", weight), ("bias", bias)):
        if p is not None and tuple(p.shape) != (x.shape[1],):
            raise ValueError(f"instance_norm_act: {name} must have shape (C,) = ({x.shape[1]},), "
                             f"got {tuple(p.shape)}")
    if residual is not None and residual.shape != x.shape:
        raise ValueError(f"instance_norm_act: residual must have x's shape {tuple(x.shape)}, "
                         f"got {tuple(residual.shape)}")
    if residual is not None:  # a residual of another dtype: both in the wider, as x + residual is
        x, residual = promoted(x, residual)
    return INSTANCE_NORM_ACT(x, weight, bias, eps, activation, negative_slope, residual)


# ------------------------------------------------------------------ shared helpers


def dense_input(x: torch.Tensor) -> torch.Tensor:
    """x when contiguous or channels_last, else a contiguous copy (csrc/instance_norm_act.h):
    the layout of every output of the kernels."""
    if x.is_contiguous() or x.is_contiguous(memory_format=torch.channels_last):
        return x
    return x.contiguous()


def stats_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def check_args(op: str, x, weight, bias, residual, activation) -> None:
    """The native kernels' argument checks, for the fake rules."""
    torch._check(x.dim() == 4, lambda: f"{op}: expected a 4-D (N, C, H, W) input, got {x.dim()}-D")
    torch._check(x.dtype.is_floating_point, lambda: f"{op}: expected a floating point dtype, got {x.dtype}")
    torch._check(activation in ACTIVATIONS, lambda: f"{op}: activation must be one of {ACTIVATIONS}")
    for name, p in (("weight", weight), ("bias", bias)):
        if p is not None:
            torch._check(p.dim() == 1 and p.shape[0] == x.shape[1],
                         lambda: f"{op}: {name} must have shape (C,)")
            torch._check(p.dtype.is_floating_point, lambda: f"{op}: {name} must be floating point")
    if residual is not None:
        torch._check(residual.shape == x.shape, lambda: f"{op}: residual must have the input's shape")
        torch._check(residual.dtype == x.dtype, lambda: f"{op}: residual must have the input's dtype")
    # the native kernels check devices too; a meta tensor among CPU ones reaches this rule instead
    for name, t in (("weight", weight), ("bias", bias), ("residual", residual)):
        if t is not None:
            torch._check(t.device == x.device, lambda: f"{op}: {name} is on {t.device}, the input on {x.device}")


def forward_fake(op: str, x, weight, bias, residual, activation):
    check_args(op, x, weight, bias, residual, activation)
    out = torch.empty_like(dense_input(x))
    stats = x.new_empty((x.shape[0], x.shape[1]), dtype=stats_dtype(x.dtype))
    return out, stats, torch.empty_like(stats)


def backward_fake(op: str, grad, x, weight, bias, mean, rstd, activation):
    check_args(op, x, weight, bias, None, activation)
    torch._check(grad.shape == x.shape, lambda: f"{op}: grad must have the input's shape")
    torch._check(mean.shape == (x.shape[0], x.shape[1]) and rstd.shape == (x.shape[0], x.shape[1]),
                 lambda: f"{op}: mean and rstd must have shape (N, C)")
    dw_dtype, db_dtype = param_grad_dtypes(x, weight, bias)
    dx = torch.empty_like(dense_input(x))
    return dx, x.new_empty((x.shape[1],), dtype=dw_dtype), x.new_empty((x.shape[1],), dtype=db_dtype)


def param_grad_dtypes(x, weight, bias) -> tuple[torch.dtype, torch.dtype]:
    """(dweight's, dbias's) dtype: each parameter's own; without it (no gradient is asked of
    it), the weight's, else x's."""
    fallback = weight.dtype if weight is not None else x.dtype
    return fallback, bias.dtype if bias is not None else fallback


def _composite_backward(grad, x, weight, bias, mean, rstd, activation, negative_slope):
    """(dx, dweight, dbias) of the op as aten ops, differentiable in grad, x, weight and
    bias, with the saved mean and rstd carried as functions of x: their values are the
    saved ones, their derivatives those of mean(x) and (var(x) + eps)^-1/2."""
    compute = torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype
    xf, g = x.to(compute), grad.to(compute)
    n = x.shape[2] * x.shape[3]
    m0 = mean.to(compute)[:, :, None, None]
    r0 = rstd.to(compute)[:, :, None, None]
    mx = xf.mean(dim=(2, 3), keepdim=True)
    vx = (xf - mx).square().mean(dim=(2, 3), keepdim=True)
    mu = m0 + (mx - mx.detach())
    r = r0 + (-0.5 * r0 ** 3) * (vx - vx.detach())
    xhat = (xf - mu) * r
    w = weight.to(compute)[None, :, None, None] if weight is not None else None
    z = xhat * w if w is not None else xhat
    if bias is not None:
        z = z + bias.to(compute)[None, :, None, None]
    if activation == "relu":
        gz = torch.where(z.detach() <= 0, 0.0, g)  # as aten's threshold_backward: a NaN z passes
    elif activation == "leaky_relu":
        gz = torch.where(z.detach() > 0, g, g * negative_slope)
    else:
        gz = g
    a = gz.sum(dim=(2, 3), keepdim=True)
    b = (gz * xhat).sum(dim=(2, 3), keepdim=True)
    scale = r * w if w is not None else r
    dx = scale * (gz - a / n - xhat * (b / n))
    dw_dtype, db_dtype = param_grad_dtypes(x, weight, bias)
    return dx.to(x.dtype), b.sum(dim=(0, 2, 3)).to(dw_dtype), a.sum(dim=(0, 2, 3)).to(db_dtype)


def make_autograd(backward_op):
    """(setup_context, backward, setup_context_backward, backward_backward) for a
    forward op (input, weight, bias, residual, eps, activation, negative_slope) ->
    (out, mean, rstd) whose backward op is `backward_op`."""

    def setup_context(ctx, inputs, output):  # (csrc/instance_norm_act_autograd.cpp keeps the same)
        x, weight, bias, residual, eps, activation, negative_slope = inputs
        _, mean, rstd = output
        ctx.mark_non_differentiable(mean, rstd)
        ctx.activation = activation
        ctx.negative_slope = float(negative_slope)
        ctx.has_weight = weight is not None
        ctx.has_bias = bias is not None
        save_tensors(ctx, x, weight, bias, mean, rstd)

    def backward(ctx, grad, grad_mean, grad_rstd):
        x, weight, bias, mean, rstd = ctx.saved_tensors
        need_x, need_w, need_b, need_res = ctx.needs_input_grad[:4]
        dx = dw = db = None
        if need_x or need_w or need_b:
            dx, dw, db = backward_op(grad, x, weight, bias, mean, rstd, ctx.activation, ctx.negative_slope)
        return (dx if need_x else None,
                dw if need_w and ctx.has_weight else None,
                db if need_b and ctx.has_bias else None,
                grad if need_res else None,
                None, None, None)

    def setup_context_backward(ctx, inputs, output):
        grad, x, weight, bias, mean, rstd, activation, negative_slope = inputs
        ctx.activation = activation
        ctx.negative_slope = float(negative_slope)
        save_tensors(ctx, grad, x, weight, bias, mean, rstd)

    def backward_backward(ctx, gg_x, gg_w, gg_b):
        grad, x, weight, bias, mean, rstd = ctx.saved_tensors
        needs = ctx.needs_input_grad[:4]
        if not any(needs):
            return (None,) * 8
        with torch.enable_grad():
            leaves = [t.detach().requires_grad_(need) if t is not None else None
                      for t, need in zip((grad, x, weight, bias), needs)]
            outs = _composite_backward(leaves[0], leaves[1], leaves[2], leaves[3], mean, rstd,
                                       ctx.activation, ctx.negative_slope)
            pairs = [(o, g) for o, g in zip(outs, (gg_x, gg_w, gg_b)) if g is not None and o.requires_grad]
            wanted = [t for t, need in zip(leaves, needs) if need and t is not None]
            found = torch.autograd.grad([o for o, _ in pairs], wanted, [g for _, g in pairs],
                                        allow_unused=True) if pairs else [None] * len(wanted)
        result, k = [], 0
        for t, need in zip(leaves, needs):
            if need and t is not None:
                g = found[k]
                k += 1
                result.append(g if g is not None else torch.zeros_like(t))
            else:
                result.append(None)
        return (*result, None, None, None, None)

    return setup_context, backward, setup_context_backward, backward_backward


# ----------------------------------------------------------------------- native


def _native_instance_norm_act(x, weight=None, bias=None, eps=1e-5, activation="relu", negative_slope=0.2,
                              residual=None):
    return torch.ops.fastgan.instance_norm_act.default(x, weight, bias, residual, float(eps), activation,
                                                       float(negative_slope))[0]


INSTANCE_NORM_ACT.impl("cpu", _native_instance_norm_act,
                       available=_native.kernel_check("instance_norm_act", "CPU"))
INSTANCE_NORM_ACT.impl("cuda", _native_instance_norm_act,
                       available=_native.kernel_check("instance_norm_act", "CUDA"))

if _native.LOADED:

    @torch.library.register_fake("fastgan::instance_norm_act")
    def _instance_norm_act_fake(input, weight, bias, residual, eps, activation, negative_slope):
        return forward_fake("fastgan::instance_norm_act", input, weight, bias, residual, activation)

    @torch.library.register_fake("fastgan::instance_norm_act_backward")
    def _instance_norm_act_backward_fake(grad, input, weight, bias, mean, rstd, activation, negative_slope):
        return backward_fake("fastgan::instance_norm_act_backward", grad, input, weight, bias, mean, rstd,
                             activation)

    # (the forward op's rule is C++: csrc/instance_norm_act_autograd.cpp)
    _, _, _setup_bwd, _bwd_bwd = make_autograd(torch.ops.fastgan.instance_norm_act_backward)
    torch.library.register_autograd("fastgan::instance_norm_act_backward", _bwd_bwd, setup_context=_setup_bwd)


# The triton back end's kernels register themselves where they can run (LOAD_KERNELS).
from fastgan.ops import triton as _triton_backend  # noqa: E402

if _triton_backend.LOAD_KERNELS:
    from fastgan.ops.triton import instance_norm_act as _triton_kernels  # noqa: E402,F401
