"""Inference tensors in the ops' autograd: autograd cannot save a tensor made under
torch.inference_mode (a frozen network's output, a target), which the ops take as
inputs wherever a gradient is asked of their other inputs: a normal copy is saved
instead (the torch expressions mostly save what they compute from it anyway: F.l1_loss
the difference, pad + conv2d the padded copy, F.instance_norm its own weight)."""

from __future__ import annotations

import torch


def savable(t: torch.Tensor | None) -> torch.Tensor | None:
    """t, or a normal copy of it where it is an inference tensor (not asked of what is no
    tensor, e.g. torch.fx's proxies, nor under torch.compile's tracing: neither can say)."""
    if not isinstance(t, torch.Tensor) or torch.compiler.is_compiling() or not t.is_inference():
        return t
    return t.clone()


def save_tensors(ctx, *tensors: torch.Tensor | None) -> None:
    """ctx.save_for_backward(*tensors), each one savable."""
    ctx.save_for_backward(*map(savable, tensors))


def recorded(t: torch.Tensor | None) -> torch.Tensor | None:
    """For a composition whose autograd saves t: savable(t) where autograd records (grad
    mode on, outside inference mode), else t itself."""
    if torch.compiler.is_compiling() or not torch.is_grad_enabled() or torch.is_inference_mode_enabled():
        return t
    return savable(t)
