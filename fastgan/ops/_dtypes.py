"""Inputs of different dtypes to one fused op: the common dtype torch's composition computes in."""

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
