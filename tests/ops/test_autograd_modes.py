"""Every op on every CPU back end (triton through its interpreter) under the autograd
modes a trainer may use around it: forward-mode AD (dual tensors), non-reentrant
activation checkpointing (torch.utils.checkpoint, use_reentrant=False) and inputs made
under torch.inference_mode. Each against the op's torch composition, as the torch
expressions the ops stand for accept each of them."""

from __future__ import annotations

import pytest
import torch
import torch.autograd.forward_ad as forward_ad
from torch.utils.checkpoint import checkpoint

import fastgan.ops as ops
from fastgan.ops import reference
from tests.ops.inputs import seed_of

# op[/variant]: (fastgan's call, the torch composition, input shapes); every input a tensor
OPS = {
    "instance_norm_act": (
        lambda x, w, b, r: ops.instance_norm_act(x, w, b, activation="leaky_relu", residual=r),
        lambda x, w, b, r: reference.instance_norm_act(x, w, b, activation="leaky_relu", residual=r),
        [(2, 3, 5, 7), (3,), (3,), (2, 3, 5, 7)]),
    "reflect_conv2d": (ops.reflect_conv2d, lambda x, w, b: reference.reflect_conv2d(x, w, b, 1, 1),
                       [(2, 3, 6, 7), (4, 3, 3, 3), (4,)]),
    "reflect_conv2d/padding 0": (lambda x, w, b: ops.reflect_conv2d(x, w, b, padding=0),
                                 lambda x, w, b: reference.reflect_conv2d(x, w, b, 1, 0),
                                 [(2, 3, 6, 7), (4, 3, 3, 3), (4,)]),
    "l1_loss": (lambda a, b: ops.l1_loss(a, b, 0.5), lambda a, b: reference.l1_loss(a, b, 0.5),
                [(2, 3, 5, 7)] * 2),
    "cycle_losses": (lambda *images: ops.cycle_losses(*images, 10.0, 5.0, 0.5).values,
                     lambda *images: reference.cycle_losses(*images, 10.0, 5.0, 0.5), [(2, 3, 5, 7)] * 6),
}
CASES = [(op, backend) for op in OPS for backend in ops.available_backends("cpu", op=op.split("/")[0])]


def _inputs(op: str, *salt) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed_of(op, *salt))
    return [torch.randn(shape, generator=g) for shape in OPS[op][2]]


def _grads(fn, inputs: list[torch.Tensor], needs: list[bool], seed) -> list[torch.Tensor | None]:
    """The gradients of <fn(*inputs), a fixed random cotangent> for the inputs `needs` asks."""
    leaves = [t.detach().requires_grad_(need) for t, need in zip(inputs, needs)]
    out = fn(*leaves)
    cotangent = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed_of(seed)))
    wanted = [t for t in leaves if t.requires_grad]
    grads = iter(torch.autograd.grad(out, wanted, cotangent))
    return [next(grads) if need else None for need in needs]


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")  # torch's jvp decompositions
@pytest.mark.parametrize("op,backend", CASES)
def test_forward_mode_ad_gives_the_compositions_tangent(op, backend):
    fused, composition = OPS[op][:2]
    inputs, tangents = _inputs(op, "primal"), _inputs(op, "tangent")

    def primal_and_tangent(fn):
        with forward_ad.dual_level():
            return forward_ad.unpack_dual(fn(*(forward_ad.make_dual(x, t) for x, t in zip(inputs, tangents))))

    with ops.use_backend(backend):
        actual = primal_and_tangent(fused)
    expected = primal_and_tangent(composition)
    assert actual.tangent is not None, "the tangent was dropped"
    torch.testing.assert_close(actual.primal, expected.primal, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(actual.tangent, expected.tangent, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("op,backend", CASES)
def test_non_reentrant_checkpointing_gives_the_ops_own_gradients(op, backend):
    """Recomputed in backward, twice in a row: the gradients of the op run plainly."""
    fused = OPS[op][0]
    inputs, needs = _inputs(op), [True] * len(OPS[op][2])
    with ops.use_backend(backend):
        expected = _grads(fused, inputs, needs, op)
        for _ in range(2):
            actual = _grads(lambda *xs: checkpoint(fused, *xs, use_reentrant=False), inputs, needs, op)
            for i, (a, e) in enumerate(zip(actual, expected)):
                torch.testing.assert_close(a, e, rtol=1e-6, atol=1e-6, msg=lambda m: f"input {i}: {m}")


@pytest.mark.parametrize("op,backend", CASES)
def test_inputs_made_under_inference_mode_are_taken(op, backend):
    """One input at a time made under torch.inference_mode (a frozen net's output, a target),
    the others needing gradients: those are the composition's."""
    fused, composition = OPS[op][:2]
    inputs = _inputs(op)
    for frozen in range(len(inputs)):
        needs = [i != frozen for i in range(len(inputs))]
        with torch.inference_mode():
            made = inputs[frozen].clone()
        assert made.is_inference()
        with ops.use_backend(backend):
            actual = _grads(fused, [made if i == frozen else t for i, t in enumerate(inputs)], needs, (op, frozen))
        expected = _grads(composition, inputs, needs, (op, frozen))
        assert actual[frozen] is expected[frozen] is None
        for i, (a, e) in enumerate(zip(actual, expected)):
            if i == frozen:
                continue
            scale = e.abs().max().item()  # float32 rounding of sums over the image
            torch.testing.assert_close(a, e, rtol=1e-5, atol=2e-6 * scale,
                                       msg=lambda m: f"frozen {frozen}, grad {i}: {m}")
