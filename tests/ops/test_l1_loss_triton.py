"""The `triton` back end of fastgan.ops.l1_loss (fastgan/ops/triton/l1_loss.py).

tests/ops/test_l1_loss.py already runs every back end available here -- triton
included, through the interpreter on CPU tensors -- against the float64 reference
(dtype x layout x shape, NaN-poisoned, weight, one-sided gradient, empty input,
torch.compile(fullgraph=True)). This file adds what is Triton's own: gradcheck, opcheck
of the fastgan_triton ops, fake vs real layouts, determinism, rounding to nearest
(the interpreter truncates float32 -> bf16 by itself), the weight's exact float64
transport, and the GPU tests (@pytest.mark.gpu).
"""

from __future__ import annotations

import re

import pytest
import torch

import fastgan.ops as ops
from fastgan.ops import reference
from tests.ops.test_l1_loss import (
    DTYPES,
    LAYOUTS,
    SHAPES,
    _compiled_matches_eager,
    check_against_reference,
    make_inputs,
    reference_f64,
    run_backend,
)
from tests.ops.inputs import case_id, seed_of

TRITON_CPU = "triton" in ops.available_backends("cpu", op="l1_loss")
needs_triton_cpu = pytest.mark.skipif(not TRITON_CPU, reason="triton not importable or TRITON_INTERPRET unset")


def test_triton_runs_here():
    assert TRITON_CPU, "triton runs on CPU tensors through TRITON_INTERPRET=1 (tests/conftest.py)"


@needs_triton_cpu
def test_gradcheck_float64():
    x, t = make_inputs((2, 3, 4, 5), torch.float64, "contiguous")  # ties too: both sides give 0
    x.requires_grad_()
    t.requires_grad_()

    def f(a, b):
        with ops.use_backend("triton"):
            return ops.l1_loss(a, b, 0.7)

    assert torch.autograd.gradcheck(f, (x, t), fast_mode=True)
    x, t = make_inputs((2, 3, 4, 5), torch.float64, "contiguous", tie_fraction=0.0)
    assert torch.autograd.gradgradcheck(f, (x.requires_grad_(), t.requires_grad_()), fast_mode=True)


@needs_triton_cpu
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=case_id)
def test_opcheck(dtype, layout):
    x, t = make_inputs((2, 3, 6, 5), dtype, layout)
    x.requires_grad_()
    t.requires_grad_()
    torch.library.opcheck(torch.ops.fastgan_triton.l1_loss.default, (x, t, 0.5))
    grad = torch.ones((), dtype=dtype)
    torch.library.opcheck(torch.ops.fastgan_triton.l1_loss_backward.default, (grad, x.detach(), t.detach(), 0.5))
    torch.library.opcheck(torch.ops.fastgan_triton.l1_loss_backward.default,
                          (grad.clone().requires_grad_(), x.detach(), t.detach(), 0.5))


@needs_triton_cpu
@pytest.mark.parametrize("layout", LAYOUTS)
def test_fake_matches_real_layout(layout):
    from torch._subclasses.fake_tensor import FakeTensorMode

    x, t = make_inputs((2, 3, 6, 5), torch.float32, layout)
    real = torch.ops.fastgan_triton.l1_loss_backward(torch.ones(()), x, t, 1.0)
    with FakeTensorMode() as mode:
        fx, ft = mode.from_tensor(x), mode.from_tensor(t)
        fake = torch.ops.fastgan_triton.l1_loss_backward(torch.ones(()), fx, ft, 1.0)
    for r, f in zip(real, fake):
        assert r.shape == f.shape and r.stride() == f.stride() and r.dtype == f.dtype
    # the same layouts as the native op's
    if ops.native_loaded:
        native = torch.ops.fastgan.l1_loss_backward(torch.ones(()), x, t, 1.0)
        assert [g.stride() for g in native] == [g.stride() for g in real]


@needs_triton_cpu
def test_deterministic_across_runs():
    x, t = make_inputs((4, 3, 64, 65), torch.float32, "contiguous")  # several programs
    first = run_backend("triton", x, t, 1.0)
    for _ in range(2):
        assert all(torch.equal(a, b) for a, b in zip(first, run_backend("triton", x, t, 1.0)))


@needs_triton_cpu
def test_bf16_rounds_to_nearest():
    """weight = 1 + 2^-8 + 2^-10 on x = 1, t = 0: the loss 1.0048828125 and the gradient
    scale w / 4 fall between bf16 neighbours, nearer the upper one (truncation would
    give the lower): the same bits as the GPU's float32 -> bf16 conversion."""
    w = 1.0 + 2.0 ** -8 + 2.0 ** -10
    x = torch.ones(4, dtype=torch.bfloat16, requires_grad=True)
    t = torch.zeros(4, dtype=torch.bfloat16)
    with ops.use_backend("triton"):
        loss = ops.l1_loss(x, t, w)
    loss.backward()
    assert loss.item() == torch.tensor(w).to(torch.bfloat16).item() == 1.0078125
    assert (x.grad == torch.tensor(w / 4).to(torch.bfloat16)).all() and x.grad[0].item() == 0.251953125


def test_weight_travels_exactly():
    """Triton passes Python floats as float32: the weight goes as three of them, whose
    float64 sum is the weight itself."""
    from fastgan.ops.triton._common import split_f64

    for w in (0.7, 10.0 * 0.3, 1.0 / 3.0, 1e-3, 123456.789, 5.0):
        hi, mid, lo = split_f64(w)
        assert all(v == torch.tensor(v, dtype=torch.float32).item() for v in (hi, mid, lo))
        assert (hi + mid) + lo == w


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


@needs_triton_cpu
def test_large_weight_and_float64_exact():
    x, t = make_inputs((3, 5, 7), torch.float64, "contiguous")
    with ops.use_backend("triton"):
        loss = ops.l1_loss(x, t, 0.7)
    torch.testing.assert_close(loss, reference_f64(x, t, 0.7)[0], rtol=1e-14, atol=0)


# --------------------------------------------------------------------------------- CUDA


@pytest.mark.parametrize("shape", SHAPES + [(8, 3, 256, 257)], ids=case_id)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES, ids=case_id)
@pytest.mark.gpu
def test_matches_reference_cuda(dtype, layout, shape, poison):
    x, t = make_inputs(shape, dtype, layout, device="cuda", seed=seed_of(dtype, layout, shape))
    check_against_reference("triton", x, t, 0.7)


@pytest.mark.gpu
def test_cuda_deterministic_and_misaligned_ok():
    x, t = make_inputs((8, 3, 256, 257), torch.float32, "contiguous", device="cuda")
    first = run_backend("triton", x, t, 1.0)
    for _ in range(3):
        assert all(torch.equal(a, b) for a, b in zip(first, run_backend("triton", x, t, 1.0)))
    m = x.numel() - 4
    check_against_reference("triton", x.flatten()[1:1 + m], t.flatten()[3:3 + m], 1.0)


@pytest.mark.gpu
def test_compile_fullgraph_cuda():
    _compiled_matches_eager("triton", "inductor", device="cuda")


@pytest.mark.gpu
def test_opcheck_cuda():
    x, t = make_inputs((2, 3, 6, 5), torch.float32, "mixed", device="cuda")
    x.requires_grad_()
    t.requires_grad_()
    torch.library.opcheck(torch.ops.fastgan_triton.l1_loss.default, (x, t, 0.5))
    grad = torch.ones((), device="cuda")
    torch.library.opcheck(torch.ops.fastgan_triton.l1_loss_backward.default, (grad, x.detach(), t.detach(), 0.5))
