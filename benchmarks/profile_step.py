"""Where a training iteration's time goes: the top ops of full iterations under torch.profiler.

    python -m benchmarks.profile_step                                  # the device's first config
    python -m benchmarks.profile_step --arch cyclegan --size 256 --batch 1 --levels "eager,default (fp32)"

For each level (the names of benchmarks/train_throughput.py), the model is built and
warmed up as there, then --iters iterations run under torch.profiler (CPU, and CUDA
where there is a GPU: kernels inside CUDA graphs included). The table lists the --top
ops by self time on the device (CUDA kernels on a GPU, CPU ops on a CPU), per
iteration, with their share of the profiled time. Results: printed, and written as
JSON and markdown to $OUT, else benchmarks/results/ (profile_step_<machine>.*).
"""

from __future__ import annotations

import argparse
import os

import torch
from torch.profiler import ProfilerActivity, profile

from benchmarks import train_throughput
from benchmarks.machine import describe_machine, write_results


def _self_time_us(event, on_gpu: bool) -> float:
    if on_gpu:
        return getattr(event, "self_device_time_total", 0.0) or getattr(event, "self_cuda_time_total", 0.0)
    return event.self_cpu_time_total


def profile_level(cfg: dict, level: dict, device: str, warmup: int, iters: int, top: int) -> dict:
    model = train_throughput.build(cfg, level, device)
    inputs = train_throughput.batch(cfg, device)
    for _ in range(warmup):
        model.step(*inputs)
    train_throughput.sync(device)
    on_gpu = device == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if on_gpu else [])
    with profile(activities=activities) as prof:
        for _ in range(iters):
            model.step(*inputs)
        train_throughput.sync(device)
    events = [e for e in prof.key_averages() if _self_time_us(e, on_gpu) > 0]
    total = sum(_self_time_us(e, on_gpu) for e in events)
    events.sort(key=lambda e: -_self_time_us(e, on_gpu))
    rows = [{"op": e.key, "calls_per_iteration": e.count / iters,
             "ms_per_iteration": _self_time_us(e, on_gpu) / iters / 1e3,
             "share": _self_time_us(e, on_gpu) / total if total else None} for e in events[:top]]
    return {"levels": model.levels.describe(), "timeline": "CUDA kernels" if on_gpu else "CPU ops",
            "ms_per_iteration": total / iters / 1e3, "top": rows}


def run(args) -> dict:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    levels = train_throughput.GPU_LEVELS if device == "cuda" else train_throughput.CPU_LEVELS
    names = args.levels.split(",") if args.levels else ["eager", "default (fp32)" if device == "cuda" else "default"]
    unknown = [n for n in names if n not in levels]
    if unknown:
        raise SystemExit(f"unknown level(s) {unknown}; this device's: {', '.join(levels)}")
    cfg = train_throughput.config(args)[0]
    report = {"machine": describe_machine(), "config": cfg, "iters": args.iters, "profiles": {}}
    for name in names:
        report["profiles"][name] = profile_level(cfg, levels[name], device, args.warmup, args.iters, args.top)
        print(f"{name}: {report['profiles'][name]['ms_per_iteration']:.1f} ms per iteration", flush=True)
    return report


def markdown(report: dict) -> str:
    cfg = report["config"]
    lines = [f"# Where an iteration's time goes, on {report['machine']}", "",
             f"{cfg['arch']}, {cfg['size']}², batch {cfg['batch']}; {report['iters']} profiled iterations "
             "after warm-up; self time per iteration.", ""]
    for name, prof in report["profiles"].items():
        lines += [f"## {name} ({prof['levels']}): {prof['ms_per_iteration']:.1f} ms of {prof['timeline']} "
                  "per iteration", "", "| op | calls | ms | share |", "|---|---:|---:|---:|"]
        for r in prof["top"]:
            op = r["op"].replace("|", "/")[:90]
            lines.append(f"| {op} | {r['calls_per_iteration']:.0f} | {r['ms_per_iteration']:.2f} | "
                         f"{r['share'] * 100:.1f}% |")
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="cyclegan", choices=("cyclegan", "pix2pix"))
    parser.add_argument("--size", type=int, default=None, help="crop size (default: the device's first config)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--levels", default=None,
                        help="comma-separated level names (default: eager and the device's default level)")
    parser.add_argument("--out", default=os.environ.get("OUT") or "benchmarks/results")
    args = parser.parse_args(argv)
    report = run(args)
    stem = write_results(args.out, "profile_step", report, markdown(report))
    print(markdown(report))
    print(f"wrote {stem}.json and {stem}.md")


if __name__ == "__main__":
    main()
