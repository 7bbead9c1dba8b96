"""Memory-layout helpers shared by the Python-side kernels (triton) and the fake rules.

They mirror csrc/common.h (`same_layout`, `dense_pair`) and c10's
is_non_overlapping_and_dense, so that an op's fake (meta) rule predicts exactly the
strides its kernels produce, and the Triton kernels walk tensors as the C++ ones do:
as flat arrays of numel() elements in one memory order shared by all operands.
"""

from __future__ import annotations

import torch


def is_dense(t: torch.Tensor) -> bool:
    """c10's is_non_overlapping_and_dense: some permutation of the dims is contiguous."""
    sizes, strides = t.shape, t.stride()
    if len(sizes) == 1:
        return sizes[0] < 2 or strides[0] == 1
    require = 1
    for d in sorted((d for d in range(len(sizes)) if sizes[d] >= 2), key=lambda d: strides[d]):
        if strides[d] != require:
            return False
        require *= sizes[d]
    return True


def suggests_channels_last(t: torch.Tensor) -> bool:
    """aten's suggest_memory_format(t) == channels_last."""
    return not t.is_contiguous() and t.is_contiguous(memory_format=torch.channels_last)


def convolution_format(x: torch.Tensor, weight: torch.Tensor) -> torch.memory_format:
    """The layout aten's CPU and cuDNN convolutions (and transposed ones) give their
    output: channels_last when x or weight suggests it."""
    return (torch.channels_last if suggests_channels_last(x) or suggests_channels_last(weight)
            else torch.contiguous_format)


def same_layout(a: torch.Tensor, b: torch.Tensor) -> bool:
    """a and b (same sizes) put every index at the same memory offset (common.h)."""
    return all(size <= 1 or sa == sb for size, sa, sb in zip(a.shape, a.stride(), b.stride()))


def in_order(t: torch.Tensor, order: torch.Tensor | None) -> torch.Tensor:
    """t laid out as `order` (contiguous when None): itself when it already is."""
    if order is None:
        return t.contiguous()
    if is_dense(t) and same_layout(t, order):
        return t
    return torch.empty_like(order).copy_(t)


def dense_pair(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """common.h's dense_pair: both dense in one memory order, copying only what must be."""
    a_dense, b_dense = is_dense(a), is_dense(b)
    if a_dense and b_dense and same_layout(a, b):
        return a, b
    if a_dense:
        return a, torch.empty_like(a).copy_(b)
    if b_dense:
        return torch.empty_like(b).copy_(a), b
    return a.contiguous(), b.contiguous()


def flat(t: torch.Tensor) -> torch.Tensor:
    """A dense tensor as the 1-d array of its memory (for kernels that index flat)."""
    return t.as_strided((t.numel(),), (1,))
