"""Timing candidates for a measured choice (reflect_conv2d's kernels, the convolutions'
algorithms): the median of a few runs after warm-up, on the device's clock."""

from __future__ import annotations

import statistics
import time
from typing import Callable

import torch

# (warm-up runs, timed runs) of each candidate: the first warm-up run of a Triton kernel
# compiles (and on a GPU autotunes) it; on a CPU the first runs also fault in a
# candidate's buffers (a few MB), which one warm-up run left in the timing
MEASURE_RUNS = {"cuda": (3, 10), "cpu": (3, 5)}


def median_seconds(fn: Callable[[], object], device: torch.device) -> float:
    """Median seconds of fn() after warm-up (CUDA events on a GPU)."""
    warmup, runs = MEASURE_RUNS.get(device.type, MEASURE_RUNS["cpu"])
    for _ in range(warmup):
        fn()
    if device.type == "cuda":
        with torch.cuda.device(device):
            events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
                      for _ in range(runs)]
            for start, end in events:
                start.record()
                fn()
                end.record()
            torch.cuda.synchronize()
        return statistics.median(s.elapsed_time(e) / 1e3 for s, e in events)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)
