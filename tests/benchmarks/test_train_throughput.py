"""benchmarks/train_throughput.py, which `make bench` and the GPU suite run: on this CPU at a tiny size."""

from __future__ import annotations

import argparse
import json

from benchmarks import train_throughput


def test_rows_with_ratios_and_the_profile_of_each_level(tmp_path):
    train_throughput.main(["--size", "32", "--iters", "1", "--warmup", "1", "--min_seconds", "0",
                           "--levels", "eager,default", "--profile_iters", "1", "--top", "3",
                           "--out", str(tmp_path)])
    report = json.loads((tmp_path / "train_throughput_cpu.json").read_text())
    (result,) = report["results"]
    assert result["config"] == {"arch": "cyclegan", "size": 32, "batch": 1}
    assert result["flops_per_iteration"] > 0
    rows = {r["level"]: r for r in result["rows"]}
    assert list(rows) == ["eager", "default"]
    assert rows["eager"]["vs_eager"] == 1.0 and rows["default"]["vs_eager"] > 0
    for row in rows.values():
        assert row["losses_finite"] and row["iterations"] >= 1 and row["images_per_second"] > 0
        prof = row["profile"]
        assert len(prof["top"]) == 3 and prof["timeline"] == "CPU ops" and prof["ms_per_iteration"] > 0
        times = [r["ms_per_iteration"] for r in prof["top"]]
        assert times == sorted(times, reverse=True) and sum(times) <= prof["ms_per_iteration"] + 1e-9
    md = (tmp_path / "train_throughput_cpu.md").read_text()
    assert "### default: " in md and "% busy) per iteration" in md and "| op | calls | ms | share |" in md


def test_every_configs_eager_row_runs_first(monkeypatch):
    """The levels set process-wide state on a CPU (fastgan/engine/host_memory.py) that the
    reference's trainer would not have: the eager baselines run before any of them."""
    ran = []

    def fake_time_level(cfg, level, *args):
        ran.append((cfg["arch"], "eager" if level.get("eager") else "other"))
        return {"images_per_second": 1.0}

    monkeypatch.setattr(train_throughput, "config", lambda args: [dict(arch="cyclegan", size=32, batch=1),
                                                                  dict(arch="pix2pix", size=32, batch=1)])
    monkeypatch.setattr(train_throughput, "time_level", fake_time_level)
    monkeypatch.setattr(train_throughput, "iteration_flops", lambda cfg, device: 1)
    args = argparse.Namespace(levels="default,eager", ceilings=None, warmup=0, iters=1, min_seconds=0.0,
                              profile_iters=0, top=1)
    report = train_throughput.run(args)
    assert ran[:2] == [("cyclegan", "eager"), ("pix2pix", "eager")]
    assert [[r["level"] for r in result["rows"]] for result in report["results"]] == [["eager", "default"]] * 2
