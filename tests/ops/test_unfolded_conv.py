"""The convolutions as one matrix product (fastgan/ops/_unfolded_conv.py) and their
measured choice, and the modules fastgan.nn.Conv2d / ConvTranspose2d."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import fastgan.nn
import fastgan.ops as ops
from fastgan.ops import _measure
from fastgan.ops import _unfolded_conv as uc

# (N, C, H, W, K, kernel, stride, padding): odd and rectangular sizes, strides and pads
CONV_CASES = [
    (2, 3, 9, 7, 5, (3, 3), (1, 1), (1, 1)),
    (1, 8, 8, 8, 4, (4, 4), (2, 2), (1, 1)),  # the U-Net's and PatchGAN's
    (2, 4, 5, 6, 3, (4, 2), (2, 1), (2, 0)),
    (1, 6, 2, 2, 7, (4, 4), (2, 2), (1, 1)),  # an innermost level: 2x2 -> 1x1
    (3, 2, 1, 1, 3, (1, 1), (1, 1), (0, 0)),
]
# (N, C, H, W, K, kernel, stride, padding, output_padding)
TRANSPOSE_CASES = [
    (2, 5, 4, 3, 3, (4, 4), (2, 2), (1, 1), (0, 0)),  # the U-Net's up convolutions
    (1, 4, 1, 1, 6, (4, 4), (2, 2), (1, 1), (0, 0)),  # the innermost: 1x1 -> 2x2
    (2, 3, 5, 4, 4, (3, 3), (2, 2), (1, 1), (1, 1)),  # the ResNet generator's (output_padding 1)
    (1, 2, 3, 5, 3, (3, 2), (1, 2), (0, 1), (0, 1)),
]


def tensors(seed, *shapes, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=g, dtype=dtype).requires_grad_() for s in shapes]


def output_and_grads(f, x, w, b):
    y = f(x, w, b)
    grad = torch.randn(y.shape, generator=torch.Generator().manual_seed(99), dtype=torch.float64).to(y)
    return (y.detach(), *torch.autograd.grad(y, (x, w, b), grad))


def assert_all_close(got, want, rtol):
    for name, a, e in zip(("y", "dx", "dweight", "dbias"), got, want):
        scale = e.abs().max().item()
        torch.testing.assert_close(a, e, rtol=0, atol=rtol * scale, msg=lambda m: f"{name}: {m}")


LAYOUTS = ["contiguous", "x channels_last", "weight channels_last"]


def in_layout(layout, x, weight):
    """x and weight, the one the layout names made channels_last."""
    def cl(t):
        return t.detach().contiguous(memory_format=torch.channels_last).requires_grad_()
    return (cl(x) if layout == "x channels_last" else x), (cl(weight) if layout == "weight channels_last" else weight)


def assert_layout_is_atens(got, want):
    for fmt in (torch.contiguous_format, torch.channels_last):
        assert got.is_contiguous(memory_format=fmt) == want.is_contiguous(memory_format=fmt), fmt


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("case", CONV_CASES, ids=str)
def test_unfolded_conv2d_is_conv2d(case, layout):
    n, c, h, w, k, kernel, stride, padding = case
    x, weight, bias = tensors(1, (n, c, h, w), (k, c, *kernel), (k,))
    x, weight = in_layout(layout, x, weight)
    got = output_and_grads(lambda *a: uc.unfolded_conv2d(*a, stride, padding), x, weight, bias)
    want = output_and_grads(lambda *a: F.conv2d(*a, stride, padding), x, weight, bias)
    assert_all_close(got, want, 1e-12)
    assert_layout_is_atens(got[0], want[0])


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("case", TRANSPOSE_CASES, ids=str)
def test_unfolded_conv_transpose2d_is_conv_transpose2d(case, layout):
    n, c, h, w, k, kernel, stride, padding, output_padding = case
    x, weight, bias = tensors(2, (n, c, h, w), (c, k, *kernel), (k,))
    x, weight = in_layout(layout, x, weight)
    got = output_and_grads(lambda *a: uc.unfolded_conv_transpose2d(*a, stride, padding, output_padding),
                           x, weight, bias)
    want = output_and_grads(lambda *a: F.conv_transpose2d(*a, stride, padding, output_padding), x, weight, bias)
    assert_all_close(got, want, 1e-12)
    assert_layout_is_atens(got[0], want[0])


def test_float32_within_rounding_of_float64():
    x, weight, bias = tensors(3, (2, 64, 4, 4), (64, 32, 4, 4), (32,))
    want = output_and_grads(lambda *a: F.conv_transpose2d(*a, 2, 1), x, weight, bias)
    x32, w32, b32 = (t.detach().float().requires_grad_() for t in (x, weight, bias))
    got = output_and_grads(lambda *a: uc.unfolded_conv_transpose2d(*a, 2, 1), x32, w32, b32)
    assert_all_close([g.double() for g in got], want, 2e-6)


# ------------------------------------------------------------------ the measured choice


@pytest.fixture
def fresh_selection():
    uc.clear_selection_cache()
    yield
    uc.clear_selection_cache()


def test_the_choice_is_measured_once_per_shape_and_gradient_need(fresh_selection, monkeypatch):
    timed = []
    real = _measure.candidate_seconds
    monkeypatch.setattr(_measure, "candidate_seconds", lambda cands, device: timed.extend(cands) or real(cands, device))
    x, weight, bias = tensors(4, (1, 8, 4, 4), (8, 8, 4, 4), (8,), dtype=torch.float32)
    ops.conv2d(x, weight, bias, 2, 1)
    ops.conv2d(x, weight, bias, 2, 1)
    assert len(timed) == 2  # aten and gemm, once
    with torch.no_grad():  # no gradients needed: another choice to make
        ops.conv2d(x, weight, bias, 2, 1)
    assert len(timed) == 4
    needs = sorted(key[-1] for key in uc.selection_cache())
    assert needs == [(False, False, False), (True, True, True)]
    assert {entry["choice"] for entry in uc.selection_cache().values()} <= {"aten", "gemm"}


def test_measuring_leaves_torchs_random_stream_alone_and_deterministic_mode_measures_nothing(fresh_selection,
                                                                                            monkeypatch):
    """The stand-in inputs come from a generator of their own (dropout masks and pool draws read
    the global one); under deterministic algorithms the choice is aten's, never a timing's."""
    x, weight, bias = tensors(4, (1, 8, 6, 6), (8, 8, 3, 3), (8,), dtype=torch.float32)
    state = torch.get_rng_state()
    ops.conv2d(x, weight, bias, 1, 1)
    assert uc.selection_cache() and torch.equal(torch.get_rng_state(), state)
    uc.clear_selection_cache()
    monkeypatch.setattr(_measure, "candidate_seconds", lambda cands, device: pytest.fail("measured"))
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        torch.testing.assert_close(ops.conv2d(x, weight, bias, 1, 1), F.conv2d(x, weight, bias, 1, 1),
                                   rtol=0, atol=0)
    finally:
        torch.use_deterministic_algorithms(previous)
    assert not uc.selection_cache()


@pytest.mark.parametrize("choice", ["aten", "gemm"])
def test_picked_or_forced_the_result_is_that_path(choice, fresh_selection, monkeypatch):
    x, weight, bias = tensors(5, (1, 6, 3, 3), (6, 5, 4, 4), (5,), dtype=torch.float32)
    runs = {"aten": lambda *a: F.conv_transpose2d(*a, 2, 1), "gemm": lambda *a: uc.unfolded_conv_transpose2d(*a, 2, 1)}
    want = output_and_grads(runs[choice], x, weight, bias)
    with ops.conv_choice(choice):
        forced = output_and_grads(lambda *a: ops.conv_transpose2d(*a, 2, 1), x, weight, bias)
    # measured: the candidate named `choice` made the faster
    monkeypatch.setattr(_measure, "candidate_seconds",
                        lambda cands, device: {name: 0.0 if name == choice else 1.0 for name in cands})
    measured = output_and_grads(lambda *a: ops.conv_transpose2d(*a, 2, 1), x, weight, bias)
    assert {entry["choice"] for entry in uc.selection_cache().values()} == {choice}
    for got in (forced, measured):
        for a, e in zip(got, want):
            assert torch.equal(a, e)


def test_the_vendor_convolution_without_measuring_where_the_choice_does_not_apply(fresh_selection, monkeypatch):
    monkeypatch.setattr(_measure, "candidate_seconds", lambda cands, device: pytest.fail("measured"))
    x, weight = torch.randn(1, 4, 5, 5), torch.randn(3, 4, 3, 3)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # bf16 weights: not autocast's float32 master weights
        y = ops.conv2d(x, weight.bfloat16(), None, 1, 1)
        assert torch.equal(y, F.conv2d(x, weight.bfloat16(), None, 1, 1)) and y.dtype == torch.bfloat16
    y = ops.conv2d(x.bfloat16(), weight.bfloat16(), None, 1, 1)
    assert torch.equal(y, F.conv2d(x.bfloat16(), weight.bfloat16(), None, 1, 1))
    monkeypatch.setattr(uc, "MAX_COLUMN_ELEMENTS", 10)  # its column matrix would be too large
    assert torch.equal(ops.conv2d(x, weight, None, 1, 1), F.conv2d(x, weight, None, 1, 1))
    assert [entry["choice"] for entry in uc.selection_cache().values()] == ["aten"]


AUTOCAST_CHOICES = ["aten", "gemm", "aten_fp32", "gemm_fp32"]


def autocast_case(seed, transposed, x_dtype):
    """An innermost U-Net level under CPU autocast: float32 master weights, x as the layer
    before hands it on (bf16) or as the batch comes (float32). Returns fastgan's call,
    torch's (any dtype), the two paths by name (for float32 runs) and the arguments."""
    x, weight, bias = tensors(seed, (2, 16, 3, 3), (16, 8, 4, 4) if transposed else (8, 16, 4, 4), (8,),
                              dtype=torch.float32)
    x = x.detach().to(x_dtype).requires_grad_()
    if transposed:
        paths = {"aten": lambda *a: F.conv_transpose2d(*a, 2, 1),
                 "gemm": lambda *a: uc.unfolded_conv_transpose2d(*a, 2, 1)}
        return (lambda *a: ops.conv_transpose2d(*a, 2, 1)), paths["aten"], paths, (x, weight, bias)
    paths = {"aten": lambda *a: F.conv2d(*a, 2, 1), "gemm": lambda *a: uc.unfolded_conv2d(*a, (2, 2), (1, 1))}
    return (lambda *a: ops.conv2d(*a, 2, 1)), paths["aten"], paths, (x, weight, bias)


def under_autocast(f, args):
    """f's output and gradients, f run under CPU bf16 autocast."""
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = f(*args)
    grad = torch.randn(y.shape, generator=torch.Generator().manual_seed(99)).to(y.dtype)
    return (y.detach(), *torch.autograd.grad(y, args, grad))


@pytest.mark.parametrize("x_dtype", [torch.bfloat16, torch.float32], ids=str)
@pytest.mark.parametrize("transposed", [False, True], ids=["conv2d", "conv_transpose2d"])
@pytest.mark.parametrize("choice", AUTOCAST_CHOICES)
def test_under_autocast_bf16_and_float32_candidates_are_measured(choice, transposed, x_dtype, fresh_selection,
                                                                 monkeypatch):
    """Each of the four, picked, gives autocast's dtypes (output bf16, gradients in their
    tensors' dtypes) and the convolution to bf16 rounding; the float32 ones to the
    rounding of their bf16 output alone."""
    measured = []
    monkeypatch.setattr(_measure, "candidate_seconds",
                        lambda cands, device: measured.append(list(cands)) or
                        {name: 0.0 if name == choice else 1.0 for name in cands})
    conv, plain, paths, args = autocast_case(7, transposed, x_dtype)
    got = under_autocast(conv, args)
    assert measured == [AUTOCAST_CHOICES]
    (key, entry), = uc.selection_cache().items()
    assert entry["choice"] == choice and ("autocast", torch.bfloat16) in key
    want_dtypes = under_autocast(plain, args)
    assert [t.dtype for t in got] == [t.dtype for t in want_dtypes] == [torch.bfloat16, x_dtype, torch.float32,
                                                                        torch.float32]
    grad = torch.randn(got[0].shape, generator=torch.Generator().manual_seed(99)).bfloat16()
    want = output_and_grads_with(plain, args, grad)
    exact_input = choice.endswith("fp32")  # bf16 products round each input: 3 significant digits
    assert_all_close(got, want, 8e-3 if exact_input else 4e-2)
    if exact_input:  # that path in float32, rounded once to bf16
        x, weight, bias = (t.detach() for t in args)
        assert torch.equal(got[0], paths[choice.removesuffix("_fp32")](x.float(), weight, bias).bfloat16())


@pytest.mark.parametrize("choice", AUTOCAST_CHOICES)
def test_a_forced_choice_runs_its_path_and_a_float32_one_applies_under_autocast_only(choice, fresh_selection,
                                                                                     monkeypatch):
    monkeypatch.setattr(_measure, "candidate_seconds", lambda cands, device: pytest.fail("measured"))
    conv, _, paths, (x, weight, bias) = autocast_case(9, True, torch.bfloat16)
    path = paths[choice.removesuffix("_fp32")]
    with ops.conv_choice(choice):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got = conv(x, weight, bias)
            plain = path(x, weight, bias)  # bf16 under autocast
        outside = conv(x.float(), weight, bias)
    want = path(x.float(), weight, bias).bfloat16() if choice.endswith("fp32") else plain
    assert got.dtype == torch.bfloat16 and torch.equal(got, want)
    assert torch.equal(outside, path(x.float(), weight, bias))


def test_a_forced_float32_candidate_where_nothing_is_measured_runs_its_path(monkeypatch):
    """bf16 parameters outside autocast: no measured choice, and no float32 candidate;
    "gemm_fp32" is then "gemm", as on a GPU."""
    ran = []
    real = uc.unfolded_conv2d
    monkeypatch.setattr(uc, "unfolded_conv2d", lambda *a: ran.append("gemm") or real(*a))
    x, weight = torch.randn(1, 6, 4, 4).bfloat16(), torch.randn(5, 6, 4, 4).bfloat16()
    with ops.conv_choice("gemm_fp32"):
        got = ops.conv2d(x, weight, None, 2, 1)
    assert ran == ["gemm"] and torch.equal(got, real(x, weight, None, (2, 2), (1, 1)))


def output_and_grads_with(f, args, grad):
    """f's output and gradients in float64 (the ground truth) for the output gradient `grad`."""
    leaves = [t.detach().double().requires_grad_() for t in args]
    y = f(*leaves)
    return [t.to(a.dtype) for t, a in zip((y.detach(), *torch.autograd.grad(y, leaves, grad.double())),
                                           (grad, *args))]


def test_under_autocast_the_candidates_pay_the_weight_cast_each_run(fresh_selection, monkeypatch):
    """Autocast keeps a weight's bf16 copy until its region ends; a candidate timed with
    that copy in place would leave out the cast a training iteration pays."""
    cache_on = []
    real_conv2d = F.conv2d
    monkeypatch.setattr(F, "conv2d", lambda *a: cache_on.append(torch.is_autocast_cache_enabled()) or real_conv2d(*a))
    real = _measure.candidate_seconds
    monkeypatch.setattr(_measure, "candidate_seconds",  # timed for real, then aten is the pick
                        lambda cands, device: {**real(cands, device), "aten": 0.0})
    conv, _, _, args = autocast_case(8, False, torch.bfloat16)
    under_autocast(conv, args)
    warmup, runs = _measure.MEASURE_RUNS["cpu"]
    assert cache_on == [False] * (2 * (warmup + runs)) + [True]  # aten, aten_fp32 measured; then the call itself


def test_unknown_choices_are_refused():
    with pytest.raises(ValueError, match="unknown choice 'fast'"):
        with ops.conv_choice("fast"):
            pass


# ------------------------------------------------------------------ the modules


@pytest.mark.parametrize("make", [lambda: nn.Conv2d(4, 6, 4, 2, 1), lambda: nn.Conv2d(4, 6, 3, bias=False),
                                  lambda: nn.ConvTranspose2d(4, 6, 4, 2, 1),
                                  lambda: nn.ConvTranspose2d(4, 6, 3, 2, 1, output_padding=1)])
def test_the_modules_stand_in_for_torchs(make, fresh_selection):
    torch.manual_seed(0)
    conv = make()
    ours = (fastgan.nn.Conv2d if type(conv) is nn.Conv2d else fastgan.nn.ConvTranspose2d).from_module(conv)
    assert isinstance(ours, type(conv)) and ours.weight is conv.weight and ours.bias is conv.bias
    assert list(ours.state_dict()) == list(conv.state_dict()) and repr(ours).endswith(repr(conv).split("(", 1)[1])
    for x in (torch.randn(2, 4, 5, 5), torch.randn(4, 5, 5)):  # a batch, and one unbatched image as torch takes it
        with ops.conv_choice("aten"):
            assert torch.equal(ours(x), conv(x))
        for choice in ("gemm", "gemm_fp32", "auto"):  # (auto: measured)
            with ops.conv_choice(choice):
                torch.testing.assert_close(ours(x), conv(x), rtol=1e-5, atol=1e-5)
    for choice in ("aten", "gemm", "auto"):  # neither 3-d nor 4-d: torch's own error
        with ops.conv_choice(choice), pytest.raises(RuntimeError, match="Expected 3D .unbatched. or 4D .batched."):
            ours(torch.randn(1, 2, 4, 5, 5))


def test_a_transposed_call_with_output_size_runs_torchs_forward():
    conv = nn.ConvTranspose2d(3, 2, 3, 2, 1)
    ours = fastgan.nn.ConvTranspose2d.from_module(conv)
    x = torch.randn(1, 3, 4, 4)
    with ops.conv_choice("gemm"):
        assert torch.equal(ours(x, output_size=[8, 8]), conv(x, output_size=[8, 8]))


@pytest.mark.parametrize("conv,why", [(nn.Conv2d(4, 4, 3, groups=2), "grouped or dilated"),
                                      (nn.Conv2d(4, 4, 3, dilation=2), "grouped or dilated"),
                                      (nn.Conv2d(4, 4, 3, padding=1, padding_mode="reflect"), "zero padding"),
                                      (nn.Conv2d(4, 4, 3, padding="same"), "zero padding")])
def test_the_modules_refuse_what_they_cannot_compute(conv, why):
    with pytest.raises(ValueError, match=why):
        fastgan.nn.Conv2d.from_module(conv)


def test_torch_compile_traces_the_modules_without_graph_breaks(fresh_selection):
    """Under torch.compile (fullgraph) the modules are torch's convolutions: no measuring,
    nothing a trace cannot follow."""
    from torch._dynamo.utils import counters

    torch.manual_seed(0)
    net = nn.Sequential(fastgan.nn.Conv2d.from_module(nn.Conv2d(3, 8, 4, 2, 1)), nn.LeakyReLU(0.2),
                        fastgan.nn.ConvTranspose2d.from_module(nn.ConvTranspose2d(8, 3, 4, 2, 1)))
    x = torch.randn(2, 3, 8, 8, requires_grad=True)
    torch._dynamo.reset()
    counters.clear()
    compiled = torch.compile(net, fullgraph=True, backend="aot_eager")
    compiled(x).sum().backward()
    assert dict(counters["graph_break"]) == {}
    assert uc.selection_cache() == {}
    with ops.conv_choice("aten"):
        torch.testing.assert_close(compiled(x), net(x), rtol=1e-6, atol=1e-6)


@pytest.mark.gpu
def test_on_a_gpu_auto_is_the_vendor_convolution_and_gemm_still_computes_it(fresh_selection):
    tf32 = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False  # restored below: compare full float32 products
    # the same algorithm twice gives the same bits only without atomics (tests/conftest.py restores it)
    torch.backends.cudnn.deterministic = True
    try:
        x, weight, bias = (t.detach().float().cuda().requires_grad_()
                           for t in tensors(6, (2, 8, 6, 6), (8, 4, 4, 4), (4,)))
        want = output_and_grads(lambda *a: F.conv_transpose2d(*a, 2, 1), x, weight, bias)
        auto = output_and_grads(lambda *a: ops.conv_transpose2d(*a, 2, 1), x, weight, bias)
        for a, e in zip(auto, want):
            assert torch.equal(a, e)
        assert uc.selection_cache() == {}
        with ops.conv_choice("gemm"):
            gemm = output_and_grads(lambda *a: ops.conv_transpose2d(*a, 2, 1), x, weight, bias)
        assert_all_close(gemm, want, 1e-5)
    finally:
        torch.backends.cudnn.allow_tf32 = tf32
