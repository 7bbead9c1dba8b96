"""fastgan.ops.reflect_conv2d: conv2d of a reflection-padded input, the pad never
materialized.

    reflect_conv2d(x, weight, bias=None, stride=1, padding=1)
        == F.conv2d(F.pad(x, (padding,) * 4, mode="reflect"), weight, bias, stride)

groups 1, dilation 1 (the ResNet generator's 7x7/pad 3 and 3x3/pad 1 convolutions).

Back ends:
    torch   reference.reflect_conv2d (pad + conv2d, autograd by aten)
    cpu     the custom op torch.ops.fastgan.reflect_conv2d with the fused kernel
              "winograd"  Winograd F(4x4, 3x3) (csrc/cpu/conv3x3_winograd.cpp: reflected
                          reads, the channel sums as one MKL batched matrix product;
                          3x3 kernels, stride 1, float32/float64 only; its transforms
                          add and subtract a tile's values, so an inf or NaN input
                          makes its 4x4 output tiles NaN where aten has a few infs:
                          nothing aten makes non-finite comes out finite),
            against "aten" (pad + oneDNN); `auto` uses it for CPU tensors. Other
            shapes and dtypes (the 7x7 convolutions, bf16 under autocast) run aten.
    triton  the custom op with the fused kernel
              "triton"    the implicit-GEMM kernels of fastgan/ops/triton/reflect_conv2d.py
                          (reflected reads, no padded tensor),
            against "aten" (pad + cuDNN); `auto` uses it for CUDA tensors. On CPU
            tensors it runs through the Triton interpreter (TRITON_INTERPRET=1), for
            the tests (measured there too: the interpreter loses, so `auto` runs aten).
            The Triton kernels are deterministic (no atomics). float32 uses tf32
            products where torch.backends.cudnn.allow_tf32 (the flag of cuDNN's
            convolutions) is set, as the vendor path does.

The custom op's forward, input gradient and weight gradient each run, per shape, the
faster of the back end's fused kernel and "aten" (pad + the vendor convolution and, for
the input gradient, the fold of the padded gradient: reflection_pad2d_backward), as
measured on first use (`selection_cache()`: per phase, fused kernel, shape, dtype,
layout, device and tf32 flag; a few warm-up and timed runs of each, CUDA events on a
GPU), so it is never slower than the unfused path where the measurement holds.
`force_choice("triton" | "winograd" | "aten" | "auto")` (fastgan.ops.reflect_conv2d_choice)
overrides the measurement (a fused kernel other than the back end's is an error), and
FASTGAN_REFLECT_CONV2D=auto|aten (read at import) sets the default: "aten" keeps the vendor
convolutions everywhere (Winograd's float32 error, against float64 at CycleGAN's shapes:
1.6e-5 of the largest value in the output and the input gradient, 1.1e-5 in the weight
gradient, where oneDNN's is 3e-7 and 2.4e-6; cuDNN's Winograd algorithms on GPUs trade
the same way). A shape first seen while a CUDA graph is being captured runs aten (no
timing inside a capture) and is measured later; the training-state file keeps the
choices (fastgan/engine/state.py), so a resumed run keeps its kernels.

The choice happens inside the custom op's implementation, at run time, so that
torch.compile (fullgraph=True) sees one opaque op and no graph break; the custom ops
have fake rules and autograd rules (whose backward ops are custom ops as well, with
their own autograd rules: double backward works) and pass torch.library.opcheck. In
eager mode the same functions run through an autograd.Function instead of the
dispatcher (fastgan/ops/_eager.py): at batch 1 the custom-op machinery cost more host
time than the convolution. Where the forward ran aten, the eager path also keeps the
padded x for the aten gradients, as the unfused path does (the custom op cannot return
it, so under torch.compile the weight gradient pads again): the 64->3 7x7 convolution at
256² took 1.2x the unfused forward+backward on a CPU with the second pad and an expanded
stand-in for the input gradient's input (copied to full size by oneDNN), 1.0x without.
Where every phase runs aten (forced, a call the fused kernel cannot run, or a shape whose
measured choices all came out aten: _ALL_ATEN), the eager path is the unfused
composition itself, under torch's autograd.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from typing import Callable, Iterator, Optional

import torch

from fastgan.ops import _measure, _native, reference, registry
from fastgan.ops._dtypes import autocast_dtype
from fastgan.ops._eager import saved_tensors_hooked, takes_eager_path
from fastgan.ops._layout import convolution_format, suggests_channels_last
from fastgan.ops._measure import activation_shape
from fastgan.ops._saved import recorded, save_tensors
from fastgan.ops._weight_transforms import kept_transform
from fastgan.ops import triton as _triton_backend

if _triton_backend.LOAD_KERNELS:
    from fastgan.ops.triton import reflect_conv2d as _kernels
else:  # no triton, or nothing here it runs on: only the aten path exists
    _kernels = None

__all__ = [
    "CHOICES",
    "REFLECT_CONV2D",
    "clear_selection_cache",
    "force_choice",
    "adopt_selection_cache",
    "load_selection_cache",
    "reflect_conv2d",
    "selection_cache",
]

def _choice_from_environment() -> str:
    """FASTGAN_REFLECT_CONV2D: "auto" (default) or "aten" (a fused kernel by name is for
    force_choice: it fails on the shapes it cannot run)."""
    name = os.environ.get("FASTGAN_REFLECT_CONV2D", "auto") or "auto"
    if name not in ("auto", "aten"):
        raise ValueError(f"FASTGAN_REFLECT_CONV2D={name!r}: expected 'auto' or 'aten'")
    return name


# the candidates per phase and shape (torch.compile guards on the forced choice, read
# where the custom op is called)
_CHOICES = _measure.MeasuredChoices("reflect_conv2d", ("triton", "winograd", "aten"), _choice_from_environment())
CHOICES = ("auto", *_CHOICES.names)
# (registered once the variable above was read: a bad value raised after the op was registered,
# and importing again once it was fixed failed on "already registered")
REFLECT_CONV2D = registry.Op("reflect_conv2d", reference.reflect_conv2d)


# ---------------------------------------------------------------------- public function


def reflect_conv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                   stride: int = 1, padding: int = 1) -> torch.Tensor:
    """conv2d(reflect_pad(x, padding), weight, bias, stride) without the padded tensor.

    x (N, C_in, H, W), weight (C_out, C_in, KH, KW), bias (C_out,) or None, all of one
    floating dtype (float32, bfloat16, float16; float64 too) and device; NCHW,
    channels_last or any strides. stride >= 1 and 0 <= padding < min(H, W) (Python
    ints). Differentiable in x, weight and bias (twice, too). Under autocast the
    inputs are cast to the autocast dtype as for F.conv2d (float64 ones are not). The output is channels_last
    when x or weight is (as aten's convolution), else contiguous.

    Runs on the back end chosen by fastgan.ops.use_backend / FASTGAN_BACKEND / auto
    (CPU: `cpu`, the faster per shape of Winograd and pad + oneDNN; CUDA: `triton`,
    the faster per shape of the Triton kernel and pad + cuDNN).
    """
    _validate(x, weight, bias, stride, padding)
    dtype = autocast_dtype(x.device.type)
    if dtype is not None:
        if _unfused_under_cpu_autocast(x, weight, bias, dtype):
            return _autocast_pad_and_convolve(x, weight, bias, stride, padding, dtype)
        x, weight, bias = (_autocast(t, dtype) for t in (x, weight, bias))
    _check_dtypes(x, weight, bias)
    return REFLECT_CONV2D(x, weight, bias, stride, padding)


def _unfused_under_cpu_autocast(x, weight, bias, dtype: torch.dtype) -> bool:
    """Whether this autocast call runs pad + oneDNN whichever way it goes: CPU tensors in
    eager mode, float32 parameters, an autocast dtype Winograd does not take, and the cpu or
    torch back end, the choice not forced to a fused kernel."""
    return (x.device.type == "cpu" and weight.device.type == "cpu" and x.is_floating_point()
            and x.dtype != torch.float64 and dtype not in WINOGRAD_DTYPES and weight.dtype == torch.float32
            and (bias is None or bias.dtype == torch.float32) and _CHOICES.choice in ("auto", "aten")
            and takes_eager_path(x, weight, bias)
            and REFLECT_CONV2D.select("cpu", warn=False)[0] in ("cpu", "torch"))


def _autocast_pad_and_convolve(x, weight, bias, stride, padding, dtype: torch.dtype) -> torch.Tensor:
    """pad + the vendor convolution with autocast casting the parameters: its cache then
    casts each weight once in an autocast region, however many calls use it (a generator
    run twice in one region: ResNet weights cast 2x fewer times, their gradients copied
    back 2x fewer times). As with nn.Conv2d under autocast, the calls' weight gradients
    are then summed in bf16 before their one copy back to float32."""
    padded = _pad(_autocast(x, dtype), padding)
    return _in_layout(torch.nn.functional.conv2d(padded, weight, bias, stride), convolution_format(x, weight))


def _autocast(t: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    # autocast's own rule for an op it casts: floating tensors other than float64
    return t.to(dtype) if t is not None and t.is_floating_point() and t.dtype != torch.float64 else t


def _validate(x, weight, bias, stride, padding) -> None:
    if not isinstance(stride, int) or isinstance(stride, bool) or stride < 1:
        raise ValueError(f"reflect_conv2d: stride must be an int >= 1, got {stride!r}")
    if not isinstance(padding, int) or isinstance(padding, bool) or padding < 0:
        raise ValueError(f"reflect_conv2d: padding must be an int >= 0, got {padding!r}")
    if x.dim() != 4 or weight.dim() != 4:
        raise ValueError(f"reflect_conv2d: x and weight must be 4-d, got shapes {tuple(x.shape)} "
                         f"and {tuple(weight.shape)}")
    if weight.shape[1] != x.shape[1]:
        raise ValueError(f"reflect_conv2d: weight {tuple(weight.shape)} expects {weight.shape[1]} input "
                         f"channels, x {tuple(x.shape)} has {x.shape[1]} (groups=1 only)")
    if x.shape[1] == 0:
        raise ValueError(f"reflect_conv2d: x {tuple(x.shape)} has no input channels")
    if weight.shape[0] == 0:
        raise ValueError(f"reflect_conv2d: weight {tuple(weight.shape)} has no output channels")
    if bias is not None and tuple(bias.shape) != (weight.shape[0],):
        raise ValueError(f"reflect_conv2d: bias must have shape ({weight.shape[0]},), got {tuple(bias.shape)}")
    if padding >= x.shape[2] or padding >= x.shape[3]:
        raise ValueError(f"reflect_conv2d: reflection padding {padding} must be smaller than the input's "
                         f"height and width, got {tuple(x.shape[2:])}")
    if x.shape[2] + 2 * padding < weight.shape[2] or x.shape[3] + 2 * padding < weight.shape[3]:
        raise ValueError(f"reflect_conv2d: kernel {tuple(weight.shape[2:])} is larger than the padded "
                         f"input {(x.shape[2] + 2 * padding, x.shape[3] + 2 * padding)}")


def _check_dtypes(x, weight, bias) -> None:
    """One floating dtype and one device for all (as F.conv2d asks), on every back end. Runs
    on every call: plain comparisons, the message built only for a refusal."""
    others = (weight,) if bias is None else (weight, bias)
    if x.is_floating_point() and all(t.dtype == x.dtype and t.device == x.device for t in others):
        return
    found = {"x": x, "weight": weight, "bias": bias}
    raise ValueError("reflect_conv2d: x, weight and bias must share one floating dtype and device, got "
                     + ", ".join(f"{name} {t.dtype} on {t.device}" for name, t in found.items() if t is not None))


# ----------------------------------------------------------------------- layouts, aten


def _x_format(x: torch.Tensor) -> torch.memory_format:
    return torch.channels_last if suggests_channels_last(x) else torch.contiguous_format


def _out_shape(x: torch.Tensor, weight: torch.Tensor, stride: int, padding: int) -> tuple:
    n, _, h, w = x.shape
    return (n, weight.shape[0], (h + 2 * padding - weight.shape[2]) // stride + 1,
            (w + 2 * padding - weight.shape[3]) // stride + 1)


def _empty(shape, like: torch.Tensor, memory_format: torch.memory_format) -> torch.Tensor:
    return torch.empty(shape, dtype=like.dtype, device=like.device, memory_format=memory_format)


_DENSE_STRIDES: dict[tuple, tuple] = {}


def _dense_strides(shape: torch.Size, memory_format: torch.memory_format) -> tuple:
    """The strides torch.empty(shape, memory_format=...) gives, asked of torch once per shape."""
    key = (tuple(shape), memory_format)
    strides = _DENSE_STRIDES.get(key)
    if strides is None:
        strides = _DENSE_STRIDES[key] = torch.empty(shape, device="meta", memory_format=memory_format).stride()
    return strides


def _in_layout(t: torch.Tensor, memory_format: torch.memory_format) -> torch.Tensor:
    """t with exactly the strides torch.empty(..., memory_format) gives (what the fake
    rules promise): t itself when it has them, else a copy."""
    if t.stride() == _dense_strides(t.shape, memory_format):
        return t
    return _empty(t.shape, t, memory_format).copy_(t)


def _like(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """t with like's strides (what empty_like(like) gives): t itself when it has them, else a copy."""
    return t if t.stride() == like.stride() else torch.empty_like(like).copy_(t)


def _pad(x: torch.Tensor, padding: int) -> torch.Tensor:
    """x reflection padded, in x's memory format (oneDNN and cuDNN prefer channels_last
    for channels_last activations)."""
    if not padding:
        return x
    if autocast_dtype(x.device.type) is not None:
        # CPU autocast runs reflection_pad2d in float32; x is already in the dtype the
        # convolution takes, and the eager path keeps the padded x for the gradients
        with torch.autocast(x.device.type, enabled=False):
            return _pad(x, padding)
    padded = torch.nn.functional.pad(x, (padding,) * 4, mode="reflect")
    if suggests_channels_last(x) and not padded.is_contiguous(memory_format=torch.channels_last):
        padded = padded.contiguous(memory_format=torch.channels_last)
    return padded


def _pad_and_convolve(x, weight, bias, stride, padding) -> tuple[torch.Tensor, torch.Tensor]:
    """The unfused path's output (pad + the vendor convolution, in the op's output layout)
    and its padded x."""
    padded = _pad(x, padding)
    return _in_layout(torch.nn.functional.conv2d(padded, weight, bias, stride), convolution_format(x, weight)), padded


def _convolution_backward(grad, padded, weight, stride, mask):
    """aten.convolution_backward of conv2d(padded, weight, stride=stride) (what
    torch.nn.grad.conv2d_input/_weight call, without their Python around it); `padded`
    or `weight`, where only its shape is read, may be a stand-in."""
    return torch.ops.aten.convolution_backward(grad, padded, weight, None, [stride, stride], [0, 0], [1, 1],
                                               False, [0, 0], 1, mask)


def _aten_grad_input(grad, x, weight, stride, padding, padded=None):
    """The gradient of the padded input (cuDNN dgrad) folded back (reflection_pad2d_backward).
    The input is read for its shape and layout only: `padded` (the forward's padded x)
    when kept, else an uninitialized tensor of its shape (an expanded one-element
    stand-in gets made contiguous, a copy as large as the padded input: 1.25x the time
    of the 64->3 7x7 gradient at 256² on a CPU)."""
    if padded is None:
        n, c, h, w = x.shape
        padded = _empty((n, c, h + 2 * padding, w + 2 * padding), grad, _x_format(x))
    dpad = _convolution_backward(grad, padded, weight, stride, [True, False, False])[0]
    if not padding:
        return dpad
    return torch.ops.aten.reflection_pad2d_backward(dpad, x, [padding] * 4)


def _aten_grad_weight(grad, x, weight, stride, padding, padded=None, with_bias=False):
    """cuDNN/oneDNN wgrad of the padded x: `padded` (the forward's) when kept, else x padded again.
    with_bias: (wgrad, the bias's gradient from the same call), which oneDNN sums in its own
    order: the bits of the unfused composition's autograd (grad.sum's differ at batch > 1)."""
    if padded is None:
        padded = _pad(x, padding)
    stand_in = grad.new_empty(1).expand(weight.shape)
    if with_bias:
        _, dw, db = torch.ops.aten.convolution_backward(grad, padded, stand_in, [weight.shape[0]], [stride, stride],
                                                        [0, 0], [1, 1], False, [0, 0], 1, [False, True, True])
        return dw, db
    return _convolution_backward(grad, padded, stand_in, stride, [False, True, False])[1]


# ------------------------------------------------------------------ the measured choice

@contextlib.contextmanager
def force_choice(name: str) -> Iterator[str]:
    """Within the block reflect_conv2d runs `name`: the back end's fused kernels
    ("triton" for the `triton` back end, "winograd" for `cpu`), "aten" (pad + vendor
    convolution) or "auto" (the faster per shape, measured once)."""
    with _CHOICES.forced(name):
        yield name


def selection_cache() -> dict[tuple, dict]:
    """{shape signature: {"choice": "triton" | "winograd" | "aten", "times": {candidate: seconds}}}
    for every (phase, fused kernel, device, dtype, stride, padding, tf32 allowed, shapes and layouts)
    measured so far in this process (the key: _signature)."""
    return _CHOICES.entries()


def readable_selection(entries: dict) -> dict:
    """The saved choices load_selection_cache would take, each judged alone; none adopted."""
    return _CHOICES.readable(entries)


def check_selection_cache(entries: dict) -> None:
    """A ValueError where load_selection_cache would raise one; nothing adopted."""
    _CHOICES.checked(entries)


def load_selection_cache(entries: dict[tuple, dict]) -> None:
    """Adopt choices that selection_cache() returned (in another process): a resumed
    training run keeps the kernels it measured before it stopped, so it continues bit
    for bit instead of re-measuring into a possibly different choice."""
    _CHOICES.load(entries)
    _ALL_ATEN.clear()  # derived from the choices: recorded again


def adopt_selection_cache(entries: dict[tuple, dict]) -> None:
    """Keep choices another run measured (the machine's cache) for the shapes this process
    meets: each is taken when its shape first comes, as if measured here."""
    _CHOICES.adopt(entries)


def clear_selection_cache() -> None:
    _CHOICES.clear()
    _ALL_ATEN.clear()


def _layout(t: torch.Tensor) -> str:
    if t.is_contiguous():
        return "contiguous"
    return "channels_last" if t.is_contiguous(memory_format=torch.channels_last) else "strided"


def _signature(phase: str, fused: str, stride: int, padding: int, *tensors: torch.Tensor | None) -> tuple:
    """The selection cache's key: the phase, the fused kernel and everything the speed depends on."""
    first = tensors[0]
    device, dtype = first.device, first.dtype
    tf32 = dtype == torch.float32 and device.type == "cuda" and torch.backends.cudnn.allow_tf32
    activations = 1 if phase == "forward" else 2  # x, or grad and x: the tensors of an image's size
    return (phase, fused, str(device), str(dtype), stride, padding, tf32,
            tuple([None if t is None else (activation_shape(t.shape) if i < activations else tuple(t.shape),
                                           _layout(t)) for i, t in enumerate(tensors)]))


def _triton_problem(device: torch.device) -> str | None:
    if device.type == "cuda" or (device.type == "cpu" and _triton_backend.INTERPRET):
        return _triton_backend.triton_problem()  # None exactly where _kernels is loaded
    return f"the Triton kernels do not run on {device.type} tensors"


WINOGRAD_DTYPES = (torch.float32, torch.float64)


def _winograd_kernels_problem() -> str | None:
    for op in ("conv3x3_winograd", "conv3x3_winograd_grad_input", "conv3x3_winograd_grad_weight",
               "conv3x3_winograd_weight"):
        problem = _native.kernel_check(op, "CPU")()
        if problem:
            return problem
    return None


# fixed once fastgan._C is loaded: asked once, not on every convolution
_WINOGRAD_KERNELS_PROBLEM = _winograd_kernels_problem()


def _winograd_problem(x: torch.Tensor, weight: torch.Tensor, stride: int) -> str | None:
    if _WINOGRAD_KERNELS_PROBLEM:
        return _WINOGRAD_KERNELS_PROBLEM
    if x.device.type != "cpu":
        return f"the Winograd kernels run on CPU tensors, not {x.device.type}"
    if tuple(weight.shape[2:]) != (3, 3) or stride != 1:
        return (f"the Winograd kernels take 3x3 kernels at stride 1, not {tuple(weight.shape[2:])} at "
                f"stride {stride}")
    if x.dtype not in WINOGRAD_DTYPES:
        return f"the Winograd kernels take float32 and float64 (their transforms round too much in {x.dtype})"
    return None


def _fused_problem(fused: str, x: torch.Tensor, weight: torch.Tensor, stride: int) -> str | None:
    """None when the fused kernel `fused` can run this call, else why not."""
    if fused == "triton":
        return _triton_problem(x.device)
    return _winograd_problem(x, weight, stride)


def _decide(choice: str, kernel: str, problem: str | None, key: tuple, device: torch.device,
            fused: Callable, unfused: Callable) -> str:
    """The fused kernel's name (`kernel`) or "aten" for this call: the forced choice,
    else the cached measurement, else measure both now (once per key). `problem`: why
    the fused kernel cannot run this call, or None."""
    if choice != "auto":
        if _CHOICES.validate(choice, forcing=True) != "aten":
            if choice != kernel:
                raise RuntimeError(f"reflect_conv2d: choice {choice!r} is not this back end's fused kernel "
                                   f"({kernel!r}); use force_choice({kernel!r}), 'aten' or 'auto'")
            if problem:
                raise RuntimeError(f"reflect_conv2d: choice {choice!r} is unavailable: {problem}")
        return choice
    cached = _CHOICES.get(key)
    if cached is not None:
        return cached
    if problem:
        return "aten"
    if device.type == "cuda" and torch.cuda.is_current_stream_capturing():
        # no timing inside a CUDA graph capture: take the vendor path, measure later
        return "aten"

    def failed(name: str, e: Exception) -> None:
        # e.g. a tile the GPU cannot hold
        other = f"{kernel} kernel" if name == "aten" else "pad + vendor convolution"
        warnings.warn(f"fastgan.ops.reflect_conv2d: the {name} path failed for {key} ({e!r}); "
                      f"using the {other} there", RuntimeWarning, stacklevel=5)

    return _CHOICES.measure(key, {"aten": unfused, kernel: fused}, device, on_failure=failed)


# ------------------------------------------------------------------------- custom ops


if _native.has_kernel("conv3x3_winograd", "CPU"):

    @torch.library.register_fake("fastgan::conv3x3_winograd")
    def _conv3x3_winograd_fake(input, weight, bias, padding, transformed_weight=None):
        n, _, h, w = input.shape
        shape = (n, weight.shape[0], h + 2 * padding - 2, w + 2 * padding - 2)
        return torch.empty(shape, dtype=input.dtype, device=input.device, memory_format=torch.channels_last)

    @torch.library.register_fake("fastgan::conv3x3_winograd_grad_input")
    def _conv3x3_winograd_grad_input_fake(grad, input, weight, padding, transformed_weight=None):
        return torch.empty(input.shape, dtype=input.dtype, device=input.device, memory_format=torch.channels_last)

    @torch.library.register_fake("fastgan::conv3x3_winograd_grad_weight")
    def _conv3x3_winograd_grad_weight_fake(grad, input, padding, channels_last=False):
        return torch.empty((grad.shape[1], input.shape[1], 3, 3), dtype=input.dtype, device=input.device,
                           memory_format=torch.channels_last if channels_last else torch.contiguous_format)

    @torch.library.register_fake("fastgan::conv3x3_winograd_weight")
    def _conv3x3_winograd_weight_fake(weight):
        return weight.new_empty((36, *weight.shape[:2]))


def _winograd_grad_input(grad, x, weight, padding):
    """x's gradient by the adjoint of the Winograd forward, with the forward's weight
    transform (the reflected border's gradient folded back in the kernel)."""
    return torch.ops.fastgan.conv3x3_winograd_grad_input(
        grad, x, weight, padding, transformed_weight=kept_transform(weight))


def _run(phase: str, fused: str, choice: str, stride: int, padding: int, tensors: tuple,
         x: torch.Tensor, weight: torch.Tensor, kernels: dict[str, Callable], unfused: Callable,
         key: tuple | None = None):
    """One phase of the custom op: the fused kernel `fused` (kernels[fused]) or aten.
    `key`: this phase's signature when the caller has it."""
    run_fused = kernels[fused]
    if key is None and choice == "auto":
        key = _signature(phase, fused, stride, padding, *tensors)
    if choice == "auto" and torch.are_deterministic_algorithms_enabled():
        # a choice by measured speed could differ between two runs: a fixed one. On a GPU the
        # fused kernel (no atomics), where aten's reflection_pad2d_backward is refused
        deterministic_fused = x.device.type == "cuda" and _fused_problem(fused, x, weight, stride) is None
        return run_fused() if deterministic_fused else unfused()
    picked = _CHOICES.get(key)  # every call after a shape's first: its measured choice, and no more
    if picked is None:
        picked = _decide(choice, fused, _fused_problem(fused, x, weight, stride), key, x.device, run_fused, unfused)
    return run_fused() if picked == fused else unfused()


def _forward(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], stride: int, padding: int,
             fused: str, choice: str, key: tuple | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The output, and the padded x when the aten path made one (None after a fused kernel);
    `key`: the forward's signature when the caller has it."""
    fmt = convolution_format(x, weight)
    kernels = {
        "triton": lambda: (_kernels.forward(x, weight, bias, stride, padding,
                                            _empty(_out_shape(x, weight, stride, padding), x, fmt)), None),
        "winograd": lambda: (_in_layout(torch.ops.fastgan.conv3x3_winograd(
            x, weight, bias, padding, transformed_weight=kept_transform(weight)),
            fmt), None),
    }

    def unfused():
        return _pad_and_convolve(x, weight, bias, stride, padding)

    return _run("forward", fused, choice, stride, padding, (x, weight, bias), x, weight, kernels, unfused, key)


def _forward_impl(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
                  stride: int, padding: int, fused: str, choice: str) -> torch.Tensor:
    return _forward(x, weight, bias, stride, padding, fused, choice)[0]


_reflect_conv2d_op = torch.library.custom_op("fastgan::reflect_conv2d", _forward_impl, mutates_args=())


@_reflect_conv2d_op.register_fake
def _(x, weight, bias, stride, padding, fused, choice):
    torch._check(x.dim() == 4 and weight.dim() == 4, lambda: "reflect_conv2d: 4-d x and weight")
    torch._check(weight.shape[1] == x.shape[1], lambda: "reflect_conv2d: channel mismatch")
    torch._check(x.dtype == weight.dtype, lambda: "reflect_conv2d: x and weight dtypes differ")
    return _empty(_out_shape(x, weight, stride, padding), x, convolution_format(x, weight))


def _grad_input(grad: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, stride: int, padding: int,
                fused: str, choice: str, padded: torch.Tensor | None = None) -> torch.Tensor:
    """The gradient of reflect_conv2d with respect to x (x is read for its shape and
    layout only; `padded`: the forward's padded x, when kept)."""
    fmt = _x_format(x)
    kernels = {
        "triton": lambda: _kernels.grad_input(grad, weight, stride, padding, _empty(x.shape, x, fmt)),
        "winograd": lambda: _in_layout(_winograd_grad_input(grad, x, weight, padding), fmt),
    }

    def unfused():
        return _in_layout(_aten_grad_input(grad, x, weight, stride, padding, padded), fmt)

    return _run("grad_input", fused, choice, stride, padding, (grad, x, weight), x, weight, kernels, unfused)


def _grad_input_impl(grad: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, stride: int, padding: int,
                     fused: str, choice: str) -> torch.Tensor:
    return _grad_input(grad, x, weight, stride, padding, fused, choice)


_grad_input_op = torch.library.custom_op("fastgan::reflect_conv2d_grad_input", _grad_input_impl, mutates_args=())


@_grad_input_op.register_fake
def _(grad, x, weight, stride, padding, fused, choice):
    return _empty(x.shape, x, _x_format(x))


def _grad_weight(grad: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, stride: int, padding: int,
                 fused: str, choice: str, padded: torch.Tensor | None = None, with_bias: bool = False):
    """The gradient of reflect_conv2d with respect to weight (weight is read for its
    shape and layout only), in weight's layout; `padded`: the forward's padded x, when kept.
    with_bias: (that, the bias's gradient: from the same oneDNN/cuDNN call on the aten path, else
    _bias_grad's, each candidate timed with its own)."""
    kernels = {
        "triton": lambda: _kernels.grad_weight(grad, x, stride, padding, torch.empty_like(weight)),
        "winograd": lambda: _like(torch.ops.fastgan.conv3x3_winograd_grad_weight(
            grad, x, padding, channels_last=suggests_channels_last(weight)), weight),
    }
    if with_bias:
        kernels = {name: (lambda kernel=kernel: (kernel(), _bias_grad(grad))) for name, kernel in kernels.items()}

    def unfused():
        if with_bias:
            dw, db = _aten_grad_weight(grad, x, weight, stride, padding, padded, with_bias=True)
            return _like(dw, weight), db
        return _like(_aten_grad_weight(grad, x, weight, stride, padding, padded), weight)

    return _run("grad_weight", fused, choice, stride, padding, (grad, x, weight), x, weight, kernels, unfused)


def _grad_weight_impl(grad: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, stride: int, padding: int,
                      fused: str, choice: str) -> torch.Tensor:
    return _grad_weight(grad, x, weight, stride, padding, fused, choice)


_grad_weight_op = torch.library.custom_op("fastgan::reflect_conv2d_grad_weight", _grad_weight_impl, mutates_args=())


@_grad_weight_op.register_fake
def _(grad, x, weight, stride, padding, fused, choice):
    return torch.empty_like(weight)


def _bias_grad(grad: torch.Tensor) -> torch.Tensor:
    acc = torch.float64 if grad.dtype == torch.float64 else torch.float32
    return grad.sum((0, 2, 3), dtype=acc).to(grad.dtype)


def _setup_forward(ctx, inputs, output, padded=None):
    """Saves x and weight, and the padded x when the forward's aten path made one (the
    eager path only: the custom op cannot return it), so that the aten gradients need
    no second pad: the unfused path's memory, where it runs."""
    x, weight, bias, stride, padding, fused, choice = inputs
    ctx.conf = (stride, padding, fused, choice)
    ctx.has_bias = bias is not None
    save_tensors(ctx, x, weight, padded)


def _backward(ctx, saved: tuple, grad, grad_input: Callable, grad_weight: Callable, with_padded: bool = False):
    """The gradients by grad_input and grad_weight, which take the saved padded x as a
    last argument when with_padded (the eager path's functions; the custom ops do not).
    `saved`: ctx.saved_tensors, read by the caller (once: non-reentrant checkpointing
    recomputes them for one read)."""
    x, weight, padded = saved
    stride, padding, fused, choice = ctx.conf
    extra = (padded,) if with_padded else ()
    dx = dw = db = None
    bias_wanted = ctx.has_bias and ctx.needs_input_grad[2]
    if ctx.needs_input_grad[0]:
        dx = grad_input(grad, x, weight, stride, padding, fused, choice, *extra)
    if ctx.needs_input_grad[1] and bias_wanted and with_padded and padded is not None:
        # (the eager path, whose forward ran aten: where the weight's gradient runs aten too, the
        # bias's comes with it, as in the unfused composition that the shape then takes once
        # every phase measured aten: _ALL_ATEN)
        dw, db = grad_weight(grad, x, weight, stride, padding, fused, choice, *extra, with_bias=True)
    elif ctx.needs_input_grad[1]:
        dw = grad_weight(grad, x, weight, stride, padding, fused, choice, *extra)
    if bias_wanted and db is None:
        db = _bias_grad(grad)
    return dx, dw, db, None, None, None, None


def _backward_forward(ctx, grad):
    """The custom op's backward: the gradient custom ops (differentiable: double backward)."""
    return _backward(ctx, ctx.saved_tensors, grad, torch.ops.fastgan.reflect_conv2d_grad_input,
                     torch.ops.fastgan.reflect_conv2d_grad_weight)


_reflect_conv2d_op.register_autograd(_backward_forward, setup_context=_setup_forward)


class _EagerReflectConv2d(torch.autograd.Function):
    """The custom op's forward and backward functions, called without the dispatcher
    (fastgan/ops/_eager.py says why): the same kernels and choices. A backward that
    builds a graph (create_graph: double backward) goes through the differentiable
    custom ops. `key` (see _ALL_ATEN) is recorded after the first backward."""

    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding, fused, choice, key):
        # ctx in forward, not setup_context: Function.apply then skips binding the
        # arguments through inspect.signature, which costs more than the rest of a call
        inputs = (x, weight, bias, stride, padding, fused, choice)
        output, padded = _forward(*inputs, key=key[0] if key else None)
        _setup_forward(ctx, inputs, output, padded)
        ctx.all_aten_key = key
        return output

    @staticmethod
    def backward(ctx, grad):
        saved = ctx.saved_tensors
        if torch.is_grad_enabled():
            grads = _backward(ctx, saved, grad, torch.ops.fastgan.reflect_conv2d_grad_input,
                              torch.ops.fastgan.reflect_conv2d_grad_weight)
        else:
            grads = _backward(ctx, saved, grad, _grad_input, _grad_weight, with_padded=True)
        key = ctx.all_aten_key
        if key is not None and key not in _ALL_ATEN:
            only_aten = _ran_only_aten(ctx, saved, grad, key[0])
            if only_aten is not None:
                _ALL_ATEN[key] = only_aten
        return grads + (None,)


# Forward signatures (with which of x and weight need gradients) whose every phase ran
# aten, measured: after their first backward the eager path runs the unfused
# composition itself there, under torch's autograd (one convolution_backward for both
# gradients and the bias's, no Python in the backward), as it does where the choice is
# "aten" or the fused kernel cannot run the call. Where nothing is fused, fastgan's
# wrapper would only add host time (1x8x8x8 on a CPU, 1 thread: 186 µs a forward and
# backward through the autograd.Function against 74 µs for the composition).
_ALL_ATEN: dict[tuple, bool] = {}


def _ran_only_aten(ctx, saved: tuple, grad: torch.Tensor, forward_key: tuple) -> bool | None:
    """Whether every phase this call ran was measured to run aten; None while one of them
    is not measured yet (a phase first met inside a CUDA graph capture runs aten unmeasured)."""
    x, weight, _ = saved
    stride, padding, fused, _ = ctx.conf
    keys = [forward_key]
    if ctx.needs_input_grad[0]:
        keys.append(_signature("grad_input", fused, stride, padding, grad, x, weight))
    if ctx.needs_input_grad[1]:
        keys.append(_signature("grad_weight", fused, stride, padding, grad, x, weight))
    picks = [_CHOICES.get(k) for k in keys]
    return None if None in picks else all(p == "aten" for p in picks)


def _unfused(x, weight, bias, stride, padding):
    """pad + the vendor convolution under torch's autograd, in the op's output layout."""
    return _pad_and_convolve(x if padding else recorded(x), recorded(weight), bias, stride, padding)[0]


def _eager(x, weight, bias, stride, padding, fused, choice):
    if choice == "aten" or (choice == "auto" and _fused_problem(fused, x, weight, stride)):
        return _unfused(x, weight, bias, stride, padding)
    key = None
    if choice == "auto" and torch.are_deterministic_algorithms_enabled():
        # _run's fixed choice, whatever was measured (no shortcut by it, none recorded: on a
        # GPU the unfused path's backward is refused there)
        return _EagerReflectConv2d.apply(x, weight, bias, stride, padding, fused, choice, None)
    if choice == "auto":
        forward_key = _signature("forward", fused, stride, padding, x, weight, bias)
        if not (torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x, weight, bias))):
            if _CHOICES.get(forward_key) == "aten":  # no gradients: the forward's choice is all there is
                return _unfused(x, weight, bias, stride, padding)
        elif bias is None or not bias.requires_grad or weight.requires_grad:
            # (a trainable bias on a frozen weight: its gradient here is grad.sum's, the
            # composition's oneDNN's, so such calls keep this path)
            key = (forward_key, x.requires_grad, weight.requires_grad)
            if _ALL_ATEN.get(key) and not saved_tensors_hooked():
                return _unfused(x, weight, bias, stride, padding)
    return _EagerReflectConv2d.apply(x, weight, bias, stride, padding, fused, choice, key)


def _call(x, weight, bias, stride, padding, fused):
    if takes_eager_path(x, weight, bias):
        return _eager(x, weight, bias, stride, padding, fused, _CHOICES.choice)
    return torch.ops.fastgan.reflect_conv2d(x, weight, bias, stride, padding, fused, _CHOICES.choice)


# Double backward. grad_input(g, w) is the adjoint of x -> forward(x, w) and
# grad_weight(g, x) the adjoint of w -> forward(x, w); both are bilinear, so:
#   <c, grad_input(g, w)>  = <forward(c, w), g>  = <w, grad_weight(g, c)>
#   <c, grad_weight(g, x)> = <forward(x, c), g>  = <x, grad_input(g, c)>


def _setup_grad_op(ctx, inputs, output):
    grad, x, weight, stride, padding, fused, choice = inputs
    ctx.conf = (stride, padding, fused, choice)
    save_tensors(ctx, grad, x, weight)


# x's gradient does not depend on x: its derivative by x is zeros, as through aten's convolution,
# where None would read as "not used in the graph" to autograd.grad. (The weight's gradient by
# the weight is None, as aten's.)


def _backward_grad_input(ctx, cot):
    grad, x, weight = ctx.saved_tensors
    stride, padding, fused, choice = ctx.conf
    d_grad = d_x = d_weight = None
    if ctx.needs_input_grad[0]:
        d_grad = torch.ops.fastgan.reflect_conv2d(cot, weight, None, stride, padding, fused, choice)
    if ctx.needs_input_grad[1]:
        d_x = torch.zeros_like(x)
    if ctx.needs_input_grad[2]:
        d_weight = torch.ops.fastgan.reflect_conv2d_grad_weight(grad, cot, weight, stride, padding, fused, choice)
    return d_grad, d_x, d_weight, None, None, None, None


def _backward_grad_weight(ctx, cot):
    grad, x, weight = ctx.saved_tensors
    stride, padding, fused, choice = ctx.conf
    d_grad = d_x = None
    if ctx.needs_input_grad[0]:
        d_grad = torch.ops.fastgan.reflect_conv2d(x, cot, None, stride, padding, fused, choice)
    if ctx.needs_input_grad[1]:
        d_x = torch.ops.fastgan.reflect_conv2d_grad_input(grad, x, cot, stride, padding, fused, choice)
    return d_grad, d_x, None, None, None, None, None  # weight: its shape only


_grad_input_op.register_autograd(_backward_grad_input, setup_context=_setup_grad_op)
_grad_weight_op.register_autograd(_backward_grad_weight, setup_context=_setup_grad_op)


# ----------------------------------------------------------------------- back ends


def _triton_impl(x, weight, bias=None, stride=1, padding=1):
    """The `triton` back end: the custom op with the Triton kernels (see module docstring)."""
    return _call(x, weight, bias, stride, padding, "triton")


def _cpu_impl(x, weight, bias=None, stride=1, padding=1):
    """The `cpu` back end: the custom op with the Winograd kernels (see module docstring)."""
    return _call(x, weight, bias, stride, padding, "winograd")


REFLECT_CONV2D.impl("cpu", _cpu_impl)
REFLECT_CONV2D.impl("triton", _triton_impl, available=_triton_backend.triton_problem)
