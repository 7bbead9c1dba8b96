"""Plain aten compositions: the ground truth of every fused op (the `torch` back end).

Any device, any dtype, differentiable by autograd. Tests compare every back end with
these, computed in float64.
"""

from __future__ import annotations

import torch


def l1_loss(input: torch.Tensor, target: torch.Tensor, weight: float = 1.0) -> torch.Tensor:
    """weight * mean(|input - target|), a 0-dim tensor (the reference's L1 / cycle /
    identity loss, `lambda * nn.L1Loss()(input, target)`).

    Gradients: d/dinput = weight * sign(input - target) / numel (sign(0) = 0),
    d/dtarget = the negative.
    """
    return weight * (input - target).abs().mean()
