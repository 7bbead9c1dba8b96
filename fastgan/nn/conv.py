"""fastgan.nn.Conv2d and ConvTranspose2d: torch's modules whose forward, on a CPU, runs
the faster of the vendor convolution and one explicit matrix product, measured per
shape (fastgan/ops/_unfolded_conv.py says when and why that pays)."""

from __future__ import annotations

import torch
import torch.nn as nn

from fastgan.nn.tracing import NoTorchScript, recording_a_trace
from fastgan.ops._unfolded_conv import conv2d, conv_transpose2d

__all__ = ["Conv2d", "ConvTranspose2d"]


def why_not_swappable(conv: nn.Module, kind: type) -> str | None:
    """Why `conv` cannot become fastgan's module of torch's class `kind`, or None."""
    if type(conv) is not kind:
        return f"a {type(conv).__name__}, not an nn.{kind.__name__} (its forward may differ)"
    if conv.groups != 1 or tuple(conv.dilation) != (1, 1):
        return "grouped or dilated"
    if conv.padding_mode != "zeros" or isinstance(conv.padding, str):
        return f"padding {conv.padding!r}, mode {conv.padding_mode!r} (zero padding by numbers only)"
    return None


def _take_over(new: nn.Module, conv: nn.Module) -> nn.Module:
    """new with conv's settings and its own Parameter objects (shared, not copied)."""
    nn.Module.__init__(new)
    new.__dict__.update({k: v for k, v in vars(conv).items()
                         if not k.startswith("_") or k == "_reversed_padding_repeated_twice"})
    new.weight = conv.weight
    new.register_parameter("bias", conv.bias)
    return new


class Conv2d(NoTorchScript, nn.Conv2d):
    """nn.Conv2d (zero padding, groups 1, dilation 1) through fastgan.ops' measured
    choice: the same parameters, state_dict keys and outputs to float32 rounding."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:  # torch's argument name: input= works
        if recording_a_trace():
            return super().forward(input)
        return conv2d(input, self.weight, self.bias, self.stride, self.padding)

    @classmethod
    def from_module(cls, conv: nn.Conv2d) -> "Conv2d":
        """The module computing conv, holding conv's Parameter objects; ValueError
        when conv is not a plain, zero-padded, ungrouped, undilated nn.Conv2d."""
        why = why_not_swappable(conv, nn.Conv2d)
        if why:
            raise ValueError(f"fastgan.nn.Conv2d: {why}")
        return _take_over(cls.__new__(cls), conv)


class ConvTranspose2d(NoTorchScript, nn.ConvTranspose2d):
    """nn.ConvTranspose2d (zero padding, groups 1, dilation 1) through fastgan.ops'
    measured choice: the same parameters, state_dict keys and outputs to float32
    rounding. A call with output_size runs torch's own forward."""

    def forward(self, input: torch.Tensor, output_size: list[int] | None = None) -> torch.Tensor:
        if output_size is not None or recording_a_trace():
            return super().forward(input, output_size)
        return conv_transpose2d(input, self.weight, self.bias, self.stride, self.padding, self.output_padding)

    @classmethod
    def from_module(cls, conv: nn.ConvTranspose2d) -> "ConvTranspose2d":
        """As Conv2d.from_module, for an nn.ConvTranspose2d."""
        why = why_not_swappable(conv, nn.ConvTranspose2d)
        if why:
            raise ValueError(f"fastgan.nn.ConvTranspose2d: {why}")
        return _take_over(cls.__new__(cls), conv)
