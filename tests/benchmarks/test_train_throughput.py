"""benchmarks/train_throughput.py, which `make bench` and the GPU suite run: on this CPU at a tiny size."""

from __future__ import annotations

import argparse
import itertools
import json

import pytest

from benchmarks import train_throughput
from tests.benchmarks.usage import assert_usage_error


def test_rows_with_ratios_and_the_profile_of_each_level(tmp_path, monkeypatch):
    # the whole path at a quarter of the reference's widths: at 64 the nets' compute was most of its time
    monkeypatch.setattr(train_throughput, "WIDTHS", dict(ngf=16, ndf=16))
    train_throughput.main(["--size", "32", "--iters", "2", "--rounds", "2", "--warmup", "1", "--min_seconds", "0",
                           "--levels", "eager,default", "--profile_iters", "1", "--top", "3",
                           "--out", str(tmp_path)])
    report = json.loads((tmp_path / "train_throughput_cyclegan32_b1_cpu.json").read_text())
    assert report["provenance"]["commit"] and report["provenance"]["command"]
    (result,) = report["results"]
    assert result["config"] == {"arch": "cyclegan", "size": 32, "batch": 1}
    assert result["flops_per_iteration"] > 0
    rows = {r["level"]: r for r in result["rows"]}
    assert list(rows) == ["eager", "default"]
    assert rows["eager"]["vs_eager"] == 1.0 and rows["default"]["vs_eager"] > 0
    for row in rows.values():
        assert row["losses_finite"] and row["iterations"] == 2 and row["images_per_second"] > 0
        assert row["rounds"] == 2 and len(row["images_per_second_rounds"]) == 2 and row["spread"] >= 0
        prof = row["profile"]
        assert len(prof["top"]) == 3 and prof["timeline"] == "CPU ops" and prof["ms_per_iteration"] > 0
        times = [r["ms_per_iteration"] for r in prof["top"]]
        assert times == sorted(times, reverse=True) and sum(times) <= prof["ms_per_iteration"] + 1e-9
    md = (tmp_path / "train_throughput_cyclegan32_b1_cpu.md").read_text()
    assert "### default: " in md and "% busy) per iteration" in md and "| op | calls | ms | share |" in md


class FakeTimed:
    """Timed without a model: records which level's block ran when, and a rate per level."""

    ran: list[tuple[str, str]] = []
    rates = {"eager": [1.0], "default": [2.0, 3.0, 2.5], "fast": [float("nan")]}

    def __init__(self, cfg, level, device, warmup):
        self.name = "eager" if level.get("eager") else "fast" if level.get("fast") else "default"
        self.cfg, self.rounds = cfg, 0

    def time_block(self, iters, min_seconds):
        FakeTimed.ran.append((self.cfg["arch"], self.name))
        self.rounds += 1

    def row(self):
        rates = self.rates[self.name][:self.rounds] or [1.0]
        rate = sorted(rates)[len(rates) // 2]
        row = {"levels": self.name, "images_per_second": rate, "spread": 0.0}
        if rate != rate:
            row["error"] = "its losses are not finite"
        return row


def fake_run(monkeypatch, levels: str, rounds: int):
    FakeTimed.ran = []
    monkeypatch.setattr(train_throughput, "config", lambda args: [dict(arch="cyclegan", size=32, batch=1),
                                                                  dict(arch="pix2pix", size=32, batch=1)])
    monkeypatch.setattr(train_throughput, "Timed", FakeTimed)
    monkeypatch.setattr(train_throughput, "iteration_flops", lambda cfg, device: 1)
    args = argparse.Namespace(levels=levels, ceilings=None, warmup=0, iters=1, rounds=rounds, min_seconds=0.0,
                              profile_iters=0, top=1)
    return train_throughput.run(args)


def test_the_levels_run_their_blocks_in_turn_and_a_row_holds_the_median_round(monkeypatch):
    """Each level's first block right after its build, then rounds of every level's block in
    turn, eager's included, in reversed order every other round (a machine's drift falls on all
    alike), config after config."""
    report = fake_run(monkeypatch, "default,eager,fast", rounds=3)
    order = ["default", "eager", "fast"]
    rounds = order + order[::-1] + order
    assert FakeTimed.ran == [("cyclegan", n) for n in rounds] + [("pix2pix", n) for n in rounds]
    for result in report["results"]:
        rows = {r["level"]: r for r in result["rows"]}
        assert list(rows) == ["default", "eager", "fast"]  # the levels' order
        assert rows["default"]["images_per_second"] == 2.5 and rows["default"]["vs_eager"] == 2.5
        assert "vs_eager" not in rows["fast"] and rows["fast"]["error"] == "its losses are not finite"
    md = train_throughput.markdown(report)
    assert "| fast | fast; not counted: its losses are not finite | - |" in md


def test_a_level_failing_in_a_round_keeps_an_error_row(monkeypatch):
    class Failing(FakeTimed):
        def time_block(self, iters, min_seconds):
            if self.name == "default" and self.rounds == 1:
                raise RuntimeError("CUDA out of memory\nmore")
            super().time_block(iters, min_seconds)

    monkeypatch.setattr(train_throughput, "Timed", Failing)
    FakeTimed.ran = []
    monkeypatch.setattr(train_throughput, "config", lambda args: [dict(arch="cyclegan", size=32, batch=1)])
    monkeypatch.setattr(train_throughput, "iteration_flops", lambda cfg, device: 1)
    args = argparse.Namespace(levels="eager,default", ceilings=None, warmup=0, iters=1, rounds=3, min_seconds=0.0,
                              profile_iters=0, top=1)
    (result,) = train_throughput.run(args)["results"]
    assert result["rows"][1] == {"level": "default", "error": "CUDA out of memory"}


def test_levels_are_profiled_after_all_rounds_and_a_failed_profile_keeps_the_row(monkeypatch):
    """A profiler session can slow later CUDA work: every timed block comes before any of them.
    A profile that fails (out of memory, CUPTI) is said in its row, which keeps its timing."""
    class Profiled(FakeTimed):
        model, inputs = argparse.Namespace(levels=None), None

        def row(self):
            return {**super().row(), "seconds_per_iteration": 1.0}

    def profile(model, inputs, device, iters, top):
        FakeTimed.ran.append(("profile", iters))
        if len(FakeTimed.ran) == len(expected) - 1:
            raise RuntimeError("CUPTI_ERROR_NOT_INITIALIZED\nmore")
        return {"top": [], "ms_per_iteration": 1.0, "timeline": "CPU ops"}

    expected = [("cyclegan", "eager"), ("cyclegan", "default"), ("cyclegan", "default"), ("cyclegan", "eager"),
                ("profile", 2), ("profile", 2)]
    monkeypatch.setattr(train_throughput.profiler, "profile_iterations", profile)
    monkeypatch.setattr(train_throughput, "apply_process_levels", lambda levels, device: None)
    FakeTimed.ran = []
    monkeypatch.setattr(train_throughput, "Timed", Profiled)
    monkeypatch.setattr(train_throughput, "config", lambda args: [dict(arch="cyclegan", size=32, batch=1)])
    monkeypatch.setattr(train_throughput, "iteration_flops", lambda cfg, device: 1)
    args = argparse.Namespace(levels="eager,default", ceilings=None, warmup=0, iters=1, rounds=2, min_seconds=0.0,
                              profile_iters=2, top=1)
    report = train_throughput.run(args)
    (result,) = report["results"]
    assert FakeTimed.ran == expected
    rows = {r["level"]: r for r in result["rows"]}
    assert rows["eager"]["profile"] == {"error": "CUPTI_ERROR_NOT_INITIALIZED"}
    assert rows["default"]["profile"]["ms_per_iteration"] == 1.0 and "images_per_second" in rows["eager"]
    assert "### eager: not profiled (CUPTI_ERROR_NOT_INITIALIZED)" in train_throughput.markdown(report)


@pytest.mark.parametrize("argv,message", [
    (["--levels", "turbo"], "--levels 'turbo': the levels on this device are eager, accelerate alone"),
    (["--levels", ","], "--levels ',': the levels on this device are"),
    (["--size", "0"], "argument --size: 0 is not at least 1"),
    (["--size", "30"], "--size 30: --arch cyclegan runs resnet_9blocks here, which takes multiples of 4"),
    (["--size", "20"], "--size 20: the PatchGAN discriminator takes 24 pixels or more"),
    (["--arch", "pix2pix", "--size", "64"], "--size 64: --arch pix2pix runs unet_256 here, which takes multiples "
                                            "of 256"),
    (["--batch", "0"], "argument --batch: 0 is not at least 1"),
    (["--profile_iters", "-1"], "argument --profile_iters: -1 is negative"),
    (["--min_seconds", "-3"], "argument --min_seconds: -3 is not a number of seconds"),
])
def test_bad_arguments_are_usage_errors_before_anything_runs(argv, message, tmp_path, capsys, monkeypatch):
    """They were tracebacks from deep inside (KeyError, resolve's ValueError naming --crop_size),
    or ran: --size 0 timed the device's own configs and wrote the file benchmarks.targets judges."""
    monkeypatch.setattr(train_throughput, "run", lambda *a, **k: pytest.fail("ran"))
    assert_usage_error(train_throughput.main, argv, tmp_path / "out", message, capsys)


def test_a_trailing_comma_in_levels_is_no_level():
    assert list(train_throughput.chosen_levels("eager,fast,")) == ["eager", "fast"]


def test_the_arithmetic_of_a_row_at_batch_16(monkeypatch):
    """images/s is images (iterations times the batch), and model FLOP/s counts a whole
    iteration's FLOPs per iteration, not per image."""
    clock = itertools.chain([0.0], itertools.repeat(2.0))  # a block: its start, then 2 s on
    monkeypatch.setattr(train_throughput.time, "perf_counter", lambda: next(clock))
    timed = train_throughput.Timed.__new__(train_throughput.Timed)
    timed.cfg, timed.device, timed.rates, timed.iterations, timed.seconds = {"batch": 16}, "cpu", [], 0, 0.0
    timed.model = type("Model", (), {"levels": None, "step": lambda self: {}})()
    timed.inputs = ()
    monkeypatch.setattr(train_throughput, "apply_process_levels", lambda levels, device: None)
    timed.time_block(iters=4, min_seconds=0.0)
    assert timed.rates == [4 * 16 / 2.0]  # 4 iterations of 16 images in 2 s
    result = {"config": {"batch": 16}, "flops_per_iteration": 10**12,
              "rows": [{"level": "eager", "images_per_second": 16.0}, {"level": "fast", "images_per_second": 64.0}]}
    train_throughput.add_ratios(result, {"datasheet": 100e12})
    fast = result["rows"][1]
    assert fast["vs_eager"] == 4.0 and fast["model_tflops_per_second"] == 4.0  # 4 iterations/s of 1 TFLOP
    assert fast["share_of_datasheet_bf16_peak"] == 0.04
