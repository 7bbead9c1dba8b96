"""Fused ops with interchangeable back ends (see fastgan/ops/registry.py).

    fastgan.ops.instance_norm_act(x, weight=None, bias=None, eps=1e-5, activation="relu",
                                  negative_slope=0.2, residual=None)
                                                         per-(n, c) plane normalization, affine,
                                                         activation and residual add in one pass
    fastgan.ops.reflect_conv2d(x, weight, bias=None, stride=1, padding=1)
                                                         conv2d of the reflection-padded x, the padded
                                                         tensor never made
    fastgan.ops.l1_loss(input, target, weight=1.0)      weight * mean(|input - target|)
    fastgan.ops.cycle_losses(real_A, rec_A, real_B, rec_B, idt_A, idt_B, lambda_A, lambda_B,
                             lambda_identity)    the CycleGAN L1 terms in one pass (CycleLosses)

    fastgan.ops.use_backend(name)                        context manager: "auto", "torch", "cpu", "cuda",
                                                         "triton"
    fastgan.ops.set_default_backend(name | None)         outside use_backend (None: FASTGAN_BACKEND / auto)
    fastgan.ops.available_backends(device=None, op=None) usable back end names
    fastgan.ops.backend_for(op, device)                  the back end a call would use now
    fastgan.ops.check_backend(name)                      name, or use_backend's error for it
    fastgan.ops.reflect_conv2d_choice(name)              context manager: reflect_conv2d's fused kernel
                                                         ("triton" / "winograd"), "aten" or "auto" (measured
                                                         per shape; FASTGAN_REFLECT_CONV2D sets the default)
    fastgan.ops.conv2d(x, weight, bias, stride, padding), conv_transpose2d(..., output_padding)
                                                         on a CPU the faster, measured per shape, of the
                                                         vendor convolution and one explicit matrix
                                                         product; conv_choice(name) forces one
    fastgan.ops.reuse_weight_transforms()                context manager: the CPU Winograd convolutions
                                                         transform each weight once while it is unchanged
    fastgan.ops.clear_measured_choices()                 forget the choices measured per shape (a process
                                                         meeting thousands of shapes keeps them otherwise)
    fastgan.ops.choices_by_size_class()                  context manager: a choice measured at one image
                                                         size holds for its size class (pixels within a
                                                         power of 2): images of sizes of their own

`auto` (the default) picks the native kernels when fastgan._C is built (`make build`),
else falls back to the torch reference with one BackendFallbackWarning. FASTGAN_BACKEND
(read at import) sets the default.
"""

from fastgan.ops import _native, _reflect_conv2d, _unfolded_conv, reference, registry
from fastgan.ops import triton as _triton_backend  # noqa: F401  (registers the triton back end)
from fastgan.ops._cycle_losses import CycleLosses, cycle_losses
from fastgan.ops._l1_loss import l1_loss
from fastgan.ops._measure import choices_by_size_class
from fastgan.ops._instance_norm_act import instance_norm_act
from fastgan.ops._reflect_conv2d import force_choice as reflect_conv2d_choice
from fastgan.ops._reflect_conv2d import reflect_conv2d
from fastgan.ops._unfolded_conv import conv2d, conv_choice, conv_transpose2d
from fastgan.ops._weight_transforms import reuse_weight_transforms
from fastgan.ops.registry import (
    BackendFallbackWarning,
    BackendUnavailableError,
    available_backends,
    backend_for,
    check_backend,
    get_default_backend,
    set_default_backend,
    use_backend,
)

native_loaded = _native.LOADED


def clear_measured_choices() -> None:
    """Forget the kernel choices reflect_conv2d and the convolutions measured per shape: they
    are kept for the process (about 100 KB per reflect_conv2d shape), and a shape met again
    is measured again."""
    _reflect_conv2d.clear_selection_cache()
    _unfolded_conv.clear_selection_cache()


__all__ = [
    "BackendFallbackWarning",
    "BackendUnavailableError",
    "CycleLosses",
    "available_backends",
    "backend_for",
    "check_backend",
    "choices_by_size_class",
    "clear_measured_choices",
    "conv2d",
    "conv_choice",
    "conv_transpose2d",
    "cycle_losses",
    "get_default_backend",
    "instance_norm_act",
    "l1_loss",
    "native_loaded",
    "reference",
    "reflect_conv2d",
    "reuse_weight_transforms",
    "reflect_conv2d_choice",
    "registry",
    "set_default_backend",
    "use_backend",
]
