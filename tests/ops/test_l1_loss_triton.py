"""The `triton` back end of fastgan.ops.l1_loss (fastgan/ops/triton/l1_loss.py).

tests/ops/test_l1_loss.py already runs every back end available here -- triton
included, through the interpreter on CPU tensors -- against the float64 reference
(dtype x layout x shape, NaN-poisoned, weight, one-sided gradient, empty input,
torch.compile(fullgraph=True)). This file adds what is Triton's own: gradcheck, opcheck
of the fastgan_triton ops, fake vs real layouts, determinism, rounding to nearest
(the interpreter truncates float32 -> bf16 by itself), and the GPU tests (@pytest.mark.gpu);
tests/ops/test_triton_common.py what the Triton kernels share (constants, reduction grids).
"""

from __future__ import annotations

import pytest
import torch

import fastgan.ops as ops
from tests.ops.test_l1_loss import (
    DTYPES,
    LAYOUTS,
    SHAPES,
    _compiled_matches_eager,
    check_against_reference,
    check_fake_matches_real,
    check_opcheck,
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
    check_opcheck(torch.ops.fastgan_triton, dtype, layout)


@needs_triton_cpu
@pytest.mark.parametrize("layout", LAYOUTS)
def test_fake_matches_real_layout(layout):
    real = check_fake_matches_real(torch.ops.fastgan_triton, layout)
    # the same layouts as the native op's
    if ops.native_loaded:
        x, t = make_inputs((2, 3, 6, 5), torch.float32, layout)
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
