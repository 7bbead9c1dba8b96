"""fastgan.ops.reflect_conv2d on every back end against the float64 reference.

Every available back end (torch, cpu, triton through the interpreter on CPU tensors) x
dtype x layout, on fresh random inputs: forward, grad x (the reflected border folded
back), grad weight, grad bias; outputs poisoned with NaN (deterministic mode fills
every fresh allocation with NaN; the kernels' preallocated outputs are NaN-filled and
strided); gradcheck and gradgradcheck in float64; opcheck; torch.compile(fullgraph=True)
over a small ResNet-style block; the per-shape selection between the back end's fused
kernel (Triton; Winograd on CPU) and pad + vendor convolution. CUDA tests carry
@pytest.mark.gpu (CycleGAN shapes).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import fastgan.ops as ops
from fastgan.ops import _measure
from fastgan.ops import _reflect_conv2d as rc
from fastgan.ops import reference
from fastgan.ops._eager import takes_eager_path
from tests.ops.compiled import compiled_matches_eager
from tests.ops.inputs import case_id, seed_of

CPU_BACKENDS = ops.available_backends("cpu", op="reflect_conv2d")
TRITON_CPU = "triton" in CPU_BACKENDS
needs_triton = pytest.mark.skipif(not TRITON_CPU, reason="triton (TRITON_INTERPRET=1) unavailable")
needs_native = pytest.mark.skipif("cpu" not in CPU_BACKENDS, reason="fastgan._C not built")

# relative to the largest reference value (sums of many products: near-zero entries
# carry the absolute error of the large ones)
TOL = {torch.float64: 1e-10, torch.float32: 1e-5, torch.bfloat16: 1e-2, torch.float16: 2e-3}
TF32_TOL = 5e-3

# (N, C_in, C_out, H, W, kernel, padding, stride): odd, non-power-of-two sizes
CASES = [
    (2, 3, 4, 9, 11, 3, 1, 1),
    (2, 5, 6, 9, 11, 3, 1, 2),
    (1, 3, 4, 5, 7, 7, 3, 1),   # rows 1..3 are read by both the top and the bottom reflection
    (1, 8, 5, 5, 7, 7, 3, 2),
    (1, 32, 32, 4, 5, 3, 1, 1),  # channels the interpreter's tiles divide (ALIGNED paths), 2 channel tiles
]
LAYOUTS = ["contiguous", "channels_last"]


def make_case(case, dtype, layout, device="cpu", seed=0, bias=True):
    """x, weight, bias and an output gradient, random (rounded to dtype), in the layout."""
    n, c_in, c_out, h, w, k, p, s = case
    g = torch.Generator().manual_seed(seed)
    oh, ow = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
    x = torch.randn(n, c_in, h, w, generator=g, dtype=torch.float64)
    wt = torch.randn(c_out, c_in, k, k, generator=g, dtype=torch.float64) / (c_in * k * k) ** 0.5
    b = torch.randn(c_out, generator=g, dtype=torch.float64) if bias else None
    gy = torch.randn(n, c_out, oh, ow, generator=g, dtype=torch.float64)
    x, wt, gy = (t.to(device=device, dtype=dtype) for t in (x, wt, gy))
    b = b.to(device=device, dtype=dtype) if bias else None
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
        gy = gy.contiguous(memory_format=torch.channels_last)
    return x, wt, b, gy


def reference_f64(x, wt, b, gy, stride, padding):
    """Output and gradients of the reference, in float64, from the same (rounded) inputs.
    On a GPU the convolution is an explicit matrix product (_conv2d_by_matmul): cuDNN's
    float64 convolutions run on the CUDA cores, tens of seconds for the batch-16
    CycleGAN shape's three passes, where cuBLAS's float64 products take milliseconds."""
    xr = x.detach().double().requires_grad_()
    wr = wt.detach().double().requires_grad_()
    br = b.detach().double().requires_grad_() if b is not None else None
    if x.is_cuda:
        padded = F.pad(xr, (padding,) * 4, mode="reflect") if padding else xr
        y = _conv2d_by_matmul(padded, wr, br, stride)
    else:
        y = reference.reflect_conv2d(xr, wr, br, stride, padding)
    inputs = (xr, wr) + ((br,) if br is not None else ())
    grads = torch.autograd.grad(y, inputs, gy.double())
    return (y.detach(),) + grads + ((None,) if br is None else ())


def _conv2d_by_matmul(x, weight, bias, stride):
    """conv2d(x, weight, bias, stride) (no padding) as unfold + one batched matrix product."""
    n, _, h, w = x.shape
    c_out, _, kh, kw = weight.shape
    oh, ow = (h - kh) // stride + 1, (w - kw) // stride + 1
    y = weight.reshape(c_out, -1) @ F.unfold(x, (kh, kw), stride=stride)  # (n, c_out, oh * ow)
    y = y.view(n, c_out, oh, ow)
    return y + bias.view(1, -1, 1, 1) if bias is not None else y


def test_conv2d_by_matmul_is_conv2d():
    """The GPU tests' float64 reference convolution, checked here against conv2d."""
    g = torch.Generator().manual_seed(3)
    for stride, k in ((1, 3), (2, 3), (1, 7), (2, 4)):
        x = torch.randn(2, 5, 13, 11, dtype=torch.float64, generator=g)
        w = torch.randn(6, 5, k, k, dtype=torch.float64, generator=g)
        b = torch.randn(6, dtype=torch.float64, generator=g)
        torch.testing.assert_close(_conv2d_by_matmul(x, w, b, stride), F.conv2d(x, w, b, stride), rtol=1e-12,
                                   atol=1e-12)
        torch.testing.assert_close(_conv2d_by_matmul(x, w, None, stride), F.conv2d(x, w, None, stride),
                                   rtol=1e-12, atol=1e-12)


def run(backend, x, wt, b, gy, stride, padding, choice="auto"):
    xg = x.detach().requires_grad_()
    wg = wt.detach().requires_grad_()
    bg = b.detach().requires_grad_() if b is not None else None
    with ops.use_backend(backend), rc.force_choice(choice):
        y = ops.reflect_conv2d(xg, wg, bg, stride, padding)
    y.backward(gy)
    return y.detach(), xg.grad, wg.grad, (bg.grad if bg is not None else None)


def assert_close(actual, expected, tol, what=""):
    assert actual.shape == expected.shape, what
    scale = expected.abs().max().item()
    torch.testing.assert_close(actual.double(), expected.to(actual.device), rtol=tol, atol=tol * scale,
                               msg=lambda m: f"{what}: {m}")


def check(backend, case, dtype, layout, device="cpu", choice="auto", tol=None, bias=True):
    x, wt, b, gy = make_case(case, dtype, layout, device, seed=seed_of(case, dtype, layout), bias=bias)
    s, p = case[7], case[6]
    got = run(backend, x, wt, b, gy, s, p, choice)
    ref = reference_f64(x, wt, b, gy, s, p)
    tol = tol or TOL[dtype]
    for name, a, r in zip(("y", "grad x", "grad weight", "grad bias"), got, ref):
        if r is None:
            assert a is None
            continue
        assert a.dtype == dtype and a.device == x.device, name
        assert not a.isnan().any(), f"{name}: unwritten (NaN) elements"
        assert_close(a, r, tol, name)
    y, gx = got[0], got[1]
    cl = torch.channels_last
    assert y.is_contiguous(memory_format=cl if layout == "channels_last" else torch.contiguous_format)
    assert gx.is_contiguous(memory_format=cl if layout == "channels_last" else torch.contiguous_format)
    return got


# --------------------------------------------------------------- against the reference


def test_backends_here():
    assert "torch" in CPU_BACKENDS
    if ops.native_loaded:
        assert "cpu" in CPU_BACKENDS
        with ops.use_backend("auto"):
            assert ops.backend_for("reflect_conv2d", "cpu") == "cpu"


@pytest.mark.parametrize("case", CASES, ids=case_id)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=case_id)
@pytest.mark.parametrize("backend", [b for b in CPU_BACKENDS if b != "triton"])
def test_matches_reference_aten_backends(backend, dtype, layout, case, poison):
    check(backend, case, dtype, layout)


TRITON_RUNS = ([(torch.float32, layout, case) for case in CASES for layout in LAYOUTS]
               + [(torch.bfloat16, "channels_last", CASES[0]), (torch.bfloat16, "contiguous", CASES[2])]
               + [(torch.float16, "contiguous", CASES[1])])


@needs_triton
@pytest.mark.parametrize("dtype,layout,case", TRITON_RUNS, ids=case_id)
def test_matches_reference_triton_kernels(dtype, layout, case, poison):
    check("triton", case, dtype, layout, choice="triton")


@pytest.mark.parametrize("backend,choice,case", [
    pytest.param("triton", "triton", CASES[2], marks=needs_triton),
    pytest.param("cpu", "winograd", (1, 64, 48, 13, 17, 3, 1, 1), marks=needs_native),
], ids=str)
def test_fused_kernels_without_bias_and_channels_last_weight(backend, choice, case, poison):
    x, wt, _, gy = make_case(case, torch.float32, "contiguous", seed=3, bias=False)
    wt = wt.contiguous(memory_format=torch.channels_last)
    got = run(backend, x, wt, None, gy, case[7], case[6], choice)
    ref = reference_f64(x, wt, None, gy, case[7], case[6])
    assert got[3] is None
    for a, r in zip(got[:3], ref[:3]):
        assert_close(a, r, TOL[torch.float32])
    assert got[0].is_contiguous(memory_format=torch.channels_last)  # as aten: weight channels_last
    assert got[2].stride() == wt.stride()


@needs_triton
def test_grad_input_folds_the_reflected_border(poison):
    """H = W = 4 with a 7x7 kernel, padding 3: every input row and column is read by
    the padded border (rows 1 and 2 by both the top and the bottom reflection). The
    gradient without the fold (the padded gradient's interior) is far off, so the
    comparison would catch a wrong fold; the kernel matches the reference."""
    case = (1, 3, 4, 4, 4, 7, 3, 1)
    x, wt, b, gy = make_case(case, torch.float32, "contiguous", seed=11)
    ref_gx = reference_f64(x, wt, b, gy, 1, 3)[1]
    padded_grad = torch.nn.grad.conv2d_input((1, 3, 10, 10), wt.double(), gy.double(), 1)
    no_fold = padded_grad[..., 3:7, 3:7]
    assert (no_fold - ref_gx).abs().max() > 100 * TOL[torch.float32] * ref_gx.abs().max()
    top_only = no_fold.clone()  # fold the top/left reflection only: still wrong
    top_only[..., 1:4, :] += padded_grad[..., 3 - torch.arange(1, 4), 3:7]
    assert (top_only - ref_gx).abs().max() > 100 * TOL[torch.float32] * ref_gx.abs().max()
    gx = run("triton", x, wt, b, gy, 1, 3, "triton")[1]
    assert_close(gx, ref_gx, TOL[torch.float32], "grad x")
    # an exact check: unit weights and gradient give each input pixel the number of
    # (output pixel, tap) pairs that read it, an integer
    ones = run("triton", x, torch.ones_like(wt), None, torch.ones_like(gy), 1, 3, "triton")[1]
    counts = reference_f64(x, torch.ones_like(wt), None, torch.ones_like(gy), 1, 3)[1]
    assert torch.equal(ones.double(), counts)
    assert counts.sum() == 4 * 4 * 49 * 4 * 3  # output pixels x taps x output channels x input channels


@needs_triton
@pytest.mark.parametrize("layout", LAYOUTS)
def test_kernels_write_only_their_preallocated_outputs(layout):
    """The launchers write into NaN-filled, strided outputs: every element of the view
    and nothing outside it."""
    from fastgan.ops.triton import reflect_conv2d as kernels

    case = (2, 3, 5, 5, 7, 3, 1, 1)
    x, wt, b, gy = make_case(case, torch.float32, layout, seed=5)
    y_ref, gx_ref, gw_ref, _ = reference_f64(x, wt, b, gy, 1, 1)
    nan = float("nan")

    def strided(shape):
        big = torch.full((*shape[:-1], 2 * shape[-1]), nan)
        return big, big[..., ::2]

    big, out = strided(tuple(y_ref.shape))
    kernels.forward(x, wt, b, 1, 1, out)
    assert_close(out, y_ref, TOL[torch.float32])
    assert big[..., 1::2].isnan().all()

    big, out = strided(tuple(x.shape))
    kernels.grad_input(gy, wt, 1, 1, out)
    assert_close(out, gx_ref, TOL[torch.float32])
    assert big[..., 1::2].isnan().all()

    for split in (1, 3):  # 70 pixels in 3 parts of 128 -> 1 part; 140 -> 2 (uneven)
        for n in (1, 2):
            big, out = strided(tuple(wt.shape))
            kernels.grad_weight(gy[:n], x[:n], 1, 1, out, split=split)
            gw = reference_f64(x[:n], wt, b, gy[:n], 1, 1)[2]
            assert_close(out, gw, TOL[torch.float32], f"split {split}, n {n}")
            assert big[..., 1::2].isnan().all()


@needs_triton
def test_grad_weight_split_sums_every_part():
    """More pixels than one part (128 pixels each): the partial sums all count."""
    from fastgan.ops.triton import reflect_conv2d as kernels

    case = (3, 2, 2, 9, 11, 3, 1, 1)  # 297 pixels: parts of 128, 128, 41
    x, wt, b, gy = make_case(case, torch.float32, "contiguous", seed=9)
    gw_ref = reference_f64(x, wt, b, gy, 1, 1)[2]
    for split in (1, 3):
        out = torch.full_like(wt, float("nan"))
        kernels.grad_weight(gy, x, 1, 1, out, split=split)
        assert_close(out, gw_ref, TOL[torch.float32], f"split {split}")


_AOT_COMPILE = """
import json, os, sys
os.environ.pop("TRITON_INTERPRET", None)
import triton, triton.language as tl
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from fastgan.ops.triton import reflect_conv2d as K

def jit_of(k):
    while not isinstance(k, triton.runtime.jit.JITFunction):
        k = k.fn
    return k

PTRS = {"x_ptr", "w_ptr", "b_ptr", "y_ptr", "g_ptr", "dx_ptr"}
out = []
for kernel, tile, dtype, consts in [
    (K._forward_kernel, K._GPU_TILES[0], "bf16", dict(KH=3, KW=3, STRIDE=1, PAD=1, HAS_BIAS=True, ALIGNED=True)),
    (K._forward_kernel, K._GPU_TILES[-1], "fp32", dict(KH=7, KW=7, STRIDE=1, PAD=3, HAS_BIAS=True, ALIGNED=False)),
    (K._grad_input_kernel, K._GPU_TILES[0], "bf16", dict(KH=3, KW=3, STRIDE=1, PAD=1, ALIGNED=True)),
    (K._grad_input_kernel, K._GPU_TILES[-1], "fp32", dict(KH=7, KW=7, STRIDE=2, PAD=3, ALIGNED=False)),
    (K._grad_weight_kernel, K._GPU_TILES_DW[0], "bf16", dict(KH=3, KW=3, STRIDE=1, PAD=1, ALIGNED=True)),
    (K._grad_weight_kernel, K._GPU_TILES_DW[-1], "fp16", dict(KH=7, KW=7, STRIDE=2, PAD=3, ALIGNED=False)),
]:
    fn = jit_of(kernel)
    bm, bn, bk, warps, stages = tile
    consts.update(BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, ACC_DTYPE=tl.float32, WIDEN=False,
                  PRECISION="tf32" if dtype == "fp32" else "ieee")
    sig = {a: ("constexpr" if a in consts else "*" + dtype if a in PTRS else "*fp32" if a == "part_ptr" else "i32")
           for a in fn.arg_names}
    compiled = triton.compile(ASTSource(fn, sig, constexprs=consts), target=GPUTarget("cuda", 90, 32),
                              options={"num_warps": warps, "num_stages": stages})
    out.append([fn.__name__, dtype, len(compiled.asm["cubin"])])
print(json.dumps(out))
"""


def test_kernels_compile_for_a_gpu(tmp_path):
    """The interpreter does not compile: compile the kernels for sm_90 (H100/H200) here,
    ahead of time through ptxas, so a GPU-only codegen error fails on CPU-only CI too."""
    import json
    import os
    import subprocess
    import sys

    pytest.importorskip("triton")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.setdefault("TRITON_CACHE_DIR", str(tmp_path / "triton"))  # (~/.triton may not be writable)
    proc = subprocess.run([sys.executable, "-c", _AOT_COMPILE], cwd=root, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    compiled = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(compiled) == 6 and all(size > 0 for _, _, size in compiled)


def test_autotune_keys_name_every_constexpr_that_shapes_the_kernel():
    """A tile measured for one kernel size, stride, padding, bias or precision is not
    taken for another with the same sizes and strides (Triton keys only what it is told)."""
    tk = pytest.importorskip("fastgan.ops.triton.reflect_conv2d")
    variant = {"KH", "KW", "STRIDE", "PAD", "PRECISION"}
    for kernel, extra in ((tk._forward_kernel, {"HAS_BIAS"}), (tk._grad_input_kernel, set()),
                          (tk._grad_weight_kernel, set())):
        keys = set(kernel.keys)
        assert variant | extra <= keys, (kernel.fn.__name__, keys)
        assert keys <= set(kernel.fn.arg_names)  # a misspelled key would be silently ignored


# ------------------------------------------------------------------------- gradcheck


GRADCHECK_CASES = [("contiguous", (1, 2, 2, 4, 5, 3, 1, 1), "winograd"),
                   ("channels_last", (1, 2, 3, 5, 4, 3, 2, 1), "winograd"),
                   ("contiguous", (1, 2, 2, 4, 5, 3, 1, 1), "aten"),
                   ("channels_last", (1, 2, 3, 5, 4, 3, 2, 2), "aten")]


@needs_native
@pytest.mark.parametrize("layout,case,choice", GRADCHECK_CASES, ids=str)
def test_gradcheck_float64_cpu(layout, case, choice):
    x, wt, b, _ = make_case(case, torch.float64, layout, seed=1)
    stride, padding = case[7], case[6]

    def f(a, w, c):
        with ops.use_backend("cpu"), rc.force_choice(choice):
            return ops.reflect_conv2d(a, w, c, stride, padding)

    args = (x.requires_grad_(), wt.requires_grad_(), b.requires_grad_())
    assert torch.autograd.gradcheck(f, args)
    assert torch.autograd.gradgradcheck(f, args)


@needs_triton
def test_gradcheck_float64_triton_kernels():
    """The Triton kernels in float64 (interpreter), first and second order: the double
    backward runs the three custom ops through their own autograd rules."""
    x, wt, b, _ = make_case((1, 2, 3, 5, 4, 3, 1, 1), torch.float64, "contiguous", seed=4)

    def f(a, w, c):
        with ops.use_backend("triton"), rc.force_choice("triton"):
            return ops.reflect_conv2d(a, w, c, 1, 1)

    args = (x.requires_grad_(), wt.requires_grad_(), b.requires_grad_())
    assert torch.autograd.gradcheck(f, args, fast_mode=True)
    assert torch.autograd.gradgradcheck(f, args, fast_mode=True)


@pytest.mark.parametrize("backend,choice", [
    ("torch", "auto"),
    pytest.param("cpu", "winograd", marks=needs_native),
    pytest.param("cpu", "aten", marks=needs_native),
    pytest.param("triton", "triton", marks=needs_triton),
], ids=str)
def test_the_input_gradients_derivative_by_the_input_is_zeros(backend, choice):
    """x's gradient does not depend on x: autograd.grad gives zeros, as through aten's
    convolution (it raised "not used in the graph"); the cross derivatives flow."""
    x, wt, _, gy = make_case((1, 2, 3, 5, 6, 3, 1, 1), torch.float64, "contiguous", seed=5, bias=False)
    x.requires_grad_()
    wt.requires_grad_()
    with ops.use_backend(backend), rc.force_choice(choice):
        gx, gw = torch.autograd.grad(ops.reflect_conv2d(x, wt), (x, wt), gy, create_graph=True)
        (d_x,) = torch.autograd.grad((gx ** 2).sum(), x, retain_graph=True)
        # d/dw of |gx|^2 and d/dx of |gw|^2, against aten's
        across = torch.autograd.grad((gx ** 2).sum() + (gw ** 2).sum(), (x, wt))
    assert torch.equal(d_x, torch.zeros_like(x))
    xr, wr = x.detach().requires_grad_(), wt.detach().requires_grad_()
    gxr, gwr = torch.autograd.grad(F.conv2d(F.pad(xr, (1,) * 4, mode="reflect"), wr), (xr, wr), gy,
                                   create_graph=True)
    for got, want in zip(across, torch.autograd.grad((gxr ** 2).sum() + (gwr ** 2).sum(), (xr, wr))):
        torch.testing.assert_close(got, want)


@needs_triton
def test_deterministic_mode_launches_one_fixed_tile_past_the_autotuner(monkeypatch):
    """The autotuner picks each kernel's tile by timing, which can differ between processes,
    and the tile's BLOCK_K orders the float32 sums: under deterministic mode the kernels launch
    past it with their first tile (the interpreter has one tile, so the bits match here)."""
    from fastgan.ops.triton import reflect_conv2d as kernels

    case = CASES[1]
    padding, stride = case[6], case[7]
    x, wt, b, gy = make_case(case, torch.float32, "contiguous", seed=3)
    autotuned = run("triton", x, wt, b, gy, stride, padding, "triton")
    for kernel in (kernels._forward_kernel, kernels._grad_input_kernel, kernels._grad_weight_kernel):
        monkeypatch.setattr(kernel, "run", lambda *a, **kw: pytest.fail("autotuned under deterministic mode"))
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        fixed = run("triton", x, wt, b, gy, stride, padding, "triton")
    finally:
        torch.use_deterministic_algorithms(previous)
    for got, expected in zip(fixed, autotuned):
        assert torch.equal(got, expected)


@needs_triton
def test_deterministic_mode_takes_the_first_tile_that_fits_the_device(monkeypatch):
    """A tile the device cannot hold (a float64 tile's shared memory on an A100) fails at its
    launch, before the kernel runs: the next tile of the list is taken, in the list's order,
    as the autotuner skips such a tile."""
    from triton import Config
    from triton.runtime.errors import OutOfResources

    from fastgan.ops.triton import reflect_conv2d as kernels

    fits = kernels._configs(kernels._GPU_TILES)[0]  # (the interpreter's one tile)
    too_big = Config({"BLOCK_M": 128, "BLOCK_N": 128, "BLOCK_K": 64}, num_warps=8, num_stages=3)
    monkeypatch.setattr(kernels, "_configs", lambda tiles: [too_big, fits])
    past_autotuner, launched = kernels._forward_kernel.fn, []

    class ShortOfSharedMemory:
        def __getitem__(self, grid):
            def run(*args, **kwargs):
                launched.append(kwargs["BLOCK_M"])
                if kwargs["BLOCK_M"] == too_big.kwargs["BLOCK_M"]:
                    raise OutOfResources(196608, 166912, "shared memory")
                return past_autotuner[grid](*args, **kwargs)
            return run

    monkeypatch.setattr(kernels._forward_kernel, "fn", ShortOfSharedMemory())
    case = CASES[0]
    x, wt, b, _ = make_case(case, torch.float64, "contiguous", seed=5)
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        with torch.no_grad(), ops.use_backend("triton"), rc.force_choice("triton"):
            y = ops.reflect_conv2d(x, wt, b, case[7], case[6])
    finally:
        torch.use_deterministic_algorithms(previous)
    assert launched == [too_big.kwargs["BLOCK_M"], fits.kwargs["BLOCK_M"]]
    expected = F.conv2d(F.pad(x, (case[6],) * 4, mode="reflect"), wt, b, case[7])
    torch.testing.assert_close(y, expected, rtol=1e-10, atol=1e-10)


# ------------------------------------------------- the eager path and the custom op


def _grads_through(fn, x, wt, b, gy):
    leaves = [t.detach().requires_grad_() for t in (x, wt, b)]
    y = fn(*leaves)
    y.backward(gy)
    return y, [y.detach()] + [t.grad for t in leaves]


@needs_native
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("choice,measured", [("winograd", None), ("auto", "winograd"), ("auto", "aten")])
def test_eager_path_equals_the_custom_op_bitwise(choice, measured, layout, monkeypatch):
    """In eager mode the public function calls the custom op's own functions through an
    autograd.Function (no dispatcher): the same kernels and choices, so the same bits. Under
    "auto" the measurement is made to pick `measured` in every phase (timed, the pick at this
    tiny shape was either, so the test failed or passed by the clock). Where it picks aten the
    eager path takes the bias's gradient from the weight gradient's oneDNN call, as the
    composition that the shape runs from its second call on (_backward): that one gradient is
    then the composition's, where the op's is grad's sum."""
    from fastgan.ops import _measure

    if measured is not None:
        monkeypatch.setattr(_measure, "candidate_seconds",
                            lambda candidates, device: {name: 1.0 if name == measured else 2.0 for name in candidates})
    x, wt, b, gy = make_case((2, 5, 6, 11, 9, 3, 1, 1), torch.float32, layout, seed=21)
    rc.clear_selection_cache()
    with ops.use_backend("cpu"), rc.force_choice(choice):
        eager_y, eager = _grads_through(lambda a, w, c: ops.reflect_conv2d(a, w, c, 1, 1), x, wt, b, gy)
        op_y, op = _grads_through(lambda a, w, c: torch.ops.fastgan.reflect_conv2d(a, w, c, 1, 1, "winograd", choice),
                                  x, wt, b, gy)
    assert type(eager_y.grad_fn).__name__ == "_EagerReflectConv2dBackward"  # a shape's first call: measured
    assert "fastgan" in type(op_y.grad_fn).__name__ and "Eager" not in type(op_y.grad_fn).__name__
    if measured is not None:
        assert {entry["choice"] for entry in rc.selection_cache().values()} == {measured}
    if measured == "aten":
        composition_bias_grad = _unfused_grads(x, wt, b, gy, 1)[1][3]
        assert torch.equal(eager[3], composition_bias_grad) and torch.equal(op[3], rc._bias_grad(gy))
        eager, op = eager[:3], op[:3]
    for name, e, o in zip(("y", "grad x", "grad weight", "grad bias"), eager, op):
        assert torch.equal(e, o), name
        assert e.stride() == o.stride(), name


def _unfused_grads(x, wt, b, gy, padding):
    return _grads_through(lambda a, w, c: torch.nn.functional.conv2d(
        torch.nn.functional.pad(a, (padding,) * 4, mode="reflect"), w, c), x, wt, b, gy)


@needs_native
@pytest.mark.parametrize("layout", LAYOUTS)
def test_where_only_aten_runs_the_eager_path_is_the_unfused_composition(layout, monkeypatch):
    """Forced aten, a kernel the fused path cannot run (7x7 on the cpu back end), and a
    shape whose measured choices all came out aten (after its first backward): the eager
    path is pad + conv2d under torch's autograd, bit for bit, in the op's layouts; a
    shape where a fused kernel won keeps the autograd.Function."""
    case = (2, 5, 6, 11, 9, 3, 1, 1)
    x, wt, b, gy = make_case(case, torch.float32, layout, seed=25)
    want_y, want = _unfused_grads(x, wt, b, gy, 1)

    def through_op():
        return _grads_through(lambda a, w, c: ops.reflect_conv2d(a, w, c, 1, 1), x, wt, b, gy)

    rc.clear_selection_cache()
    with ops.use_backend("cpu"), rc.force_choice("aten"):
        y, got = through_op()
    assert type(y.grad_fn).__name__ == "ConvolutionBackward0"
    for name, g, w in zip(("y", "grad x", "grad weight", "grad bias"), got, want):
        assert torch.equal(g, w) and g.stride() == w.stride(), name

    x7, wt7, b7, _ = make_case((1, 4, 5, 13, 12, 7, 3, 1), torch.float32, layout, seed=26)
    with ops.use_backend("cpu"):
        y7 = ops.reflect_conv2d(x7, wt7.requires_grad_(), b7, 1, 3)
    assert type(y7.grad_fn).__name__ == "ConvolutionBackward0"

    for winner, functions in (("aten", ["_EagerReflectConv2dBackward", "ConvolutionBackward0"]),
                              ("winograd", ["_EagerReflectConv2dBackward"] * 2)):
        rc.clear_selection_cache()
        times = {"aten": 1.0, "winograd": 2.0} if winner == "aten" else {"aten": 2.0, "winograd": 1.0}
        monkeypatch.setattr(rc, "_decide", _fixed_decide(times))
        seen = []
        with ops.use_backend("cpu"), rc.force_choice("auto"):
            for _ in range(2):
                y, got = through_op()
                seen.append(type(y.grad_fn).__name__)
        assert seen == functions, winner
        if winner == "aten":
            for name, g, w in zip(("y", "grad x", "grad weight", "grad bias"), got, want):
                assert torch.equal(g, w), name
        functions_applied = []  # without gradients the forward's choice decides alone
        monkeypatch.setattr(rc._EagerReflectConv2d, "apply", lambda *a: functions_applied.append(1) or rc._forward(
            *a[:7])[0])
        with torch.no_grad(), ops.use_backend("cpu"):
            y = ops.reflect_conv2d(x, wt, b, 1, 1)
        assert functions_applied == ([] if winner == "aten" else [1]), winner
        if winner == "aten":
            assert torch.equal(y, want_y.detach())
        monkeypatch.undo()
    rc.clear_selection_cache()  # no made-up measurements left for other tests


@needs_native
def test_phases_run_unmeasured_record_nothing(monkeypatch):
    """A phase first met inside a CUDA graph capture runs aten without a measurement: no
    conclusion is drawn from it, and the shape keeps the autograd.Function."""
    rc.clear_selection_cache()
    monkeypatch.setattr(rc, "_decide", lambda choice, kernel, problem, key, device, fused, unfused: "aten")
    x, wt, b, gy = make_case((2, 5, 6, 11, 9, 3, 1, 1), torch.float32, "contiguous", seed=27)
    with ops.use_backend("cpu"), rc.force_choice("auto"):
        for _ in range(2):
            y, _ = _grads_through(lambda a, w, c: ops.reflect_conv2d(a, w, c, 1, 1), x, wt, b, gy)
            assert type(y.grad_fn).__name__ == "_EagerReflectConv2dBackward"
    assert rc._ALL_ATEN == {}


def _fixed_decide(times: dict):
    """rc._decide with the given measured times: the faster one, cached as a measurement is."""
    def decide(choice, kernel, problem, key, device, fused, unfused):
        picked = min(times, key=times.get)
        rc._CHOICES.record(key, picked, times)
        return picked
    return decide


@needs_native
@pytest.mark.parametrize("choice", ["aten", "auto"])
def test_eager_aten_path_pads_once(monkeypatch, choice):
    """Where the forward runs pad + the vendor convolution (a 7x7 kernel has no
    Winograd kernel), the eager path keeps the padded x for the weight gradient instead
    of padding again: the unfused path's work and memory, no more."""
    pads = []

    def counting_pad(x, padding):
        pads.append(padding)
        return real_pad(x, padding)

    real_pad = rc._pad
    monkeypatch.setattr(rc, "_pad", counting_pad)
    x, wt, b, gy = make_case((1, 4, 5, 13, 12, 7, 3, 1), torch.float32, "contiguous", seed=23)
    with ops.use_backend("cpu"), rc.force_choice(choice):
        _, got = _grads_through(lambda a, w, c: ops.reflect_conv2d(a, w, c, 1, 3), x, wt, b, gy)
    assert len(pads) == 1
    want = [t.detach().requires_grad_() for t in (x, wt, b)]
    y = torch.nn.functional.conv2d(torch.nn.functional.pad(want[0], (3,) * 4, mode="reflect"), want[1], want[2])
    y.backward(gy)
    for name, g, w in zip(("y", "grad x", "grad weight", "grad bias"), got, [y.detach()] + [t.grad for t in want]):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5, msg=name)


@needs_native
def test_eager_aten_path_under_cpu_autocast_keeps_the_cast_dtype():
    """CPU autocast runs reflection_pad2d in float32: the kept padded x must still be the
    bf16 the convolution ran on, so that its gradients are bf16 convolutions too."""
    x, wt, b, gy = make_case((1, 4, 5, 13, 12, 7, 3, 1), torch.float32, "contiguous", seed=24)
    leaves = [t.detach().requires_grad_() for t in (x, wt, b)]
    with ops.use_backend("cpu"), torch.autocast("cpu", torch.bfloat16):
        y = ops.reflect_conv2d(*leaves, 1, 3)
    assert y.dtype == torch.bfloat16
    y.backward(gy.bfloat16())
    ref = reference_f64(x, wt, b, gy, 1, 3)
    for name, got, want in zip(("y", "grad x", "grad weight", "grad bias"), [y.detach()] + [t.grad for t in leaves],
                               ref):
        assert got.dtype == (torch.bfloat16 if name == "y" else torch.float32), name
        scale = want.abs().max()
        assert (got.double() - want).abs().max() <= 2e-2 * scale, name


@needs_native
def test_under_cpu_autocast_a_weight_is_cast_once_per_region():
    """Two calls in one autocast region (a generator run twice) share autocast's cached bf16
    copy of the weight, as F.conv2d's would: one cast forward, one gradient copied back."""
    from torch.utils._python_dispatch import TorchDispatchMode

    x, wt, b, gy = make_case((1, 4, 5, 13, 12, 3, 1, 1), torch.float32, "contiguous", seed=25)
    wt.requires_grad_()

    class WeightCasts(TorchDispatchMode):
        count = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func is torch.ops.aten._to_copy.default and args[0].shape == wt.shape:
                WeightCasts.count += 1
            return func(*args, **(kwargs or {}))

    with WeightCasts(), ops.use_backend("cpu"):
        with torch.autocast("cpu", torch.bfloat16):
            y = ops.reflect_conv2d(x, wt, b, 1, 1) + ops.reflect_conv2d(x.flip(3), wt, b, 1, 1)
        y.backward(gy.bfloat16())
    assert WeightCasts.count == 2  # bf16 forward, float32 gradient
    want = wt.grad.clone()
    wt.grad = None
    xb, wb, bb = x.bfloat16(), wt.bfloat16(), b.bfloat16()  # one cast of the weight for both calls
    expected = reference.reflect_conv2d(xb, wb, bb, 1, 1) + reference.reflect_conv2d(xb.flip(3), wb, bb, 1, 1)
    expected.backward(gy.bfloat16())
    assert torch.equal(y, expected) and torch.equal(want, wt.grad)


def test_under_cpu_autocast_mixed_inputs_are_refused_as_without_it():
    """The autocast path's own pad + conv2d is only for float x next to float32 weights;
    a float64 x still gets the op's ValueError (autocast leaves float64 alone)."""
    with torch.autocast("cpu", torch.bfloat16), pytest.raises(ValueError, match="share one floating dtype"):
        ops.reflect_conv2d(torch.randn(1, 3, 6, 7, dtype=torch.float64), torch.randn(4, 3, 3, 3))


@needs_native
def test_compile_and_fake_tensors_take_the_custom_op():
    """What needs the registered op gets it: torch.compile's tracing (no graph break, as
    the compile tests check) and fake tensors (its fake rule)."""
    x, wt, _, _ = make_case((1, 3, 4, 6, 5, 3, 1, 1), torch.float32, "contiguous", seed=22)
    assert takes_eager_path(x, wt, None)
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode() as mode:
        fx, fw = mode.from_tensor(x), mode.from_tensor(wt)
        assert not takes_eager_path(fx, fw, None)
        with ops.use_backend("cpu"):
            fake = ops.reflect_conv2d(fx, fw, None, 1, 1)
    assert fake.shape == (1, 4, 6, 5)
    seen = []

    def traced(a, w):
        seen.append(takes_eager_path(a, w, None))
        return a

    torch.compile(traced, backend="eager", fullgraph=True)(x, wt)
    assert seen == [False]


# --------------------------------------------------------------------------- opcheck


@needs_triton
@pytest.mark.parametrize("choice", ["triton", "aten"])
def test_opcheck(choice):
    case = (1, 3, 4, 4, 5, 3, 1, 1)
    x, wt, b, gy = make_case(case, torch.float32, "contiguous", seed=6)
    x.requires_grad_()
    wt.requires_grad_()
    b.requires_grad_()
    torch.library.opcheck(torch.ops.fastgan.reflect_conv2d.default, (x, wt, b, 1, 1, "triton", choice))
    torch.library.opcheck(torch.ops.fastgan.reflect_conv2d_grad_input.default,
                          (gy.requires_grad_(), x.detach(), wt, 1, 1, "triton", choice))
    torch.library.opcheck(torch.ops.fastgan.reflect_conv2d_grad_weight.default,
                          (gy, x, wt.detach(), 1, 1, "triton", choice))


@needs_triton
@pytest.mark.parametrize("choice", ["triton", "aten"])
def test_opcheck_layouts(choice):
    """channels_last bf16 input, no bias, stride 2; and a channels_last weight."""
    x, wt, _, _ = make_case((1, 3, 4, 5, 6, 3, 1, 2), torch.bfloat16, "channels_last", seed=7, bias=False)
    torch.library.opcheck(torch.ops.fastgan.reflect_conv2d.default,
                          (x.requires_grad_(), wt.requires_grad_(), None, 2, 1, "triton", choice))
    x, wt, b, _ = make_case((1, 3, 4, 5, 6, 3, 1, 1), torch.float32, "contiguous", seed=8)
    torch.library.opcheck(torch.ops.fastgan.reflect_conv2d.default,
                          (x, wt.contiguous(memory_format=torch.channels_last), b, 1, 1, "triton", choice))


# --------------------------------------------------------------------- torch.compile


def resnet_block(x, w0, w1, w2, b2):
    """CycleGAN's generator in small: a 7x7/pad 3 stem, a residual 3x3/pad 1 conv, a
    7x7/pad 3 head with bias and tanh."""
    h = F.relu(F.instance_norm(ops.reflect_conv2d(x, w0, None, 1, 3)))
    h = h + F.instance_norm(ops.reflect_conv2d(h, w1, None, 1, 1))
    return torch.tanh(ops.reflect_conv2d(h, w2, b2, 1, 3))


def _block_inputs(dtype=torch.float32, device="cpu"):
    g = torch.Generator().manual_seed(21)
    x = torch.randn(1, 3, 7, 9, generator=g)
    w0 = torch.randn(4, 3, 7, 7, generator=g) / 12
    w1 = torch.randn(4, 4, 3, 3, generator=g) / 6
    w2 = torch.randn(3, 4, 7, 7, generator=g) / 14
    b2 = torch.randn(3, generator=g)
    return [t.to(device=device, dtype=dtype) for t in (x, w0, w1, w2, b2)]


def _run_block(fn, inputs):
    """Output and parameter gradients (the image needs none, as in a generator)."""
    args = [inputs[0]] + [t.detach().requires_grad_() for t in inputs[1:]]
    out = fn(*args)
    out.square().mean().backward()
    return [out.detach()] + [a.grad for a in args[1:]]


def _compiled_matches_eager(backend, choice="auto", compile_backend="aot_eager", device="cpu", tol=1e-5):
    inputs = _block_inputs(device=device)
    with ops.use_backend(backend), rc.force_choice(choice):
        return compiled_matches_eager(resnet_block, lambda fn: _run_block(fn, inputs), compile_backend, tol, tol)


@pytest.mark.parametrize("backend,choice", [(b, "triton" if b == "triton" else "auto") for b in CPU_BACKENDS])
def test_compile_fullgraph_block(backend, choice):
    eager = _compiled_matches_eager(backend, choice)
    ref = _run_block(resnet_block, [t.double() for t in _block_inputs()])
    for e, r in zip(eager, ref):
        assert_close(e, r.detach(), 1e-4)


# ------------------------------------------------------------- the measured selection


@needs_triton
def test_selection_measures_once_per_shape_and_reuses(monkeypatch):
    rc.clear_selection_cache()
    timed = []
    real_time = _measure.candidate_seconds

    def spy(cands, device):
        timed.extend(cands.values())
        return real_time(cands, device)

    monkeypatch.setattr(_measure, "candidate_seconds", spy)
    case = (1, 3, 4, 4, 5, 3, 1, 1)
    x, wt, b, gy = make_case(case, torch.float32, "contiguous", seed=12)
    first = run("triton", x, wt, b, gy, 1, 1, "auto")
    assert len(timed) == 6  # fused and unfused: forward, grad x, grad weight
    cache = rc.selection_cache()
    assert sorted(k[0] for k in cache) == ["forward", "grad_input", "grad_weight"]
    for entry in cache.values():
        assert entry["choice"] in ("triton", "aten")
        assert set(entry["times"]) == {"triton", "aten"}
        assert entry["choice"] == min(entry["times"], key=entry["times"].get)

    timed.clear()
    again = run("triton", x, wt, b, gy, 1, 1, "auto")
    assert timed == [] and rc.selection_cache() == cache  # reused, not measured again
    for a, c in zip(first, again):
        torch.testing.assert_close(a, c, rtol=1e-6, atol=1e-6)

    # another layout (or shape, dtype) is another entry
    x2, wt2, b2, gy2 = make_case(case, torch.float32, "channels_last", seed=12)
    run("triton", x2, wt2, b2, gy2, 1, 1, "auto")
    assert len(timed) == 6 and len(rc.selection_cache()) == 6
    rc.clear_selection_cache()
    assert rc.selection_cache() == {}


@needs_triton
@pytest.mark.parametrize("cached", ["triton", "aten"])
def test_selection_runs_the_cached_choice(cached, monkeypatch):
    """A cached decision is what runs: the Triton launcher is called exactly when the
    cache says "triton", and the measurement is not repeated."""
    from fastgan.ops.triton import reflect_conv2d as kernels

    rc.clear_selection_cache()
    case = (1, 3, 4, 4, 5, 3, 1, 1)
    x, wt, b, gy = make_case(case, torch.float32, "contiguous", seed=13)
    y_shape = (1, 4, 4, 5)
    for phase, tensors in (("forward", (x, wt, b)), ("grad_input", (gy.new_empty(y_shape), x, wt)),
                           ("grad_weight", (gy.new_empty(y_shape), x, wt))):
        rc._CHOICES.record(rc._signature(phase, "triton", 1, 1, *tensors), cached, {})
    calls = []

    def spy(name):
        real = getattr(kernels, name)

        def launcher(*args, **kwargs):
            calls.append(name)
            return real(*args, **kwargs)
        return launcher

    for name in ("forward", "grad_input", "grad_weight"):
        monkeypatch.setattr(kernels, name, spy(name))
    monkeypatch.setattr(_measure, "candidate_seconds", lambda cands, device: pytest.fail("measured a cached shape"))
    got = run("triton", x, wt, b, gy.contiguous(), 1, 1, "auto")
    assert sorted(calls) == (["forward", "grad_input", "grad_weight"] if cached == "triton" else [])
    ref = reference_f64(x, wt, b, gy, 1, 1)
    for a, r in zip(got, ref):
        assert_close(a, r, TOL[torch.float32])
    rc.clear_selection_cache()


@needs_triton
@pytest.mark.parametrize("case", [CASES[0], CASES[3]], ids=case_id)
def test_forcing_each_choice_gives_the_same_result(case):
    x, wt, b, gy = make_case(case, torch.float32, "channels_last", seed=14)
    fused = run("triton", x, wt, b, gy, case[7], case[6], "triton")
    unfused = run("triton", x, wt, b, gy, case[7], case[6], "aten")
    for name, a, c in zip(("y", "grad x", "grad weight", "grad bias"), fused, unfused):
        assert a.stride() == c.stride(), name
        assert_close(a, c.double(), 2e-5, name)


def test_choice_names_are_checked():
    with pytest.raises(ValueError, match="unknown choice 'cudnn'"):
        with rc.force_choice("cudnn"):
            pass
    assert rc._CHOICES.choice == "auto"
    with rc.force_choice("aten"):
        with rc.force_choice("triton"):
            assert rc._CHOICES.choice == "triton"
        assert rc._CHOICES.choice == "aten"
    assert rc._CHOICES.choice == "auto"


# ------------------------------------------------ the cpu back end's Winograd kernels

# 3x3 at stride 1 (what Winograd takes): partial tiles in both directions, padding 0, 1
# and 2, one tile and less than one, and 64 channels (longer sums, the float32 error grows)
WINOGRAD_CASES = [c for c in CASES if c[5] == 3 and c[7] == 1] + [
    (2, 3, 5, 6, 10, 3, 0, 1),
    (1, 4, 3, 9, 6, 3, 2, 1),
    (3, 2, 3, 2, 3, 3, 1, 1),
    (1, 64, 48, 13, 17, 3, 1, 1),
]


@needs_native
@pytest.mark.parametrize("case", WINOGRAD_CASES, ids=case_id)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=case_id)
def test_matches_reference_winograd(dtype, layout, case, poison):
    check("cpu", case, dtype, layout, choice="winograd")


@needs_native
@pytest.mark.parametrize("case", [(1, 256, 256, 32, 32, 3, 1, 1), (1, 64, 64, 128, 128, 3, 1, 1)], ids=case_id)
def test_winograd_float32_error_at_cyclegan_shapes(case):
    """The bound README states: within 2e-5 of the largest value against float64 (the
    output, both gradients) at the generator's residual and 64-channel shapes."""
    x, _, b, gy = make_case(case, torch.float32, "channels_last", seed=23)
    wt = make_case(case, torch.float32, "contiguous", seed=24)[1] * 2 ** 0.5  # He init's scale
    got = run("cpu", x, wt, b, gy, 1, 1, "winograd")
    for name, a, r in zip(("y", "grad x", "grad weight", "grad bias"), got, reference_f64(x, wt, b, gy, 1, 1)):
        assert_close(a, r, 2e-5, name)


@needs_native
@pytest.mark.parametrize("case,dtype,why", [
    ((1, 3, 4, 5, 7, 7, 3, 1), torch.float32, "3x3 kernels at stride 1"),
    ((2, 5, 6, 9, 11, 3, 1, 2), torch.float32, "3x3 kernels at stride 1"),
    ((2, 3, 4, 9, 11, 3, 1, 1), torch.bfloat16, "float32 and float64"),
], ids=str)
def test_winograd_refuses_what_it_cannot_run(case, dtype, why):
    """Forced, it says why; under auto the same calls run aten (no measurement)."""
    x, wt, b, gy = make_case(case, dtype, "contiguous", seed=17)
    with pytest.raises(RuntimeError, match=f"'winograd' is unavailable: .*{why}"):
        run("cpu", x, wt, b, gy, case[7], case[6], "winograd")
    rc.clear_selection_cache()
    got = run("cpu", x, wt, b, gy, case[7], case[6], "auto")
    assert rc.selection_cache() == {}
    for a, r in zip(got, reference_f64(x, wt, b, gy, case[7], case[6])):
        assert_close(a, r, TOL[dtype])


@needs_native
def test_other_back_ends_fused_kernel_is_an_error():
    x, wt, b, gy = make_case(CASES[0], torch.float32, "contiguous", seed=18)
    with pytest.raises(RuntimeError, match="'triton' is not this back end's fused kernel"):
        run("cpu", x, wt, b, gy, 1, 1, "triton")


@needs_native
@pytest.mark.parametrize("value", [float("inf"), float("nan")], ids=str)
def test_winograd_makes_non_finite_at_least_what_aten_does(value):
    """Winograd's transforms add and subtract a tile's values: one inf or NaN input makes its
    4x4 output tiles NaN where aten has a few infs (the module docstring says so). No output
    or gradient that aten makes non-finite comes out finite, and the other tiles are aten's."""
    x, wt, b, gy = make_case((1, 2, 3, 11, 10, 3, 1, 1), torch.float32, "contiguous", seed=6)
    x = x.detach().clone()
    x[0, 1, 5, 6] = value
    got = run("cpu", x, wt, b, gy, 1, 1, "winograd")
    want = run("torch", x, wt, b, gy, 1, 1)
    for name, a, r in zip(("y", "grad x", "grad weight", "grad bias"), got, want):
        assert not (r.isfinite().logical_not() & a.isfinite()).any(), name
        both = a.isfinite() & r.isfinite()
        torch.testing.assert_close(a[both], r[both], rtol=1e-4, atol=1e-4, msg=name)
    assert got[0].isnan().sum() > want[0].isfinite().logical_not().sum()  # the tile's spread, as said


@needs_native
def test_cpu_selection_measures_winograd_against_aten():
    rc.clear_selection_cache()
    case = WINOGRAD_CASES[-1]
    x, wt, b, gy = make_case(case, torch.float32, "channels_last", seed=19)
    got = run("cpu", x, wt, b, gy, 1, 1, "auto")
    cache = rc.selection_cache()
    assert sorted(k[0] for k in cache) == ["forward", "grad_input", "grad_weight"]
    for key, entry in cache.items():
        assert key[1] == "winograd" and set(entry["times"]) == {"winograd", "aten"}
        assert entry["choice"] == min(entry["times"], key=entry["times"].get)
    for name, a, r in zip(("y", "grad x", "grad weight", "grad bias"), got, reference_f64(x, wt, b, gy, 1, 1)):
        assert_close(a, r, TOL[torch.float32], name)
    rc.clear_selection_cache()


@needs_native
def test_winograd_opcheck():
    x, wt, b, gy = make_case((1, 3, 4, 6, 5, 3, 1, 1), torch.float32, "contiguous", seed=20)
    x.requires_grad_()
    wt.requires_grad_()
    torch.library.opcheck(torch.ops.fastgan.reflect_conv2d.default, (x, wt, b, 1, 1, "winograd", "winograd"))
    torch.library.opcheck(torch.ops.fastgan.reflect_conv2d_grad_input.default,
                          (gy, x.detach(), wt, 1, 1, "winograd", "winograd"))
    torch.library.opcheck(torch.ops.fastgan.reflect_conv2d_grad_weight.default,
                          (gy, x, wt.detach(), 1, 1, "winograd", "winograd"))
    u = torch.ops.fastgan.conv3x3_winograd_weight(wt.detach())
    torch.library.opcheck(torch.ops.fastgan.conv3x3_winograd_weight.default, (wt.detach(),))
    for padding in (1, 2):
        torch.library.opcheck(torch.ops.fastgan.conv3x3_winograd.default, (x.detach(), wt.detach(), b, padding))
        torch.library.opcheck(torch.ops.fastgan.conv3x3_winograd.default,
                              (x.detach(), wt.detach(), None, padding, u))
        grad = torch.randn(1, 4, 4 + 2 * padding, 3 + 2 * padding)
        for kept in (None, u):
            torch.library.opcheck(torch.ops.fastgan.conv3x3_winograd_grad_input.default,
                                  (grad, x.detach(), wt.detach(), padding, kept))
        for channels_last in (False, True):
            torch.library.opcheck(torch.ops.fastgan.conv3x3_winograd_grad_weight.default,
                                  (grad, x.detach(), padding, channels_last))


def padded_conv_grad_input(x, weight, grad, padding):
    """x's gradient of conv2d(reflection_pad(x)) by autograd (float64: the reference)."""
    x = x.detach().double().requires_grad_()
    padded = F.pad(x, (padding,) * 4, mode="reflect") if padding else x
    return torch.autograd.grad(F.conv2d(padded, weight.double()), x, grad.double())[0]


@needs_native
@pytest.mark.parametrize("shape,padding", [
    ((1, 3, 4, 5, 7), 1), ((2, 5, 6, 9, 11), 1), ((1, 2, 2, 3, 3), 1), ((1, 4, 3, 8, 8), 2), ((1, 4, 3, 13, 10), 3),
    ((1, 4, 3, 9, 9), 4), ((1, 3, 2, 4, 4), 0), ((2, 8, 16, 21, 18), 2),
], ids=str)
def test_winograd_grad_input_is_the_adjoint_of_the_forward(shape, padding):
    """conv3x3_winograd_grad_input against autograd of conv2d(pad(x)) in float64, every
    padding the kernel's passes keep apart (up to 4: more passes), odd sizes, batches;
    float32 within the Winograd forward's rounding; kept transform bit for bit."""
    n, c, k, h, w = shape
    g = torch.Generator().manual_seed(24)
    x = torch.randn(n, c, h, w, generator=g, dtype=torch.float64)
    wt = torch.randn(k, c, 3, 3, generator=g, dtype=torch.float64)
    grad = torch.randn(n, k, h + 2 * padding - 2, w + 2 * padding - 2, generator=g, dtype=torch.float64)
    want = padded_conv_grad_input(x, wt, grad, padding)
    got = torch.ops.fastgan.conv3x3_winograd_grad_input(grad, x, wt, padding)
    assert got.shape == x.shape and got.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12 * float(want.abs().max()))
    got32 = torch.ops.fastgan.conv3x3_winograd_grad_input(grad.float(), x.float(), wt.float(), padding)
    torch.testing.assert_close(got32.double(), want, rtol=0, atol=2e-5 * float(want.abs().max()))
    for weight in (wt, wt.contiguous(memory_format=torch.channels_last)):
        u = torch.ops.fastgan.conv3x3_winograd_weight(weight)
        kept = torch.ops.fastgan.conv3x3_winograd_grad_input(grad, x, weight, padding, u)
        torch.testing.assert_close(kept, got, rtol=0, atol=0)


@needs_native
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_winograd_with_a_kept_weight_transform_is_the_same_convolution(dtype):
    """conv3x3_winograd given conv3x3_winograd_weight's transform: bit for bit what it
    computes from the weight itself, for any weight layout."""
    g = torch.Generator().manual_seed(23)
    x, wt = torch.randn(2, 6, 9, 7, generator=g, dtype=dtype), torch.randn(5, 6, 3, 3, generator=g, dtype=dtype)
    for weight in (wt, wt.contiguous(memory_format=torch.channels_last)):
        for padding in (1, 2):
            u = torch.ops.fastgan.conv3x3_winograd_weight(weight)
            assert u.shape == (36, 5, 6) and u.is_contiguous()
            own = torch.ops.fastgan.conv3x3_winograd(x, weight, None, padding)
            kept = torch.ops.fastgan.conv3x3_winograd(x, weight, None, padding, u)
            torch.testing.assert_close(kept, own, rtol=0, atol=0)


@needs_native
def test_winograd_native_op_checks_its_arguments():
    x, wt = torch.randn(1, 3, 5, 6), torch.randn(4, 3, 3, 3)
    with pytest.raises(RuntimeError, match="float32 or float64 only"):
        torch.ops.fastgan.conv3x3_winograd(x.bfloat16(), wt.bfloat16(), None, 1)
    with pytest.raises(RuntimeError, match=r"weight must be \(K, 3, 3, 3\)"):
        torch.ops.fastgan.conv3x3_winograd(x, torch.randn(4, 3, 5, 5), None, 1)
    with pytest.raises(RuntimeError, match="must be smaller than the input's height and width"):
        torch.ops.fastgan.conv3x3_winograd(x, wt, None, 5)
    with pytest.raises(RuntimeError, match="grad must be"):
        torch.ops.fastgan.conv3x3_winograd_grad_weight(torch.randn(1, 4, 3, 3), x, 1)
    with pytest.raises(RuntimeError, match="input and weight must share dtype and device"):
        torch.ops.fastgan.conv3x3_winograd(x, wt.double(), None, 1)
    with pytest.raises(RuntimeError, match="grad and input must share dtype and device"):
        torch.ops.fastgan.conv3x3_winograd_grad_weight(torch.randn(1, 4, 5, 6).double(), x, 1)
    u = torch.ops.fastgan.conv3x3_winograd_weight(wt)
    grad = torch.randn(1, 4, 5, 6)
    for wrong in (u.transpose(1, 2), u.double(), u[:, :3]):
        with pytest.raises(RuntimeError, match=r"transformed_weight must be a contiguous \(36, 4, 3\) tensor"):
            torch.ops.fastgan.conv3x3_winograd(x, wt, None, 1, wrong)
        with pytest.raises(RuntimeError, match=r"transformed_weight must be a contiguous \(36, 4, 3\) tensor"):
            torch.ops.fastgan.conv3x3_winograd_grad_input(grad, x, wt, 1, wrong)
    with pytest.raises(RuntimeError, match="grad must be"):
        torch.ops.fastgan.conv3x3_winograd_grad_input(torch.randn(1, 4, 3, 3), x, wt, 1)
    with pytest.raises(RuntimeError, match=r"weight must be \(4, 3, 3, 3\)"):
        torch.ops.fastgan.conv3x3_winograd_grad_input(grad, x, wt.transpose(0, 1), 1)
    with pytest.raises(RuntimeError, match="grad, input and weight must share dtype and device"):
        torch.ops.fastgan.conv3x3_winograd_grad_input(grad.double(), x, wt, 1)
    with pytest.raises(RuntimeError, match="float32 or float64 only"):
        torch.ops.fastgan.conv3x3_winograd_weight(wt.bfloat16())
    with pytest.raises(RuntimeError, match="3x3 filter bank"):
        torch.ops.fastgan.conv3x3_winograd_weight(torch.randn(4, 3, 5, 5))


# ------------------------------------------------------------------ arguments, autocast


@pytest.mark.parametrize("backend,choice", [
    ("torch", "auto"),
    pytest.param("cpu", "auto", marks=needs_native),
    pytest.param("triton", "triton", marks=needs_triton),
], ids=str)
def test_a_kernel_that_is_not_square(backend, choice):
    """3x5 and 1x3 kernels: the output's height and width each from their own side."""
    g = torch.Generator().manual_seed(8)
    x = torch.randn(1, 2, 6, 7, generator=g, dtype=torch.float64)
    for kh, kw in ((3, 5), (1, 3)):
        wt = torch.randn(3, 2, kh, kw, generator=g, dtype=torch.float64)
        gy = torch.randn(1, 3, 6 + 4 - kh + 1, 7 + 4 - kw + 1, generator=g, dtype=torch.float64)
        got = run(backend, x, wt, None, gy, 1, 2, choice)
        want = reference_f64(x, wt, None, gy, 1, 2)
        for name, a, r in zip(("y", "grad x", "grad weight"), got, want):
            assert_close(a, r, 1e-10, name)
    with pytest.raises(ValueError, match=r"kernel \(1, 7\) is larger than the padded input \(8, 5\)"):
        with ops.use_backend(backend):
            ops.reflect_conv2d(torch.randn(1, 2, 6, 3), torch.randn(3, 2, 1, 7), None, 1, 1)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_one_input_channel_keeps_convolutions_layout(backend):
    """x and weight of one input channel are contiguous and channels_last at once: the output
    is laid out as F.conv2d lays it out (contiguous), not taken for channels_last."""
    for shape, k in (((1, 1, 8, 8), 3), ((2, 1, 8, 9), 7)):
        x, wt = torch.randn(shape), torch.randn(4, 1, k, k)
        want = F.conv2d(F.pad(x, (k // 2,) * 4, mode="reflect"), wt)
        with ops.use_backend(backend):
            assert ops.reflect_conv2d(x, wt, None, 1, k // 2).stride() == want.stride(), (shape, backend)


def test_bad_arguments_are_errors():
    x, wt = torch.randn(1, 3, 5, 6), torch.randn(4, 3, 3, 3)
    with pytest.raises(ValueError, match="smaller than the input's height and width"):
        ops.reflect_conv2d(x, wt, None, 1, 5)
    with pytest.raises(ValueError, match="groups=1 only"):
        ops.reflect_conv2d(x, torch.randn(4, 2, 3, 3))
    with pytest.raises(ValueError, match="stride must be an int >= 1"):
        ops.reflect_conv2d(x, wt, None, 0)
    with pytest.raises(ValueError, match="bias must have shape"):
        ops.reflect_conv2d(x, wt, torch.randn(3))
    with pytest.raises(ValueError, match="4-d"):
        ops.reflect_conv2d(x[0], wt)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_no_input_or_output_channels_or_mixed_dtypes_are_refused_on_every_back_end(backend):
    """As F.conv2d refuses them; the native and Triton back ends used to return the bias for
    no channels, and Triton took a float64 bias to float32 tensors; with no output channels
    the measured choice took aten's error for a failed candidate and returned an empty
    tensor."""
    x, wt = torch.randn(2, 3, 6, 7), torch.randn(4, 3, 3, 3)
    with ops.use_backend(backend):
        with pytest.raises(ValueError, match=r"x \(2, 0, 6, 7\) has no input channels"):
            ops.reflect_conv2d(torch.randn(2, 0, 6, 7), torch.randn(4, 0, 3, 3), torch.randn(4))
        with pytest.raises(ValueError, match=r"weight \(0, 3, 3, 3\) has no output channels"):
            ops.reflect_conv2d(x, torch.randn(0, 3, 3, 3))
        for args in ((x, wt, torch.randn(4, dtype=torch.float64)), (x, wt.double(), None),
                     (x.long(), wt.long(), None)):
            with pytest.raises(ValueError, match="x, weight and bias must share one floating dtype and device"):
                ops.reflect_conv2d(*args)


# autocast casts floating inputs to its dtype, float64 ones excepted, as for F.conv2d
@pytest.mark.parametrize("dtype,cast_to,seed", [(torch.float32, torch.bfloat16, 15),
                                                (torch.float64, torch.float64, 16)])
@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_autocast_casts_like_conv2d(backend, dtype, cast_to, seed):
    x, wt, b, _ = make_case(CASES[0], dtype, "contiguous", seed=seed)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        expected = reference.reflect_conv2d(x, wt, b, 1, 1)
        with ops.use_backend(backend), rc.force_choice("triton" if backend == "triton" else "auto"):
            got = ops.reflect_conv2d(x, wt, b, 1, 1)
    assert expected.dtype == got.dtype == cast_to
    assert_close(got, expected.double(), TOL[cast_to])


# ------------------------------------------------------------------------------ CUDA

# CycleGAN's: residual 3x3 at 64x64 (256 channels), the 7x7 stem from 3 channels and the
# 7x7 head from 64 channels at 256x256, and the residual conv at batch 16.
GPU_CASES = [
    (1, 256, 256, 64, 64, 3, 1, 1),
    (1, 3, 64, 256, 256, 7, 3, 1),
    (1, 64, 64, 256, 256, 7, 3, 1),
    (1, 64, 3, 256, 256, 7, 3, 1),
    (16, 256, 256, 64, 64, 3, 1, 1),
]


@pytest.fixture
def no_tf32():
    saved = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32 = saved


@pytest.mark.gpu
@pytest.mark.parametrize("case", GPU_CASES, ids=case_id)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=case_id)
@pytest.mark.parametrize("choice", ["triton", "auto"])
def test_matches_reference_cuda(choice, dtype, layout, case, no_tf32):
    check("triton", case, dtype, layout, device="cuda", choice=choice)


@pytest.mark.gpu
@pytest.mark.parametrize("case", [GPU_CASES[0], GPU_CASES[2]], ids=case_id)
def test_tf32_cuda(case):
    saved = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = True
    try:
        check("triton", case, torch.float32, "channels_last", device="cuda", choice="triton", tol=TF32_TOL)
    finally:
        torch.backends.cudnn.allow_tf32 = saved


@pytest.mark.gpu
@pytest.mark.parametrize("case", CASES, ids=case_id)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=case_id)
def test_kernels_cuda_small_and_strided(dtype, layout, case, no_tf32):
    """The CPU matrix on the GPU too (every stride, kernel, aligned or not); one test per
    case, as each autotunes its own kernels (within the GPU suite's per-test timeout)."""
    check("triton", case, dtype, layout, device="cuda", choice="triton")


@pytest.mark.gpu
def test_deterministic_mode_cuda_takes_the_fused_kernel_without_measuring(monkeypatch, no_tf32):
    """Under torch.use_deterministic_algorithms(True), aten's path fails on CUDA
    (reflection_pad2d_backward has no deterministic CUDA kernel): the fixed choice there is the
    Triton kernel, which gives the same bits twice and is never measured."""
    monkeypatch.setattr(rc._CHOICES, "measure", lambda *a, **k: pytest.fail("measured under deterministic mode"))
    case = GPU_CASES[0]
    x, wt, b, gy = make_case(case, torch.float32, "channels_last", device="cuda", seed=37)
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        first = run("triton", x, wt, b, gy, 1, 1, "auto")
        again = run("triton", x, wt, b, gy, 1, 1, "auto")
    finally:
        torch.use_deterministic_algorithms(previous)
    fused = run("triton", x, wt, b, gy, 1, 1, "triton")  # its tile picked by the autotuner
    for a, c, f in zip(first, again, fused):
        assert torch.equal(a, c)
        assert_close(a, f, 1e-4, "deterministic against autotuned")  # (another tile sums in another order)


@pytest.mark.gpu
def test_auto_selection_cuda_is_cached():
    rc.clear_selection_cache()
    case = GPU_CASES[0]
    x, wt, b, gy = make_case(case, torch.bfloat16, "channels_last", device="cuda", seed=31)
    first = run("triton", x, wt, b, gy, 1, 1, "auto")
    cache = rc.selection_cache()
    assert sorted(k[0] for k in cache) == ["forward", "grad_input", "grad_weight"]
    for entry in cache.values():
        assert entry["choice"] == min(entry["times"], key=entry["times"].get)
        assert all(0 < t < 1 for t in entry["times"].values())
    again = run("triton", x, wt, b, gy, 1, 1, "auto")
    assert rc.selection_cache() == cache
    for a, c in zip(first, again):
        torch.testing.assert_close(a, c)


@pytest.mark.gpu
@pytest.mark.parametrize("choice", ["triton", "auto"])
def test_cuda_graph_capture(choice, no_tf32):
    case = (2, 64, 64, 32, 32, 3, 1, 1)
    x, wt, b, gy = make_case(case, torch.float32, "channels_last", device="cuda", seed=32)
    xg, wg, bg = (t.detach().requires_grad_() for t in (x, wt, b))
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream), ops.use_backend("triton"), rc.force_choice(choice):
        for _ in range(2):  # warm up: compiles, autotunes, measures
            xg.grad = wg.grad = bg.grad = None
            ops.reflect_conv2d(xg, wg, bg, 1, 1).backward(gy)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    xg.grad = wg.grad = bg.grad = None
    with torch.cuda.graph(graph), ops.use_backend("triton"), rc.force_choice(choice):
        y = ops.reflect_conv2d(xg, wg, bg, 1, 1)
        y.backward(gy)
    x2, _, _, gy2 = make_case(case, torch.float32, "channels_last", device="cuda", seed=33)
    with torch.no_grad():
        xg.copy_(x2)
        gy.copy_(gy2)
    graph.replay()
    torch.cuda.synchronize()
    ref = reference_f64(x2, wt, b, gy2, 1, 1)
    for a, r in zip((y.detach(), xg.grad, wg.grad, bg.grad), ref):
        assert_close(a, r, TOL[torch.float32])


@pytest.mark.gpu
@pytest.mark.parametrize("choice", ["triton", "auto"])
def test_compile_fullgraph_inductor_cuda(choice, no_tf32):
    _compiled_matches_eager("triton", choice, compile_backend="inductor", device="cuda", tol=1e-4)
