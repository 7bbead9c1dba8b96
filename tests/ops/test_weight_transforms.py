"""fastgan.ops.reuse_weight_transforms: the CPU Winograd convolutions' weight transforms
kept across calls while the weights stay as they are (fastgan/ops/_weight_transforms.py)."""

from __future__ import annotations

import pytest
import torch

import fastgan.ops as ops
from fastgan.ops import _weight_transforms

pytestmark = pytest.mark.skipif("cpu" not in ops.available_backends("cpu", op="reflect_conv2d"),
                                reason="fastgan._C not built")


def kept():
    """This thread's scope's transforms (None outside every scope)."""
    return getattr(_weight_transforms._thread, "kept", None)


def make(seed: int):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, 6, 9, 8, generator=g, requires_grad=True)
    weight = torch.nn.Parameter(torch.randn(6, 6, 3, 3, generator=g))
    return x, weight, torch.randn(1, 6, 9, 8, generator=g)


def twice_forward_and_backward(x, weight, grad):
    """Two calls with the same weight, the second on the first's output (as a generator
    runs on its own translation), and their backward: y, dx, dweight."""
    with ops.use_backend("cpu"), ops.reflect_conv2d_choice("winograd"):
        y = ops.reflect_conv2d(ops.reflect_conv2d(x, weight), weight)
    dx, dweight = torch.autograd.grad(y, (x, weight), grad)
    return y.detach(), dx, dweight


def test_within_the_scope_each_weight_is_transformed_once_and_results_do_not_change(monkeypatch):
    x, weight, grad = make(0)
    outside = twice_forward_and_backward(x, weight, grad)
    assert kept() is None
    transforms = []
    op = torch.ops.fastgan.conv3x3_winograd_weight
    monkeypatch.setattr(torch.ops.fastgan, "conv3x3_winograd_weight", lambda w: transforms.append(w) or op(w),
                        raising=False)
    with ops.reuse_weight_transforms():
        inside = twice_forward_and_backward(x, weight, grad)
        assert len(kept()) == 1 and len(transforms) == 1  # forward and input gradient share it
    assert kept() is None  # dropped at the end
    for a, b in zip(inside, outside):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_an_in_place_update_inside_the_scope_is_seen():
    x, weight, grad = make(1)
    with ops.reuse_weight_transforms():
        twice_forward_and_backward(x, weight, grad)
        with torch.no_grad():
            weight.mul_(0.5)  # as an optimizer step does: the version moves on
        after = twice_forward_and_backward(x, weight, grad)
    fresh = twice_forward_and_backward(x, weight, grad)
    for a, b in zip(after, fresh):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("optimizer", ["adam_fused", "sgd_fused", "adam_foreach", "adamw_for_loop"])
def test_an_optimizer_step_inside_the_scope_is_seen(optimizer):
    """A torch.optim step inside the scope: fused steps write the weights without bumping their
    version, so every step drops the transforms. And one transform per weight is kept, however
    many steps ran."""
    x, weight, grad = make(4)
    name, impl = optimizer.split("_", 1)
    cls = {"adam": torch.optim.Adam, "sgd": torch.optim.SGD, "adamw": torch.optim.AdamW}[name]
    opt = cls([weight], lr=0.1, **{"fused": {"fused": True}, "foreach": {"foreach": True},
                                   "for_loop": {"foreach": False}}[impl])
    with ops.reuse_weight_transforms():
        for _ in range(3):
            _, _, weight.grad = twice_forward_and_backward(x, weight, grad)
            opt.step()
        after = twice_forward_and_backward(x, weight, grad)
        assert len(kept()) == 1
    fresh = twice_forward_and_backward(x, weight, grad)
    for a, b in zip(after, fresh):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_in_place_updates_replace_the_weights_transform():
    x, weight, grad = make(5)
    with ops.reuse_weight_transforms():
        for _ in range(4):
            twice_forward_and_backward(x, weight, grad)
            with torch.no_grad():
                weight.add_(0.1)
        assert len(kept()) == 1


def test_nested_scopes_share_the_outermost_transforms():
    x, weight, grad = make(2)
    with ops.reuse_weight_transforms():
        outer = kept()
        with ops.reuse_weight_transforms():
            assert kept() is outer
            twice_forward_and_backward(x, weight, grad)
        assert kept() is outer and len(outer) == 1
    assert kept() is None


def test_inference_tensors_and_no_scope_transform_in_the_kernel():
    _, weight, _ = make(3)
    assert _weight_transforms.kept_transform(weight) is None
    with torch.inference_mode():
        frozen = weight.detach().clone()
    with ops.reuse_weight_transforms():
        assert _weight_transforms.kept_transform(frozen) is None
        assert _weight_transforms.kept_transform(weight) is not None


def test_a_scope_holds_for_its_own_thread_alone():
    """Another thread's scope neither crashed this one's convolutions (its end set the shared
    transforms to None between a check and a use) nor handed them a transform of a weight
    written through .data since (26.9 where 0 was due)."""
    import threading

    x, weight, _ = make(5)
    inside, leave = threading.Event(), threading.Event()

    def other_thread():
        with ops.reuse_weight_transforms():
            inside.set()
            leave.wait(30)

    thread = threading.Thread(target=other_thread)
    thread.start()
    try:
        assert inside.wait(30)
        assert kept() is None and _weight_transforms.kept_transform(weight) is None
        with ops.use_backend("cpu"), ops.reflect_conv2d_choice("winograd"), torch.no_grad():
            ops.reflect_conv2d(x, weight)
            weight.data.mul_(0)  # a write the version does not see: outside a scope, no harm
            assert ops.reflect_conv2d(x, weight).abs().max() == 0
    finally:
        leave.set()
        thread.join(30)


def test_scopes_leave_torchs_optimizer_hooks_alone_and_a_step_in_any_thread_drops_them():
    """A hook added and removed per scope changed torch's global hook dict while another
    thread's optimizer step iterated it ("OrderedDict mutated during iteration")."""
    import threading

    from torch.optim import optimizer as torch_optimizer

    hooks = dict(torch_optimizer._global_optimizer_post_hooks)
    x, weight, grad = make(6)
    opt = torch.optim.SGD([weight], lr=0.1)
    with ops.reuse_weight_transforms():
        assert dict(torch_optimizer._global_optimizer_post_hooks) == hooks
        _, _, weight.grad = twice_forward_and_backward(x, weight, grad)
        assert len(kept()) == 1
        stepper = threading.Thread(target=opt.step)
        stepper.start()
        stepper.join(30)
        assert kept() == {}
    assert dict(torch_optimizer._global_optimizer_post_hooks) == hooks
