"""Where a training iteration's time goes: the top ops of full iterations under torch.profiler.

    python -m benchmarks.profile_step                                  # the device's first config
    python -m benchmarks.profile_step --arch cyclegan --size 256 --batch 1 --levels "eager,default (fp32)"

For each level (the names of benchmarks/train_throughput.py), the model is built and
warmed up as there, then --iters iterations run under torch.profiler (CPU, and CUDA
where there is a GPU: kernels inside CUDA graphs included). The table lists the --top
ops by self time on the device (CUDA kernels on a GPU, CPU ops on a CPU), per
iteration, with their share of the profiled time, and their sum against the wall time
of as many unprofiled iterations (how busy the device is). Results: printed, and written as
JSON and markdown to $OUT, else benchmarks/results/ (profile_step_<machine>.*).
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from benchmarks import profiler, train_throughput
from benchmarks.arguments import non_negative_int, positive
from benchmarks.machine import describe_machine, write_results


def profile_level(cfg: dict, level: dict, device: str, warmup: int, iters: int, top: int) -> dict:
    model = train_throughput.build(cfg, level, device)
    inputs = train_throughput.batch(cfg, device)
    for _ in range(max(warmup, model.iterations_before_replay)):
        model.step(*inputs)
    train_throughput.sync(device)
    start = time.perf_counter()  # the wall time without the profiler's own overhead
    for _ in range(iters):
        model.step(*inputs)
    train_throughput.sync(device)
    wall_ms = (time.perf_counter() - start) / iters * 1e3
    return {"levels": model.levels.describe(), "wall_ms_per_iteration": wall_ms,
            **profiler.profile_iterations(model, inputs, device, iters, top)}


def run(args) -> dict:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    levels = train_throughput.GPU_LEVELS if device == "cuda" else train_throughput.CPU_LEVELS
    names = [n for n in (args.levels or "").split(",") if n] or ["eager", "default (fp32)" if device == "cuda"
                                                                 else "default"]
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
        lines += [f"## {name} ({prof['levels']}): "
                  f"{profiler.busy_note(prof, prof['wall_ms_per_iteration'])} per iteration", ""]
        lines += profiler.top_table(prof) + [""]
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="cyclegan", choices=("cyclegan", "pix2pix"))
    parser.add_argument("--size", type=positive, default=None, help="crop size (default: the device's first config)")
    parser.add_argument("--batch", type=positive, default=1)
    parser.add_argument("--warmup", type=non_negative_int, default=3)
    parser.add_argument("--iters", type=positive, default=3)
    parser.add_argument("--top", type=positive, default=25)
    parser.add_argument("--levels", default=None,
                        help="comma-separated level names (default: eager and the device's default level)")
    parser.add_argument("--out", default=os.environ.get("OUT") or "benchmarks/results")
    args = parser.parse_args(argv)
    train_throughput.check_arguments(parser, args)
    report = run(args)
    stem = write_results(args.out, "profile_step", report, markdown(report))
    print(markdown(report))
    print(f"wrote {stem}.json and {stem}.md")


if __name__ == "__main__":
    main()
