"""benchmarks/host_overhead.py (host time per op call, which `make bench-kernels` and the GPU suite run)."""

from __future__ import annotations

import json

import pytest

from benchmarks import host_overhead
from tests.benchmarks.usage import assert_usage_error


def test_every_op_and_mode_against_eager(tmp_path):
    host_overhead.main(["--calls", "3", "--rounds", "2", "--backends", "cpu", "--out", str(tmp_path)])
    report = json.loads((tmp_path / "host_overhead_cpu.json").read_text())
    rows = report["rows"]
    assert {r["op"] for r in rows} == {"l1_loss", "cycle_losses", "instance_norm_act", "reflect_conv2d"}
    for op in {r["op"] for r in rows}:
        for mode in host_overhead.MODES:
            mine = {r["provider"]: r for r in rows if r["op"] == op and r["mode"] == mode}
            assert set(mine) == {"eager", "cpu"}
            assert mine["eager"]["vs_eager"] == 1.0
            assert all(r["us_per_call"] > 0 for r in mine.values())
            assert mine["cpu"]["vs_eager"] == mine["eager"]["us_per_call"] / mine["cpu"]["us_per_call"]
    md = (tmp_path / "host_overhead_cpu.md").read_text()
    assert md.count("| reflect_conv2d-1x8x8x8x8x3-float32 |") == 4


@pytest.mark.parametrize("args,message", [
    (["--calls", "0"], "argument --calls: 0 is not at least 1"),
    (["--rounds", "-1"], "argument --rounds: -1 is not at least 1"),
    (["--backends", "cpu,bogus"], "--backends 'cpu,bogus': the back ends here are cpu"),
    (["--backends", ","], "--backends ',': the back ends here are cpu"),
])
def test_arguments_it_cannot_run_are_usage_errors(args, message, tmp_path, capsys):
    assert_usage_error(host_overhead.main, args, tmp_path / "out", message, capsys)
