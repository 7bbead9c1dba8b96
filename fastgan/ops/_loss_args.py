"""What the fused losses take besides their images: constant factors, and mixed dtypes."""

from __future__ import annotations

import functools

import torch


def constant(op: str, name: str, value, instead: str) -> float:
    """A loss's constant factor as a float: a number, or a one-element tensor without grad
    (a learned factor would silently get no gradient: multiply the loss by it instead).
    A tensor is read to the host here: a sync on a GPU, a graph break under torch.compile
    (cycle_losses branches on lambda_identity == 0, so the value is needed)."""
    if isinstance(value, torch.Tensor):
        if value.requires_grad:
            raise TypeError(f"{op}: {name} is a constant (a Python float); for a learned {name}, "
                            f"multiply the loss by it: {instead}")
        if value.numel() != 1:
            raise ValueError(f"{op}: {name} is one number, got a tensor of shape {tuple(value.shape)}")
    return float(value)


def promoted(*tensors: torch.Tensor | None) -> tuple:
    """The tensors in their common floating dtype, where they differ (None stays None)."""
    dtypes = {t.dtype for t in tensors if t is not None}
    if len(dtypes) < 2 or not all(d.is_floating_point for d in dtypes):
        return tensors
    dtype = functools.reduce(torch.promote_types, dtypes)
    return tuple(t if t is None else t.to(dtype) for t in tensors)
