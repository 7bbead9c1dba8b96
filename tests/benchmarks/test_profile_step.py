"""benchmarks/profile_step.py (one profile per level, longer lists than train_throughput --profile_iters): on this CPU, tiny."""

from __future__ import annotations

import json

from benchmarks import profile_step


def test_profile_writes_the_top_ops_of_each_level(tmp_path):
    profile_step.main(["--size", "32", "--iters", "1", "--warmup", "1", "--top", "4", "--out", str(tmp_path)])
    report = json.loads((tmp_path / "profile_step_cpu.json").read_text())
    assert list(report["profiles"]) == ["eager", "default"]
    for name, prof in report["profiles"].items():
        rows = prof["top"]
        assert len(rows) == 4 and prof["ms_per_iteration"] > 0 and prof["wall_ms_per_iteration"] > 0
        assert [r["ms_per_iteration"] for r in rows] == sorted((r["ms_per_iteration"] for r in rows), reverse=True)
        assert 0 < sum(r["share"] for r in rows) <= 1 + 1e-9
    md = (tmp_path / "profile_step_cpu.md").read_text()
    assert "| op | calls | ms | share |" in md and "% busy) per iteration" in md
