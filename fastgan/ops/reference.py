"""Plain aten compositions: the ground truth of every fused op (the `torch` back end).

Any device, any dtype, differentiable by autograd. Tests compare every back end with
these, computed in float64.
"""

from __future__ import annotations

import torch

from fastgan.ops._saved import recorded


def l1_loss(input: torch.Tensor, target: torch.Tensor, weight: float = 1.0) -> torch.Tensor:
    """weight * mean(|input - target|), a 0-dim tensor (the reference's L1 / cycle /
    identity loss, `lambda * nn.L1Loss()(input, target)`).

    Gradients: d/dinput = weight * sign(input - target) / numel (sign(0) = 0),
    d/dtarget = the negative.
    """
    return weight * (input - target).abs().mean()


def reflect_conv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                   stride: int = 1, padding: int = 1) -> torch.Tensor:
    """conv2d of x reflection padded by `padding` on each side (the reference's
    `nn.ReflectionPad2d(p)` then `nn.Conv2d(..., padding=0)`): groups 1, dilation 1.

    x (N, C_in, H, W), weight (C_out, C_in, KH, KW), bias (C_out,) or None; padding < H, W.
    """
    padded = torch.nn.functional.pad(x, (padding,) * 4, mode="reflect") if padding else recorded(x)
    return torch.nn.functional.conv2d(padded, recorded(weight), bias, stride)


def cycle_losses(real_A: torch.Tensor, rec_A: torch.Tensor, real_B: torch.Tensor, rec_B: torch.Tensor,
                 idt_A: torch.Tensor | None = None, idt_B: torch.Tensor | None = None,
                 lambda_A: float = 10.0, lambda_B: float = 10.0, lambda_identity: float = 0.5) -> torch.Tensor:
    """The L1 terms of a CycleGAN iteration (REFERENCE.md, "CycleGAN iteration") as one
    tensor of 4 values, in this order:

        cycle_A = lambda_A * mean|rec_A - real_A|
        cycle_B = lambda_B * mean|rec_B - real_B|
        idt_A   = lambda_B * lambda_identity * mean|idt_A - real_B|   (idt_A = G_A(real_B))
        idt_B   = lambda_A * lambda_identity * mean|idt_B - real_A|   (idt_B = G_B(real_A))

    the last two 0 when idt_A and idt_B are None. The identity terms are rounded as the
    reference's `L1(idt, real) * lambda * lambda_identity` (two products in the images'
    precision): --eager is its path bit for bit, whatever the lambdas.
    """
    cycle_A = l1_loss(rec_A, real_A, lambda_A)
    cycle_B = l1_loss(rec_B, real_B, lambda_B)
    if idt_A is None or idt_B is None:
        loss_idt_A = loss_idt_B = cycle_A.new_zeros(())
    else:
        loss_idt_A = l1_loss(idt_A, real_B, lambda_B) * lambda_identity
        loss_idt_B = l1_loss(idt_B, real_A, lambda_A) * lambda_identity
    return torch.stack([cycle_A, cycle_B, loss_idt_A, loss_idt_B])


INSTANCE_NORM_ACTIVATIONS = ("relu", "leaky_relu", "none")


def instance_norm_act(x: torch.Tensor, weight: torch.Tensor | None = None, bias: torch.Tensor | None = None,
                      eps: float = 1e-5, activation: str = "relu", negative_slope: float = 0.2,
                      residual: torch.Tensor | None = None) -> torch.Tensor:
    """[residual +] act(instance_norm(x) * weight + bias) of a 4-D (N, C, H, W) tensor.

    Each (n, c) plane is normalized over H x W with its mean and biased variance (as
    nn.InstanceNorm2d without running stats), then scaled by weight[c] and shifted by
    bias[c] when given, then passed through `activation` ("relu", "leaky_relu" with
    `negative_slope`, or "none"); with `residual` (x's shape) the result is residual +
    that (the activation comes before the add). bf16/fp16 inputs are normalized in
    float32 and rounded once before the residual add.
    """
    if activation not in INSTANCE_NORM_ACTIVATIONS:
        raise ValueError(f"instance_norm_act: activation must be one of {INSTANCE_NORM_ACTIVATIONS}, "
                         f"got {activation!r}")
    if x.dim() != 4:
        raise ValueError(f"instance_norm_act: expected a 4-D (N, C, H, W) input, got shape {tuple(x.shape)}")
    xf = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
    # sums shifted by each plane's first pixel (the kernels shift by a mean of 32 of its elements,
    # the first among them): a constant plane's mean is its value and its variance 0 exactly,
    # whatever its value's rounding in a sum
    first = xf[:, :, :1, :1]
    mean = first + (xf - first).mean(dim=(2, 3), keepdim=True)
    var_eps = (xf - mean).square().mean(dim=(2, 3), keepdim=True) + eps
    # as aten's InvStd: a constant plane with eps 0 normalizes to 0 (rstd 0), not to 0 * inf;
    # the rsqrt never sees 0, so its gradient stays finite there
    nonzero = var_eps != 0
    y = (xf - mean) * (torch.rsqrt(torch.where(nonzero, var_eps, 1.0)) * nonzero)
    if weight is not None:
        y = y * recorded(weight).to(y.dtype).view(1, -1, 1, 1)
    if bias is not None:
        y = y + bias.to(y.dtype).view(1, -1, 1, 1)
    y = activate(y, activation, negative_slope).to(x.dtype)
    if residual is not None:
        y = residual + y
    return y


def activate(y: torch.Tensor, activation: str, negative_slope: float = 0.2) -> torch.Tensor:
    """y through one of INSTANCE_NORM_ACTIVATIONS."""
    if activation == "relu":
        return torch.relu(y)
    if activation == "leaky_relu":
        return torch.nn.functional.leaky_relu(y, negative_slope)
    return y
