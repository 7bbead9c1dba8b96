"""The measured kernel choices (reflect_conv2d's kernels, the convolutions' algorithms) as a
library user's process meets them: forced per thread, fixed under torch's deterministic
mode, measured whatever the caller's anomaly mode, read while another thread measures."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import pytest
import torch
import torch.nn.functional as F

import fastgan
import fastgan.ops as ops
from fastgan.ops import _measure, _reflect_conv2d, _unfolded_conv

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
needs_cpu_kernels = pytest.mark.skipif("cpu" not in ops.available_backends("cpu", op="reflect_conv2d"),
                                       reason="fastgan._C not built")


def in_another_thread_while(context, check):
    """check() run in this thread while another thread is inside `context`; its result."""
    inside, leave, failed = threading.Event(), threading.Event(), []

    def hold():
        try:
            with context:
                inside.set()
                leave.wait(30)
        except Exception as e:  # noqa: BLE001 (reported below)
            failed.append(e)
            inside.set()

    thread = threading.Thread(target=hold)
    thread.start()
    try:
        assert inside.wait(30) and not failed, failed
        return check()
    finally:
        leave.set()
        thread.join(30)


@needs_cpu_kernels
def test_a_forced_choice_holds_for_its_own_thread_alone():
    """Another thread's reflect_conv2d_choice("winograd") failed this thread's calls on another
    back end ("choice 'winograd' is not this back end's fused kernel"); its conv_choice was
    this thread's too; and blocks of two threads left out of order left a choice forced."""
    x, w = torch.randn(1, 4, 9, 9), torch.randn(4, 4, 3, 3)
    assert in_another_thread_while(ops.reflect_conv2d_choice("winograd"), lambda: _reflect_conv2d._CHOICES.choice) \
        == "auto"
    assert in_another_thread_while(ops.conv_choice("gemm"), lambda: _unfolded_conv._CHOICES.choice) == "auto"
    with ops.use_backend("torch"):
        y = in_another_thread_while(ops.reflect_conv2d_choice("winograd"), lambda: ops.reflect_conv2d(x, w))
    torch.testing.assert_close(y, F.conv2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), w))

    # entered A, B; left A, B: each thread gets back what it had
    a_in, b_in, a_out = threading.Event(), threading.Event(), threading.Event()

    def a():
        with ops.reflect_conv2d_choice("aten"):
            a_in.set()
            b_in.wait(30)
        a_out.set()

    thread = threading.Thread(target=a)
    thread.start()
    a_in.wait(30)
    with ops.reflect_conv2d_choice("winograd"):
        b_in.set()
        a_out.wait(30)
        assert _reflect_conv2d._CHOICES.choice == "winograd"
    thread.join(30)
    assert _reflect_conv2d._CHOICES.choice == "auto"


@needs_cpu_kernels
def test_deterministic_mode_takes_the_plain_convolutions_without_measuring(monkeypatch):
    """Under torch.use_deterministic_algorithms(True) a choice by measured speed made two runs of
    one script differ (Winograd on one, oneDNN on the other): the calls take aten's path, and
    nothing is measured; a forced choice still holds."""
    measured = []
    monkeypatch.setattr(_reflect_conv2d._CHOICES, "measure", lambda *a, **k: measured.append(a) or "winograd")
    monkeypatch.setattr(_unfolded_conv._CHOICES, "measure", lambda *a, **k: measured.append(a) or "gemm")
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 8, 17, 15, generator=g, requires_grad=True)
    w = torch.randn(8, 8, 3, 3, generator=g, requires_grad=True)
    wt = torch.randn(8, 4, 3, 3, generator=g, requires_grad=True)
    with ops.use_backend("cpu"), torch.autograd.set_grad_enabled(True):
        previous = torch.are_deterministic_algorithms_enabled()
        torch.use_deterministic_algorithms(True)
        try:
            y = ops.reflect_conv2d(x, w)
            dx, dw = torch.autograd.grad(y.square().sum(), (x, w))
            z = ops.conv_transpose2d(x, wt, stride=2, padding=1, output_padding=1)
        finally:
            torch.use_deterministic_algorithms(previous)
    assert not measured
    plain = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), w)
    assert torch.equal(y, plain)
    assert all(torch.equal(a, b) for a, b in zip((dx, dw), torch.autograd.grad(plain.square().sum(), (x, w))))
    assert torch.equal(z, F.conv_transpose2d(x, wt, stride=2, padding=1, output_padding=1))


@needs_cpu_kernels
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_a_shape_measured_aten_has_the_unfused_compositions_gradients_from_its_first_call(monkeypatch, layout):
    """Once every phase of a shape measured aten, its calls take the unfused composition under
    torch's autograd (_ALL_ATEN); the first call's backward summed the bias's gradient in
    another order than oneDNN (up to 7e-5 apart at batch 2), so a resumed run, or a second
    model in the process, took other bias steps than the run it continued."""
    monkeypatch.setattr(_reflect_conv2d._CHOICES, "_picks", {})
    monkeypatch.setattr(_reflect_conv2d._CHOICES, "_times", {})
    monkeypatch.setattr(_reflect_conv2d, "_ALL_ATEN", {})
    monkeypatch.setattr(_reflect_conv2d._CHOICES, "measure", lambda key, *a, **k: _reflect_conv2d._CHOICES.record(
        key, "aten", {}) or "aten")
    g = torch.Generator().manual_seed(5)
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    x = torch.randn(2, 16, 8, 8, generator=g).to(memory_format=fmt).requires_grad_()
    w = torch.randn(16, 16, 3, 3, generator=g).to(memory_format=fmt).requires_grad_()
    b = torch.randn(16, generator=g, requires_grad=True)
    y = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), w, b)
    grad = torch.randn(y.shape, generator=g)
    plain = torch.autograd.grad(y, (x, w, b), grad)
    with ops.use_backend("cpu"):
        for call in ("first (measured)", "second (the composition)"):
            fast = torch.autograd.grad(ops.reflect_conv2d(x, w, b), (x, w, b), grad)
            assert all(torch.equal(a, c) for a, c in zip(fast, plain)), call
        assert all(_reflect_conv2d._ALL_ATEN.values()) and _reflect_conv2d._ALL_ATEN
        # a trainable bias on a frozen weight: every call the same, by this path
        frozen = w.detach().to(memory_format=fmt)
        first, second = (torch.autograd.grad(ops.reflect_conv2d(x, frozen, b), (x, b), grad) for _ in range(2))
        assert all(torch.equal(a, c) for a, c in zip(first, second))


@needs_cpu_kernels
def test_only_a_shape_whose_every_phase_runs_aten_takes_the_composition_and_a_loaded_cache_starts_afresh(
        monkeypatch):
    """A forward measured aten beside a gradient measured Winograd keeps the custom path (the
    gradient's faster kernel); adopting a resumed run's choices drops what was derived before."""
    monkeypatch.setattr(_reflect_conv2d._CHOICES, "_picks", {})
    monkeypatch.setattr(_reflect_conv2d._CHOICES, "_times", {})
    monkeypatch.setattr(_reflect_conv2d, "_ALL_ATEN", {})

    def forward_aten_gradients_winograd(key, *args, **kwargs):
        pick = "aten" if key[0] == "forward" else "winograd"
        _reflect_conv2d._CHOICES.record(key, pick, {})
        return pick

    monkeypatch.setattr(_reflect_conv2d._CHOICES, "measure", forward_aten_gradients_winograd)
    x = torch.randn(1, 4, 9, 11, requires_grad=True)
    w = torch.randn(4, 4, 3, 3, requires_grad=True)
    with ops.use_backend("cpu"):
        ops.reflect_conv2d(x, w).sum().backward()
    assert list(_reflect_conv2d._ALL_ATEN.values()) == [False]
    _reflect_conv2d.load_selection_cache(_reflect_conv2d.selection_cache())
    assert not _reflect_conv2d._ALL_ATEN


@needs_cpu_kernels
def test_deterministic_mode_takes_no_shortcut_by_choices_measured_before(monkeypatch):
    """A shape whose phases were measured (or adopted from the machine's cache) to run aten
    took, from its second call, the unfused composition under torch's autograd whatever the
    deterministic rule said: on a GPU its reflection_pad2d_backward is refused in that mode."""
    monkeypatch.setattr(_reflect_conv2d._CHOICES, "_picks", {})
    monkeypatch.setattr(_reflect_conv2d._CHOICES, "_times", {})
    monkeypatch.setattr(_reflect_conv2d, "_ALL_ATEN", {})
    monkeypatch.setattr(_reflect_conv2d._CHOICES, "measure", lambda key, *a, **k: _reflect_conv2d._CHOICES.record(
        key, "aten", {}) or "aten")
    x = torch.randn(1, 4, 9, 11, requires_grad=True)
    w = torch.randn(4, 4, 3, 3, requires_grad=True)
    with ops.use_backend("cpu"):
        for _ in range(2):  # every phase measured: aten; then the unfused composition itself
            ops.reflect_conv2d(x, w).sum().backward()
        assert len(_reflect_conv2d._CHOICES.entries()) == 3 and all(_reflect_conv2d._ALL_ATEN.values())
        shortcuts = []
        unfused = _reflect_conv2d._unfused
        monkeypatch.setattr(_reflect_conv2d, "_unfused", lambda *a: shortcuts.append(1) or unfused(*a))
        previous = torch.are_deterministic_algorithms_enabled()
        torch.use_deterministic_algorithms(True)
        try:
            ops.reflect_conv2d(x, w).sum().backward()
        finally:
            torch.use_deterministic_algorithms(previous)
    assert not shortcuts


@needs_cpu_kernels
@pytest.mark.filterwarnings("ignore:Anomaly Detection has been enabled")
def test_a_nan_input_under_anomaly_mode_runs_as_torchs_convolution(monkeypatch):
    """Measuring a new shape ran the candidates' backward under the caller's anomaly mode: an
    accelerated Conv2d's forward raised "ConvolutionBackward0 returned nan values" on every
    call where nn.Conv2d returns NaN."""
    monkeypatch.setattr(_unfolded_conv._CHOICES, "_picks", {})
    monkeypatch.setattr(_unfolded_conv._CHOICES, "_times", {})
    plain = torch.nn.Sequential(torch.nn.Conv2d(3, 5, 3, padding=1))
    fast = fastgan.accelerate(torch.nn.Sequential(torch.nn.Conv2d(3, 5, 3, padding=1)))
    fast.load_state_dict(plain.state_dict())
    x = torch.randn(1, 3, 11, 13)
    x[0, 1, 4, 6] = float("nan")
    with torch.autograd.detect_anomaly():
        y = fast(x)
    assert torch.equal(y.isnan(), plain(x).isnan()) and y.isnan().any()
    torch.testing.assert_close(y.nan_to_num(), plain(x).nan_to_num())


@pytest.mark.filterwarnings("ignore:Anomaly Detection has been enabled")
def test_measuring_leaves_the_processs_anomaly_mode_alone():
    """Anomaly mode is the process's, not a thread's: switched off while one thread measured,
    another thread's detect_anomaly() block stopped checking, and the mode seen at entry was
    restored after that block had ended."""
    seen = []
    with torch.autograd.detect_anomaly():
        _measure.candidate_seconds({"a": lambda: seen.append(torch.is_anomaly_enabled())}, torch.device("cpu"))
    assert seen and all(seen) and not torch.is_anomaly_enabled()


@needs_cpu_kernels
def test_measuring_leaves_torchs_random_stream_alone(monkeypatch):
    """Measuring a new shape drew its stand-in inputs from torch's global generator: a run's
    dropout masks and pool draws then depended on whether the machine's cache held the shapes."""
    monkeypatch.setattr(_unfolded_conv._CHOICES, "_picks", {})
    monkeypatch.setattr(_unfolded_conv._CHOICES, "_times", {})
    monkeypatch.setattr(_unfolded_conv._CHOICES, "_adopted", {})
    conv = fastgan.accelerate(torch.nn.Sequential(torch.nn.Conv2d(3, 5, 3, padding=1)))
    x = torch.randn(1, 3, 11, 13, requires_grad=True)
    state = torch.get_rng_state()
    conv(x).sum().backward()
    assert _unfolded_conv.selection_cache()  # measured
    assert torch.equal(torch.get_rng_state(), state)


@needs_cpu_kernels
def test_an_expanded_input_is_measured_and_convolved(monkeypatch):
    """One image broadcast to a batch (stride 0): the measuring stand-in took its strides and
    could not be written ("more than one element of the written-to tensor refers to a single
    memory location"), failing the forward."""
    monkeypatch.setattr(_unfolded_conv._CHOICES, "_picks", {})
    monkeypatch.setattr(_unfolded_conv._CHOICES, "_times", {})
    monkeypatch.setattr(_unfolded_conv._CHOICES, "_adopted", {})
    plain = torch.nn.Sequential(torch.nn.Conv2d(3, 5, 3, padding=1))
    fast = fastgan.accelerate(torch.nn.Sequential(torch.nn.Conv2d(3, 5, 3, padding=1)))
    fast.load_state_dict(plain.state_dict())
    x = torch.randn(1, 3, 17, 19).expand(4, -1, -1, -1)
    torch.testing.assert_close(fast(x), plain(x))
    assert _unfolded_conv.selection_cache()  # measured


def test_the_choices_are_read_while_another_thread_measures(monkeypatch):
    """selection_cache() iterated the picks another thread was adding to ("dictionary changed
    size during iteration")."""
    monkeypatch.setattr(_unfolded_conv._CHOICES, "_picks", {})
    monkeypatch.setattr(_unfolded_conv._CHOICES, "_times", {})
    done, failed = threading.Event(), []

    def measure_many():
        for i in range(200_000):
            _unfolded_conv._CHOICES.record(("shape", i), "aten", {"aten": 1.0})
        done.set()

    thread = threading.Thread(target=measure_many)
    thread.start()
    try:
        while not done.is_set():
            try:
                _unfolded_conv.selection_cache()
            except RuntimeError as e:
                failed.append(e)
                break
    finally:
        thread.join(60)
    assert not failed, failed
    assert len(_unfolded_conv.selection_cache()) == 200_000


@pytest.mark.parametrize("variable", ["FASTGAN_REFLECT_CONV2D", "FASTGAN_CONV"])
def test_a_bad_choice_variable_fails_the_import_and_a_fixed_one_imports(variable):
    """FASTGAN_REFLECT_CONV2D was read after the op was registered: importing again once the
    value was fixed failed on "op 'reflect_conv2d' is already registered"."""
    script = (f"import os\n"
              f"try:\n    import fastgan.nn\nexcept ValueError as e:\n    print('refused:', e)\n"
              f"os.environ[{variable!r}] = 'auto'\n"
              f"import fastgan.nn\nprint('imported')\n")
    env = {**os.environ, variable: "Aten", "PYTHONPATH": REPO}
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"refused: {variable}='Aten'" in result.stdout and result.stdout.rstrip().endswith("imported")


@needs_cpu_kernels
def test_the_measured_choices_can_be_forgotten(monkeypatch):
    """A library process meeting many shapes kept every shape's choices (about 100 KB per
    reflect_conv2d shape) with no way to drop them but private functions."""
    for choices in (_reflect_conv2d._CHOICES, _unfolded_conv._CHOICES):
        monkeypatch.setattr(choices, "_picks", {})
        monkeypatch.setattr(choices, "_times", {})
    x = torch.randn(1, 3, 10, 12, requires_grad=True)
    with ops.use_backend("cpu"):
        ops.reflect_conv2d(x, torch.randn(4, 3, 3, 3)).sum().backward()
        ops.conv2d(x, torch.randn(4, 3, 3, 3), None, (1, 1), (1, 1))
    assert _reflect_conv2d.selection_cache() and _unfolded_conv.selection_cache()
    ops.clear_measured_choices()
    assert not _reflect_conv2d.selection_cache() and not _unfolded_conv.selection_cache()
