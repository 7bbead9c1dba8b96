"""Dtypes of a fused op's inputs: the common dtype torch's composition computes in, and the
autocast dtype in force."""

from __future__ import annotations

import functools

import torch


def promoted(*tensors: torch.Tensor | None) -> tuple:
    """The tensors in their common dtype where they differ and it is floating (an integer
    tensor against a float one too, as torch's ops promote); None stays None."""
    dtypes = {t.dtype for t in tensors if t is not None}
    if len(dtypes) < 2:
        return tensors
    dtype = functools.reduce(torch.promote_types, dtypes)
    if not dtype.is_floating_point:
        return tensors  # the op refuses them, naming the dtypes
    return tuple(t if t is None else t.to(dtype) for t in tensors)


def autocast_dtype(device_type: str) -> torch.dtype | None:
    """The autocast dtype in force on `device_type`, or None. (is_autocast_enabled raises for
    meta tensors, those of shape inference; is_autocast_available, which would say so, is
    opaque to torch 2.11's dynamo: a graph break.) None under torch.export too: it records no
    autocast casts of aten ops (autocast applies to them where the program runs), so the
    fused ops' own casts would bake the tracing moment's autocast into the program."""
    if device_type == "meta" or torch.compiler.is_exporting() or not torch.is_autocast_enabled(device_type):
        return None
    return torch.get_autocast_dtype(device_type)
