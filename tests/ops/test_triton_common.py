"""fastgan/ops/triton/_common.py, what the Triton kernels of every op share: constants passed
as float32 parts (split_f64), refused where those cannot carry them, and the fixed grid of a
deterministic reduction."""

from __future__ import annotations

import re

import pytest
import torch

import fastgan.ops as ops
from fastgan.ops import reference
from tests.ops.test_l1_loss import reference_f64

TRITON_CPU = "triton" in ops.available_backends("cpu", op="l1_loss")
needs_triton_cpu = pytest.mark.skipif(not TRITON_CPU, reason="triton not importable or TRITON_INTERPRET unset")

if TRITON_CPU:  # (a jit function finds the functions it calls among its module's names)
    import triton
    import triton.language as tl

    from fastgan.ops.triton._common import round_bf16

    @triton.jit
    def _round_bf16_kernel(x_ptr, y_ptr, n, BLOCK: tl.constexpr):
        offs = tl.arange(0, BLOCK)
        mask = offs < n
        tl.store(y_ptr + offs, round_bf16(tl.load(x_ptr + offs, mask=mask)), mask=mask)


def test_weight_travels_exactly():
    """Triton passes Python floats as float32: the weight goes as three of them, whose
    float64 sum is the weight itself."""
    from fastgan.ops.triton._common import split_f64

    for w in (0.7, 10.0 * 0.3, 1.0 / 3.0, 1e-3, 123456.789, 5.0):
        hi, mid, lo = split_f64(w)
        assert all(v == torch.tensor(v, dtype=torch.float32).item() for v in (hi, mid, lo))
        assert (hi + mid) + lo == w
    with pytest.raises(ValueError, match="cannot carry 1e-39"):  # float32-subnormal parts: ~1e-6 of it lost
        split_f64(1e-39)


@needs_triton_cpu
def test_bf16_rounding_by_hand_is_to_nearest_even_as_a_gpus():
    """Ties (exactly halfway between two bf16 values) go to the even one, as torch's conversion."""
    ulp = 2.0 ** -7  # bf16's step in [1, 2)
    x = torch.tensor([1 + ulp / 2, 1 + 3 * ulp / 2, -(1 + ulp / 2), 1 + ulp / 2 + 2 ** -20, 3.0, float("nan")])
    y = torch.empty_like(x)
    _round_bf16_kernel[(1,)](x, y, x.numel(), BLOCK=8)
    torch.testing.assert_close(y, x.to(torch.bfloat16).float(), rtol=0, atol=0, equal_nan=True)
    assert y[0] == 1.0 and y[1] == 1 + 2 * ulp  # (down to even, up to even)


@needs_triton_cpu
@pytest.mark.parametrize("value", [float("inf"), float("nan"), 3.5e38, 1e300, 1e-50])
def test_constants_float32_parts_cannot_carry_are_refused(value):
    """inf - inf made the parts NaN (and 1e-50 underflowed to 0): the loss, the gradients and
    the instance norm came out NaN or 0 where the other back ends follow torch. Refused."""
    from fastgan.ops.triton._common import split_f64

    x = torch.randn(1, 2, 4, 4, dtype=torch.float64)
    t = torch.randn_like(x)
    refused = re.escape(f"float32 parts, which cannot carry {value!r} (not finite, or outside float32's range)")
    with ops.use_backend("triton"):
        with pytest.raises(ValueError, match=refused):
            ops.l1_loss(x, t, value)
        with pytest.raises(ValueError, match=refused):
            ops.cycle_losses(t, x, t, x, lambda_A=value)
        if value > 0:
            with pytest.raises(ValueError, match=refused):
                ops.instance_norm_act(x, eps=value, activation="none")
        with pytest.raises(ValueError, match=refused):
            ops.instance_norm_act(x, activation="leaky_relu", negative_slope=value)
        for activation in ("relu", "none"):  # a slope these never read is taken, forward and backward
            leaf = x.clone().requires_grad_()
            y = ops.instance_norm_act(leaf, activation=activation, negative_slope=value)
            expected = reference.instance_norm_act(x, activation=activation)
            torch.testing.assert_close(y, expected, rtol=1e-12, atol=1e-12)
            torch.testing.assert_close(torch.autograd.grad(y, leaf, t)[0], torch.autograd.grad(
                reference.instance_norm_act(leaf, activation=activation), leaf, t)[0], rtol=1e-10, atol=1e-10)
        small = ops.l1_loss(x, t, 1e-30)  # a small constant the parts still carry is taken
    torch.testing.assert_close(small, reference_f64(x, t, 1e-30)[0], rtol=1e-12, atol=0)
    assert abs(sum(split_f64(1e-30, 2)) - 1e-30) <= 1e-30 * 2.0 ** -46


def test_reduction_grid_is_fixed():
    from fastgan.ops.triton._common import MAX_PARTIALS, reduction_grid

    for n in (0, 1, 1023, 1024, 1025, 10 ** 6, 3 * 10 ** 8):
        programs, per_program = reduction_grid(n, 1024)
        assert 1 <= programs <= MAX_PARTIALS
        assert programs * per_program * 1024 >= n  # every element in some program's tiles
        assert (programs - 1) * per_program * 1024 < max(n, 1)  # and no program without any


def _bf16_and_float32_runs(op: str):
    """The op's output and input gradient on the triton back end from the same bf16 values,
    once in bf16 and once widened to float32 (the kernels compute both in float32)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 8, 9, 11, generator=g).bfloat16()
    w = torch.randn(8, 8, 3, 3, generator=g).bfloat16()
    residual = torch.randn(2, 8, 9, 11, generator=g).bfloat16()
    grad = torch.randn(2, 8, 9, 11, generator=g).bfloat16()
    runs = []
    for dtype in (torch.bfloat16, torch.float32):
        xd = x.to(dtype, copy=True).requires_grad_()
        with ops.use_backend("triton"), ops.reflect_conv2d_choice("triton"):
            if op == "instance_norm_act":
                y = ops.instance_norm_act(xd, activation="leaky_relu", residual=residual.to(dtype))
            else:
                y = ops.reflect_conv2d(xd, w.to(dtype))
            y.backward(grad.to(dtype))
        runs.append((y.detach(), xd.grad))
    return runs


@needs_triton_cpu
@pytest.mark.parametrize("op", ["instance_norm_act", "reflect_conv2d"])
def test_bf16_outputs_are_the_float32_values_rounded_to_nearest(op):
    """The Triton interpreter truncates float32 to bf16 where a GPU rounds to nearest even:
    the kernels round by hand (_common.rounded), so the interpreter's bf16 results are the
    GPU's. Before, about 4 in 10 of them sat one bf16 step nearer zero."""
    (y16, dx16), (y32, dx32) = _bf16_and_float32_runs(op)
    assert torch.equal(y16, y32.bfloat16()), op
    assert torch.equal(dx16, dx32.bfloat16()), op
