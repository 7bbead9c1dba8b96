"""fastgan.ops.cycle_losses on every back end against the float64 reference.

Every back end available here (torch, cpu, triton through the interpreter on CPU
tensors) x dtype x layout, forward and every gradient, on fresh random images with
exact ties (sign(0) = 0); outputs poisoned with NaN (deterministic mode fills every
fresh allocation with NaN); with and without identity terms, with the real images
requiring grad too, A and B of different sizes; gradcheck, opcheck,
torch.compile(fullgraph=True), determinism across runs and thread counts, the errors.
CUDA and Triton-on-GPU tests carry @pytest.mark.gpu.
"""

from __future__ import annotations

import pytest
import torch

import fastgan.ops as ops
from fastgan.ops import reference
from tests.ops.compiled import compiled_matches_eager
from tests.ops.fresh_interpreter import run_json, same_code_here
from tests.ops.inputs import away_from_zero, case_id, judged_in_float64, seed_of, subnormal_atol

DTYPES = [torch.float32, torch.float64, torch.bfloat16, torch.float16]
RTOL = {torch.float64: 1e-12, torch.float32: 1e-5, torch.bfloat16: 1e-2, torch.float16: 2e-3}
LAYOUTS = ["contiguous", "channels_last", "slice", "mixed"]
CPU_BACKENDS = ops.available_backends("cpu", op="cycle_losses")
NATIVE_CPU = ["cpu"] if "cpu" in CPU_BACKENDS else []
TRITON_CPU = ["triton"] if "triton" in CPU_BACKENDS else []
NAMES = ("real_A", "rec_A", "real_B", "rec_B", "idt_A", "idt_B")
LAMBDAS = dict(lambda_A=10.0, lambda_B=7.0, lambda_identity=0.3)
# upstream gradient of each term (cycle_A, cycle_B, idt_A, idt_B): each term's scale shows
COEFFS = (1.0, -2.0, 3.0, 0.5)


def make_images(shape_A, dtype, layout="contiguous", device="cpu", seed=0, idt=True, shape_B=None,
                tie_fraction=0.1):
    """real_A, rec_A, real_B, rec_B, idt_A, idt_B: random, never zero, each generated
    image equal to its real one at about tie_fraction of the elements (exact ties)."""
    shape_B = shape_A if shape_B is None else shape_B
    g = torch.Generator().manual_seed(seed)

    def rand(shape):
        full = (*shape[:-1], 2 * shape[-1] + 1) if layout in ("slice", "mixed") else shape
        return away_from_zero(torch.randn(full, generator=g, dtype=torch.float64))

    def tie(x, real):
        return torch.where(torch.rand(x.shape, generator=g, dtype=torch.float64) < tie_fraction, real, x)

    real_A, real_B = rand(shape_A), rand(shape_B)
    rec_A, rec_B = tie(rand(shape_A), real_A), tie(rand(shape_B), real_B)
    idt_A, idt_B = tie(rand(shape_B), real_B), tie(rand(shape_A), real_A)
    images = [t.to(device=device, dtype=dtype) for t in (real_A, rec_A, real_B, rec_B, idt_A, idt_B)]
    cl = torch.channels_last
    if layout == "channels_last":
        images = [t.contiguous(memory_format=cl) for t in images]
    elif layout == "slice":
        images = [t[..., 1::2] for t in images]
    elif layout == "mixed":  # every side mixes a slice, channels_last and contiguous
        images = [t[..., 1::2] for t in images]
        images[1] = images[1].contiguous(memory_format=cl)   # rec_A channels_last
        images[0] = images[0].contiguous()                     # real_A contiguous
        images[4] = images[4].contiguous(memory_format=cl)   # idt_A channels_last
        # real_B, rec_B, idt_B stay slices: side B takes idt_A's order, side A rec_A's
    for t in images:
        assert (t != 0).all()
    if tie_fraction:
        assert (images[1] == images[0]).any() and (images[5] == images[0]).any()
    if not idt:
        images[4] = images[5] = None
    return images


def reference_f64(images, lambdas=LAMBDAS, coeffs=COEFFS):
    """Values and gradients (None where not asked for) of the reference, in float64,
    computed on the CPU (CUDA's division by the element count multiplies by its
    reciprocal: one bit off the exact quotient the bitwise checks compare with), on
    the images' device."""
    device = images[0].device
    leaves = [None if t is None else t.detach().cpu().double().requires_grad_(t.requires_grad) for t in images]
    values = reference.cycle_losses(*leaves, **lambdas)
    wanted = [t for t in leaves if t is not None and t.requires_grad]
    if not wanted:
        return values.detach().to(device), [None] * 6
    grads = torch.autograd.grad((values * torch.tensor(coeffs, dtype=torch.float64)).sum(), wanted,
                                allow_unused=True)
    it = iter(grads)
    return values.detach().to(device), [next(it).to(device) if t is not None and t.requires_grad else None
                                        for t in leaves]


def run_backend(backend, images, lambdas=LAMBDAS, coeffs=COEFFS, grad_of=(1, 3, 4, 5)):
    """Values and gradients (None where not asked for) of fastgan.ops.cycle_losses."""
    leaves = [None if t is None else t.detach().requires_grad_(i in grad_of) for i, t in enumerate(images)]
    with ops.use_backend(backend):
        out = ops.cycle_losses(*leaves, **lambdas)
    if coeffs is None:
        out.values.sum().backward()  # the engine's use: an expanded (stride 0) grad
    else:
        (out.values * torch.tensor(coeffs, dtype=out.values.dtype, device=out.values.device)).sum().backward()
    return out, [None if t is None else t.grad for t in leaves]


def check_against_reference(backend, images, lambdas=LAMBDAS, coeffs=COEFFS, grad_of=(1, 3, 4, 5)):
    dtype = images[0].dtype
    out, grads = run_backend(backend, images, lambdas, coeffs, grad_of)
    leaves = [None if t is None else t.detach().requires_grad_(i in grad_of) for i, t in enumerate(images)]
    ref, ref_grads = reference_f64(leaves, lambdas, (1.0,) * 4 if coeffs is None else coeffs)
    values = out.values
    assert values.shape == (4,) and values.dtype == dtype and values.device == images[0].device
    assert torch.equal(torch.stack([out.cycle_A, out.cycle_B, out.idt_A, out.idt_B]), values)
    rtol = RTOL[dtype]
    torch.testing.assert_close(values.double(), ref, rtol=rtol, atol=1e-30)
    for name, t, g, r in zip(NAMES, images, grads, ref_grads):
        if r is None:
            assert g is None, f"{name} got a gradient it should not have"
            continue
        assert g is not None and g.shape == t.shape and g.dtype == dtype, name
        assert g.isfinite().all(), f"{name}: unwritten (NaN) gradient elements"
        if name.startswith("real"):
            # -(sum of two terms), each rounded: tolerance (plus an absolute floor for sums near 0)
            floor = rtol * r.abs().max().item()
            torch.testing.assert_close(g.double(), r, rtol=rtol, atol=floor, msg=name)
        else:
            ties = (t == images[2 if name in ("rec_B", "idt_A") else 0])
            assert (g[ties] == 0).all(), f"{name}: sign(0) = 0 at ties"
            torch.testing.assert_close(g.double(), r, rtol=rtol, atol=subnormal_atol(dtype), msg=name)
            # sign * scale with scale rounded once: the dtype's rounding of the reference (whose
            # identity terms round twice, as the reference's L1 * lambda * lambda_identity: in
            # float64 a bit apart)
            if backend in ("cpu", "cuda") and not (dtype == torch.float64 and name.startswith("idt")):
                assert torch.equal(g, r.to(device=g.device, dtype=dtype)), name
    return out, grads


# ------------------------------------------------------------------------- CPU tensors


def test_backends_here():
    assert ops.native_loaded, "fastgan._C did not load: run `make build`"
    assert NATIVE_CPU == ["cpu"]
    assert TRITON_CPU == ["triton"], "triton runs on CPU tensors through TRITON_INTERPRET=1 (tests/conftest.py)"
    with ops.use_backend("auto"):
        assert ops.backend_for("cycle_losses", "cpu") == "cpu"


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("backend,dtype", judged_in_float64(CPU_BACKENDS, DTYPES))
def test_matches_reference(backend, dtype, layout, poison):
    images = make_images((2, 3, 17, 13), dtype, layout, seed=seed_of(dtype, layout))
    check_against_reference(backend, images)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=case_id)
@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_matches_reference_large(backend, dtype, poison):
    """Several CPU chunks (16384 indices) and Triton tiles; a numel no vector width divides."""
    images = make_images((2, 3, 61, 67), dtype, "channels_last", seed=seed_of("large", dtype))
    check_against_reference(backend, images)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_sum_backward_and_default_lambdas(backend, poison):
    """values.sum().backward() (an expanded grad) and the reference's default lambdas."""
    images = make_images((2, 3, 9, 11), torch.float32, seed=3)
    lambdas = dict(lambda_A=10.0, lambda_B=10.0, lambda_identity=0.5)
    with ops.use_backend(backend):
        default = ops.cycle_losses(*images)
    torch.testing.assert_close(default.values.double(), reference_f64(images, lambdas)[0], rtol=1e-5, atol=0)
    check_against_reference(backend, images, lambdas, coeffs=None)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_without_identity_terms(backend, poison):
    images = make_images((2, 3, 9, 11), torch.float32, idt=False, seed=4)
    out, grads = check_against_reference(backend, images)
    assert out.idt_A.item() == 0 and out.idt_B.item() == 0
    assert grads[4] is None and grads[5] is None
    # lambda_identity == 0: the identity images are not read and get no gradient
    with_idt = make_images((2, 3, 9, 11), torch.float32, seed=4)
    leaves = [t.detach().requires_grad_(i > 0) for i, t in enumerate(with_idt)]
    with ops.use_backend(backend):
        zero = ops.cycle_losses(*leaves, lambda_A=10.0, lambda_B=7.0, lambda_identity=0.0)
    zero.values.sum().backward()
    torch.testing.assert_close(zero.values, out.values, rtol=0, atol=0)
    assert zero.idt_A.item() == 0 and zero.idt_B.item() == 0
    assert leaves[4].grad is None and leaves[5].grad is None
    assert torch.equal(leaves[1].grad, grads[1])


@pytest.mark.parametrize("idt", [True, False], ids=["idt", "no_idt"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=case_id)
@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_real_images_require_grad(backend, dtype, idt, poison):
    images = make_images((2, 3, 9, 11), dtype, "mixed", idt=idt, seed=seed_of("real", dtype, idt))
    check_against_reference(backend, images, grad_of=range(6))
    check_against_reference(backend, images, grad_of=(0,))  # only real_A


@pytest.mark.parametrize("shapes", [((2, 3, 8, 9), (2, 1, 8, 9)), ((1, 1, 5, 7), (2, 3, 40, 300))],
                         ids=["A_larger", "B_larger"])
@pytest.mark.parametrize("idt", [False, True], ids=["no_idt", "idt"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=case_id)
@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_sides_of_different_sizes(backend, dtype, idt, shapes, poison):
    """The sides have different element counts: input_nc != output_nc (identity off), or
    another trainer's A and B images of different sizes or batches (identity terms too,
    on the larger side's elements past the smaller side's count)."""
    images = make_images(shapes[0], dtype, shape_B=shapes[1], idt=idt, seed=5)
    check_against_reference(backend, images, grad_of=range(6 if idt else 4))


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_empty_is_nan_like_aten(backend):
    images = [torch.randn(0, 3, requires_grad=True) for _ in range(4)] + [None, None]
    with ops.use_backend(backend):
        out = ops.cycle_losses(*images)
    assert out.cycle_A.isnan() and out.cycle_B.isnan() and out.idt_A == 0 and out.idt_B == 0
    out.values.sum().backward()
    assert images[1].grad.shape == (0, 3)


def check_non_finite_upstream_gradient_as_torch(backend, dtype, device="cpu"):
    """Each term's upstream gradient inf, finite and negative, NaN, -inf: every gradient as the
    torch back end's (aten's sign * scale), NaN where it has NaN (0 * inf at ties) and the same
    signed zeros elsewhere (0 * a negative scale is -0); the finite values bit for bit on the
    CPU, to the dtype's rounding on a GPU (aten divides by the element count through its
    reciprocal there: a bit off the kernels' quotient)."""
    images = make_images((2, 3, 5, 7), dtype, device=device, seed=13, tie_fraction=0.3)
    upstream = torch.tensor([float("inf"), -2.0, float("nan"), float("-inf")], dtype=dtype, device=device)
    grads = {}
    for name in ("torch", backend):
        leaves = [t.detach().requires_grad_() for t in images]
        with ops.use_backend(name):
            ops.cycle_losses(*leaves, **LAMBDAS).values.backward(upstream)
        grads[name] = [t.grad for t in leaves]
    for name, got, want in zip(NAMES, grads[backend], grads["torch"]):
        assert torch.equal(got.isnan(), want.isnan()), name
        assert got.isnan().any() or name in ("rec_B",), name  # (the one term with a finite upstream)
        known = ~want.isnan()
        if device == "cpu":
            assert torch.equal(got[known], want[known]), name
        else:
            torch.testing.assert_close(got[known], want[known], rtol=RTOL[dtype], atol=0, msg=name)
        assert torch.equal(got[known].signbit(), want[known].signbit()), name
    assert (grads[backend][3] == 0).any() and grads[backend][3][grads[backend][3] == 0].signbit().all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=case_id)
@pytest.mark.parametrize("backend", [b for b in CPU_BACKENDS if b != "torch"])
def test_a_non_finite_upstream_gradient_gives_torchs_nans_and_signed_zeros(backend, dtype):
    check_non_finite_upstream_gradient_as_torch(backend, dtype)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_second_derivative_in_the_images_is_zeros(backend):
    """The gradients are piecewise constant in the images: autograd.grad of a function of them
    gives zeros there (as F.l1_loss's), not "a tensor not used in the graph"."""
    images = [t.requires_grad_() for t in make_images((2, 3, 4), torch.float64, seed=8, tie_fraction=0.0)]
    with ops.use_backend(backend):
        grads = torch.autograd.grad(ops.cycle_losses(*images, **LAMBDAS).values.sum(), images, create_graph=True)
    mix = sum((g * torch.randn_like(g)).sum() for g in grads)
    second = torch.autograd.grad(mix, images)
    assert len(second) == 6 and all(s.shape == t.shape and not s.any() for s, t in zip(second, images))


@pytest.mark.parametrize("backend", NATIVE_CPU + TRITON_CPU)
def test_gradcheck_float64(backend):
    # the interpreter is slow: triton gets fewer elements and gradcheck's fast mode (a
    # random projection of the Jacobian rather than every column of it)
    shape, fast = ((2, 3, 4, 5), False) if backend == "cpu" else ((2, 2, 3, 4), True)
    images = make_images(shape, torch.float64, seed=6)  # ties too: both sides give 0
    images = [t.requires_grad_() for t in images]

    def f(*xs):
        with ops.use_backend(backend):
            return ops.cycle_losses(*xs, **LAMBDAS).values

    assert torch.autograd.gradcheck(f, tuple(images), fast_mode=fast)
    # second order, away from ties (there the gradient, a sign, jumps)
    images = [t.requires_grad_() for t in make_images(shape, torch.float64, seed=7, tie_fraction=0.0)]
    assert torch.autograd.gradgradcheck(f, tuple(images), fast_mode=fast)


@pytest.mark.parametrize("backend", NATIVE_CPU + TRITON_CPU)
def test_deterministic_across_runs_and_thread_counts(backend):
    """Bitwise the same values and gradients: every run, and 1 or 2 CPU threads."""
    shape = (8, 3, 64, 65) if backend == "cpu" else (2, 3, 40, 41)  # cpu: 7 chunks
    images = make_images(shape, torch.float32, seed=8)
    saved = torch.get_num_threads()
    try:
        results = []
        for threads in (1, 2, 1, 2):
            torch.set_num_threads(threads)
            out, grads = run_backend(backend, images)
            results.append([out.values, *[g for g in grads if g is not None]])
    finally:
        torch.set_num_threads(saved)
    for other in results[1:]:
        for a, b in zip(results[0], other):
            assert torch.equal(a, b)


@pytest.mark.parametrize("backend", NATIVE_CPU + TRITON_CPU)
def test_forward_without_grad_writes_no_signs(backend):
    """Under no_grad the forward skips the sign codes; a backward through an op call told
    not to write them recomputes them."""
    images = make_images((2, 3, 9, 11), torch.float32, seed=9)
    op = torch.ops.fastgan.cycle_losses if backend == "cpu" else torch.ops.fastgan_triton.cycle_losses
    with torch.no_grad(), ops.use_backend(backend):
        values = ops.cycle_losses(*images, **LAMBDAS).values
    losses, signs = op(*images, *LAMBDAS.values(), False)
    assert signs.numel() == 0 and torch.equal(losses, values)
    losses, signs = op(*images, *LAMBDAS.values(), True)
    assert signs.shape == (images[0].numel(),) and signs.dtype == torch.uint8 and torch.equal(losses, values)
    codes = (signs.long() >> 0) & 3  # cycle_A's codes, in rec_A's (contiguous) order
    d = (images[1] - images[0]).flatten()
    assert torch.equal(codes, (d > 0).long() + 2 * (d < 0).long())
    leaves = [t.detach().requires_grad_(i == 1) for i, t in enumerate(images)]
    losses, signs = op(*leaves, *LAMBDAS.values(), False)  # told wrong: no codes
    assert signs.numel() == 0
    losses.sum().backward()
    ref = reference_f64(leaves, coeffs=(1.0,) * 4)[1][1]
    assert torch.equal(leaves[1].grad, ref.float())


@pytest.mark.skipif(not NATIVE_CPU, reason="fastgan._C not built")
@pytest.mark.parametrize("idt,layout,grad_of", [(True, "mixed", (1, 3, 4, 5)), (True, "contiguous", range(6)),
                                                (False, "channels_last", (0, 1, 3))],
                         ids=["idt-mixed", "idt-all_grads", "no_idt"])
def test_eager_path_equals_the_registered_op_bitwise(idt, layout, grad_of):
    """In eager mode the native back end runs its kernels and autograd rules through an
    autograd.Function below the autograd dispatch (fastgan/ops/_eager.py): the same bits
    as the registered op's autograd, which torch.compile and fake tensors use."""
    images = make_images((2, 3, 9, 7), torch.float32, layout, seed=12, idt=idt)
    weights = torch.tensor(COEFFS)

    def through(fn):
        leaves = [None if t is None else t.detach().requires_grad_(i in grad_of) for i, t in enumerate(images)]
        values = fn(*leaves)
        (values * weights).sum().backward()
        return values, [values.detach()] + [t.grad for t in leaves if t is not None and t.requires_grad]

    with ops.use_backend("cpu"):
        eager_values, eager = through(lambda *t: ops.cycle_losses(*t, **LAMBDAS).values)
    op_values, op = through(lambda *t: torch.ops.fastgan.cycle_losses(*t, *LAMBDAS.values(), True)[0])
    assert type(eager_values.grad_fn).__name__ == "_EagerCycleLossesBackward"
    assert "Eager" not in type(op_values.grad_fn).__name__
    assert len(eager) == len(op) == 1 + len([i for i in grad_of if idt or i < 4])
    for e, o in zip(eager, op):
        assert torch.equal(e, o) and e.stride() == o.stride()


_NATIVE_OPS = [("cpu", "fastgan")] if NATIVE_CPU else []
_TRITON_OPS = [("triton", "fastgan_triton")] if TRITON_CPU else []


@pytest.mark.parametrize("idt,layout", [(True, "mixed"), (False, "contiguous")], ids=["idt-mixed", "no_idt"])
@pytest.mark.parametrize("backend,namespace", _NATIVE_OPS + _TRITON_OPS)
def test_opcheck(backend, namespace, idt, layout):
    _opcheck(getattr(torch.ops, namespace), make_images((2, 3, 6, 5), torch.float32, layout, idt=idt, seed=10))


def _opcheck(ns, images):
    idt = images[4] is not None
    leaves = [None if t is None else t.detach().requires_grad_(i % 2 == 1 or i >= 4)
              for i, t in enumerate(images)]
    lam = tuple(LAMBDAS.values())
    for compute_signs in (True, False):
        torch.library.opcheck(ns.cycle_losses.default, (*leaves, *lam, compute_signs))
    detached = [None if t is None else t.detach() for t in images]
    _, signs = ns.cycle_losses(*detached, *lam, True)
    grad = torch.tensor(COEFFS, device=images[0].device)
    for mask in ([False, True, False, True, idt, idt], [True] * 6, [True, False, False, False, False, False]):
        torch.library.opcheck(ns.cycle_losses_backward.default, (grad, signs, *detached, *lam, mask))
    torch.library.opcheck(ns.cycle_losses_backward.default,
                          (grad.clone().requires_grad_(), signs, *detached, *lam, [True] * 6))


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("backend,namespace", _NATIVE_OPS + _TRITON_OPS)
def test_fake_matches_real_layout(backend, namespace, layout):
    from torch._subclasses.fake_tensor import FakeTensorMode

    ns = getattr(torch.ops, namespace)
    images = make_images((2, 3, 6, 5), torch.float32, layout, seed=11)
    lam = tuple(LAMBDAS.values())
    _, signs = ns.cycle_losses(*images, *lam, True)
    real = ns.cycle_losses_backward(torch.ones(4), signs, *images, *lam, [True] * 6)
    with FakeTensorMode() as mode:
        fake_images = [mode.from_tensor(t) for t in images]
        fake_signs = ns.cycle_losses(*fake_images, *lam, True)[1]
        fake = ns.cycle_losses_backward(torch.ones(4), fake_signs, *fake_images, *lam, [True] * 6)
    assert fake_signs.shape == signs.shape and fake_signs.dtype == signs.dtype
    for r, f in zip(real, fake):
        assert r.shape == f.shape and r.stride() == f.stride() and r.dtype == f.dtype


@pytest.mark.parametrize("backend,namespace", _NATIVE_OPS + _TRITON_OPS)
def test_fake_signs_cover_the_larger_side(backend, namespace):
    """Domains of other sizes (--preprocess none, under torch.compile): the fake rule's sign
    codes are as many as the real kernel's, sized by the larger side."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    ns = getattr(torch.ops, namespace)
    a, b = torch.rand(1, 3, 8, 8), torch.rand(1, 3, 12, 12)
    lam = tuple(LAMBDAS.values())
    _, signs = ns.cycle_losses(a, a.clone(), b, b.clone(), None, None, *lam, True)
    with FakeTensorMode() as mode:
        fa, fb = mode.from_tensor(a), mode.from_tensor(b)
        fake_signs = ns.cycle_losses(fa, fa.clone(), fb, fb.clone(), None, None, *lam, True)[1]
    assert fake_signs.shape == signs.shape and fake_signs.dtype == signs.dtype


# ------------------------------------------------------------------------------ errors


def test_mismatched_shapes_are_clear_errors():
    a, b = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    with pytest.raises(ValueError, match="rec_A and real_A must have the same shape"):
        ops.cycle_losses(a, torch.randn(2, 3, 4, 5), b, b)
    with pytest.raises(ValueError, match="rec_B and real_B must have the same shape"):
        ops.cycle_losses(a, a, b, torch.randn(3, 4, 4))  # no silent broadcasting
    with pytest.raises(ValueError, match="idt_A and real_B must have the same shape"):
        ops.cycle_losses(a, a, b, b, torch.randn(2, 1, 4, 4), a)
    with pytest.raises(ValueError, match="idt_B and real_A must have the same shape"):
        ops.cycle_losses(a, a, b, b, b, torch.randn(1, 3, 4, 4))
    with pytest.raises(ValueError, match="both idt_A and idt_B or neither"):
        ops.cycle_losses(a, a, b, b, idt_A=b)
    with pytest.raises(ValueError, match="rec_A is torch.int64; the images must be floating point"):
        ops.cycle_losses(a, a.long(), b, b)
    with pytest.raises(TypeError, match="lambda_A is a constant"):  # it would get no gradient
        ops.cycle_losses(a, a, b, b, lambda_A=torch.tensor(2.0, requires_grad=True))
    with pytest.raises(ValueError, match="lambda_B is one number"):
        ops.cycle_losses(a, a, b, b, lambda_B=torch.ones(2))


@pytest.mark.parametrize("half", [torch.bfloat16, torch.float16], ids=case_id)
@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_under_autocast_half_precision_runs_in_float32_as_l1_loss(backend, half):
    """Autocast runs F.l1_loss in float32: with every image bf16 (fp16) the terms are float32
    values (each weighted F.l1_loss of the images there), not ones rounded to bf16."""
    images = make_images((2, 3, 6, 5), half, seed=9)
    real_A, rec_A, real_B, rec_B, idt_A, idt_B = images
    l1 = torch.nn.functional.l1_loss
    with torch.autocast("cpu", dtype=half):
        with ops.use_backend(backend):
            got = ops.cycle_losses(*images, **LAMBDAS)
        lam_A, lam_B, lam_idt = LAMBDAS["lambda_A"], LAMBDAS["lambda_B"], LAMBDAS["lambda_identity"]
        expected = torch.stack([l1(rec_A, real_A) * lam_A, l1(rec_B, real_B) * lam_B,
                                l1(idt_A, real_B) * lam_B * lam_idt, l1(idt_B, real_A) * lam_A * lam_idt])
    assert got.values.dtype == expected.dtype == torch.float32
    torch.testing.assert_close(got.values, expected, rtol=1e-6, atol=0)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_mixed_dtypes_are_promoted_as_torch_promotes_them(backend):
    """bf16 reconstructions against float32 images (autocast): computed in float32, the
    gradients in each image's own dtype, equal to the float32 computation."""
    g = torch.Generator().manual_seed(3)
    real_A, real_B = (torch.randn(2, 3, 6, 5, generator=g) for _ in range(2))
    rec_A, rec_B, idt_A, idt_B = (torch.randn(2, 3, 6, 5, generator=g).bfloat16().requires_grad_()
                                  for _ in range(4))
    with ops.use_backend(backend):
        mixed = ops.cycle_losses(real_A, rec_A, real_B, rec_B, idt_A, idt_B, 10.0, 10.0, 0.5)
        mixed.values.sum().backward()
        wide = [t.detach().float().requires_grad_() for t in (rec_A, rec_B, idt_A, idt_B)]
        plain = ops.cycle_losses(real_A, wide[0], real_B, wide[1], wide[2], wide[3], 10.0, 10.0, 0.5)
        plain.values.sum().backward()
    assert mixed.values.dtype == torch.float32
    torch.testing.assert_close(mixed.values, plain.values, rtol=0, atol=0)
    for narrow, w in zip((rec_A, rec_B, idt_A, idt_B), wide):
        assert narrow.grad.dtype == torch.bfloat16
        torch.testing.assert_close(narrow.grad, w.grad.bfloat16(), rtol=0, atol=0)


@pytest.mark.skipif(not NATIVE_CPU, reason="fastgan._C not built")
def test_native_op_checks_inputs():
    a = torch.randn(2, 3, 4, 4)
    lam = tuple(LAMBDAS.values())
    with pytest.raises(RuntimeError, match="rec_A and real_A must have the same shape"):
        torch.ops.fastgan.cycle_losses(a, a[..., :3], a, a, None, None, *lam, True)
    with pytest.raises(RuntimeError, match="same dtype|real_A's dtype"):
        torch.ops.fastgan.cycle_losses(a, a, a.double(), a.double(), None, None, *lam, True)
    with pytest.raises(RuntimeError, match="both idt_A and idt_B or neither"):
        torch.ops.fastgan.cycle_losses(a, a, a, a, a, None, *lam, True)
    with pytest.raises(RuntimeError, match="floating point"):
        torch.ops.fastgan.cycle_losses(a.long(), a.long(), a.long(), a.long(), None, None, *lam, True)
    with pytest.raises(RuntimeError, match="signs must be the uint8 codes"):
        torch.ops.fastgan.cycle_losses_backward(torch.ones(4), torch.zeros(3, dtype=torch.uint8), a, a, a, a,
                                                None, None, *lam, [True] * 6)


# ------------------------------------------------------------------------ torch.compile


def _cycle_step(real_A, rec_A, real_B, rec_B, idt_A, idt_B):
    """What the engine does with the terms: log them, add them to the generator loss."""
    terms = ops.cycle_losses(real_A, torch.tanh(rec_A), real_B, rec_B * 2.0, idt_A, idt_B, 10.0, 7.0, 0.5)
    return terms.values.sum() + 0.5 * terms.cycle_A, terms.values


def _compiled_matches_eager(backend, compile_backend, device="cpu", idt=True):
    images = make_images((2, 3, 8, 9), torch.float32, "channels_last", device=device, idt=idt, seed=12)

    def run(fn):
        leaves = [None if t is None else t.detach().requires_grad_(i % 2 == 1 or i >= 4)
                  for i, t in enumerate(images)]
        loss, values = fn(*leaves)
        loss.backward()
        return [loss.detach(), values.detach()] + [t.grad for t in leaves if t is not None and t.grad is not None]

    with ops.use_backend(backend):
        eager = compiled_matches_eager(_cycle_step, run, compile_backend, rtol=1e-6, atol=1e-7)
    assert len(eager) == (2 + (4 if idt else 2))


@pytest.mark.parametrize("idt", [True, False], ids=["idt", "no_idt"])
@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_compile_fullgraph_aot_eager(backend, idt):
    _compiled_matches_eager(backend, "aot_eager", idt=idt)


@pytest.mark.slow  # a cold inductor compile takes ~15 s here
@pytest.mark.parametrize("backend", NATIVE_CPU)
def test_compile_fullgraph_inductor(backend):
    _compiled_matches_eager(backend, "inductor")


# --------------------------------------------------------------------------------- CUDA

GPU_BACKENDS = ["torch", "cuda", "triton"]


def _gpu_backend_ready(backend):
    if backend not in ops.available_backends("cuda", op="cycle_losses"):
        pytest.fail(f"back end {backend!r} unavailable on the GPU: "
                    f"{ops.registry._problem('cycle_losses', backend, 'cuda')}")


@pytest.mark.parametrize("shape", [(2, 3, 17, 13), (8, 3, 256, 257)], ids=case_id)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES, ids=case_id)
@pytest.mark.parametrize("backend", GPU_BACKENDS)
@pytest.mark.gpu
def test_matches_reference_cuda(backend, dtype, layout, shape, poison):
    _gpu_backend_ready(backend)
    images = make_images(shape, dtype, layout, device="cuda", seed=seed_of(dtype, layout, shape))
    check_against_reference(backend, images)


@pytest.mark.parametrize("backend", ["cuda", "triton"])
@pytest.mark.gpu
def test_cuda_variants(backend, poison):
    """No identity, real images with grad, sides of different sizes, misaligned views."""
    _gpu_backend_ready(backend)
    check_against_reference(backend, make_images((4, 3, 64, 65), torch.float32, device="cuda", idt=False))
    check_against_reference(backend, make_images((4, 3, 64, 65), torch.bfloat16, "mixed", device="cuda"),
                            grad_of=range(6))
    check_against_reference(backend, make_images((2, 3, 64, 64), torch.float32, device="cuda", idt=False,
                                                 shape_B=(2, 1, 64, 64)), grad_of=range(4))
    full = make_images((4, 3, 64, 64), torch.float16, device="cuda")
    m = full[0].numel() - 8
    views = [t.flatten()[k + 1:k + 1 + m] for k, t in enumerate(full)]  # off 16-byte boundaries
    check_against_reference(backend, views, grad_of=range(6))


@pytest.mark.parametrize("backend", ["cuda", "triton"])
@pytest.mark.gpu
def test_a_non_finite_upstream_gradient_gives_torchs_nans_and_signed_zeros_cuda(backend):
    _gpu_backend_ready(backend)
    for dtype in (torch.float32, torch.bfloat16):
        check_non_finite_upstream_gradient_as_torch(backend, dtype, device="cuda")


@pytest.mark.parametrize("backend", ["cuda", "triton"])
@pytest.mark.gpu
def test_cuda_capped_grids(backend, poison):
    """12.6M elements a side: past the forward's capped grid and into the backward's
    grid-stride loop, which the cases above never reach."""
    _gpu_backend_ready(backend)
    check_against_reference(backend, make_images((16, 3, 512, 512), torch.float32, device="cuda", seed=83))


@pytest.mark.parametrize("backend", ["cuda", "triton"])
@pytest.mark.gpu
def test_cuda_is_deterministic(backend):
    _gpu_backend_ready(backend)
    images = make_images((8, 3, 256, 257), torch.float32, device="cuda")
    first = run_backend(backend, images)
    first = [first[0].values, *[g for g in first[1] if g is not None]]
    for _ in range(3):
        out, grads = run_backend(backend, images)
        again = [out.values, *[g for g in grads if g is not None]]
        assert all(torch.equal(a, b) for a, b in zip(first, again))


@pytest.mark.parametrize("backend", ["cuda", "triton"])
@pytest.mark.gpu
def test_cuda_graph_capture(backend):
    _gpu_backend_ready(backend)
    images = make_images((4, 3, 64, 65), torch.float32, "channels_last", device="cuda")
    leaves = [t.detach().requires_grad_(i % 2 == 1 or i >= 4) for i, t in enumerate(images)]
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream), ops.use_backend(backend):
        for _ in range(2):  # warm up (Triton compiles here)
            for t in leaves:
                t.grad = None
            ops.cycle_losses(*leaves, **LAMBDAS).values.sum().backward()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    for t in leaves:
        t.grad = None
    with torch.cuda.graph(graph), ops.use_backend(backend):
        values = ops.cycle_losses(*leaves, **LAMBDAS).values
        values.sum().backward()
    fresh = make_images((4, 3, 64, 65), torch.float32, "channels_last", device="cuda", seed=13)
    with torch.no_grad():
        for t, f in zip(leaves, fresh):
            t.copy_(f)
    graph.replay()
    torch.cuda.synchronize()
    ref, ref_grads = reference_f64([t.detach().requires_grad_(i % 2 == 1 or i >= 4) for i, t in enumerate(fresh)],
                                   coeffs=(1.0,) * 4)
    torch.testing.assert_close(values.double(), ref, rtol=1e-5, atol=0)
    for t, r in zip(leaves, ref_grads):
        if r is not None:
            torch.testing.assert_close(t.grad.double(), r, rtol=1e-5, atol=0)


@pytest.mark.parametrize("backend", ["cuda", "triton"])
@pytest.mark.gpu
def test_compile_fullgraph_cuda(backend):
    _gpu_backend_ready(backend)
    _compiled_matches_eager(backend, "inductor", device="cuda")


@pytest.mark.parametrize("idt", [True, False], ids=["idt", "no_idt"])
@pytest.mark.parametrize("namespace", ["fastgan", "fastgan_triton"])
@pytest.mark.gpu
def test_opcheck_cuda(namespace, idt):
    _opcheck(getattr(torch.ops, namespace), make_images((2, 3, 6, 5), torch.float32, "mixed", device="cuda", idt=idt))


@pytest.mark.skipif(not NATIVE_CPU, reason="fastgan._C not built")
def test_generic_and_avx2_kernels_give_the_same_bits():
    """FASTGAN_CPU_ISA=base runs the generic kernels; the default, the AVX2 copies where the CPU
    has them (csrc/cpu/cycle_losses_avx2.cpp): the same bits, values and gradients, for every
    dtype and layout, with and without identity terms, A and B of one size and of two."""
    code = """
        import hashlib, json, torch, fastgan.ops as ops
        g = torch.Generator().manual_seed(0)
        digest = hashlib.sha256()
        for dtype in (torch.float32, torch.bfloat16, torch.float16, torch.float64):
            for cl in (False, True):
                for shape_B in ((2, 3, 19, 23), (1, 3, 29, 17)):
                    for identity in (True, False):
                        def image(shape):
                            t = (torch.randn(shape, generator=g) * 2).to(dtype)
                            t = t.contiguous(memory_format=torch.channels_last) if cl else t
                            return t.requires_grad_()
                        A, B = (2, 3, 19, 23), shape_B
                        real_A, rec_A, idt_B = image(A), image(A), image(A)
                        real_B, rec_B, idt_A = image(B), image(B), image(B)
                        with ops.use_backend("cpu"):
                            out = ops.cycle_losses(real_A, rec_A, real_B, rec_B, *((idt_A, idt_B) if identity else ()),
                                                   lambda_A=10.0, lambda_B=7.0, lambda_identity=0.5)
                            (out.values * torch.tensor([1.0, -2.0, 0.5, 3.0], dtype=dtype)).sum().backward()
                        for t in (out.values, real_A.grad, rec_A.grad, real_B.grad, rec_B.grad,
                                  *((idt_A.grad, idt_B.grad) if identity else ())):
                            digest.update(t.detach().contiguous().view(torch.uint8).numpy().tobytes())
        print(json.dumps({"digest": digest.hexdigest()}))
    """
    assert run_json(code, FASTGAN_CPU_ISA="base")["digest"] == same_code_here(code)["digest"]


def test_the_forward_writes_sign_codes_when_any_image_may_get_a_gradient():
    """(The backward reads them instead of recomputing the signs: fewer bytes.) One image that
    requires grad is enough; none, or no grad mode, writes none."""
    from fastgan.ops._cycle_losses import needs_signs

    plain, learned = torch.zeros(2), torch.zeros(2, requires_grad=True)
    assert needs_signs(plain, learned, None, plain) and not needs_signs(plain, plain, None)
    with torch.no_grad():
        assert not needs_signs(learned)
