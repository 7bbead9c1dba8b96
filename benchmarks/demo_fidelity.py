"""Does mixed precision train as well as fp32? The embedded demo, trained at each precision.

    python -m benchmarks.demo_fidelity [--arch cyclegan] [--max_iters N]

Trains the demo (the same command as `make train`) once with the fp32 default
levels and once with --amp bf16, same seed, and compares the held-out
ground-truth error each run reports (fastgan.data.demo_score; lower is
better). The target: bf16's error within 5% of fp32's. Writes
demo_fidelity_<arch>_<machine>.json and .md to $OUT, else benchmarks/results/.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

from benchmarks.machine import describe_machine, write_results
from fastgan.train import main as train

PRECISIONS = {"fp32": [], "bf16": ["--amp", "bf16"]}


def train_demo(arch: str, name: str, extra: list[str], checkpoints: str, max_iters: int | None) -> dict:
    argv = ["--arch", arch, "--name", f"fidelity_{name}", "--checkpoints_dir", checkpoints, *extra]
    if max_iters:
        argv += ["--max_iters", str(max_iters)]
    start = time.perf_counter()
    summary = train(argv)
    return {"score": summary["demo_score"], "images_per_second": summary["images_per_second"],
            "seconds": time.perf_counter() - start}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="cyclegan", choices=("cyclegan", "pix2pix"))
    parser.add_argument("--max_iters", type=int, default=None, help="shorten the runs (for a quick check)")
    parser.add_argument("--out", default=os.environ.get("OUT") or "benchmarks/results")
    args = parser.parse_args(argv)
    runs = {}
    with tempfile.TemporaryDirectory() as checkpoints:
        for name, extra in PRECISIONS.items():
            runs[name] = train_demo(args.arch, name, extra, checkpoints, args.max_iters)
            print(f"{name}: {runs[name]}", flush=True)
    fp32, bf16 = runs["fp32"]["score"]["model"], runs["bf16"]["score"]["model"]
    report = {"machine": describe_machine(), "arch": args.arch, "max_iters": args.max_iters, "runs": runs,
              "bf16_error_vs_fp32": bf16 / fp32 - 1.0, "target": "bf16 error within 5% of fp32's"}
    lines = [f"# Demo fidelity, {args.arch}, on {report['machine']}", "",
             "| precision | G error (held-out, lower is better) | identity baseline | images/s | wall s |",
             "|---|---:|---:|---:|---:|"]
    for name, r in runs.items():
        lines.append(f"| {name} | {r['score']['model']:.4f} | {r['score']['identity']:.4f} | "
                     f"{r['images_per_second']:.2f} | {r['seconds']:.0f} |")
    lines += ["", f"bf16 error relative to fp32: {report['bf16_error_vs_fp32'] * 100:+.1f}% (target: within 5%)"]
    text = "\n".join(lines) + "\n"
    print(text)
    stem = write_results(args.out, f"demo_fidelity_{args.arch}", report, text)
    print(f"wrote {stem}.json and {stem}.md")


if __name__ == "__main__":
    main()
