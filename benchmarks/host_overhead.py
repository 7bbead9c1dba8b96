"""Host time per op call: each fused op against its eager composition, at a size whose
kernels take next to nothing.

    python -m benchmarks.host_overhead            # this device; results to benchmarks/results/

On a GPU a batch-1 training iteration outside a CUDA graph (fastgan.accelerate() in
another trainer, --cuda_graphs false) waits on the host: Python, the dispatcher,
autograd and the kernel launches of every op. This times exactly that: each case of
benchmarks/kernels/cases.py's host_cases() (1x8x8x8 activations, 1x3x8x8 images),
forward and forward+backward, each back end of the device against the eager
composition, as microseconds per call over rounds of back-to-back calls that end in
one synchronization (no CUDA graph); the first calls, not timed, also make the
measured kernel choices and compile what Triton compiles. Those warm-up calls run forward
and backward in both modes: a forward is timed as a training iteration's, after the
backward choices were made (reflect_conv2d's eager path runs the unfused composition
itself once every phase of a shape measured aten, which it learns in its first backward).
Results: printed, and written as JSON and
markdown to $OUT, else benchmarks/results/ (host_overhead_<machine>.*).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

import fastgan.ops as ops
from benchmarks.arguments import positive
from benchmarks.kernels.cases import host_cases
from benchmarks.machine import describe_machine, sync, write_results

MODES = ("forward", "forward+backward")


def _call(case, provider: str, inputs: tuple, mode: str, grad_out: torch.Tensor):
    for x in inputs:  # gradients written, not accumulated, as after zero_grad(set_to_none=True)
        if isinstance(x, torch.Tensor):
            x.grad = None
    if provider == "eager":
        out = case.composition(*inputs)
    else:
        with ops.use_backend(provider):
            out = case.fused(*inputs)
    if mode == "forward+backward":
        out.backward(grad_out)


def time_per_call(case, provider: str, mode: str, device: torch.device, calls: int, rounds: int) -> float:
    """Median microseconds per call of `rounds` rounds of `calls` calls (after as many warm-up calls)."""
    inputs = case.make_inputs(device)
    out = case.composition(*inputs)
    grad_out = torch.randn_like(out) if out.dim() else torch.ones_like(out)
    for _ in range(calls):  # warm-up: first-call costs (measured kernel choices, compilation)
        _call(case, provider, inputs, "forward+backward", grad_out)
    sync(device)
    per_call = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(calls):
            _call(case, provider, inputs, mode, grad_out)
        sync(device)
        per_call.append((time.perf_counter() - start) / calls * 1e6)
    return statistics.median(per_call)


def run(device: torch.device, calls: int, rounds: int, backends: list[str] | None = None,
        on_row=lambda report: None) -> dict:
    rows = []
    report = {"machine": describe_machine(), "device": device.type, "calls_per_round": calls, "rounds": rounds,
              "torch_threads": torch.get_num_threads(), "rows": rows}
    for case in host_cases():
        available = [b for b in ops.available_backends(device, op=case.op) if b != "torch"]
        providers = ["eager", *[b for b in available if backends is None or b in backends]]
        for mode in MODES:
            base = None
            for provider in providers:
                us = time_per_call(case, provider, mode, device, calls, rounds)
                base = us if provider == "eager" else base
                rows.append({"case": case.name, "op": case.op, "provider": provider, "mode": mode,
                             "us_per_call": us, "vs_eager": base / us})
                print(f"{case.name} {mode} {provider}: {us:.1f} us", flush=True)
                on_row(report)  # written after each row: a run cut short keeps what it measured
    return report


def markdown(report: dict) -> str:
    lines = [f"# Host time per op call on {report['machine']}", "",
             f"Kernels next to nothing (1x8x8x8, 1x3x8x8 float32 on {report['device']}): microseconds per call, "
             f"median of {report['rounds']} rounds of {report['calls_per_round']} calls ending in one "
             f"synchronization, no CUDA graph; {report['torch_threads']} torch threads. 'vs eager' above 1: "
             "the fused op costs the host less than the eager composition.", "",
             "| case | mode | provider | us per call | vs eager |", "|---|---|---|---:|---:|"]
    for r in report["rows"]:
        lines.append(f"| {r['case']} | {r['mode']} | {r['provider']} | {r['us_per_call']:.1f} | "
                     f"{r['vs_eager']:.2f}x |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=positive, default=200, help="calls per round")
    parser.add_argument("--rounds", type=positive, default=7)
    parser.add_argument("--backends", default=None,
                        help="comma-separated fastgan back ends to time (default: every one available)")
    parser.add_argument("--out", default=os.environ.get("OUT") or "benchmarks/results")
    args = parser.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    available = sorted({b for case in host_cases() for b in ops.available_backends(device, op=case.op)} - {"torch"})
    unknown = [b for b in (args.backends or "").split(",") if b and b not in available]
    if unknown or args.backends is not None and not any(args.backends.split(",")):
        parser.error(f"--backends {args.backends!r}: the back ends here are {', '.join(available)}")

    def write(report: dict) -> str:
        return write_results(args.out, "host_overhead", report, markdown(report))

    report = run(device, args.calls, args.rounds, args.backends.split(",") if args.backends else None, write)
    stem = write(report)
    print(markdown(report))
    print(f"wrote {stem}.json and {stem}.md")


if __name__ == "__main__":
    main()
