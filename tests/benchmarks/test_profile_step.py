"""benchmarks/profile_step.py (one profile per level, longer lists than train_throughput --profile_iters): on this CPU, tiny."""

from __future__ import annotations

import json

import pytest

from benchmarks import profile_step, train_throughput
from tests.benchmarks.usage import assert_usage_error


def test_profile_writes_the_top_ops_of_each_level(tmp_path, monkeypatch):
    monkeypatch.setattr(train_throughput, "WIDTHS", dict(ngf=16, ndf=16))  # as in test_train_throughput
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


def test_a_gpu_timeline_counts_each_kernel_once():
    """On a GPU the profiler also credits each kernel's time to the CPU op that launched
    it and to user annotations: only the kernels themselves make the timeline."""
    from types import SimpleNamespace

    import torch

    from benchmarks.profiler import timeline_events

    cpu, cuda = torch.autograd.DeviceType.CPU, torch.autograd.DeviceType.CUDA

    def event(key, device_type, self_us, annotation=False):
        return SimpleNamespace(key=key, device_type=device_type, self_device_time_total=self_us,
                               self_cpu_time_total=5.0, is_user_annotation=annotation)

    events = [event("aten::cudnn_convolution", cpu, 40.0), event("sm90_xmma_fprop", cuda, 40.0),
              event("Optimizer.step#Adam.step", cuda, 12.0, annotation=True),
              event("multi_tensor_apply_kernel", cuda, 12.0), event("aten::add_", cpu, 0.0)]
    assert [e.key for e in timeline_events(events, on_gpu=True)] == ["sm90_xmma_fprop", "multi_tensor_apply_kernel"]
    assert len(timeline_events(events, on_gpu=False)) == 5  # CPU self time: every op


@pytest.mark.parametrize("argv,message", [
    (["--iters", "0"], "argument --iters: 0 is not at least 1"),  # divided by zero
    (["--warmup", "-1"], "argument --warmup: -1 is negative"),
    (["--size", "30"], "--size 30: --arch cyclegan runs"),
    (["--levels", "eager,bogus"], "--levels 'eager,bogus': the levels on this device are"),
])
def test_arguments_it_cannot_run_are_usage_errors(tmp_path, capsys, monkeypatch, argv, message):
    monkeypatch.setattr(profile_step, "run", lambda *a, **k: pytest.fail("ran"))
    assert_usage_error(profile_step.main, argv, tmp_path / "out", message, capsys)
