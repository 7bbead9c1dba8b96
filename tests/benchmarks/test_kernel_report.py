"""benchmarks/kernels rows written as each benchmark finishes (--rows-jsonl) and the
report made from them, also from a run cut in the middle of a line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.kernels import report

REPO = Path(__file__).resolve().parents[2]


def test_rows_written_as_measured_make_the_report(tmp_path):
    rows = tmp_path / "kernels_l1_loss.jsonl"
    subprocess.run([sys.executable, "-m", "pytest", "benchmarks/kernels", "-q", "-p", "no:cacheprovider",
                    "-k", "l1_loss-1x3x256x256 and (eager or cpu)", f"--rows-jsonl={rows}"],
                   cwd=REPO, check=True, capture_output=True, text=True)
    entries = [json.loads(line) for line in rows.read_text().splitlines()]
    assert len(entries) == 4  # eager and cpu, forward and forward+backward
    assert all(e["stats"]["median"] > 0 and e["extra_info"]["op"] == "l1_loss" for e in entries)

    with rows.open("a") as f:  # the line being written when a time limit cut the run
        f.write('{"name": "test_kernel[l1_loss-16x3x256x256-float32-eager-forward]", "extra_')
    out = tmp_path / "out"
    report.main([str(rows), str(tmp_path / "kernels_cut_before_any_row.jsonl"), "--out", str(out)])
    written = json.loads(next(out.glob("kernels_*.json")).read_text())
    assert len(written["rows"]) == 4 and written["missing_runs"] == ["kernels_cut_before_any_row.jsonl"]
    cpu = [r for r in written["rows"] if r["provider"] == "cpu"]
    assert len(cpu) == 2 and all(r["speedup_vs_eager"] > 0 for r in cpu)


def test_a_ratio_only_between_rows_timed_the_same_way():
    """A provider whose CUDA-graph capture failed is timed by the wall clock (host dispatch
    included): against eager's graph-timed row its ratio would mix two clocks."""

    def bench(provider, seconds, timing):
        return {"stats": {"median": seconds}, "extra_info": {"op": "l1_loss", "shape": [1, 3, 8, 8], "dtype": "fp32",
                                                             "mode": "forward", "provider": provider, "bytes": 100,
                                                             "timing": timing}}

    rows = report.rows_from({"benchmarks": [bench("eager", 2.0, "cuda graph"), bench("cuda", 1.0, "cuda graph"),
                                            bench("triton", 1.0, "wall (capture failed: no)")]})
    ratios = {r["provider"]: r["speedup_vs_eager"] for r in rows}
    assert ratios == {"eager": 1.0, "cuda": 2.0, "triton": None}


def test_a_graph_timed_round_is_its_device_time():
    """The GPU benchmarks record each graph replay's device time (CUDA events): the row's time is
    that round's over its calls, not the wall clock's, which adds the replay's launch and sync."""
    info = {"op": "l1_loss", "shape": [16, 3, 8, 8], "dtype": "fp32", "mode": "forward", "provider": "eager",
            "bytes": 4 * 10**6, "timing": "cuda events (graph replay)", "calls_per_round": 20,
            "device_round_s": 0.002}
    (row,) = report.rows_from({"benchmarks": [{"stats": {"median": 0.003}, "extra_info": info}]})
    assert row["median_s"] == pytest.approx(1e-4) and row["gb_per_s"] == pytest.approx(40.0)


def test_no_readable_run_writes_nothing(tmp_path, capsys):
    (tmp_path / "kernels_cpu.json").write_text("{}")  # earlier results, which must stay
    with pytest.raises(SystemExit) as e:
        report.main([str(tmp_path / "typo.json"), "--out", str(tmp_path)])
    assert e.value.code == 1 and "no run gave a row" in capsys.readouterr().err
    assert (tmp_path / "kernels_cpu.json").read_text() == "{}"


def test_each_layout_is_its_own_case_with_its_own_eager_baseline():
    """bf16 channels_last rows (as --fast runs instance_norm_act) beside contiguous ones of the
    same op, shape and dtype: each ratio against its own layout's eager row."""

    def bench(provider, seconds, layout=None):
        info = {"op": "instance_norm_act", "shape": [1, 256, 64, 64], "dtype": "torch.bfloat16",
                "mode": "forward", "provider": provider, "bytes": 100}
        return {"stats": {"median": seconds}, "extra_info": info if layout is None else {**info, "layout": layout}}

    rows = report.rows_from({"benchmarks": [bench("eager", 4.0), bench("cpu", 2.0),  # a run before layouts
                                            bench("eager", 9.0, "channels_last"), bench("cpu", 1.0, "channels_last")]})
    assert [(r["case"], r["speedup_vs_eager"]) for r in rows if r["provider"] == "cpu"] == [
        ("instance_norm_act 1x256x64x64 torch.bfloat16", 2.0),
        ("instance_norm_act 1x256x64x64 torch.bfloat16 channels_last", 9.0)]


def test_each_case_counts_the_bytes_its_op_must_move_at_least():
    """The floor of each op's traffic, which the shares of copy bandwidth divide by: more bytes
    than the op moves would show a share, and a target, it does not reach. n elements of 4 bytes."""
    import torch

    from benchmarks.kernels import cases

    shape = (1, 3, 8, 8)
    elements = torch.Size(shape).numel()
    n = 4 * elements
    (l1,) = cases.l1_loss_cases([shape])
    assert (l1.bytes_forward, l1.bytes_backward) == (2 * n, 4 * n)  # reads x, y; reads them again, writes both grads
    (cycle,) = cases.cycle_losses_cases([shape])
    assert (cycle.bytes_forward, cycle.bytes_backward) == (6 * n + elements, 4 * n + elements)  # + a sign byte each
    (norm,) = cases.instance_norm_act_cases([shape])
    assert (norm.bytes_forward, norm.bytes_backward) == (2 * n, 3 * n)  # x, y; grad, x, dx
    (conv,) = cases.reflect_conv2d_cases([2], layers=[(3, 5, 8, 3, 1)])
    x, y, w = 2 * 3 * 64 * 4, 2 * 5 * 64 * 4, 5 * 3 * 9 * 4
    assert (conv.bytes_forward, conv.bytes_backward) == (x + w + y, y + 2 * (x + w))
    assert conv.bytes_moved("forward+backward") == conv.bytes_forward + conv.bytes_backward
