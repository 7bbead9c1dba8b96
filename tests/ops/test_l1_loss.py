"""fastgan.ops.l1_loss on every back end against the float64 reference.

Every available back end x dtype x layout, forward and both gradients, on fresh random
inputs with exact ties (sign(0) = 0); outputs poisoned with NaN (deterministic mode
fills every fresh allocation with NaN, so an element a kernel forgets stays NaN);
gradcheck, opcheck, torch.compile(fullgraph=True), determinism across thread counts,
back end selection and the errors. CUDA tests carry @pytest.mark.gpu (registered in
pytest.ini; tests/conftest.py skips them without a CUDA device) and skip themselves too.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

import fastgan.ops as ops
from fastgan.ops import reference
from tests.ops.compiled import compiled_matches_eager
from tests.ops.inputs import away_from_zero, case_id, judged_in_float64, seed_of, subnormal_atol

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HAS_CUDA = torch.cuda.is_available()

DTYPES = [torch.float32, torch.float64, torch.bfloat16, torch.float16]
RTOL = {torch.float64: 1e-12, torch.float32: 1e-5, torch.bfloat16: 1e-2, torch.float16: 2e-3}
LAYOUTS = ["contiguous", "channels_last", "slice", "mixed"]
# numel not a multiple of any vector width; the large one spans several CPU chunks
# (16384 elements) and CUDA blocks.
SHAPES = [(2, 3, 17, 13), (4, 3, 96, 97)]
CPU_BACKENDS = ops.available_backends("cpu", op="l1_loss")
NATIVE_CPU = ["cpu"] if "cpu" in CPU_BACKENDS else []


def make_inputs(shape, dtype, layout, device="cpu", seed=0, tie_fraction=0.1):
    """Random (never zero) input and target with exact ties, in the given layout."""
    g = torch.Generator().manual_seed(seed)
    full = (*shape[:-1], 2 * shape[-1] + 1) if layout == "slice" else shape
    x = away_from_zero(torch.randn(full, generator=g, dtype=torch.float64))
    t = away_from_zero(torch.randn(full, generator=g, dtype=torch.float64))
    t = torch.where(torch.rand(full, generator=g, dtype=torch.float64) < tie_fraction, x, t)
    x, t = x.to(device=device, dtype=dtype), t.to(device=device, dtype=dtype)
    cl = torch.channels_last
    if layout == "channels_last":
        x, t = x.contiguous(memory_format=cl), t.contiguous(memory_format=cl)
    elif layout == "slice":
        x, t = x[..., 1::2], t[..., 1::2]
        assert not x.is_contiguous()
    elif layout == "mixed":
        x = x.contiguous(memory_format=cl)
    assert (x != 0).all() and (tie_fraction == 0 or (x == t).any())
    return x, t


def reference_f64(x, t, weight):
    """Loss and both gradients of the reference in float64, computed on the CPU (CUDA's
    division by the element count multiplies by its reciprocal: one bit off the exact
    quotient the bitwise checks compare with), on x's device."""
    xr = x.detach().cpu().double().requires_grad_()
    tr = t.detach().cpu().double().requires_grad_()
    loss = reference.l1_loss(xr, tr, weight)
    gx, gt = torch.autograd.grad(loss, (xr, tr))
    return loss.detach().to(x.device), gx.to(x.device), gt.to(x.device)


def run_backend(backend, x, t, weight):
    xg = x.detach().requires_grad_()
    tg = t.detach().requires_grad_()
    with ops.use_backend(backend):
        loss = ops.l1_loss(xg, tg, weight)
    loss.backward()
    return loss.detach(), xg.grad, tg.grad


def check_against_reference(backend, x, t, weight):
    dtype = x.dtype
    loss, gx, gt = run_backend(backend, x, t, weight)
    ref, ref_gx, ref_gt = reference_f64(x, t, weight)
    assert loss.dim() == 0 and loss.dtype == dtype and loss.device == x.device
    assert gx.shape == x.shape and gx.dtype == dtype and gt.shape == t.shape and gt.dtype == dtype
    ties = (x == t)
    assert (gx[ties] == 0).all() and (gt[ties] == 0).all(), "sign(0) = 0 at ties"
    rtol = RTOL[dtype]
    torch.testing.assert_close(loss.double(), ref, rtol=rtol, atol=0)
    atol = subnormal_atol(dtype)
    torch.testing.assert_close(gx.double(), ref_gx, rtol=rtol, atol=atol)
    torch.testing.assert_close(gt.double(), ref_gt, rtol=rtol, atol=atol)
    if backend in ("cpu", "cuda"):
        # Native gradients are sign * scale with scale rounded once: the dtype's rounding
        # of the float64 reference, exactly.
        assert torch.equal(gx, ref_gx.to(dtype)) and torch.equal(gt, ref_gt.to(dtype))
    if backend == "cpu" and dtype == torch.float32:
        # The CPU loss is summed in double: the float32 rounding of the reference.
        assert loss.item() == ref.to(dtype).item()
    return loss, gx, gt


# ---------------------------------------------------------------------------------- CPU


def test_native_extension_is_built():
    assert ops.native_loaded, ("fastgan._C did not load, so the native back ends are not tested: "
                               "run `make build` first")
    assert "cpu" in CPU_BACKENDS


@pytest.mark.parametrize("shape", SHAPES, ids=case_id)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("backend,dtype", judged_in_float64(CPU_BACKENDS, DTYPES))
def test_matches_reference_cpu(backend, dtype, layout, shape, poison):
    x, t = make_inputs(shape, dtype, layout, seed=seed_of(dtype, layout, shape))
    check_against_reference(backend, x, t, 0.7)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_weight_and_default(backend):
    x, t = make_inputs((3, 5, 7), torch.float32, "contiguous")
    with ops.use_backend(backend):
        one = ops.l1_loss(x, t)
        w = ops.l1_loss(x, t, 10.0)
    torch.testing.assert_close(one.double(), reference_f64(x, t, 1.0)[0], rtol=1e-6, atol=0)
    torch.testing.assert_close(w.double(), reference_f64(x, t, 10.0)[0], rtol=1e-6, atol=0)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_gradient_of_one_side_only(backend):
    """Target without grad (the usual case: loss between a fake and a real image)."""
    x, t = make_inputs((2, 3, 9, 11), torch.float32, "contiguous")
    xg = x.clone().requires_grad_()
    with ops.use_backend(backend):
        ops.l1_loss(xg, t, 2.0).backward()
    assert t.grad is None
    torch.testing.assert_close(xg.grad.double(), reference_f64(x, t, 2.0)[1], rtol=1e-6, atol=0)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_empty_is_nan_like_aten(backend):
    x = torch.randn(0, 3, requires_grad=True)
    t = torch.randn(0, 3)
    with ops.use_backend(backend):
        loss = ops.l1_loss(x, t)
    assert loss.isnan()
    loss.backward()
    assert x.grad.shape == (0, 3)


@pytest.mark.parametrize("backend", NATIVE_CPU)
def test_gradcheck_float64(backend):
    x, t = make_inputs((2, 3, 4, 5), torch.float64, "contiguous")  # ties too: both sides give 0
    x.requires_grad_()
    t.requires_grad_()

    def f(a, b):
        with ops.use_backend(backend):
            return ops.l1_loss(a, b, 0.7)

    assert torch.autograd.gradcheck(f, (x, t))
    # second order: away from ties (there the gradient, sign(x - t), jumps)
    x, t = make_inputs((2, 3, 4, 5), torch.float64, "contiguous", tie_fraction=0.0)
    assert torch.autograd.gradgradcheck(f, (x.requires_grad_(), t.requires_grad_()))


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_second_derivative_in_the_images_is_zeros_like_torchs(backend):
    """The gradient is piecewise constant in input and target: autograd.grad of a function of
    it gives zeros there, as for F.l1_loss, not "a tensor not used in the graph"."""
    x, t = (v.requires_grad_() for v in make_inputs((3, 4), torch.float64, "contiguous", tie_fraction=0.0))
    with ops.use_backend(backend):
        gx, gt = torch.autograd.grad(ops.l1_loss(x, t, 2.0), (x, t), create_graph=True)
    mix = torch.randn(3, 4, dtype=torch.float64)
    second = torch.autograd.grad((gx * mix).sum() + (gt * mix).sum(), (x, t))
    rx, rt = torch.autograd.grad(2.0 * torch.nn.functional.l1_loss(x, t), (x, t), create_graph=True)
    expected = torch.autograd.grad((rx * mix).sum() + (rt * mix).sum(), (x, t))
    for got, want in zip(second, expected):
        assert torch.equal(got.abs(), want.abs()) and not want.any()


@pytest.mark.parametrize("backend", NATIVE_CPU)
def test_deterministic_across_thread_counts(backend):
    x, t = make_inputs((8, 3, 128, 129), torch.float32, "contiguous")  # 25 chunks
    saved = torch.get_num_threads()
    try:
        results = []
        for threads in (1, 2, 4):
            torch.set_num_threads(threads)
            results.append(run_backend(backend, x, t, 1.0))
    finally:
        torch.set_num_threads(saved)
    for other in results[1:]:
        for a, b in zip(results[0], other):
            assert torch.equal(a, b)
    assert results[0][0].item() == reference_f64(x, t, 1.0)[0].float().item()


@pytest.mark.skipif(not NATIVE_CPU, reason="fastgan._C not built")
@pytest.mark.parametrize("layout", LAYOUTS)
def test_eager_path_equals_the_registered_op_bitwise(layout):
    """In eager mode the native back end runs its kernels and autograd rule through an
    autograd.Function below the autograd dispatch (fastgan/ops/_eager.py): the same bits
    as the registered op's autograd, which torch.compile and fake tensors use."""
    x, t = make_inputs((2, 3, 17, 13), torch.float32, layout, seed=31)

    def through(fn):
        a, b = x.detach().requires_grad_(), t.detach().requires_grad_()
        loss = fn(a, b)
        (loss * 1.5).backward()
        return loss, [loss.detach(), a.grad, b.grad]

    with ops.use_backend("cpu"):
        eager_loss, eager = through(lambda a, b: ops.l1_loss(a, b, 0.7))
    op_loss, op = through(lambda a, b: torch.ops.fastgan.l1_loss(a, b, 0.7))
    assert type(eager_loss.grad_fn).__name__ == "_EagerL1LossBackward"
    assert "Eager" not in type(op_loss.grad_fn).__name__
    for e, o in zip(eager, op):
        assert torch.equal(e, o) and e.stride() == o.stride()


def check_opcheck(ops_namespace, dtype, layout) -> None:
    """torch.library.opcheck of a back end's l1_loss ops (torch.ops.fastgan, fastgan_triton)."""
    x, t = make_inputs((2, 3, 6, 5), dtype, layout)
    x.requires_grad_()
    t.requires_grad_()
    torch.library.opcheck(ops_namespace.l1_loss.default, (x, t, 0.5))
    grad = torch.ones((), dtype=dtype)
    torch.library.opcheck(ops_namespace.l1_loss_backward.default, (grad, x.detach(), t.detach(), 0.5))
    torch.library.opcheck(ops_namespace.l1_loss_backward.default,
                          (grad.clone().requires_grad_(), x.detach(), t.detach(), 0.5))


def check_fake_matches_real(ops_namespace, layout) -> tuple:
    """A back end's l1_loss_backward on fake tensors gives the shapes, strides and dtypes it
    gives on real ones; returns the real gradients."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    x, t = make_inputs((2, 3, 6, 5), torch.float32, layout)
    real = ops_namespace.l1_loss_backward(torch.ones(()), x, t, 1.0)
    with FakeTensorMode() as mode:
        fx, ft = mode.from_tensor(x), mode.from_tensor(t)
        fake = ops_namespace.l1_loss_backward(torch.ones(()), fx, ft, 1.0)
    for r, f in zip(real, fake):
        assert r.shape == f.shape and r.stride() == f.stride() and r.dtype == f.dtype
    return real


@pytest.mark.skipif(not NATIVE_CPU, reason="fastgan._C not built")
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=case_id)
def test_opcheck(dtype, layout):
    check_opcheck(torch.ops.fastgan, dtype, layout)


@pytest.mark.skipif(not NATIVE_CPU, reason="fastgan._C not built")
@pytest.mark.parametrize("layout", LAYOUTS)
def test_fake_matches_real_layout(layout):
    check_fake_matches_real(torch.ops.fastgan, layout)


def test_shape_mismatch_is_an_error():
    x = torch.randn(3, 4)
    with pytest.raises(ValueError, match="same shape"):
        ops.l1_loss(x, torch.randn(3, 5))
    with pytest.raises(ValueError, match="same shape"):
        ops.l1_loss(x, torch.randn(4))  # no silent broadcasting
    with pytest.raises(RuntimeError, match="input is on cpu, target on meta"):  # the fake rule answers for meta
        ops.l1_loss(x, x.to("meta"))


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("dtype", [torch.int64, torch.complex64])
def test_inputs_that_promote_to_no_floating_dtype_are_refused_alike(backend, dtype):
    """Integers against integers, or complex numbers: one message on every back end (torch's
    l1_loss computes complex ones, the native kernels refused them in words of their own)."""
    x = torch.ones(3, 4, dtype=dtype)
    with ops.use_backend(backend), pytest.raises(ValueError, match=rf"l1_loss: input and target are {dtype} "
                                                                   r"\(promoted\); one of them must be floating point"):
        ops.l1_loss(x, x)


def test_a_weight_that_requires_grad_is_refused():
    """weight is a constant: a learned one would silently get no gradient."""
    x, t = torch.randn(3, 4, requires_grad=True), torch.randn(3, 4)
    with pytest.raises(TypeError, match="multiply the loss by it"):
        ops.l1_loss(x, t, torch.tensor(2.0, requires_grad=True))
    assert ops.l1_loss(x, t, torch.tensor(2.0)) == ops.l1_loss(x, t, 2.0)  # a constant tensor is a float
    with pytest.raises(ValueError, match="weight is one number, got a tensor of shape"):
        ops.l1_loss(x, t, torch.ones(2))
    with pytest.raises(ValueError, match=r"weight is one number, got a tensor of shape \(0,\)"):
        ops.l1_loss(x, t, torch.tensor([]))
    with pytest.raises(TypeError, match="weight must be a number, got '2'"):  # float() would take it
        ops.l1_loss(x, t, "2")
    with pytest.raises(TypeError, match="weight must be a number, got None"):
        ops.l1_loss(x, t, None)
    assert ops.l1_loss(x, t, np.float32(2.0)) == ops.l1_loss(x, t, 2.0)


def test_arguments_that_are_not_tensors_are_refused_in_words():
    x = torch.randn(3, 4)
    with pytest.raises(TypeError, match="l1_loss: target must be a tensor, got list"):
        ops.l1_loss(x, x.tolist())
    with pytest.raises(TypeError, match="cycle_losses: rec_B must be a tensor, got float"):
        ops.cycle_losses(x, x, x, 0.0)
    with pytest.raises(TypeError, match="cycle_losses: idt_A must be a tensor, got ndarray"):
        ops.cycle_losses(x, x, x, x, x.numpy(), x)


@pytest.mark.parametrize("half", [torch.bfloat16, torch.float16], ids=case_id)
@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_under_autocast_half_precision_runs_in_float32_as_torchs(backend, half):
    """Autocast runs F.l1_loss in float32 (its float32 list): two bf16 (fp16) tensors give the
    float32 loss there, not one rounded to bf16; the gradients stay bf16."""
    g = torch.Generator().manual_seed(6)
    out, target = (torch.randn(3, 7, generator=g).to(half).requires_grad_() for _ in range(2))
    with torch.autocast("cpu", dtype=half):
        expected = torch.nn.functional.l1_loss(out, target) * 0.5
        with ops.use_backend(backend):
            loss = ops.l1_loss(out, target, 0.5)
    grads = torch.autograd.grad(loss, (out, target))
    expected_grads = torch.autograd.grad(expected, (out, target))
    assert loss.dtype == expected.dtype == torch.float32
    torch.testing.assert_close(loss, expected, rtol=1e-6, atol=0)
    for got, want in zip(grads, expected_grads):
        assert got.dtype == half
        torch.testing.assert_close(got, want, rtol=0, atol=0)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_an_integer_input_against_a_float_target_is_promoted(backend):
    x = torch.arange(12).reshape(3, 4)
    t = torch.randn(3, 4, generator=torch.Generator().manual_seed(7))
    with ops.use_backend(backend):
        loss = ops.l1_loss(x, t)
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, torch.nn.functional.l1_loss(x, t), rtol=1e-6, atol=0)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_mixed_dtypes_are_promoted_as_torch_promotes_them(backend):
    """A bf16 output against a float32 target (autocast): the float32 loss, as torch's l1_loss
    gives it, and the output's gradient in bf16; a float64 weight tensor does not widen it."""
    g = torch.Generator().manual_seed(5)
    out = torch.randn(3, 7, generator=g).bfloat16().requires_grad_()
    target = torch.randn(3, 7, generator=g)
    with ops.use_backend(backend):
        loss = ops.l1_loss(out, target, torch.tensor(0.5, dtype=torch.float64))
    loss.backward()
    wide = out.detach().float().requires_grad_()
    expected = torch.nn.functional.l1_loss(wide, target) * 0.5
    expected.backward()
    assert loss.dtype == torch.float32 and out.grad.dtype == torch.bfloat16
    torch.testing.assert_close(loss, expected, rtol=1e-6, atol=0)
    torch.testing.assert_close(out.grad, wide.grad.bfloat16(), rtol=0, atol=0)


@pytest.mark.skipif(not NATIVE_CPU, reason="fastgan._C not built")
def test_native_op_checks_inputs():
    x = torch.randn(3, 4)
    with pytest.raises(RuntimeError, match="same dtype"):
        torch.ops.fastgan.l1_loss(x, x.double(), 1.0)
    with pytest.raises(RuntimeError, match="floating point"):
        torch.ops.fastgan.l1_loss(x.long(), x.long(), 1.0)
    with pytest.raises(RuntimeError, match=r"fastgan::l1_loss_backward: grad must hold one element \(the loss is "
                                           r"0-dim\), got \[2\]"):
        torch.ops.fastgan.l1_loss_backward(torch.ones(2), x, x, 1.0)
    with pytest.raises(RuntimeError, match="fastgan::l1_loss_backward: input and target must have the same shape"):
        torch.ops.fastgan.l1_loss_backward(torch.ones(()), x, x[:2], 1.0)


# ------------------------------------------------------------------------ torch.compile


def _compiled_matches_eager(backend, compile_backend, device="cpu"):
    def f(a, b):
        return ops.l1_loss(a * 2.0, b, 0.3) + ops.l1_loss(a, b)

    x, t = make_inputs((2, 3, 8, 9), torch.float32, "channels_last", device=device)
    with ops.use_backend(backend):
        compiled_matches_eager(f, lambda fn: run_backend_fn(fn, x, t), compile_backend, rtol=1e-6, atol=1e-7)


def run_backend_fn(fn, x, t):
    xg, tg = x.detach().requires_grad_(), t.detach().requires_grad_()
    out = fn(xg, tg)
    out.backward()
    return out.detach(), xg.grad, tg.grad


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_compile_fullgraph_aot_eager(backend):
    _compiled_matches_eager(backend, "aot_eager")


@pytest.mark.slow  # a cold inductor compile takes ~15 s here
@pytest.mark.parametrize("backend", NATIVE_CPU)
def test_compile_fullgraph_inductor(backend):
    _compiled_matches_eager(backend, "inductor")


# ------------------------------------------------------------------ back end selection


def test_available_backends():
    assert ops.available_backends()[0] == "torch"
    assert "torch" in CPU_BACKENDS
    assert set(CPU_BACKENDS) <= set(ops.available_backends())
    assert ("cuda" in ops.available_backends()) == (HAS_CUDA and ops.native_loaded)
    triton = ["triton"] if "triton" in ops.available_backends("cuda") else []  # ops/triton/l1_loss.py
    assert ops.available_backends("cuda", op="l1_loss") == (
        ["torch", "cuda"] if HAS_CUDA and ops.native_loaded else ["torch"]) + triton
    with pytest.raises(ValueError, match="unknown op"):
        ops.available_backends(op="no_such_op")


def test_auto_picks_native_cpu():
    assert ops.get_default_backend() in ("auto", os.environ.get("FASTGAN_BACKEND"))
    with ops.use_backend("auto"):
        assert ops.backend_for("l1_loss", "cpu") == ("cpu" if ops.native_loaded else "torch")


def test_use_backend_nests_and_restores():
    with ops.use_backend("torch"):
        assert ops.backend_for("l1_loss", "cpu") == "torch"
        if NATIVE_CPU:
            with ops.use_backend("cpu"):
                assert ops.backend_for("l1_loss", "cpu") == "cpu"
        assert ops.backend_for("l1_loss", "cpu") == "torch"
        with pytest.raises(KeyError):
            with ops.use_backend("auto"):
                raise KeyError("restored even so")
        assert ops.backend_for("l1_loss", "cpu") == "torch"


@pytest.mark.skipif(not NATIVE_CPU, reason="fastgan._C not built")
def test_use_backend_holds_in_its_own_thread_only():
    """Two threads in use_backend blocks of their own, interleaved (as models pinned to
    different back ends are, run from two threads): each sees its own choice while the
    other's block is open, and nothing is left set after both blocks end."""
    import threading

    seen, barrier = {}, threading.Barrier(2)

    def in_block(name):
        with ops.use_backend(name):
            barrier.wait()  # both blocks open
            seen[name] = ops.backend_for("l1_loss", "cpu")
            barrier.wait()  # both have looked

    threads = [threading.Thread(target=in_block, args=(name,)) for name in ("torch", "cpu")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert seen == {"torch": "torch", "cpu": "cpu"}
    with ops.use_backend("torch"):
        other = []
        thread = threading.Thread(target=lambda: other.append(ops.backend_for("l1_loss", "cpu")))
        thread.start()
        thread.join()
        assert other == ["cpu"]  # a block in this thread leaves the others on the default
    assert ops.backend_for("l1_loss", "cpu") == "cpu"


def test_compiled_code_follows_the_back_end_chosen_after_compiling():
    """torch.compile guards on use_backend's per-thread choice: a function compiled under one
    back end runs another's when called in a block choosing that one (an op of this test,
    whose two implementations differ)."""
    from fastgan.ops import registry

    op = registry.Op("test_compile_guard", lambda x: x + 1)
    op.impl("cpu", lambda x: x * 3)
    compiled = torch.compile(lambda x: op(x), fullgraph=True, backend="eager")
    x = torch.ones(2)
    with ops.use_backend("torch"):
        assert compiled(x).tolist() == [2.0, 2.0]
    if NATIVE_CPU:
        with ops.use_backend("cpu"):
            assert compiled(x).tolist() == [3.0, 3.0]
    with ops.use_backend("torch"):
        assert compiled(x).tolist() == [2.0, 2.0]


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_a_use_backend_block_inside_a_compiled_function(backend, monkeypatch):
    """The block's check of the back end, its first in the process (an empty cache, as a
    fresh process has), runs while dynamo traces: it must not fail the guards it makes."""
    from fastgan.ops import registry

    monkeypatch.setattr(registry, "_check_cache", {})
    torch._dynamo.reset()

    def f(x, t):
        with ops.use_backend(backend):
            return ops.l1_loss(x, t)

    x, t = torch.randn(4, 5), torch.randn(4, 5)
    torch.testing.assert_close(torch.compile(f, fullgraph=True, backend="aot_eager")(x, t),
                               torch.nn.functional.l1_loss(x, t))


def test_the_registrys_constant_mark_is_torchs():
    """The registry marks its cached checks as torch.compiler.assume_constant_result does (the
    test above fails unmarked), without importing torch._dynamo: the same attribute."""
    from fastgan.ops import registry

    def marked_by_torch():
        pass

    def marked_by_fastgan():
        pass

    torch.compiler.assume_constant_result(marked_by_torch)
    registry._constant_under_compile(marked_by_fastgan)
    assert vars(marked_by_torch) == vars(marked_by_fastgan) == {"_dynamo_marked_constant": True}


def test_auto_skips_a_usable_back_end_that_lacks_the_op():
    """An op with no implementation on the device's first back end (reflect_conv2d has no
    cuda one): auto takes the next, and the back end is not listed for the op."""
    from fastgan.ops import registry

    op = registry.Op("test_torch_only", lambda x: x + 1)
    with ops.use_backend("auto"):
        assert op(torch.ones(2)).tolist() == [2.0, 2.0]
    assert ops.available_backends("cpu", op="test_torch_only") == ["torch"]


def test_set_default_backend():
    saved = ops.get_default_backend()
    try:
        ops.set_default_backend("torch")
        assert ops.backend_for("l1_loss", "cpu") == "torch"
        with ops.use_backend("auto"):
            assert ops.backend_for("l1_loss", "cpu") == ("cpu" if NATIVE_CPU else "torch")
    finally:
        ops.set_default_backend(None if saved == "auto" else saved)


def test_unknown_backend_is_an_error():
    with pytest.raises(ValueError, match="unknown back end 'nope'"):
        with ops.use_backend("nope"):
            pass


@pytest.mark.skipif(HAS_CUDA, reason="checks the error where there is no CUDA device")
def test_unavailable_cuda_backend_is_an_error():
    with pytest.raises(ops.BackendUnavailableError, match="no CUDA device"):
        with ops.use_backend("cuda"):
            pass


@pytest.mark.skipif(not NATIVE_CPU, reason="fastgan._C not built")
def test_backend_on_wrong_device_is_an_error():
    x = torch.empty(3, device="meta")
    with ops.use_backend("cpu"):
        with pytest.raises(ops.BackendUnavailableError, match="runs on cpu tensors, not meta"):
            ops.l1_loss(x, x)
    assert ops.l1_loss(x, x).device.type == "meta"  # auto: the reference runs anywhere


def _python(code: str, **env) -> dict:
    """Runs code in a fresh interpreter (import-time behaviour); it prints one JSON line."""
    full_env = {k: v for k, v in os.environ.items() if k != "FASTGAN_BACKEND"}
    full_env.update(env)
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, env=full_env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_fastgan_backend_environment_variable():
    out = _python("""
        import json, torch, fastgan.ops as ops
        x = torch.randn(4, 5)
        res = {"default": ops.get_default_backend(), "chosen": ops.backend_for("l1_loss", "cpu")}
        with ops.use_backend("auto"):
            res["auto"] = ops.backend_for("l1_loss", "cpu")
        print(json.dumps(res))
    """, FASTGAN_BACKEND="torch")
    assert out == {"default": "torch", "chosen": "torch", "auto": "cpu" if NATIVE_CPU else "torch"}


def test_bad_fastgan_backend_is_an_error_at_the_call(monkeypatch):
    saved = ops.get_default_backend()
    monkeypatch.setenv("FASTGAN_BACKEND", "bogus")
    ops.set_default_backend(None)  # re-reads the variable, as the import does
    try:
        with pytest.raises(ops.BackendUnavailableError, match="unknown back end 'bogus' set by FASTGAN_BACKEND"):
            ops.l1_loss(torch.randn(3), torch.randn(3))
    finally:
        monkeypatch.delenv("FASTGAN_BACKEND")
        ops.set_default_backend(None if saved == "auto" else saved)
    assert ops.get_default_backend() == saved


def test_triton_kernels_are_not_loaded_where_they_cannot_run():
    """Without a CUDA device or TRITON_INTERPRET=1 the Triton ops are not defined (defining
    them imports torch._inductor, ~2 s), and the triton back end still says why it is unusable."""
    code = """
        import json, os, sys, torch, fastgan.ops as ops
        x = torch.randn(1, 2, 4, 4)
        errors = []
        for call in (lambda: ops.instance_norm_act(x), lambda: ops.l1_loss(x, x),
                     lambda: ops.cycle_losses(x, x, x, x), lambda: ops.reflect_conv2d(x, torch.randn(2, 2, 3, 3))):
            try:
                with ops.use_backend("triton"):
                    call()
                errors.append(None)
            except ops.BackendUnavailableError as e:
                errors.append(str(e))
        print(json.dumps({"inductor": "torch._inductor" in sys.modules, "errors": errors,
                          "interpret": os.environ.get("TRITON_INTERPRET"),
                          "kernels": "fastgan.ops.triton.instance_norm_act" in sys.modules}))
    """
    out = _python(code, TRITON_INTERPRET="0", CUDA_VISIBLE_DEVICES="")
    assert out["interpret"] == "0" and not out["kernels"] and not out["inductor"]
    assert len(out["errors"]) == 4 and all(e and "no CUDA device" in e for e in out["errors"]), out["errors"]
    interpreted = _python(code, TRITON_INTERPRET="1")
    assert interpreted["kernels"] and interpreted["errors"] == [None] * 4


def test_missing_extension_falls_back_with_one_warning():
    out = _python("""
        import json, sys, warnings
        sys.modules["fastgan._C"] = None  # as if not built: importing it raises ImportError
        import torch, fastgan.ops as ops
        from fastgan.ops import reference
        x, t = torch.randn(4, 5), torch.randn(4, 5)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            a = ops.l1_loss(x, t)
            b = ops.l1_loss(x, t, 2.0)
        fallback = [str(w.message) for w in caught if issubclass(w.category, ops.BackendFallbackWarning)]
        try:
            with ops.use_backend("cpu"):
                pass
            error = None
        except ops.BackendUnavailableError as e:
            error = str(e)
        print(json.dumps({
            "loaded": ops.native_loaded, "available": ops.available_backends(),
            "warnings": fallback, "error": error,
            "same": bool(torch.equal(a, reference.l1_loss(x, t)) and torch.equal(b, reference.l1_loss(x, t, 2.0))),
        }))
    """)
    assert out["loaded"] is False
    assert [b for b in out["available"] if b != "triton"] == ["torch"]  # triton needs no fastgan._C
    assert len(out["warnings"]) == 1 and "make build" in out["warnings"][0]
    assert out["error"] is not None and "make build" in out["error"]
    assert out["same"]


# --------------------------------------------------------------------------------- CUDA


@pytest.mark.parametrize("shape", SHAPES + [(8, 3, 256, 257)], ids=case_id)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES, ids=case_id)
@pytest.mark.parametrize("backend", ["torch", "cuda"])
@pytest.mark.gpu
def test_matches_reference_cuda(backend, dtype, layout, shape, poison):
    x, t = make_inputs(shape, dtype, layout, device="cuda", seed=seed_of(dtype, layout, shape))
    check_against_reference(backend, x, t, 0.7)


@pytest.mark.gpu
def test_cuda_is_deterministic_and_misaligned_ok():
    x, t = make_inputs((8, 3, 256, 257), torch.float32, "contiguous", device="cuda")
    first = run_backend("cuda", x, t, 1.0)
    for _ in range(3):
        assert all(torch.equal(a, b) for a, b in zip(first, run_backend("cuda", x, t, 1.0)))
    # views starting off a 16-byte boundary take the scalar path
    m = x.numel() - 4
    xs, ts = x.flatten()[1:1 + m], t.flatten()[3:3 + m]
    check_against_reference("cuda", xs, ts, 1.0)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=case_id)
def test_cuda_capped_grids(dtype, poison):
    """12.6M elements: more than the forward's capped grid covers in one pass per thread, and
    the backward's grid-stride loop (the cases above stay under both caps)."""
    x, t = make_inputs((16, 3, 512, 512), dtype, "contiguous", device="cuda", seed=seed_of(dtype, "capped"))
    check_against_reference("cuda", x, t, 0.7)
    m = x.numel() - 4  # off 16-byte boundaries: the scalar path at that size
    check_against_reference("cuda", x.flatten()[1:1 + m], t.flatten()[3:3 + m], 0.7)


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["cuda", "triton"])
def test_cuda_graph_capture(backend):
    x, t = make_inputs((4, 3, 64, 65), torch.float32, "channels_last", device="cuda")
    xg = x.detach().requires_grad_()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream), ops.use_backend(backend):
        for _ in range(2):  # warm up (Triton compiles here)
            xg.grad = None
            ops.l1_loss(xg, t, 0.5).backward()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    xg.grad = None
    with torch.cuda.graph(graph), ops.use_backend(backend):
        loss = ops.l1_loss(xg, t, 0.5)
        loss.backward()
    x2, t2 = make_inputs((4, 3, 64, 65), torch.float32, "channels_last", device="cuda", seed=7)
    with torch.no_grad():
        xg.copy_(x2)
        t.copy_(t2)
    graph.replay()
    torch.cuda.synchronize()
    ref, ref_gx, _ = reference_f64(x2, t2, 0.5)
    torch.testing.assert_close(loss.detach().double(), ref, rtol=1e-5, atol=0)
    torch.testing.assert_close(xg.grad.double(), ref_gx, rtol=1e-5, atol=0)


@pytest.mark.gpu
def test_compile_fullgraph_cuda():
    _compiled_matches_eager("cuda", "inductor", device="cuda")
