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
        self.devices = set()

    def __call__(self, kernel, device):
        def at(grid):
            def launch(*args, **kwargs):
                self.calls.append((kernel, grid, args, kwargs))
                self.devices.add(device)
            return launch
        return type("Launcher", (), {"__getitem__": lambda _, grid: at(grid)})()


@pytest.fixture
def launches(monkeypatch):
    recorder = Launches()
    for module in (tcl, tin, tl1):
        monkeypatch.setattr(module, "launcher", recorder)
    return recorder


def symbolic(*tensors: torch.Tensor, device: str | None = None) -> tuple[FakeTensorMode, list[torch.Tensor]]:
    """A fake tensor mode and fake copies of `tensors` (real ones) with every size symbolic
    (on `device`, which needs no such device here, when given)."""
    mode = FakeTensorMode(shape_env=ShapeEnv())
    fakes = [mode.from_tensor(t, symbolic_context=StatelessSymbolicContext(
        dynamic_sizes=[DimDynamic.DYNAMIC] * t.dim())) for t in tensors]
    if device is not None:
        with mode:
            fakes = [f.to(device) for f in fakes]
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


def test_every_launch_is_given_the_tensors_device(launches):
    """Triton launches on the current CUDA device: each op names its tensors' device to the
    launcher (which makes it current), here cuda:1 while cuda:0 would be current."""
    shape = (2, 3, 70, 90)  # split planes: every kernel of instance_norm_act
    mode, (x, w, b) = symbolic(torch.randn(shape), torch.randn(3), torch.randn(3), device="cuda:1")
    with mode:
        out, mean, rstd = tin._instance_norm_act(x, w, b, None, 1e-5, "relu", 0.2)
        tin._instance_norm_act_backward(out, x, w, b, mean, rstd, "relu", 0.2)
        losses, signs = tcl._cycle_losses(*[x] * 6, 10.0, 10.0, 0.5, True)
        tcl._cycle_losses_backward(losses, signs, *[x] * 6, 10.0, 10.0, 0.5, [True] * 6)
        loss = tl1._l1_loss(x, out, 0.5)
        tl1._l1_loss_backward(loss, x, out, 0.5)
    launched = {c[0] for c in launches.calls}
    assert {tin._sum_partials_kernel, tin._param_kernel, tcl._cycle_backward_kernel, tl1._l1_finalize_kernel} <= launched
    assert launches.devices == {torch.device("cuda", 1)}


def test_the_launcher_makes_the_tensors_device_current(monkeypatch):
    """launcher(kernel, device)[grid](...) runs the kernel inside torch.cuda.device(device)."""
    from fastgan.ops.triton import _common
    current = ["cuda:0"]

    class Device:  # stands in for torch.cuda.device: no GPU here
        def __init__(self, device):
            self.device, self.before = str(device), None

        def __enter__(self):
            self.before, current[0] = current[0], self.device

        def __exit__(self, *exc):
            current[0] = self.before

    monkeypatch.setattr(torch.cuda, "device", Device)
    monkeypatch.setattr(_common, "INTERPRET", True)  # the kernel itself launches (no wrap_triton)
    ran_on = []
    kernel = type("Kernel", (), {"__getitem__": lambda _, grid: lambda *a: ran_on.append((grid, current[0], a))})()
    _common.launcher(kernel, torch.device("cuda", 1))[(4,)](1, 2)
    _common.launcher(kernel, torch.device("cpu"))[(2,)](3)
    assert ran_on == [((4,), "cuda:1", (1, 2)), ((2,), "cuda:0", (3,))]
    assert current == ["cuda:0"]


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_grids_fit_cudas_limits(launches, layout):
    """CUDA caps a grid's second and third axes at 65535 programs (the interpreter does
    not): a 6000x6000 channels_last plane set has 70313 splits per plane."""
    with FakeTensorMode():
        x = torch.empty(1, 32, 6000, 6000, device="cuda:0")
        if layout == "channels_last":
            x = x.contiguous(memory_format=torch.channels_last)
        out, mean, rstd = tin._instance_norm_act(x, None, None, None, 1e-5, "relu", 0.2)
        tin._instance_norm_act_backward(out, x, None, None, mean, rstd, "relu", 0.2)
    assert len(launches.calls) == 7  # statistics, sums, output; the same backward; parameters
    for kernel, grid, _args, _kwargs in launches.calls:
        assert grid[0] < 2 ** 31 and all(g <= 65535 for g in grid[1:]), (kernel.fn.__name__, grid)


def test_the_check_catches_a_symbolic_constexpr_and_an_aliased_output(launches):
    mode, (x,) = symbolic(torch.randn(2, 3, 5, 7))
    with mode:
        out = x.new_empty((3,))
        launches(tin._param_kernel, x.device)[(1,)](x, BLOCK=x.shape[2] * x.shape[3])
    with pytest.raises(AssertionError, match="constexpr BLOCK is SymInt"):
        check_launches(launches.calls, [])
    launches.calls.clear()
    launches(tin._param_kernel, out.device)[(1,)](out, out, BLOCK=4)
    with pytest.raises(AssertionError, match="an output passed as two pointers"):
        check_launches(launches.calls, [out])
