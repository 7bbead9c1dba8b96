"""Convolutions as one explicit matrix product, where that measures faster.

    unfolded_conv2d(x, weight, bias, stride, padding)          unfold + matmul
    unfolded_conv_transpose2d(x, weight, bias, stride, padding, output_padding)
                                                                matmul + fold
    conv2d(...), conv_transpose2d(...)    on a CPU the faster of those and the vendor
                                          convolution, measured once per shape;
                                          elsewhere the vendor convolution

Why: at a U-Net's innermost levels (pix2pix's unet_128 and unet_256: 512 to 1024
channels at 1x1 to 8x8 pixels, 4x4 kernels, stride 2) a convolution is a matrix product
of a few columns against millions of weights, and oneDNN runs it 3 to 6 times slower
than that product (a 2-core Xeon, float32, forward + backward: ConvTranspose2d
1024 -> 512 at 4x4 49.5 ms against 14.6 ms; Conv2d 512 -> 512 at 2x2 13.9 against
1.8 ms). The column matrix is the input's im2col (conv2d) or the output's (the
transposed convolution's), so the formulation is plain torch ops, differentiated by
autograd (unfold's adjoint is fold and back). It equals the convolution to the rounding
of its dtype (a different order of the same sums). The choice is measured per shape,
layout, dtype, autocast dtype and which gradients are needed, forward and backward
together, and kept for the process; torch.compile's tracing, tensor subclasses and any
device but the CPU take the vendor convolution. `conv_choice(name)` (a context manager)
forces a candidate; FASTGAN_CONV sets the default ("auto", "aten" or "gemm").

Under CPU autocast (bf16) two more candidates take part: either path in float32, the
result cast to the autocast dtype. At those innermost levels a bf16 convolution costs
more than it saves (casting millions of weights, oneDNN reordering them for AMX, for a
product of a few columns): on a 2-core Xeon with AMX, forward + backward, ConvTranspose2d
1024 -> 512 at 2x2 took 153 ms in bf16 (oneDNN), 63 ms as the bf16 product and 9.3 ms as
the float32 one (measured while the test suite ran alongside). The output keeps
autocast's dtype, so the layers around see what plain autocast would give them,
computed more precisely.
"""

from __future__ import annotations

import os
from typing import Callable, ContextManager

import torch
import torch.nn.functional as F

from fastgan.ops import _dtypes
from fastgan.ops._eager import takes_eager_path, under_a_transform
from fastgan.ops._layout import convolution_format
from fastgan.ops._measure import MeasuredChoices, activation_shape

__all__ = ["conv2d", "conv_transpose2d", "conv_choice", "unfolded_conv2d", "unfolded_conv_transpose2d"]

# the most column-matrix elements the matrix-product candidate may allocate (256 MB in
# float32): a large image's im2col is the memory oneDNN's direct kernels do without
MAX_COLUMN_ELEMENTS = 1 << 26


def _choice_from_environment() -> str:
    name = os.environ.get("FASTGAN_CONV", "auto") or "auto"
    if name not in ("auto", "aten", "gemm"):
        raise ValueError(f"FASTGAN_CONV={name!r}: expected one of auto, aten, gemm")
    return name


# "aten_fp32" and "gemm_fp32": the same under autocast, in float32 (measured only there)
_CHOICES = MeasuredChoices("conv_choice", ("aten", "gemm", "aten_fp32", "gemm_fp32"), _choice_from_environment())


def conv_choice(name: str) -> ContextManager[str]:
    """Within the block conv2d and conv_transpose2d run `name`: "aten" (the vendor
    convolution), "gemm" (the matrix product, on any device), "aten_fp32" or "gemm_fp32"
    (under CPU autocast that path in float32, else the same as without the suffix) or
    "auto" (measured)."""
    return _CHOICES.forced(name)


def clear_selection_cache() -> None:
    _CHOICES.clear()


def selection_cache() -> dict[tuple, dict]:
    """{(kind, x's shape, channels_last, weight's shape, has a bias, geometry[, ("autocast", dtype)],
    dtype, gradients needed):
    {"choice": a candidate's name, "times": {candidate: seconds}}} for every convolution
    measured so far in this process."""
    return _CHOICES.entries()


def readable_selection(entries: dict) -> dict:
    """The saved choices load_selection_cache would take, each judged alone; none adopted."""
    return _CHOICES.readable(entries)


def check_selection_cache(entries: dict) -> None:
    """A ValueError where load_selection_cache would raise one; nothing adopted."""
    _CHOICES.checked(entries)


def load_selection_cache(entries: dict[tuple, dict | str]) -> None:
    """Adopt choices that selection_cache() returned in another process: a resumed
    training run keeps the algorithms it measured, so it continues bit for bit."""
    _CHOICES.load(entries)


def adopt_selection_cache(entries: dict[tuple, dict | str]) -> None:
    """Keep choices another run measured (the machine's cache), each taken when its shape
    first comes, as if measured here."""
    _CHOICES.adopt(entries)


def _like_aten(y: torch.Tensor, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """y in the layout the vendor convolution would give it (fastgan/ops/_layout.py)."""
    return y.contiguous(memory_format=convolution_format(x, weight))


def unfolded_conv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                    stride=(1, 1), padding=(0, 0)) -> torch.Tensor:
    """F.conv2d(x, weight, bias, stride, padding) (groups 1, dilation 1) as
    weight (K, C*kh*kw) @ unfold(x) (N, C*kh*kw, L)."""
    n, out_channels, (kh, kw) = x.shape[0], weight.shape[0], weight.shape[2:]
    ho, wo = _conv2d_out_size(x, weight, stride, padding)
    columns = F.unfold(x, (kh, kw), padding=padding, stride=stride)
    y = torch.matmul(weight.reshape(out_channels, -1), columns)
    if bias is not None:
        y = y + bias.to(y.dtype).unsqueeze(1)  # under autocast y is bf16, as F.conv2d's output
    return _like_aten(y.view(n, out_channels, ho, wo), x, weight)


def unfolded_conv_transpose2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                              stride=(1, 1), padding=(0, 0), output_padding=(0, 0)) -> torch.Tensor:
    """F.conv_transpose2d(x, weight, bias, stride, padding, output_padding) (groups 1,
    dilation 1) as fold(weight (C, K*kh*kw)^T @ x (N, C, H*W)): each input pixel's
    contribution to its kh x kw output window, summed where windows overlap."""
    n, channels, h, w = x.shape
    _, out_channels, kh, kw = weight.shape
    (sh, sw), (ph, pw), (oh, ow) = _pair(stride), _pair(padding), _pair(output_padding)
    ho, wo = (h - 1) * sh - 2 * ph + kh + oh, (w - 1) * sw - 2 * pw + kw + ow
    columns = torch.matmul(weight.reshape(channels, -1).t(), x.reshape(n, channels, h * w))
    y = F.fold(columns, (ho, wo), (kh, kw), padding=(ph, pw), stride=(sh, sw))
    if bias is not None:
        y = y + bias.to(y.dtype).view(1, -1, 1, 1)
    return _like_aten(y, x, weight)


def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)


def _conv2d_out_size(x: torch.Tensor, weight: torch.Tensor, stride, padding) -> tuple[int, int]:
    (sh, sw), (ph, pw) = _pair(stride), _pair(padding)
    kh, kw = weight.shape[2:]
    return (x.shape[2] + 2 * ph - kh) // sh + 1, (x.shape[3] + 2 * pw - kw) // sw + 1


def _column_elements(kind: str, x: torch.Tensor, weight: torch.Tensor, geometry: tuple) -> int:
    """The size of the candidate's column matrix (N, C*kh*kw, L) or (N, K*kh*kw, H*W)."""
    kh, kw = weight.shape[2:]
    if kind == "conv2d":
        ho, wo = _conv2d_out_size(x, weight, *geometry)
        return x.shape[0] * x.shape[1] * kh * kw * ho * wo
    return x.shape[0] * weight.shape[1] * kh * kw * x.shape[2] * x.shape[3]


def _measurable(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                autocast_dtype: torch.dtype | None) -> bool:
    """Whether the measured choice applies: plain CPU float tensors in eager mode; under
    autocast float32 parameters (autocast's master weights) and a float32 or autocast-dtype x."""
    inputs = (torch.float32, torch.float64) if autocast_dtype is None else (torch.float32, autocast_dtype)
    params = x.dtype if autocast_dtype is None else torch.float32
    return (x.device.type == "cpu" and x.dim() == 4 and x.dtype in inputs
            and weight.dtype == params and (bias is None or bias.dtype == params)
            and takes_eager_path(x, weight, bias) and not under_a_transform(x, weight, bias))


def _in_float32(run: Callable, autocast_dtype: torch.dtype) -> Callable:
    """run with autocast off, on float32 x, its result in the autocast dtype."""
    def run_float32(x, weight, bias):
        with torch.autocast("cpu", enabled=False):
            y = run(x.float(), weight, bias)
        return y.to(autocast_dtype)

    return run_float32


def _candidate(run: Callable, leaves: list, needs: tuple[bool, ...]) -> Callable[[], None]:
    """One forward (and backward, for the gradients `needs` asks for) of run on `leaves`
    (_stand_ins): what the measurement times."""
    wanted = [t for t, need in zip(leaves, needs) if need]

    def once() -> None:
        with torch.enable_grad() if wanted else torch.no_grad():
            y = run(*leaves)
            if wanted:
                torch.autograd.grad(y, wanted, torch.ones_like(y))

    return once


def _stand_ins(tensors: tuple, needs: tuple[bool, ...]) -> list:
    """Random stand-ins of the arguments (shape, strides, dtype, device), one set that every
    candidate shares, leaves where `needs` asks for their gradient. Not the caller's values:
    under the caller's anomaly mode, which is the process's and so not switched off here, a
    NaN among them would fail the candidates' backward. Drawn from a generator of their own:
    measuring must not move the run's random stream (a run's dropout masks and pool draws
    would then hang on whether a shape was cached)."""
    device = next(t for t in tensors if t is not None).device
    generator = torch.Generator(device=device).manual_seed(0)

    def stand_in(t: torch.Tensor) -> torch.Tensor:
        # the memory the strides reach, drawn and viewed with them: an expanded (stride 0)
        # input cannot be written through its own strides
        span = 1 + sum((n - 1) * s for n, s in zip(t.shape, t.stride())) if t.numel() else 0
        memory = torch.empty(span, dtype=t.dtype, device=t.device).normal_(generator=generator)
        return memory.as_strided(t.shape, t.stride())

    return [stand_in(t).requires_grad_(need) if t is not None else None for t, need in zip(tensors, needs)]


def _run(kind: str, x, weight, bias, aten: Callable, gemm: Callable, geometry: tuple):
    """The call by the forced choice, else by the measured one (measured now when this
    shape is new). Where the choice does not apply, nothing else is computed: a GPU call
    costs the host a few checks more than F.conv2d, and torch.compile traces only that."""
    if x.dim() == 3:  # unbatched (C, H, W), as nn.Conv2d takes it: a batch of one
        return _run(kind, x.unsqueeze(0), weight, bias, aten, gemm, geometry).squeeze(0)
    choice = _CHOICES.choice
    if choice == "aten" or x.dim() != 4:  # (any other x gets torch's own error)
        return aten(x, weight, bias)
    if choice == "auto" and torch.are_deterministic_algorithms_enabled():
        return aten(x, weight, bias)  # a choice by measured speed could differ between two runs
    if choice == "gemm":
        return gemm(x, weight, bias)
    autocast_dtype = _dtypes.autocast_dtype("cpu") if x.device.type == "cpu" else None
    measurable = _measurable(x, weight, bias, autocast_dtype)
    if choice != "auto":
        return _path(choice, aten, gemm, autocast_dtype if measurable else None)(x, weight, bias)
    if not measurable:
        return aten(x, weight, bias)
    # outside autocast the keys are those saved before autocast had choices of its own
    key = _key(kind, x, weight, bias, *geometry, *([("autocast", autocast_dtype)] if autocast_dtype else []))
    picked = _CHOICES.get(key)
    if picked is None:
        names = ["aten", "gemm", "aten_fp32", "gemm_fp32"] if autocast_dtype else ["aten", "gemm"]
        if _column_elements(kind, x, weight, geometry) > MAX_COLUMN_ELEMENTS:
            names = [name for name in names if not name.startswith("gemm")]
        if len(names) == 1:
            picked = "aten"
            _CHOICES.record(key, picked, {})
        else:
            needs = key[-1]
            leaves = _stand_ins((x, weight, bias), needs)
            picked = _CHOICES.measure(key, {name: _candidate(_uncached(_path(name, aten, gemm, autocast_dtype),
                                                                       autocast_dtype), leaves, needs)
                                            for name in names}, x.device)
    return _path(picked, aten, gemm, autocast_dtype)(x, weight, bias)


def _path(name: str, aten: Callable, gemm: Callable, autocast_dtype: torch.dtype | None) -> Callable:
    """The candidate `name` names; a float32 one without autocast (where it does not apply)
    is its path without the suffix."""
    run = gemm if name.startswith("gemm") else aten
    return _in_float32(run, autocast_dtype) if name.endswith("_fp32") and autocast_dtype is not None else run


def _uncached(run: Callable, autocast_dtype: torch.dtype | None) -> Callable:
    """run, under autocast without its cache of cast weights: timed runs that reused the
    first one's cast would leave out what every training iteration pays once."""
    if autocast_dtype is None:
        return run

    def run_uncached(*args):
        with torch.autocast("cpu", dtype=autocast_dtype, cache_enabled=False):
            return run(*args)

    return run_uncached


def _needs(x, weight, bias) -> tuple[bool, ...]:
    if not torch.is_grad_enabled():
        return (False, False, False)
    return (x.requires_grad, weight.requires_grad, bias is not None and bias.requires_grad)


def _key(kind: str, x, weight, bias, *geometry) -> tuple:
    channels_last = convolution_format(x, weight) == torch.channels_last  # a bool: keys are saved with torch.save
    return (kind, activation_shape(x.shape), channels_last, tuple(weight.shape), bias is not None, *geometry, x.dtype,
            _needs(x, weight, bias))


def conv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
           stride=(1, 1), padding=(0, 0)) -> torch.Tensor:
    """F.conv2d (groups 1, dilation 1, zero padding) by the vendor convolution or
    unfolded_conv2d (see the module docstring)."""
    stride, padding = _pair(stride), _pair(padding)
    return _run("conv2d", x, weight, bias,
                lambda x, w, b: F.conv2d(x, w, b, stride, padding),
                lambda x, w, b: unfolded_conv2d(x, w, b, stride, padding),
                (stride, padding))


def conv_transpose2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                     stride=(1, 1), padding=(0, 0), output_padding=(0, 0)) -> torch.Tensor:
    """F.conv_transpose2d (groups 1, dilation 1) by the vendor convolution or
    unfolded_conv_transpose2d (see the module docstring)."""
    stride, padding, output_padding = _pair(stride), _pair(padding), _pair(output_padding)
    return _run("conv_transpose2d", x, weight, bias,
                lambda x, w, b: F.conv_transpose2d(x, w, b, stride, padding, output_padding),
                lambda x, w, b: unfolded_conv_transpose2d(x, w, b, stride, padding, output_padding),
                (stride, padding, output_padding))
