"""fastgan.ops.instance_norm_act on every back end against the float64 reference.

Every back end available here (torch, cpu, triton through its interpreter) x dtype x
layout x activation x affine x residual, forward and every gradient (dx, dweight,
dbias, dresidual), on fresh random inputs with a nonzero, per-channel mean and odd,
non-power-of-two planes, plus larger planes that take the split reductions (CPU: more
than 16384 elements per NCHW plane, several NHWC row chunks and channel groups;
Triton: more than 4096 pixels per plane). Outputs are poisoned (every fresh allocation
filled with NaN). Then gradcheck / gradgradcheck (float64, cpu), opcheck of the native
and Triton ops, the fake rules' strides, torch.compile(fullgraph=True) of a ResNet
block built from the ops, determinism (two runs, 1 vs 2 threads, the generic vs the
AVX2 CPU kernels). CUDA and Triton-on-GPU tests carry @pytest.mark.gpu.
"""

from __future__ import annotations

import platform

import numpy
import pytest
import torch
import torch.nn.functional as F

import fastgan.ops as ops
from fastgan.ops import reference
from tests.ops.compiled import compiled_matches_eager
from tests.ops.fresh_interpreter import run_json, same_code_here
from tests.ops.inputs import away_from_zero, case_id, seed_of

HAS_CUDA = torch.cuda.is_available()
OP = "instance_norm_act"

CPU_BACKENDS = ops.available_backends("cpu", op=OP)
NATIVE_CPU = ["cpu"] if "cpu" in CPU_BACKENDS else []
TRITON_CPU = ["triton"] if "triton" in CPU_BACKENDS else []
ACTIVATIONS = ["relu", "leaky_relu", "none"]
LAYOUTS = ["contiguous", "channels_last"]
# (relative tolerance; the absolute one is rtol * max|reference| of each tensor)
RTOL = {torch.float64: 1e-10, torch.float32: 1e-5, torch.bfloat16: 1e-2, torch.float16: 3e-3}
SMALL = (2, 5, 7, 13)          # odd, non-power-of-two planes
TRITON_SPLIT = (1, 4, 96, 80)  # 7680 pixels: 2 NCHW splits, 15 NHWC splits in Triton
CPU_SHAPES = [
    SMALL,
    TRITON_SPLIT,       # NHWC: 15 row chunks
    (1, 3, 130, 131),   # NCHW: 17030 > 16384 elements per plane, 2 chunks
    (2, 4, 130, 131),   # NCHW: 8 such planes, a plane a task (its chunks in turn) on 1 or 2 threads
    (2, 70, 5, 6),      # NHWC: 2 channel groups, 6 channels past the last vector step
    (1, 27, 40, 40),    # NHWC: 27 channels, all or 11 past the last vector step (a masked tail run
                        # over more than one vector); one fused task: phased rows on 2+ threads
]


def make_case(shape, dtype, layout, *, affine=True, residual=True, device="cpu", seed=0, param_dtype=None):
    """x (mean about 3 + a per-channel offset, never zero), weight, bias, residual and
    the output gradient, in dtype and layout."""
    g = torch.Generator().manual_seed(seed)
    N, C, H, W = shape
    x = torch.randn(shape, generator=g, dtype=torch.float64) * 1.5 + 3.0
    x = away_from_zero(x + torch.randn(1, C, 1, 1, generator=g, dtype=torch.float64))
    w = torch.randn(C, generator=g, dtype=torch.float64) * 0.5 + 1.0
    b = torch.randn(C, generator=g, dtype=torch.float64) * 0.5
    r = torch.randn(shape, generator=g, dtype=torch.float64)
    go = torch.randn(shape, generator=g, dtype=torch.float64)
    pd = param_dtype or dtype
    x, r, go = (t.to(device=device, dtype=dtype) for t in (x, r, go))
    w, b = (t.to(device=device, dtype=pd) for t in (w, b))
    if layout == "channels_last":
        x, r, go = (t.contiguous(memory_format=torch.channels_last) for t in (x, r, go))
    elif layout == "slice":
        x = torch.cat([x, x], dim=3)[..., ::2]
        assert not x.is_contiguous() and not x.is_contiguous(memory_format=torch.channels_last)
    assert (x != 0).all()
    return x, (w if affine else None), (b if affine else None), (r if residual else None), go


def run(backend, x, w, b, r, go, activation, slope=0.2, eps=1e-5):
    """Output and gradients (x, weight, bias, residual) of the op on `backend`."""
    leaves = [t.detach().requires_grad_() if t is not None else None for t in (x, w, b, r)]  # same strides
    with ops.use_backend(backend):
        y = ops.instance_norm_act(leaves[0], leaves[1], leaves[2], eps, activation, slope, leaves[3])
    y.backward(go)
    return y.detach(), [t.grad if t is not None else None for t in leaves]


def reference_f64(x, w, b, r, go, activation, slope=0.2, eps=1e-5):
    leaves = [t.detach().double().requires_grad_() if t is not None else None for t in (x, w, b, r)]
    y = reference.instance_norm_act(leaves[0], leaves[1], leaves[2], eps, activation, slope, leaves[3])
    grads = torch.autograd.grad(y, [t for t in leaves if t is not None], go.double())
    it = iter(grads)
    return y.detach(), [next(it) if t is not None else None for t in leaves]


def assert_close(got, want, rtol, what):
    assert got.shape == want.shape, what
    assert torch.isfinite(got).all(), f"{what}: non-finite values (an element left unwritten?)"
    got, want = got.double(), want.to(got.device)  # compared on the device: no 1024x1024 copies
    atol = rtol * want.abs().max().item()
    torch.testing.assert_close(got, want, rtol=rtol, atol=atol, msg=lambda m: f"{what}: {m}")


def off_the_kink(x, w, b, go, activation, eps=1e-5):
    """go with zeros where the activation's input is within 1e-4 of its kink at 0: there
    a kernel's float32 and the reference's float64 may take different sides (a million
    elements have a few such), and each flip moves dx, and through the plane's sums
    every dx of the plane, by more than the tolerance."""
    if activation == "none":
        return go
    z = reference.instance_norm_act(x.double(), None if w is None else w.double(),
                                    None if b is None else b.double(), eps, "none")
    return go.masked_fill(z.abs() < 1e-4, 0)


def check(backend, x, w, b, r, go, activation, rtol=None):
    rtol = rtol or RTOL[x.dtype]
    go = off_the_kink(x, w, b, go, activation)
    y, grads = run(backend, x, w, b, r, go, activation)
    ref, ref_grads = reference_f64(x, w, b, r, go, activation)
    assert y.dtype == x.dtype and y.device == x.device
    if x.is_contiguous(memory_format=torch.channels_last) and backend != "torch":
        assert y.is_contiguous(memory_format=torch.channels_last), "the output keeps channels_last"
    assert_close(y, ref, rtol, "output")
    for name, got, want, t in zip(("dx", "dweight", "dbias", "dresidual"), grads, ref_grads, (x, w, b, r)):
        if t is None:
            assert got is None
            continue
        assert got.dtype == t.dtype, name
        assert_close(got, want, rtol, name)
    return y, grads


# ------------------------------------------------------------------------------ CPU


def test_native_extension_is_built():
    assert ops.native_loaded, "fastgan._C did not load: run `make build` first"
    assert "cpu" in CPU_BACKENDS


def _small_cases():
    """float32: every (affine, residual) pair; bf16 / fp16: none or both."""
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        pairs = [(False, False), (True, False), (False, True), (True, True)] if dtype == torch.float32 else \
            [(False, False), (True, True)]
        for layout in LAYOUTS:
            for activation in ACTIVATIONS:
                for affine, residual in pairs:
                    yield dtype, layout, activation, affine, residual


@pytest.mark.parametrize("dtype,layout,activation,affine,residual", list(_small_cases()), ids=case_id)
@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_matches_reference_small(backend, dtype, layout, activation, affine, residual, poison):
    x, w, b, r, go = make_case(SMALL, dtype, layout, affine=affine, residual=residual,
                               seed=seed_of(dtype, layout, activation, affine, residual))
    check(backend, x, w, b, r, go, activation)


@pytest.mark.parametrize("shape", CPU_SHAPES[1:], ids=case_id)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=case_id)
@pytest.mark.parametrize("backend", NATIVE_CPU)
def test_matches_reference_split_cpu(backend, dtype, layout, shape, poison):
    for activation in ACTIVATIONS if dtype == torch.float32 else ["leaky_relu"]:
        x, w, b, r, go = make_case(shape, dtype, layout, seed=seed_of(dtype, layout, shape, activation))
        check(backend, x, w, b, r, go, activation)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("backend", TRITON_CPU)
def test_matches_reference_split_triton(backend, layout, poison):
    x, w, b, r, go = make_case(TRITON_SPLIT, torch.float32, layout, seed=seed_of(layout, "split"))
    check(backend, x, w, b, r, go, "leaky_relu")
    if layout == "contiguous":  # (the channels_last one is slow in the interpreter)
        x, w, b, r, go = make_case(TRITON_SPLIT, torch.float32, layout, affine=False, residual=False, seed=3)
        check(backend, x, w, b, r, go, "relu")


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("backend", TRITON_CPU)
def test_many_splits_triton(backend, layout, poison, monkeypatch):
    """More splits per plane than the partial sums' block and more planes than one program
    of _sum_partials_kernel adds, neither a multiple of it: split and block sizes shrunk so
    that the interpreter runs it in seconds (2 x 3 planes of 420 pixels, 14 NCHW splits or
    27 channels_last ones, combined 4 at a time, 4 planes a program)."""
    from fastgan.ops.triton import instance_norm_act as kernels
    monkeypatch.setattr(kernels, "SPLIT_NCHW", 32)
    monkeypatch.setattr(kernels, "SPLIT_NHWC", 16)
    monkeypatch.setattr(kernels, "BLOCK_S", 4)
    monkeypatch.setattr(kernels, "SUM_PLANES", 4)
    x, w, b, r, go = make_case((2, 3, 20, 21), torch.float32, layout, seed=seed_of(layout, "many splits"))
    check(backend, x, w, b, r, go, "leaky_relu")


@pytest.mark.parametrize("backend", NATIVE_CPU + TRITON_CPU)
def test_float64(backend, poison):
    x, w, b, r, go = make_case(SMALL, torch.float64, "contiguous", seed=11)
    check(backend, x, w, b, r, go, "leaky_relu")


@pytest.mark.parametrize("backend", NATIVE_CPU + TRITON_CPU)
def test_float32_parameters_with_bf16_input(backend):
    """Mixed precision: bf16 activations, float32 weight and bias (gradients float32)."""
    x, w, b, r, go = make_case(SMALL, torch.bfloat16, "channels_last", param_dtype=torch.float32, seed=5)
    _, grads = check(backend, x, w, b, r, go, "relu")
    assert grads[1].dtype == torch.float32 and grads[2].dtype == torch.float32


@pytest.mark.parametrize("weight_dtype", [None, torch.bfloat16], ids=["no weight", "bf16 weight"])
@pytest.mark.parametrize("backend,device", [(b, "cpu") for b in CPU_BACKENDS] + [
    pytest.param(b, "cuda", marks=pytest.mark.gpu, id=f"{b}-gpu") for b in ("cuda", "triton")])
def test_each_parameter_gradient_is_computed_in_its_own_dtype(backend, device, weight_dtype):
    """A float32 bias beside bf16 x and no weight (or a bf16 weight): its gradient is float32
    to float32 rounding, not the bf16 rounding of the weight's (or x's) dtype."""
    x, w, b, r, go = make_case(SMALL, torch.bfloat16, "contiguous", param_dtype=torch.float32, seed=23,
                               device=device)
    w = w.to(weight_dtype) if weight_dtype else None
    y, grads = run(backend, x, w, b, None, go, "none")
    ref, ref_grads = reference_f64(x, w, b, None, go, "none")
    assert grads[2].dtype == torch.float32
    assert_close(grads[2], ref_grads[2], 1e-5, "dbias")
    if w is not None:
        assert grads[1].dtype == torch.bfloat16
        assert_close(grads[1], ref_grads[1], RTOL[torch.bfloat16], "dweight")


@pytest.mark.parametrize("backend", NATIVE_CPU + TRITON_CPU)
def test_strided_input_and_mixed_layouts(backend):
    """A non-dense view is copied to NCHW; a residual / grad in another layout than x works."""
    x, w, b, r, go = make_case(SMALL, torch.float32, "slice", seed=7)
    check(backend, x, w, b, r, go, "relu")
    x, w, b, r, go = make_case(SMALL, torch.float32, "contiguous", seed=8)
    check(backend, x, w, b, r.contiguous(memory_format=torch.channels_last),
          go.contiguous(memory_format=torch.channels_last), "none")


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_a_residual_of_another_dtype_promotes_as_the_sum_does(backend):
    """A float64 residual to a float32 x: the float64 result of norm(x) + residual, as the
    plain composition gives, with each gradient in its input's dtype (the cpu and triton
    back ends refused the pair)."""
    x, w, b, r, go = make_case(SMALL, torch.float32, "contiguous", seed=19)
    y, grads = run(backend, x, w, b, r.double(), go.double(), "none")
    ref, ref_grads = reference_f64(x, w, b, r, go, "none")
    assert y.dtype == torch.float64 and [g.dtype for g in grads] == [torch.float32] * 3 + [torch.float64]
    assert_close(y, ref, 1e-5, "output")
    for name, got, want in zip(("dx", "dweight", "dbias", "dresidual"), grads, ref_grads):
        assert_close(got, want, 1e-4, name)


@pytest.mark.parametrize("backend", NATIVE_CPU + TRITON_CPU)
def test_large_mean_small_variance(backend):
    """mean 1000, std 0.01: sums around the mean, not E[x^2] - E[x]^2 (no cancellation)."""
    g = torch.Generator().manual_seed(13)
    x = (torch.randn(2, 3, 9, 11, generator=g, dtype=torch.float64) * 0.01 + 1000.0).float()
    go = torch.randn(x.shape, generator=g).float()
    y, grads = run(backend, x, None, None, None, go, "none")
    ref, ref_grads = reference_f64(x, None, None, None, go, "none")
    assert_close(y, ref, 2e-3, "output")  # float32 x carries ~6e-5 of the std in rounding
    assert (y.double() - ref).abs().max() < 5e-3


def test_eps_and_slope_are_used():
    x, w, b, r, go = make_case((1, 2, 3, 4), torch.float32, "contiguous", seed=17)
    for backend in NATIVE_CPU + TRITON_CPU:
        with ops.use_backend(backend):
            got = ops.instance_norm_act(x, w, b, eps=0.5, activation="leaky_relu", negative_slope=0.05)
        want = reference.instance_norm_act(x.double(), w.double(), b.double(), 0.5, "leaky_relu", 0.05)
        assert_close(got, want, 1e-5, backend)


# planes under 32 pixels (a partial shift window), odd, split on the CPU (NCHW chunks) and in Triton
CONSTANT_PLANE_SHAPES = [(2, 3, 5, 5), (2, 3, 5, 7), (1, 3, 64, 64), TRITON_SPLIT, (1, 3, 130, 131)]


def constant_plane_cases() -> list:
    """(backend, device, layout, shape). Triton channels_last splits every plane past 512 pixels,
    64x64 already: its largest plane, 13 s in the interpreter, would show nothing more."""
    on_cpu = [(b, "cpu", layout, shape) for b in CPU_BACKENDS for layout in LAYOUTS for shape in CONSTANT_PLANE_SHAPES
              if not (b == "triton" and layout == "channels_last" and shape == CONSTANT_PLANE_SHAPES[-1])]
    on_gpu = [pytest.param(b, "cuda", layout, shape, marks=pytest.mark.gpu)
              for b in ("cuda", "triton") for layout in LAYOUTS for shape in CONSTANT_PLANE_SHAPES]
    return on_cpu + on_gpu


ALL_BACKENDS_ON_DEVICES = [(b, "cpu") for b in CPU_BACKENDS] + [
    pytest.param(b, "cuda", marks=pytest.mark.gpu, id=f"{b}-gpu") for b in ("cuda", "triton")]


@pytest.mark.parametrize("poison,at", [("nan", (3, 4)), ("inf", (3, 5)), ("-inf", (3, 5))], ids=str)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("backend,device", ALL_BACKENDS_ON_DEVICES)
def test_a_nan_input_gives_atens_output_and_gradients(backend, device, activation, layout, poison, at):
    """relu's gradient passes where its input is NaN, as aten's threshold_backward (z <= 0
    stops) does: kernels that passed it only where z > 0 dropped the NaN plane's share of
    dbias, a finite, other value (7.65 for aten's 1.10); leaky_relu's takes the slope.
    An infinite element (not one of the planes' shift samples, which (3, 4) is) makes the
    variance inf - inf = NaN: kept NaN, the whole plane is NaN, as aten's (a variance clamped
    with max(v, 0) that drops NaN normalized it by 1/sqrt(eps): zeros and -inf)."""
    g = torch.Generator().manual_seed(31)
    x = torch.randn(2, 3, 8, 8, generator=g)
    x[(0, 1, *at)] = float(poison)
    w, b = torch.rand(3, generator=g) + 0.5, torch.randn(3, generator=g)
    go = torch.randn(x.shape, generator=g)
    if layout == "channels_last":
        x, go = (t.contiguous(memory_format=torch.channels_last) for t in (x, go))
    x, w, b, go = (t.to(device) for t in (x, w, b, go))
    y, (dx, dw, db, _) = run(backend, x, w, b, None, go, activation)
    leaves = [t.double().requires_grad_() for t in (x, w, b)]
    z = F.instance_norm(leaves[0], weight=leaves[1], bias=leaves[2], eps=1e-5)
    ref = {"relu": F.relu, "leaky_relu": lambda t: F.leaky_relu(t, 0.2), "none": lambda t: t}[activation](z)
    ref_grads = torch.autograd.grad(ref, leaves, go.double())
    assert torch.isfinite(ref_grads[2]).all()  # the NaN plane's dbias too
    for name, got, want in zip(("output", "dx", "dweight", "dbias"), (y, dx, dw, db), (ref, *ref_grads)):
        torch.testing.assert_close(got.double(), want.detach(), rtol=1e-5, atol=1e-5, equal_nan=True,
                                   msg=lambda m: f"{name}: {m}")


@pytest.mark.parametrize("strip", ["top row", "left column"])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("backend,device", ALL_BACKENDS_ON_DEVICES)
def test_a_plane_whose_first_elements_stand_apart_keeps_atens_precision(backend, device, layout, strip):
    """A bright strip over a dark, flat plane. Statistics shifted by the mean of the plane's
    first 32 elements (Triton, CUDA) or its first element (cpu) lost the variance or the mean
    to cancellation: Triton's output was 2.7e-6 off at 256x256, the cpu's channels_last
    9.4e-7, where aten's is 1.3e-7. The shift now averages elements spread over the plane
    (not one column either: 32 samples a whole number of rows apart all fell in column 0)."""
    g = torch.Generator().manual_seed(32)
    x = 1e-3 * torch.randn(1, 2, 256, 256, generator=g)
    if strip == "top row":
        x[:, :, 0, :32] += 1.0
    else:
        x[:, :, :, 0] += 1.0
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    x = x.to(device)
    with ops.use_backend(backend):
        y = ops.instance_norm_act(x, activation="none")
    ref = F.instance_norm(x.double())
    assert_close(y, ref, 5e-7, "output")


@pytest.mark.parametrize("backend,device,layout,shape", constant_plane_cases(), ids=case_id)
def test_constant_plane_with_eps_zero_is_torchs_zero(backend, device, layout, shape):
    """With eps 0 a constant plane has rstd 1/sqrt(0): torch's instance_norm (aten's InvStd)
    makes it 0, so it normalizes to 0 (the bias after affine) and passes no dx; the other
    planes are untouched. The constants (0.1, 1/3) do not sum exactly in float32: a mean
    taken from plain sums is an ulp off, the variance tiny but not 0, and the plane +-1."""
    g = torch.Generator().manual_seed(21)
    x = torch.randn(shape, generator=g).double()  # float32 values: the same in both dtypes
    constants = {(0, 1): 0.1, (shape[0] - 1, 2): 1 / 3, (0, 0): -2.0}
    for (n, c), value in constants.items():
        x[n, c] = float(torch.tensor(value, dtype=torch.float32))
    w, b = torch.rand(shape[1], generator=g, dtype=torch.float64) + 0.5, torch.randn(shape[1], generator=g,
                                                                                     dtype=torch.float64)
    go = torch.randn(shape, generator=g).double()
    if layout == "channels_last":
        x, go = x.contiguous(memory_format=torch.channels_last), go.contiguous(memory_format=torch.channels_last)
    # torch's on NCHW tensors: its CPU backward is wrong for channels_last gradients at N=1 (torch 2.14.1)
    want_leaves = [t.contiguous().requires_grad_() for t in (x, w, b)]
    want = F.instance_norm(want_leaves[0], weight=want_leaves[1], bias=want_leaves[2], eps=0.0)
    want_grads = torch.autograd.grad(want, want_leaves, go.contiguous())
    for n, c in constants:  # torch's own convention
        assert want[n, c].eq(b[c]).all() and want_grads[0][n, c].eq(0).all()
    for dtype in (torch.float64, torch.float32):
        leaves = [t.to(device, dtype).requires_grad_() for t in (x, w, b)]
        with ops.use_backend(backend):
            got = ops.instance_norm_act(*leaves, eps=0.0, activation="none")
        grads = torch.autograd.grad(got, leaves, go.to(device, dtype))
        rtol = RTOL[dtype]
        assert_close(got, want.detach(), rtol, f"{dtype} output")
        for name, a, e in zip(("dx", "dweight", "dbias"), grads, want_grads):
            assert_close(a, e, rtol, f"{dtype} {name}")
        for n, c in constants:
            assert got[n, c].eq(leaves[2][c]).all() and grads[0][n, c].eq(0).all(), (dtype, n, c)


@pytest.mark.parametrize("backend", NATIVE_CPU)
def test_gradcheck_float64(backend):
    for activation in ACTIVATIONS:
        x, w, b, r, _ = make_case((2, 3, 4, 5), torch.float64, "contiguous", seed=seed_of("gc", activation))
        args = [t.clone().requires_grad_() for t in (x, w, b, r)]

        def f(x, w, b, r):
            with ops.use_backend(backend):
                return ops.instance_norm_act(x, w, b, 1e-5, activation, 0.2, r)

        assert torch.autograd.gradcheck(f, args)
        # second order through the backward op (a gradient penalty needs it); the
        # residual enters linearly, so only x, weight, bias
        assert torch.autograd.gradgradcheck(lambda x, w, b: f(x, w, b, None), args[:3])


@pytest.mark.parametrize("backend", TRITON_CPU)
def test_gradcheck_float64_triton(backend):
    x, w, b, r, _ = make_case((1, 2, 2, 3), torch.float64, "contiguous", seed=23)
    args = [t.clone().requires_grad_() for t in (x, w, b)]

    def f(x, w, b):
        with ops.use_backend(backend):
            return ops.instance_norm_act(x, w, b, 1e-5, "leaky_relu", 0.2)

    assert torch.autograd.gradcheck(f, args)


@pytest.mark.skipif(not NATIVE_CPU, reason="fastgan._C not built")
@pytest.mark.parametrize("dtype,layout", [(torch.float32, "contiguous"), (torch.float32, "channels_last"),
                                          (torch.bfloat16, "slice")], ids=case_id)
def test_opcheck_native(dtype, layout):
    x, w, b, r, go = make_case((2, 3, 5, 7), dtype, layout, seed=29)
    fwd = torch.ops.fastgan.instance_norm_act.default
    bwd = torch.ops.fastgan.instance_norm_act_backward.default
    req = [t.clone().requires_grad_() for t in (x, w, b, r)]
    torch.library.opcheck(fwd, (*req, 1e-5, "relu", 0.2))
    torch.library.opcheck(fwd, (req[0], None, None, None, 1e-5, "none", 0.2))
    _, mean, rstd = fwd(x, w, b, r, 1e-5, "leaky_relu", 0.2)
    torch.library.opcheck(bwd, (go, x, w, b, mean, rstd, "leaky_relu", 0.2))
    torch.library.opcheck(bwd, (go.clone().requires_grad_(), x.clone().requires_grad_(),
                                w.clone().requires_grad_(), b.clone().requires_grad_(), mean, rstd, "relu", 0.2))
    if dtype != torch.float32:  # a float32 weight, no bias: the unused dbias of the weight's dtype, as the fake says
        torch.library.opcheck(bwd, (go, x, w.float(), None, mean, rstd, "relu", 0.2))


@pytest.mark.skipif(not TRITON_CPU, reason="triton unavailable")
def test_opcheck_triton():
    from fastgan.ops.triton import instance_norm_act as kernels

    x, w, b, r, go = make_case((1, 3, 5, 7), torch.float32, "channels_last", seed=31)
    req = [t.clone().requires_grad_() for t in (x, w, b, r)]
    torch.library.opcheck(kernels.instance_norm_act_op, (*req, 1e-5, "relu", 0.2),
                          test_utils=("test_schema", "test_autograd_registration", "test_faketensor"))
    _, mean, rstd = kernels.instance_norm_act_op(x, w, b, r, 1e-5, "relu", 0.2)
    torch.library.opcheck(kernels.instance_norm_act_backward_op, (go, x, w, b, mean, rstd, "relu", 0.2),
                          test_utils=("test_schema", "test_autograd_registration", "test_faketensor"))


@pytest.mark.skipif(not NATIVE_CPU, reason="fastgan._C not built")
@pytest.mark.parametrize("layout", LAYOUTS + ["slice"])
def test_fake_matches_real_layout(layout):
    from torch._subclasses.fake_tensor import FakeTensorMode

    x, w, b, r, go = make_case((2, 3, 5, 7), torch.float32, layout, seed=37)
    real = torch.ops.fastgan.instance_norm_act(x, w, b, r, 1e-5, "relu", 0.2)
    real_b = torch.ops.fastgan.instance_norm_act_backward(go, x, w, b, real[1], real[2], "relu", 0.2)
    with FakeTensorMode() as mode:
        fx, fw, fb, fr, fg = (mode.from_tensor(t) for t in (x, w, b, r, go))
        fake = torch.ops.fastgan.instance_norm_act(fx, fw, fb, fr, 1e-5, "relu", 0.2)
        fake_b = torch.ops.fastgan.instance_norm_act_backward(fg, fx, fw, fb, fake[1], fake[2], "relu", 0.2)
    for got, want in zip((*fake, *fake_b), (*real, *real_b)):
        assert got.shape == want.shape and got.stride() == want.stride() and got.dtype == want.dtype


def test_argument_errors():
    x = torch.randn(2, 3, 4, 5)
    with pytest.raises(ValueError, match="activation"):
        ops.instance_norm_act(x, activation="gelu")
    with pytest.raises(ValueError, match="4-D"):
        ops.instance_norm_act(x[0])
    with pytest.raises(ValueError, match="weight"):
        ops.instance_norm_act(x, torch.ones(4))
    with pytest.raises(ValueError, match="residual"):
        ops.instance_norm_act(x, residual=torch.randn(2, 3, 4, 4))
    for backend in CPU_BACKENDS:  # the same refusals on every back end
        with ops.use_backend(backend):
            for args in [(x.long(),), (x, torch.ones(3, dtype=torch.int64)), (x, None, torch.ones(3).int())]:
                with pytest.raises(ValueError, match=r"is torch.int\d+; x, weight and bias must be floating point"):
                    ops.instance_norm_act(*args)
            with pytest.raises(TypeError, match="eps must be a number, got '0.1'"):
                ops.instance_norm_act(x, eps="0.1")
            with pytest.raises(TypeError, match="negative_slope must be a number, got b'0.1'"):
                ops.instance_norm_act(x, activation="leaky_relu", negative_slope=b"0.1")
            with pytest.raises(TypeError, match="eps must be a number, got None"):
                ops.instance_norm_act(x, eps=None)
            with pytest.raises(TypeError, match="x must be a tensor, got ndarray"):
                ops.instance_norm_act(x.numpy())
            with pytest.raises(TypeError, match="residual must be a tensor, got list"):
                ops.instance_norm_act(x, residual=[0.0])
    meta = torch.randn(3, device="meta")  # the dispatcher takes the fake rule then: it must refuse too
    with pytest.raises(RuntimeError, match="weight is on meta, the input on cpu"):
        ops.instance_norm_act(x, meta)
    with pytest.raises(RuntimeError, match="residual is on meta, the input on cpu"):
        ops.instance_norm_act(x, residual=x.to("meta"))
    if NATIVE_CPU:
        with pytest.raises(RuntimeError, match="activation"):
            torch.ops.fastgan.instance_norm_act(x, None, None, None, 1e-5, "gelu", 0.2)
        with pytest.raises(RuntimeError, match="residual"):
            torch.ops.fastgan.instance_norm_act(x, None, None, x.double(), 1e-5, "relu", 0.2)
        with pytest.raises(RuntimeError, match="floating point"):
            torch.ops.fastgan.instance_norm_act(x.long(), None, None, None, 1e-5, "relu", 0.2)


@pytest.mark.parametrize("backend", NATIVE_CPU + TRITON_CPU)
def test_empty_batch(backend):
    x = torch.randn(0, 3, 4, 5, requires_grad=True)
    with ops.use_backend(backend):
        y = ops.instance_norm_act(x)
    assert y.shape == x.shape
    y.sum().backward()
    assert x.grad.shape == x.shape


# ------------------------------------------------------------------------ determinism


@pytest.mark.parametrize("backend", NATIVE_CPU + TRITON_CPU)
def test_two_runs_are_bitwise_equal(backend):
    for layout in LAYOUTS:
        # (Triton: a split reduction in NCHW; channels_last small, for the interpreter's sake)
        shape = (3, 70, 33, 35) if backend != "triton" else TRITON_SPLIT if layout == "contiguous" else SMALL
        x, w, b, r, go = make_case(shape, torch.float32, layout, seed=41)
        first = run(backend, x, w, b, r, go, "relu")
        second = run(backend, x, w, b, r, go, "relu")
        assert torch.equal(first[0], second[0])
        assert all(torch.equal(p, q) for p, q in zip(first[1], second[1]))


@pytest.mark.parametrize("backend", NATIVE_CPU)
def test_cpu_threads_do_not_change_bits(backend):
    saved = torch.get_num_threads()
    try:
        # NCHW chunked and whole planes; NCHW planes of three chunks a task on 1 thread and
        # chunks a task on 2 (6 planes: too few for 2 threads); NHWC fused (image x 32
        # channels a task) and phased; NHWC fused on 1 thread and phased on 2 (one fused
        # task: its rows split instead)
        for shape, layout in (((1, 3, 130, 131), "contiguous"), ((1, 6, 190, 190), "contiguous"),
                              ((4, 70, 20, 30), "contiguous"),
                              ((2, 70, 40, 30), "channels_last"), ((1, 20, 130, 131), "channels_last"),
                              ((1, 16, 40, 40), "channels_last")):
            x, w, b, r, go = make_case(shape, torch.float32, layout, seed=43)
            results = []
            for threads in (1, 2):
                torch.set_num_threads(threads)
                results.append(run(backend, x, w, b, r, go, "leaky_relu"))
            assert torch.equal(results[0][0], results[1][0])
            assert all(torch.equal(p, q) for p, q in zip(results[0][1], results[1][1]))
    finally:
        torch.set_num_threads(saved)


def _cpu_flags() -> set:
    try:
        with open("/proc/cpuinfo") as f:
            return next((set(line.split(":", 1)[1].split()) for line in f if line.startswith("flags")), set())
    except OSError:
        return set()


def _nhwc_mean_as_the_cpu_kernel_sums(x: torch.Tensor) -> torch.Tensor:
    """The (N, C) float32 means of the cpu back end's NHWC kernels, step for step
    (csrc/cpu/instance_norm_act_kernel.h): each plane's shift_of (m = min(32, HW) elements
    at j * step + j % step, summed in float), then sum(x - shift) per channel in float over
    runs of 32 pixels, those runs in double, in order (over 512-pixel chunks, in order too:
    the same additions); mean = float(shift + sum / HW)."""
    N, C, H, W = x.shape
    HW = H * W
    pixels = x.permute(0, 2, 3, 1).reshape(N, HW, C).numpy()
    m = min(32, HW)
    step = HW // m
    means = []
    for n in range(N):
        k0 = pixels[n, 0].copy()
        s = numpy.zeros(C, numpy.float32)
        for j in range(1, m):
            s = s + (pixels[n, j * step + j % step] - k0)
        shift = k0 + s / numpy.float32(m)
        total = numpy.zeros(C, numpy.float64)
        for r0 in range(0, HW, 32):
            run = numpy.zeros(C, numpy.float32)
            for r in range(r0, min(HW, r0 + 32)):
                run = run + (pixels[n, r] - shift)
            total = total + run.astype(numpy.float64)
        means.append((shift.astype(numpy.float64) + total / HW).astype(numpy.float32))
    return torch.from_numpy(numpy.stack(means))


@pytest.mark.skipif(not NATIVE_CPU, reason="fastgan._C not built")
@pytest.mark.parametrize("shape", [(2, 37, 19, 23), (1, 40, 91, 91)], ids=case_id)
def test_nhwc_kernels_mean_is_their_shifted_sum_bit_for_bit(shape):
    """Pins the NHWC kernels' summation (their vectorized shifts included: a shift that
    drifts from shift_of's changes these bits) on planes far from 0 whose sums round.
    37 and 40 channels leave masked tail runs after the vector steps of every width; 91x91
    float32 takes the split schedule."""
    g = torch.Generator().manual_seed(seed_of("nhwc mean", shape))
    x = (torch.randn(shape, generator=g) * 3 + 50).contiguous(memory_format=torch.channels_last)
    with ops.use_backend("cpu"):
        mean = torch.ops.fastgan.instance_norm_act(x, None, None, None, 1e-5, "relu", 0.2)[1]
    assert torch.equal(mean, _nhwc_mean_as_the_cpu_kernel_sums(x))


@pytest.mark.skipif(not NATIVE_CPU, reason="fastgan._C not built")
def test_the_widest_cpu_kernel_copy_runs_and_fastgan_cpu_isa_caps_it():
    code = """
        import json, fastgan._C
        print(json.dumps({"isa": fastgan._C.CPU_KERNELS_ISA}))
    """
    flags = _cpu_flags()
    avx2 = platform.machine() in ("x86_64", "AMD64") and {"avx2", "fma", "f16c"} <= flags
    avx512 = avx2 and {"avx512f", "avx512bw", "avx512vl", "avx512dq"} <= flags
    assert same_code_here(code)["isa"] == ("avx512" if avx512 else "avx2" if avx2 else "base")
    assert run_json(code, FASTGAN_CPU_ISA="avx2")["isa"] == ("avx2" if avx2 else "base")
    assert run_json(code, FASTGAN_CPU_ISA="base")["isa"] == "base"


@pytest.mark.skipif(not NATIVE_CPU, reason="fastgan._C not built")
@pytest.mark.parametrize("cap", ["base", "avx2"])
def test_every_cpu_kernel_copy_gives_the_same_bits(cap):
    """FASTGAN_CPU_ISA=base runs the generic at::vec kernels, FASTGAN_CPU_ISA=avx2 the AVX2
    ones, and no cap the widest the CPU has (AVX-512 for NHWC inputs, AVX2 for NCHW).
    Same operations on 8 float lanes (NCHW), or per channel whatever the lanes (NHWC):
    the same bits. 37 channels leave a masked NHWC run after the vector steps of every
    width; 16 channels are a whole AVX2 step and a masked AVX-512 run, 27 channels a step
    and a masked run of AVX2's and one masked AVX-512 run; 91x91 takes the split (phased)
    NHWC schedule in float32 and float64, 1x16x40x40 too where more than one thread runs."""
    code = """
        import hashlib, json, torch, fastgan.ops as ops
        g = torch.Generator().manual_seed(0)
        digest = hashlib.sha256()
        for shape in ((2, 37, 19, 23), (2, 64, 16, 16), (1, 37, 91, 91), (1, 16, 40, 40), (2, 27, 9, 10)):
            for dtype in (torch.float32, torch.bfloat16, torch.float16, torch.float64):
                for cl in (False, True):
                    for act in ("relu", "leaky_relu", "none"):
                        x = (torch.randn(shape, generator=g) * 2 + 1).to(dtype)
                        if cl:
                            x = x.contiguous(memory_format=torch.channels_last)
                        w = torch.randn(shape[1], generator=g).to(dtype)
                        b = torch.randn(shape[1], generator=g).to(dtype)
                        r = torch.randn(x.shape, generator=g).to(dtype)
                        go = torch.randn(x.shape, generator=g).to(dtype)
                        out = torch.ops.fastgan.instance_norm_act(x, w, b, r, 1e-5, act, 0.2)
                        grads = torch.ops.fastgan.instance_norm_act_backward(go, x, w, b, out[1], out[2], act, 0.2)
                        for t in (*out, *grads):
                            digest.update(t.contiguous().view(torch.uint8).numpy().tobytes())
        print(json.dumps({"digest": digest.hexdigest()}))
    """
    assert run_json(code, FASTGAN_CPU_ISA=cap)["digest"] == same_code_here(code)["digest"]


# ------------------------------------------------------------------------ torch.compile


class ResnetBlock(torch.nn.Module):
    """The reference's ResnetBlock (reflect padding, instance norm, no dropout) from the ops."""

    def __init__(self, dim, affine):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(dim, dim, 3, bias=True)
        self.conv2 = torch.nn.Conv2d(dim, dim, 3, bias=True)
        self.w1 = torch.nn.Parameter(torch.rand(dim) + 0.5) if affine else None
        self.b1 = torch.nn.Parameter(torch.randn(dim) * 0.1) if affine else None
        self.w2 = torch.nn.Parameter(torch.rand(dim) + 0.5) if affine else None
        self.b2 = torch.nn.Parameter(torch.randn(dim) * 0.1) if affine else None

    def forward(self, x):
        h = self.conv1(F.pad(x, (1, 1, 1, 1), mode="reflect"))
        h = ops.instance_norm_act(h, self.w1, self.b1, activation="relu")
        h = self.conv2(F.pad(h, (1, 1, 1, 1), mode="reflect"))
        return ops.instance_norm_act(h, self.w2, self.b2, activation="none", residual=x)


def _compiled_block_matches_eager(backend, compile_backend, device="cpu", shape=(2, 8, 9, 11)):
    torch.manual_seed(0)
    block = ResnetBlock(shape[1], affine=True).to(device)
    x = torch.randn(shape, device=device).contiguous(memory_format=torch.channels_last)

    def step(fn):
        block.zero_grad(set_to_none=True)
        xr = x.detach().requires_grad_()
        y = fn(xr)
        (y * y).mean().backward()
        return [y.detach(), xr.grad] + [p.grad for p in block.parameters()]

    with ops.use_backend(backend):
        compiled_matches_eager(block, step, compile_backend, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("backend", NATIVE_CPU + TRITON_CPU)
def test_compile_resnet_block_fullgraph_aot_eager(backend):
    _compiled_block_matches_eager(backend, "aot_eager")


@pytest.mark.slow  # a cold inductor compile of the block takes a while here
@pytest.mark.parametrize("backend", NATIVE_CPU)
def test_compile_resnet_block_fullgraph_inductor(backend):
    _compiled_block_matches_eager(backend, "inductor")


def _python_rule():
    """The native op under make_autograd's Python rule (the Triton op's), as an autograd.Function."""
    from fastgan.ops._instance_norm_act import make_autograd

    setup_context, backward, _, _ = make_autograd(torch.ops.fastgan.instance_norm_act_backward.default)

    class PythonRule(torch.autograd.Function):
        @staticmethod
        def forward(ctx, *inputs):
            with torch._C._AutoDispatchBelowAutograd():
                output = torch.ops.fastgan.instance_norm_act.default(*inputs)
            setup_context(ctx, inputs, output)
            return output[0]

        @staticmethod
        def backward(ctx, grad):
            return backward(ctx, grad, None, None)

    return PythonRule


# which of (x, weight, bias, residual) ask for a gradient: each alone, and all
NEEDS = [(True, False, False, False), (False, True, False, False), (False, False, True, False),
         (False, False, False, True), (True, True, True, True)]


def _rule_cases():
    """(activation, affine, residual, needs) where an input given asks for a gradient."""
    for activation, affine, residual in [("relu", True, True), ("leaky_relu", False, False), ("none", True, False)]:
        for needs in NEEDS:
            if any(needs[:1]) or (affine and any(needs[1:3])) or (residual and needs[3]):
                yield pytest.param(activation, affine, residual, needs,
                                   id=f"{activation}-{affine}-{residual}-" + "".join(
                                       "xwbr"[i] for i, need in enumerate(needs) if need))


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("activation,affine,residual,needs", list(_rule_cases()))
def test_the_native_autograd_rule_equals_the_python_rule_bitwise(activation, affine, residual, needs, layout):
    """The native op's autograd rule is C++ (csrc/instance_norm_act_autograd.cpp): the same
    outputs and gradients, bit for bit, as the Python rule the Triton op runs, for every
    subset of inputs asking for a gradient (the C++ rule counts them by the tensors given)."""
    if not NATIVE_CPU:
        pytest.skip("fastgan._C not built")
    x, w, b, r, go = make_case((2, 6, 9, 7), torch.float32, layout, affine=affine, residual=residual, seed=71)

    def through(fn):
        leaves = [t.detach().requires_grad_(need) if t is not None else None for t, need in zip((x, w, b, r), needs)]
        y = fn(*leaves, 1e-5, activation, 0.2)
        y.backward(go)
        return y, [y.detach()] + [t.grad for t in leaves if t is not None]

    with ops.use_backend("cpu"):
        native_y, native = through(lambda x, w, b, r, *rest: ops.instance_norm_act(x, w, b, *rest, residual=r))
    python_y, python = through(_python_rule().apply)
    assert "InstanceNormAct" in native_y.grad_fn.name() and "CppNode" in native_y.grad_fn.name()
    assert len(native) == len(python) == 2 + 2 * affine + residual
    for n, p in zip(native, python):
        assert (n is None) == (p is None)
        if n is not None:
            assert torch.equal(n, p) and n.stride() == p.stride()


def test_fake_tensors_take_the_registered_op():
    if not NATIVE_CPU:
        pytest.skip("fastgan._C not built")
    from torch._subclasses.fake_tensor import FakeTensorMode

    x = torch.randn(2, 3, 4, 5).contiguous(memory_format=torch.channels_last)
    with FakeTensorMode() as mode, ops.use_backend("cpu"):
        y = ops.instance_norm_act(mode.from_tensor(x), activation="leaky_relu")
    assert y.shape == x.shape and y.is_contiguous(memory_format=torch.channels_last)


def test_backend_selection():
    assert set(ops.available_backends("cpu", op=OP)) >= {"torch"}
    with ops.use_backend("auto"):
        assert ops.backend_for(OP, "cpu") == ("cpu" if ops.native_loaded else "torch")
    assert ("cuda" in ops.available_backends("cuda", op=OP)) == (HAS_CUDA and ops.native_loaded)


# --------------------------------------------------------------------------------- GPU

GPU_SHAPES = [SMALL, TRITON_SPLIT, (16, 256, 64, 64), (1, 64, 1024, 1024)]


def _gpu_cases():
    """Small planes: every activation x (affine, residual) pair (both or neither below
    float32). Large planes, where each case costs real time: the network's two uses,
    relu with affine and residual, leaky_relu with neither."""
    for shape in GPU_SHAPES:
        big = shape[2] * shape[3] >= 4096
        for layout in LAYOUTS:
            for dtype in (torch.float32, torch.bfloat16, torch.float16):
                if big:
                    combos = [("relu", True, True), ("leaky_relu", False, False)]
                else:
                    pairs = [(False, False), (True, False), (False, True), (True, True)]
                    pairs = pairs if dtype == torch.float32 else [pairs[0], pairs[3]]
                    combos = [(a, affine, residual) for a in ACTIVATIONS for affine, residual in pairs]
                for activation, affine, residual in combos:
                    yield shape, layout, dtype, activation, affine, residual


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["cuda", "triton"])
@pytest.mark.parametrize("shape,layout,dtype,activation,affine,residual", list(_gpu_cases()),
                         ids=lambda v: case_id(v))
def test_matches_reference_gpu(backend, shape, layout, dtype, activation, affine, residual, poison):
    x, w, b, r, go = make_case(shape, dtype, layout, affine=affine, residual=residual, device="cuda",
                               seed=seed_of(shape, dtype, layout, activation, affine, residual))
    check(backend, x, w, b, r, go, activation)


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["cuda", "triton"])
def test_gpu_float64_and_misaligned(backend):
    x, w, b, r, go = make_case(TRITON_SPLIT, torch.float64, "contiguous", device="cuda", seed=47)
    check(backend, x, w, b, r, go, "leaky_relu")
    # a view starting 4 bytes past an allocation: the CUDA kernels take the scalar path
    x, w, b, r, go = make_case((2, 3, 16, 16), torch.float32, "contiguous", device="cuda", seed=53)
    xs = torch.empty(x.numel() + 1, device="cuda")[1:].view(x.shape).copy_(x)
    check(backend, xs, w, b, r, go, "relu")


# Planes the CUDA back end spreads over a thread-block cluster on sm_90 (16384 < HW <= 65536,
# csrc/cuda/instance_norm_act.cu): with a partial last chunk, 16-byte packs and one element at a
# time (odd planes, a misaligned view); FASTGAN_IN_CLUSTERS=0 runs the same shapes through the
# two-kernel split path (every GPU before sm_90 takes it).
CLUSTER_CASES = [((1, 1, 130, 131), torch.float32, "relu", True, True),       # clusters of 3 blocks
                 ((1, 2, 160, 200), torch.float32, "leaky_relu", False, False),  # 4
                 ((2, 3, 200, 180), torch.float32, "relu", True, True),          # 5
                 ((2, 3, 200, 180), torch.bfloat16, "leaky_relu", False, False),
                 ((1, 2, 181, 203), torch.float32, "leaky_relu", True, False),
                 ((1, 1, 200, 240), torch.float32, "none", True, False),         # 6
                 ((1, 2, 224, 224), torch.float32, "relu", False, True),         # 7
                 ((1, 2, 256, 256), torch.float16, "none", False, True),         # 8
                 ((1, 2, 256, 256), torch.float64, "relu", True, True)]


def cuda_kernel_names(fn) -> set[str]:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    return {e.key for e in prof.key_averages()}


@pytest.mark.gpu
@pytest.mark.parametrize("clusters", ["1", "0"], ids=["clusters", "split"])
@pytest.mark.parametrize("shape,dtype,activation,affine,residual", CLUSTER_CASES, ids=lambda v: case_id(v))
def test_cluster_sized_planes_cuda(shape, dtype, activation, affine, residual, clusters, monkeypatch, poison):
    monkeypatch.setenv("FASTGAN_IN_CLUSTERS", clusters)
    x, w, b, r, go = make_case(shape, dtype, "contiguous", affine=affine, residual=residual, device="cuda",
                               seed=seed_of(shape, dtype, activation))
    names = cuda_kernel_names(lambda: check("cuda", x, w, b, r, go, activation))
    ran = [k for k in ("fwd_cluster_nchw", "bwd_cluster_nchw") if any(k in n for n in names)]
    expected = clusters == "1" and torch.cuda.get_device_capability() >= (9, 0)
    assert ran == (["fwd_cluster_nchw", "bwd_cluster_nchw"] if expected else []), sorted(names)
    # a view 4 bytes past its allocation: one element at a time
    xs = torch.empty(x.numel() + 1, dtype=dtype, device="cuda")[1:].view(x.shape).copy_(x)
    check("cuda", xs, w, b, r, go, activation)


@pytest.mark.gpu
def test_cluster_runs_are_bitwise_equal_and_capturable(monkeypatch):
    monkeypatch.setenv("FASTGAN_IN_CLUSTERS", "1")
    x, w, b, r, go = make_case((4, 8, 256, 256), torch.float32, "contiguous", residual=True, device="cuda", seed=73)
    first = run("cuda", x, w, b, r, go, "relu")
    second = run("cuda", x, w, b, r, go, "relu")
    assert torch.equal(first[0], second[0]) and all(torch.equal(p, q) for p, q in zip(first[1], second[1]))
    # forward and backward captured (the backward's cluster kernel too), replayed: the same bits
    xg, wg, bg = (t.detach().clone().requires_grad_() for t in (x, w, b))
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream), ops.use_backend("cuda"):
        ops.instance_norm_act(xg, wg, bg, residual=r).backward(go)  # warm up outside the capture
    torch.cuda.current_stream().wait_stream(stream)
    xg.grad = wg.grad = bg.grad = None
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph), ops.use_backend("cuda"):
        y = ops.instance_norm_act(xg, wg, bg, residual=r)
        y.backward(go)
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(y.detach(), first[0])
    assert all(torch.equal(g, want) for g, want in zip((xg.grad, wg.grad, bg.grad), first[1][:3]))


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["cuda", "triton"])
def test_gpu_two_runs_are_bitwise_equal(backend):
    for shape in ((16, 256, 64, 64), (1, 64, 1024, 1024)):
        for layout in LAYOUTS:
            x, w, b, r, go = make_case(shape, torch.float32, layout, device="cuda", seed=59)
            first = run(backend, x, w, b, r, go, "relu")
            second = run(backend, x, w, b, r, go, "relu")
            assert torch.equal(first[0], second[0])
            assert all(torch.equal(p, q) for p, q in zip(first[1], second[1]))


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["cuda", "triton"])
def test_gpu_cuda_graph_capture(backend):
    x, w, b, r, go = make_case((2, 16, 64, 64), torch.float32, "channels_last", device="cuda", seed=61)
    xg, wg, bg = (t.detach().clone().requires_grad_() for t in (x, w, b))
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream), ops.use_backend(backend):
        for _ in range(2):  # warm up (Triton compiles here)
            xg.grad = wg.grad = bg.grad = None
            ops.instance_norm_act(xg, wg, bg, residual=r).backward(go)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    xg.grad = wg.grad = bg.grad = None
    with torch.cuda.graph(graph), ops.use_backend(backend):
        y = ops.instance_norm_act(xg, wg, bg, residual=r)
        y.backward(go)
    x2, *_ = make_case((2, 16, 64, 64), torch.float32, "channels_last", device="cuda", seed=67)
    with torch.no_grad():
        xg.copy_(x2)
        go.copy_(off_the_kink(x2, w, b, go, "relu"))  # the captured backward reads go in place
    graph.replay()
    torch.cuda.synchronize()
    ref, ref_grads = reference_f64(x2, w, b, r, go, "relu")
    assert_close(y.detach(), ref, 1e-5, "output")
    assert_close(xg.grad, ref_grads[0], 1e-5, "dx")
    assert_close(wg.grad, ref_grads[1], 1e-5, "dweight")
    assert_close(bg.grad, ref_grads[2], 1e-5, "dbias")


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["cuda", "triton"])
def test_gpu_compile_resnet_block(backend):
    _compiled_block_matches_eager(backend, "inductor", device="cuda", shape=(2, 32, 32, 32))
