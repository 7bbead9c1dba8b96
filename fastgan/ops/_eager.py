"""When a fused op may skip the dispatcher.

In eager mode a registered op's Python autograd rule (torch.library.custom_op or
register_autograd) costs tens of microseconds of host time per call, more than a
batch-1 GPU kernel takes, and an iteration outside a CUDA graph waits on exactly
that. The ops then run their same kernels and autograd rules through a plain
torch.autograd.Function instead (same results, bit for bit: tested per op). Where
reflect_conv2d runs aten in every phase, its eager path is the unfused composition
itself under torch's autograd (fastgan/ops/_reflect_conv2d.py: _ALL_ATEN).
torch.compile's tracing and tensor subclasses need the registered op (its fake rule,
its place in a graph), so they keep it.
"""

from __future__ import annotations

import torch


# nn.Parameter is a subclass that changes nothing about how ops run on it
_PLAIN = (torch.Tensor, torch.nn.Parameter)


def takes_eager_path(*tensors: torch.Tensor | None) -> bool:
    """Plain tensors and parameters (or None) in eager mode: not under torch.compile's
    tracing nor another tensor subclass (fake, functional, DTensor ...)."""
    return not torch.compiler.is_compiling() and all(t is None or type(t) in _PLAIN for t in tensors)
