"""fastgan.ops._measure.MeasuredChoices, the per-shape choice reflect_conv2d and the
convolutions share: the forced choice, the fastest candidate kept per key, failures."""

from __future__ import annotations

import pytest
import torch

from fastgan.ops import _measure

CPU = torch.device("cpu")


@pytest.fixture
def timed(monkeypatch):
    """median_seconds reads each candidate's time off what it returns."""
    monkeypatch.setattr(_measure, "median_seconds", lambda fn, device: fn())


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
