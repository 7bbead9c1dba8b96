"""What the fused losses take besides their images: constant factors; their dtype under autocast."""

from __future__ import annotations

import torch

from fastgan.ops._dtypes import autocast_dtype


def constant(op: str, name: str, value, instead: str) -> float:
    """A loss's constant factor as a float: a number, or a one-element tensor without grad
    (a learned factor would silently get no gradient: multiply the loss by it instead).
    A tensor is read to the host here: a sync on a GPU, a graph break under torch.compile
    (cycle_losses branches on lambda_identity == 0, so the value is needed)."""
    if isinstance(value, (str, bytes)):  # float() would take "2"
        raise TypeError(f"{op}: {name} is a number, got {value!r}")
    if isinstance(value, torch.Tensor):
        if value.requires_grad:
            raise TypeError(f"{op}: {name} is a constant (a Python float); for a learned {name}, "
                            f"multiply the loss by it: {instead}")
        if value.numel() != 1:
            raise ValueError(f"{op}: {name} is one number, got a tensor of shape {tuple(value.shape)}")
    return float(value)


def as_autocast_runs_l1(*tensors: torch.Tensor | None) -> tuple:
    """Under autocast on the tensors' device, bf16 and fp16 tensors in float32: autocast runs
    F.l1_loss in float32 (its float32 list), so a loss of half-precision outputs is a
    float32 value there, not one rounded to bf16."""
    if autocast_dtype(next(t for t in tensors if t is not None).device.type) is None:
        return tensors
    return tuple(t.float() if t is not None and t.dtype in (torch.bfloat16, torch.float16) else t for t in tensors)
