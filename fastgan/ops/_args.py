"""The public ops' argument checks (tensors, numbers), and the fused losses' constant factors
and dtypes under autocast: refused in the op's words, not as an AttributeError deep inside."""

from __future__ import annotations

import torch

from fastgan.ops._dtypes import autocast_dtype


def check_tensors(op: str, **named) -> None:
    """Each named argument is a tensor (None where the op takes none: pass those as optional)."""
    for name, value in named.items():
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"{op}: {name} must be a tensor, got {type(value).__name__}")


def check_optional_tensors(op: str, **named) -> None:
    check_tensors(op, **{name: value for name, value in named.items() if value is not None})


def number(op: str, name: str, value) -> float:
    """A Python (or numpy) number as a float; a string is refused though float() takes "2"."""
    if isinstance(value, (str, bytes)) or not hasattr(value, "__float__"):
        raise TypeError(f"{op}: {name} must be a number, got {value!r}")
    return float(value)


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
    return number(op, name, value)


def as_autocast_runs_l1(*tensors: torch.Tensor | None) -> tuple:
    """Under autocast on the tensors' device, bf16 and fp16 tensors in float32: autocast runs
    F.l1_loss in float32 (its float32 list), so a loss of half-precision outputs is a
    float32 value there, not one rounded to bf16."""
    if autocast_dtype(next(t for t in tensors if t is not None).device.type) is None:
        return tensors
    return tuple(t.float() if t is not None and t.dtype in (torch.bfloat16, torch.float16) else t for t in tensors)
