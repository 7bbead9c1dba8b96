"""fastgan.ops._measure.MeasuredChoices, the per-shape choice reflect_conv2d and the
convolutions share: the forced choice, the fastest candidate kept per key, failures."""

from __future__ import annotations

import pytest
import torch

from fastgan.ops import _measure

CPU = torch.device("cpu")


def _outcome(fn):
    try:
        return fn()
    except Exception as e:
        return e


@pytest.fixture
def timed(monkeypatch):
    """candidate_seconds reads each candidate's time off what it returns (or its error)."""
    monkeypatch.setattr(_measure, "candidate_seconds", lambda cands, device: {n: _outcome(f) for n, f in cands.items()})


def test_the_fastest_candidate_is_kept_with_every_time(timed):
    choices = _measure.MeasuredChoices("op", ("slow", "fast"))
    assert choices.measure(("k",), {"slow": lambda: 2.0, "fast": lambda: 1.0}, CPU) == "fast"
    assert choices.get(("k",)) == "fast"
    assert choices.entries() == {("k",): {"choice": "fast", "times": {"slow": 2.0, "fast": 1.0}}}
    again = _measure.MeasuredChoices("op", ("slow", "fast"))
    again.load(choices.entries())
    assert again.entries() == choices.entries()
    choices.clear()
    assert choices.entries() == {} and choices.get(("k",)) is None


def test_a_failing_candidate_loses_when_failures_are_taken(timed):
    choices = _measure.MeasuredChoices("op", ("a", "b"))

    def broken():
        raise RuntimeError("no tile fits")

    failed = []
    pick = choices.measure(("k",), {"a": broken, "b": lambda: 5.0}, CPU,
                           on_failure=lambda name, e: failed.append((name, str(e))))
    assert pick == "b" and failed == [("a", "no tile fits")]
    assert choices.entries()[("k",)]["times"] == {"a": float("inf"), "b": 5.0}
    with pytest.raises(RuntimeError, match="no tile fits"):  # without on_failure: raised
        choices.measure(("j",), {"a": broken, "b": lambda: 5.0}, CPU)
    with pytest.raises(RuntimeError, match="no tile fits"):  # every candidate failed: raised
        choices.measure(("i",), {"a": broken, "b": broken}, CPU, on_failure=lambda name, e: None)
    assert choices.get(("j",)) is None and choices.get(("i",)) is None


def test_forced_choices_nest_and_unknown_names_are_refused():
    choices = _measure.MeasuredChoices("op", ("a", "b"), default="a")
    assert choices.choice == "a"
    with choices.forced("auto"):
        with choices.forced("b"):
            assert choices.choice == "b"
        assert choices.choice == "auto"
    assert choices.choice == "a"
    with pytest.raises(ValueError, match=r"op: unknown choice 'c' \(one of auto, a, b\)"):
        with choices.forced("c"):
            pass
    with pytest.raises(ValueError, match=r"op: unknown choice 'auto' \(one of a, b\)"):
        choices.record(("k",), "auto", {})


def test_loading_takes_bare_names_and_adopts_nothing_when_an_entry_cannot_be_read():
    choices = _measure.MeasuredChoices("op", ("a", "b"))
    choices.load({("old",): "b"})  # the convolutions' choices before they kept their times
    assert choices.entries() == {("old",): {"choice": "b", "times": {}}}
    with pytest.raises(ValueError, match=r"op: the saved choice for \('bad',\) cannot be read"):
        choices.load({("good",): {"choice": "a", "times": {"a": 1.0}}, ("bad",): {"choice": "z"}})
    assert choices.get(("good",)) is None  # nothing of the failed load was adopted


class _FakeClock:
    """perf_counter for candidate_seconds: each candidate call advances it by the
    candidate's cost, plus a load spike's over the calls numbered in `spike`."""

    def __init__(self, spike: range):
        self.now, self.calls, self.spike = 0.0, 0, spike

    def perf_counter(self) -> float:
        return self.now

    def candidate(self, cost: float):
        def run():
            self.now += cost + (10.0 if self.calls in self.spike else 0.0)
            self.calls += 1
        return run


def test_cpu_candidates_are_timed_in_turn_so_a_load_spike_hits_them_alike(monkeypatch):
    """Another process's load over a stretch of calls as long as one candidate's timed runs:
    timed one candidate after the other, the faster one would have taken it all and lost."""
    warmup, runs = _measure.MEASURE_RUNS["cpu"]
    clock = _FakeClock(spike=range(warmup, warmup + runs))
    monkeypatch.setattr(_measure, "time", type("Time", (), {"perf_counter": clock.perf_counter}))
    choices = _measure.MeasuredChoices("op", ("fast", "slow"))
    assert choices.measure(("k",), {"fast": clock.candidate(1.0), "slow": clock.candidate(2.0)}, CPU) == "fast"
    assert choices.entries()[("k",)]["times"] == {"fast": 1.0, "slow": 2.0}
    assert clock.calls == 2 * (warmup + runs)


def test_each_candidate_counts_its_fastest_timed_run(monkeypatch):
    """A spike on the faster candidate's last timed run (not the first, nor the last of all)."""
    warmup, runs = _measure.MEASURE_RUNS["cpu"]
    last_fast = 2 * warmup + 2 * (runs - 1)  # (warm-ups one after the other, then timed in turn)
    clock = _FakeClock(spike=range(last_fast, last_fast + 1))
    monkeypatch.setattr(_measure, "time", type("Time", (), {"perf_counter": clock.perf_counter}))
    choices = _measure.MeasuredChoices("op", ("fast", "slow"))
    assert choices.measure(("k",), {"fast": clock.candidate(1.0), "slow": clock.candidate(2.0)}, CPU) == "fast"
    assert choices.entries()[("k",)]["times"] == {"fast": 1.0, "slow": 2.0}


def test_a_candidate_failing_in_its_timed_runs_counts_as_failed(monkeypatch):
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) > _measure.MEASURE_RUNS["cpu"][0]:  # after its warm-up
            raise RuntimeError("out of memory")

    failed = []
    choices = _measure.MeasuredChoices("op", ("flaky", "steady"))
    pick = choices.measure(("k",), {"flaky": flaky, "steady": lambda: None}, CPU,
                           on_failure=lambda name, e: failed.append(name))
    assert pick == "steady" and failed == ["flaky"]
    assert choices.entries()[("k",)]["times"]["flaky"] == float("inf")


def test_readable_keeps_the_entries_load_would_take_and_adopts_none():
    from fastgan.ops._measure import MeasuredChoices

    choices = MeasuredChoices("test", ("a", "b"))
    saved = {("k", 1): {"choice": "a", "times": {"a": 1.0}}, ("k", 2): "b", ("k", 3): {"choice": "zzz"},
             ("k", 4): 7, ("k", 5): {"times": {}}}
    assert choices.readable(saved) == {("k", 1): saved[("k", 1)], ("k", 2): "b"}
    assert choices.entries() == {}


def test_adopted_choices_are_taken_when_their_shape_comes():
    """Every training state saved all the choices of the machine's cache (the shapes of every
    earlier run, 36 where a run of one size had 6): adopted ones now become this process's
    when its calls meet their shape, and only then."""
    choices = _measure.MeasuredChoices("op", ("a", "b"))
    choices.record(("mine",), "a", {"a": 1.0})
    choices.adopt({("met",): {"choice": "b", "times": {"a": 2.0, "b": 1.0}}, ("other run",): "a",
                   ("mine",): "b", ("unreadable",): {"choice": "zzz"}})
    assert choices.entries() == {("mine",): {"choice": "a", "times": {"a": 1.0}}}  # its own measurement kept
    assert choices.get(("met",)) == "b" and choices.get(("unreadable",)) is None
    assert choices.entries() == {("mine",): {"choice": "a", "times": {"a": 1.0}},
                                 ("met",): {"choice": "b", "times": {"a": 2.0, "b": 1.0}}}
    choices.clear()
    assert choices.get(("other run",)) is None


def test_an_adopted_choice_taken_by_one_thread_is_found_by_another_asking_meanwhile():
    """get() took the entry out of the adopted ones before recording it: another thread asking
    in between found neither, measured the shape anew, and could choose otherwise."""
    choices = _measure.MeasuredChoices("op", ("a", "b"))
    choices.adopt({("k",): {"choice": "b", "times": {"a": 2.0, "b": 1.0}}})
    record, meanwhile = choices.record, []

    def record_while_another_asks(key, pick, times):
        if not meanwhile:
            meanwhile.append(None)
            meanwhile.append(choices.get(key))  # another thread, before this record is done
        record(key, pick, times)

    choices.record = record_while_another_asks
    assert choices.get(("k",)) == "b" and meanwhile == [None, "b"]
    assert choices.entries() == {("k",): {"choice": "b", "times": {"a": 2.0, "b": 1.0}}}


def test_within_choices_by_size_class_one_measurement_serves_its_class(monkeypatch):
    """Activations whose pixels round to the same power of 2 share one key (measured once) in
    reflect_conv2d's phases and the convolutions'; other classes, the weights' shapes and
    everything outside the block keep theirs."""
    import fastgan.ops as ops
    from fastgan.ops import _reflect_conv2d, _unfolded_conv

    assert _measure.activation_shape((1, 4, 20, 24)) == (1, 4, 20, 24)
    with ops.choices_by_size_class():
        assert _measure.activation_shape((1, 4, 20, 24)) == _measure.activation_shape((1, 4, 26, 20)) \
            == (1, 4, "pixels 2^9")  # 480 and 520 pixels
        assert _measure.activation_shape((1, 4, 40, 44)) == (1, 4, "pixels 2^11")
        assert _measure.activation_shape((4, 20, 24)) == (4, 20, 24)  # (not an (N, C, H, W) activation)
    assert _measure.activation_shape((1, 4, 20, 24)) == (1, 4, 20, 24)

    measured = []
    for choices in (_reflect_conv2d._CHOICES, _unfolded_conv._CHOICES):
        real = choices.measure
        monkeypatch.setattr(choices, "measure",
                            lambda key, *a, real=real, **k: measured.append(key) or real(key, *a, **k))
    # the fused candidates win every measurement: every phase of each new key is measured (all
    # aten, reflect_conv2d's eager path would take the composition, its gradients unmeasured)
    monkeypatch.setattr(_measure, "candidate_seconds",
                        lambda candidates, device: {name: float(name == "aten") for name in candidates})
    ops.clear_measured_choices()
    w3, w4 = torch.randn(5, 4, 3, 3), torch.randn(5, 4, 4, 4)

    def run_both(h, w):
        x = torch.randn(1, 4, h, w, requires_grad=True)
        with ops.use_backend("cpu" if "cpu" in ops.available_backends("cpu") else "torch"):
            out = ops.reflect_conv2d(x, w3.requires_grad_(), None)
        (out.sum() + ops.conv2d(x, w4, None, 2, 1).sum()).backward()

    with ops.choices_by_size_class():
        for h, w in ((20, 24), (26, 20), (40, 44)):
            run_both(h, w)
    in_classes = list(measured)
    measured.clear()
    for h, w in ((20, 24), (26, 20)):
        run_both(h, w)
    ops.clear_measured_choices()
    assert in_classes and all("pixels 2^" in str(key) for key in in_classes)
    assert not any("pixels" in str(key) for key in measured)
    # three sizes of two classes in the block measured as often as two sizes outside it
    assert len(in_classes) == len(measured) and len(set(in_classes)) == len(in_classes)
