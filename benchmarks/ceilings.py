"""The GPU's two ceilings, measured: device-to-device copy bandwidth and the bf16 matrix rate.

    python -m benchmarks.ceilings [--out DIR]

Datasheet rates are leads; the kernel report states bandwidth as a share of the
measured copy, and the training benchmark states model FLOPs as a share of the
measured bf16 matrix rate (beside the datasheet's). Copy: a 2 GiB fp32 tensor
copied into another, counting bytes read plus written. Matrix: 8192³ bf16
products on random data (zeros run faster). Each the median of CUDA-event-timed
repeats after warm-up. Writes ceilings_<machine>.json (and .md) to --out.
"""

from __future__ import annotations

import argparse
import os
import statistics

import torch

from benchmarks.machine import describe_machine, write_results


def median_ms(fn, warmup: int = 3, repeats: int = 20) -> float:
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def copy_gb_per_s(nbytes: int = 2 << 30) -> float:
    src = torch.rand(nbytes // 4, device="cuda")
    dst = torch.empty_like(src)
    ms = median_ms(lambda: dst.copy_(src))
    return 2 * nbytes / (ms * 1e-3) / 1e9


def bf16_matmul_tflops(n: int = 8192) -> float:
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    ms = median_ms(lambda: a @ b, repeats=10)
    return 2 * n ** 3 / (ms * 1e-3) / 1e12


def measure() -> dict:
    return {"machine": describe_machine(), "copy_gb_per_s": copy_gb_per_s(),
            "bf16_matmul_tflops": bf16_matmul_tflops()}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=os.environ.get("OUT") or "benchmarks/results")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("benchmarks.ceilings measures a GPU; none is visible")
    report = measure()
    text = (f"# Ceilings of {report['machine']}\n\n| what | measured |\n|---|---:|\n"
            f"| device-to-device copy | {report['copy_gb_per_s']:.0f} GB/s |\n"
            f"| bf16 matrix product 8192³ | {report['bf16_matmul_tflops']:.0f} TFLOP/s |\n")
    print(text)
    stem = write_results(args.out, "ceilings", report, text)
    print(f"wrote {stem}.json and {stem}.md")
    return report


if __name__ == "__main__":
    main()
