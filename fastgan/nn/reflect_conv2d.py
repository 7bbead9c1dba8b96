"""ReflectConv2d: nn.ReflectionPad2d(p) followed by nn.Conv2d(..., padding=0), as one
module running fastgan.ops.reflect_conv2d (the padded tensor is never materialized)."""

from __future__ import annotations

import math
import numbers

import torch
import torch.nn as nn
from torch.nn import init

from fastgan.nn.tracing import NoTorchScript, recording_a_trace
from fastgan.ops import check_backend, reference, reflect_conv2d, use_backend

__all__ = ["ReflectConv2d"]


def _square(value, name: str) -> int:
    """An int, or a pair of equal ints (the op takes one stride and one padding)."""
    if isinstance(value, (tuple, list)):
        if len(value) != 2 or value[0] != value[1]:
            raise ValueError(f"ReflectConv2d: {name} must be an int or a pair of equal ints, got {value!r}")
        value = value[0]
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"ReflectConv2d: {name} must be an int, got {value!r}")
    return value


class ReflectConv2d(NoTorchScript, nn.Module):
    """conv2d of the input reflection padded by `padding` on every side.

    Equals nn.Sequential(nn.ReflectionPad2d(padding), nn.Conv2d(in_channels,
    out_channels, kernel_size, stride, padding=0, bias=bias)) with the same parameters.
    Its parameters and state_dict keys are exactly nn.Conv2d's (`weight` of shape
    (out_channels, in_channels, kh, kw), `bias` (out_channels,) unless bias=False), and
    they are initialised as nn.Conv2d initialises them (same random draws), so a
    checkpoint of the conv loads here and back.

    `backend` ("auto" or a fastgan.ops back end name) is the back end its op runs on:
    "auto" leaves the choice to fastgan.ops (use_backend / FASTGAN_BACKEND / auto), a
    name overrides it for this module (what fastgan.accelerate(model, backend=...) sets).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=1,
                 bias: bool = True, backend: str = "auto", device=None, dtype=None):
        super().__init__()
        kernel = (kernel_size, kernel_size) if isinstance(kernel_size, numbers.Integral) else tuple(kernel_size)
        if len(kernel) != 2 or not all(isinstance(k, numbers.Integral) and not isinstance(k, bool) and k >= 1
                                       for k in kernel):
            raise ValueError(f"ReflectConv2d: kernel_size must be an int >= 1 or a pair of them, got {kernel_size!r}")
        kh, kw = (int(k) for k in kernel)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = (kh, kw)
        self.stride = _square(stride, "stride")
        self.padding = _square(padding, "padding")
        self.backend = check_backend(backend)
        if self.stride < 1 or self.padding < 0:
            raise ValueError(f"ReflectConv2d: need stride >= 1 and padding >= 0, got {stride!r}, {padding!r}")
        factory = {"device": device, "dtype": dtype}
        self.weight = nn.Parameter(torch.empty((out_channels, in_channels, kh, kw), **factory))
        if bias:
            self.bias = nn.Parameter(torch.empty(out_channels, **factory))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """nn.Conv2d's initialisation (torch.nn.modules.conv._ConvNd.reset_parameters)."""
        init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in, _ = init._calculate_fan_in_and_fan_out(self.weight)
            if fan_in != 0:
                bound = 1 / math.sqrt(fan_in)
                init.uniform_(self.bias, -bound, bound)

    @classmethod
    def from_modules(cls, pad: nn.ReflectionPad2d, conv: nn.Conv2d, backend: str = "auto") -> "ReflectConv2d":
        """The module equal to `conv(pad(x))`, holding conv's own Parameter objects
        (weight and bias are shared, not copied: an optimizer over conv keeps working).

        Valid only when pad is an nn.ReflectionPad2d with the same padding on all four
        sides and conv an nn.Conv2d with padding 0, groups 1, dilation 1 and the same
        stride in both directions; else ValueError says why.
        """
        if not isinstance(pad, nn.ReflectionPad2d):
            raise ValueError(f"ReflectConv2d.from_modules: pad must be nn.ReflectionPad2d, got {type(pad).__name__}")
        if type(conv) is not nn.Conv2d:
            raise ValueError(f"ReflectConv2d.from_modules: conv must be nn.Conv2d, got {type(conv).__name__}")
        padding = tuple(pad.padding)
        if len(set(padding)) != 1:
            raise ValueError(f"ReflectConv2d.from_modules: the reflection pad must be symmetric "
                             f"(same on all four sides), got {padding}")
        if conv.padding not in ((0, 0), "valid"):
            raise ValueError(f"ReflectConv2d.from_modules: the conv must not pad itself (padding 0), "
                             f"got padding={conv.padding!r}")
        if conv.groups != 1:
            raise ValueError(f"ReflectConv2d.from_modules: only groups=1 is supported, got groups={conv.groups}")
        if tuple(conv.dilation) != (1, 1):
            raise ValueError(f"ReflectConv2d.from_modules: only dilation 1 is supported, got {conv.dilation}")
        if conv.stride[0] != conv.stride[1]:
            raise ValueError(f"ReflectConv2d.from_modules: the stride must be the same in both "
                             f"directions, got {conv.stride}")
        module = cls.__new__(cls)
        nn.Module.__init__(module)
        module.in_channels = conv.in_channels
        module.out_channels = conv.out_channels
        module.kernel_size = tuple(conv.kernel_size)
        module.stride = conv.stride[0]
        module.padding = padding[0]
        module.backend = check_backend(backend)
        module.weight = conv.weight
        if conv.bias is not None:
            module.bias = conv.bias
        else:
            module.register_parameter("bias", None)
        module.train(conv.training)
        return module

    def forward(self, input: torch.Tensor) -> torch.Tensor:  # torch's modules' argument name
        x = input
        if recording_a_trace():
            return reference.reflect_conv2d(x, self.weight, self.bias, self.stride, self.padding)
        if x.dim() == 3:  # unbatched (C, H, W), as nn.ReflectionPad2d and nn.Conv2d take it
            return self.forward(x.unsqueeze(0)).squeeze(0)
        if self.backend == "auto":
            return reflect_conv2d(x, self.weight, self.bias, self.stride, self.padding)
        with use_backend(self.backend):
            return reflect_conv2d(x, self.weight, self.bias, self.stride, self.padding)

    def extra_repr(self) -> str:
        s = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
             f"stride={self.stride}, padding={self.padding}, padding_mode=reflect")
        if self.bias is None:
            s += ", bias=False"
        if self.backend != "auto":
            s += f", backend={self.backend!r}"
        return s
