"""Test-time translation: images/s of a generator's forward pass on the reference's plain
modules against fastgan's fused ones, side by side in interleaved rounds.

    python -m benchmarks.inference_throughput     # resnet_9blocks, ngf 64, 256², batch 1, this device

What `python -m fastgan.test` runs per image, without the image files: the generator in
eval mode under torch.no_grad, batch 1. Three paths with the same random weights:
`eager` (the reference's modules, `--eager`), `accelerate` (fastgan.accelerate, NCHW)
and `accelerate+channels_last`; the table marks the one fastgan.test takes on the
device (fastgan/test.py, generator_path). Rounds take each path in turn, so a machine
whose speed drifts weighs on every path alike; each round times --images passes after
warm-up passes (the fused convolutions measure their kernels per shape on first use).
On a CPU glibc's malloc keeps freed blocks for the whole process, as fastgan.test sets
for its fused path (fastgan/engine/host_memory.py): the eager rows get it too, which
can only lean the ratios against fastgan. Results: printed, and written as JSON and
markdown to $OUT, else benchmarks/results/ (inference_throughput_<machine>.*).
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import time

import torch

import fastgan
from benchmarks.arguments import positive
from benchmarks.machine import describe_machine, sync, write_results
from fastgan.engine.host_memory import reuse_freed_memory
from fastgan.models import define_G
from fastgan.options import resolve
from fastgan.test import TOOL_DEFAULTS, generator_path

PATHS = ("eager", "accelerate", "accelerate+channels_last")


def generators(netG: str, ngf: int, device: torch.device) -> dict[str, tuple[torch.nn.Module, torch.memory_format]]:
    """Each path's generator (eval mode, the same weights) and its inputs' memory format."""
    torch.manual_seed(0)
    plain = define_G(3, 3, ngf, netG, norm="instance", use_dropout=False).to(device).eval()
    fused = fastgan.accelerate(copy.deepcopy(plain))
    nhwc = copy.deepcopy(fused).to(memory_format=torch.channels_last)
    return {"eager": (plain, torch.contiguous_format), "accelerate": (fused, torch.contiguous_format),
            "accelerate+channels_last": (nhwc, torch.channels_last)}


def fastgan_test_path(netG: str, device: torch.device) -> str:
    """The path `python -m fastgan.test --eval` takes for this generator on `device`."""
    accelerate, channels_last = generator_path(resolve("cyclegan", {"netG": netG, "no_dropout": True}),
                                               dict(TOOL_DEFAULTS, eval=True), device)
    return PATHS[accelerate + channels_last] if accelerate else "eager"


def seconds_per_image(G: torch.nn.Module, x: torch.Tensor, images: int, device: torch.device) -> float:
    sync(device)
    start = time.perf_counter()
    for _ in range(images):
        G(x)
    sync(device)
    return (time.perf_counter() - start) / images


def run(netG: str, ngf: int, size: int, images: int, rounds: int, warmup: int, device: torch.device,
        on_row=lambda report: None) -> dict:
    if device.type == "cpu":
        reuse_freed_memory()
    else:  # every path as the reference's test and fastgan.test run one image size: cuDNN's timed algorithms
        torch.backends.cudnn.benchmark = True
    nets = generators(netG, ngf, device)
    x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(1)).to(device) * 2 - 1
    inputs = {path: x.contiguous(memory_format=fmt) for path, (_, fmt) in nets.items()}
    times: dict[str, list[float]] = {path: [] for path in PATHS}
    rows = []
    report = {"machine": describe_machine(device), "device": device.type, "netG": netG, "ngf": ngf, "size": size,
              "images_per_round": images, "rounds": rounds, "torch_threads": torch.get_num_threads(),
              "fastgan_test_path": fastgan_test_path(netG, device), "rows": rows}
    with torch.no_grad():
        reference = nets["eager"][0](x)
        # the paths must agree before their times mean anything: to float32 rounding (images in
        # [-1, 1]), or on a GPU to TF32's, which cuDNN's and Triton's convolutions take by default
        tol = 1e-2 if device.type == "cuda" else 1e-3
        for path, (G, _) in nets.items():
            for _ in range(warmup):
                G(inputs[path])
            out = G(inputs[path])
            if not torch.allclose(out, reference, rtol=tol, atol=tol):
                raise AssertionError(f"{path} differs from eager by {float((out - reference).abs().max()):.3g}")
        for r in range(rounds):
            for path, (G, _) in nets.items():
                times[path].append(seconds_per_image(G, inputs[path], images, device))
            print(f"round {r + 1}/{rounds}: " + ", ".join(f"{p} {1 / times[p][-1]:.2f}/s" for p in PATHS), flush=True)
            rows[:] = summary(times)
            on_row(report)  # written after each round: a run cut short keeps what it measured
    return report


def summary(times: dict[str, list[float]]) -> list[dict]:
    """Each path's median images/s, spread over rounds, and ratio to eager (of the medians, and
    the median of the rounds' own ratios)."""
    rows = []
    for path, seconds in times.items():
        rates = [1 / s for s in seconds]
        median = statistics.median(rates)
        ratios = [e / s for e, s in zip(times["eager"], seconds)]
        rows.append({"path": path, "images_per_second": median, "spread": (max(rates) - min(rates)) / median,
                     "vs_eager": median / statistics.median(1 / s for s in times["eager"]),
                     "round_ratio_median": statistics.median(ratios)})
    return rows


def markdown(report: dict) -> str:
    lines = [f"# Test-time translation on {report['machine']}", "",
             f"{report['netG']}, ngf {report['ngf']}, {report['size']}², batch 1, eval mode under torch.no_grad "
             f"(`python -m fastgan.test`'s forward per image, without image files); median of {report['rounds']} "
             f"interleaved rounds of {report['images_per_round']} images per path; {report['torch_threads']} "
             "torch threads. 'spread': (fastest - slowest round) / median. 'rounds' ratio': the median of each "
             f"round's own ratio to eager. fastgan.test takes `{report['fastgan_test_path']}` here.", "",
             "| path | images/s | spread | vs eager | rounds' ratio |", "|---|---:|---:|---:|---:|"]
    for r in report["rows"]:
        mark = " (fastgan.test)" if r["path"] == report["fastgan_test_path"] else ""
        lines.append(f"| {r['path']}{mark} | {r['images_per_second']:.3f} | {r['spread'] * 100:.0f}% | "
                     f"{r['vs_eager']:.2f}x | {r['round_ratio_median']:.2f}x |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--netG", default="resnet_9blocks",
                        choices=["resnet_9blocks", "resnet_6blocks", "unet_128", "unet_256"])
    parser.add_argument("--ngf", type=positive, default=64)
    parser.add_argument("--size", type=positive, default=256, help="image side (U-Nets: a multiple of 128 or 256)")
    parser.add_argument("--images", type=positive, default=5, help="forward passes per path per round")
    parser.add_argument("--rounds", type=positive, default=6)
    parser.add_argument("--warmup", type=positive, default=2, help="untimed passes per path first")
    parser.add_argument("--out", default=os.environ.get("OUT") or "benchmarks/results")
    args = parser.parse_args(argv)
    multiple = {"unet_128": 128, "unet_256": 256}.get(args.netG)
    if multiple and args.size % multiple:
        parser.error(f"--size {args.size}: {args.netG} takes sides that are multiples of {multiple}")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    def write(report: dict) -> str:
        return write_results(args.out, "inference_throughput", report, markdown(report))

    report = run(args.netG, args.ngf, args.size, args.images, args.rounds, args.warmup, device, write)
    stem = write(report)
    print(markdown(report))
    print(f"wrote {stem}.json and {stem}.md")


if __name__ == "__main__":
    main()
