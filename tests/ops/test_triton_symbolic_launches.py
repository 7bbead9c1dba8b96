"""The Triton ops' host code under symbolic sizes, as torch.compile(dynamic=True) and
opcheck's dynamic-shape checks trace it on a GPU.

There each op is a torch.library.triton_op whose fake rule is its own Python body,
run on fake tensors whose sizes may be symbolic (SymInt): every constexpr it hands a
kernel (block sizes, flags) must then still be a plain int or bool, and no two pointer
arguments of a launch may be one tensor (a compiled graph's functionalization of the
kernel must see no aliasing). The interpreter path (CI) defines the ops as custom ops
with separate fake rules and never runs the body on fake tensors, so this test runs
the bodies itself, on symbolic fake tensors, with each launch recorded instead of run.
"""

from __future__ import annotations

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.fx.experimental.symbolic_shapes import DimDynamic, ShapeEnv, StatelessSymbolicContext

triton_ops = pytest.importorskip("fastgan.ops.triton")
if triton_ops.IMPORT_ERROR is not None:
    pytest.skip(f"triton cannot be imported ({triton_ops.IMPORT_ERROR})", allow_module_level=True)

from fastgan.ops.triton import cycle_losses as tcl  # noqa: E402
from fastgan.ops.triton import instance_norm_act as tin  # noqa: E402
from fastgan.ops.triton import l1_loss as tl1  # noqa: E402

PLAIN = (bool, int, float, str, type(None))


class Launches:
    """Stands in for the modules' launcher (wrap_triton on a GPU): records each launch, runs nothing."""

    def __init__(self):
        self.calls = []

    def __call__(self, kernel):
        def at(grid):
            def launch(*args, **kwargs):
                self.calls.append((kernel, grid, args, kwargs))
            return launch
        return type("Launcher", (), {"__getitem__": lambda _, grid: at(grid)})()


@pytest.fixture
def launches(monkeypatch):
    recorder = Launches()
    for module in (tcl, tin, tl1):
        monkeypatch.setattr(module, "launcher", recorder)
    return recorder


def symbolic(*tensors: torch.Tensor) -> tuple[FakeTensorMode, list[torch.Tensor]]:
    """A fake tensor mode and fake copies of `tensors` (real ones) with every size symbolic."""
    mode = FakeTensorMode(shape_env=ShapeEnv())
    fakes = [mode.from_tensor(t, symbolic_context=StatelessSymbolicContext(
        dynamic_sizes=[DimDynamic.DYNAMIC] * t.dim())) for t in tensors]
    assert all(isinstance(d, torch.SymInt) for f in fakes for d in f.shape if d > 1)
    return mode, fakes


def check_launches(calls, outputs) -> None:
    """Every constexpr a plain value; no tensor the op returns passed as two pointers."""
    assert calls, "no kernel launched"
    for kernel, _grid, args, kwargs in calls:
        name = kernel.fn.__name__ if hasattr(kernel, "fn") else str(kernel)
        for key, value in kwargs.items():  # the constexprs
            assert isinstance(value, PLAIN), f"{name}: constexpr {key} is {type(value).__name__} {value}"
        for out in outputs:
            assert sum(a is out for a in args) <= 1, f"{name}: an output passed as two pointers"


@pytest.mark.parametrize("shape", [(2, 3, 5, 7), (2, 3, 70, 90)], ids=["small", "split"])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_instance_norm_act(launches, shape, layout):
    x = torch.randn(shape)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    mode, (fx, fw, fb, fr) = symbolic(x, torch.randn(shape[1]), torch.randn(shape[1]), torch.randn_like(x))
    with mode:
        out, mean, rstd = tin._instance_norm_act(fx, fw, fb, fr, 1e-5, "leaky_relu", 0.2)
        grads = tin._instance_norm_act_backward(out, fx, fw, fb, mean, rstd, "leaky_relu", 0.2)
    check_launches(launches.calls, [out, mean, rstd, *grads])
    fused = {c[3]["FUSED"] for c in launches.calls if "FUSED" in c[3]}
    assert fused == {shape[2] * shape[3] <= tin.SPLIT_NCHW} if layout == "contiguous" else len(fused) == 1


@pytest.mark.parametrize("mask", [(False, True, False, True, True, True), (True, True, True, False, False, False)],
                         ids=["generated", "real_and_rec"])
def test_cycle_losses(launches, mask):
    mode, fake = symbolic(*[torch.randn(2, 3, 9, 11) for _ in range(6)])
    with mode:
        losses, signs = tcl._cycle_losses(*fake, 10.0, 10.0, 0.5, True)
        grads = tcl._cycle_losses_backward(losses, signs, *fake, 10.0, 10.0, 0.5, list(mask))
    check_launches(launches.calls, [losses, signs, *grads])
    assert [g.numel() > 0 for g in grads] == list(mask)


def test_l1_loss(launches):
    mode, (x, t) = symbolic(torch.randn(2, 3, 9, 11), torch.randn(2, 3, 9, 11))
    with mode:
        loss = tl1._l1_loss(x, t, 0.5)
        grads = tl1._l1_loss_backward(loss, x, t, 0.5)
    check_launches(launches.calls, [loss, *grads])


def test_the_check_catches_a_symbolic_constexpr_and_an_aliased_output(launches):
    mode, (x,) = symbolic(torch.randn(2, 3, 5, 7))
    with mode:
        out = x.new_empty((3,))
        launches(tin._param_kernel)[(1,)](x, BLOCK=x.shape[2] * x.shape[3])
    with pytest.raises(AssertionError, match="constexpr BLOCK is SymInt"):
        check_launches(launches.calls, [])
    launches.calls.clear()
    launches(tin._param_kernel)[(1,)](out, out, BLOCK=4)
    with pytest.raises(AssertionError, match="an output passed as two pointers"):
        check_launches(launches.calls, [out])
