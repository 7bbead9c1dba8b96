"""The top ops of a few training iterations under torch.profiler, and how busy the device was.

Used by benchmarks/profile_step.py (a profile per level) and benchmarks/train_throughput.py
(--profile_iters: the same, on the model it has just timed, so nothing is built or
compiled twice). On a GPU the timeline is the CUDA kernels, those replayed from CUDA
graphs included; their summed time per iteration against the iteration's wall time
says whether a level is bound by the device (near 100%) or by the host launching work
(far below). On a CPU the timeline is the CPU ops' self time.
"""

from __future__ import annotations

import torch
from torch.profiler import ProfilerActivity, profile

from benchmarks.machine import sync


def _self_time_us(event, on_gpu: bool) -> float:
    if on_gpu:
        return getattr(event, "self_device_time_total", 0.0) or getattr(event, "self_cuda_time_total", 0.0)
    return event.self_cpu_time_total


def timeline_events(events, on_gpu: bool) -> list:
    """The events whose self time makes the timeline, each counted once. On a GPU: the
    kernels (and copies) themselves. The profiler also adds each kernel's time to the
    CPU op that launched it and to GPU-side user annotations (`Optimizer.step#...`);
    summing those too would count an eager level's kernels two or three times, a
    replayed graph's (no launching ops) once."""
    if on_gpu:
        events = [e for e in events if e.device_type == torch.autograd.DeviceType.CUDA
                  and not getattr(e, "is_user_annotation", False)]
    return [e for e in events if _self_time_us(e, on_gpu) > 0]


def profile_iterations(model, inputs, device: str, iters: int, top: int) -> dict:
    """{"timeline", "ms_per_iteration" (summed self time), "top": [{"op",
    "calls_per_iteration", "ms_per_iteration", "share"}]} of `iters` iterations of an
    already warmed-up model (the wall time to set it against is the caller's, measured
    without the profiler's own overhead)."""
    on_gpu = device.startswith("cuda")
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if on_gpu else [])
    sync(device)
    with profile(activities=activities) as prof:
        for _ in range(iters):
            model.step(*inputs)
        sync(device)
    events = timeline_events(prof.key_averages(), on_gpu)
    total = sum(_self_time_us(e, on_gpu) for e in events)
    events.sort(key=lambda e: -_self_time_us(e, on_gpu))
    rows = [{"op": e.key, "calls_per_iteration": e.count / iters,
             "ms_per_iteration": _self_time_us(e, on_gpu) / iters / 1e3,
             "share": _self_time_us(e, on_gpu) / total if total else None} for e in events[:top]]
    return {"timeline": "CUDA kernels" if on_gpu else "CPU ops", "ms_per_iteration": total / iters / 1e3,
            "top": rows}


def busy_note(profile: dict, wall_ms: float) -> str:
    """'41.0 ms of CUDA kernels in 64.0 ms (64% busy)' for one iteration."""
    busy = profile["ms_per_iteration"]
    return f"{busy:.1f} ms of {profile['timeline']} in {wall_ms:.1f} ms ({busy / wall_ms * 100:.0f}% busy)"


def top_table(profile: dict) -> list[str]:
    """The profile's top ops as markdown table lines."""
    lines = ["| op | calls | ms | share |", "|---|---:|---:|---:|"]
    for r in profile["top"]:
        op = r["op"].replace("|", "/")[:90]
        lines.append(f"| {op} | {r['calls_per_iteration']:.0f} | {r['ms_per_iteration']:.2f} | "
                     f"{r['share'] * 100:.1f}% |")
    return lines
