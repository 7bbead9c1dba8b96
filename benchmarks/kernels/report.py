"""Turns a pytest-benchmark JSON of benchmarks/kernels into the results files.

    python -m benchmarks.kernels.report RUN.json [OUT_DIR]

Prints one row per case x mode x provider: median time, achieved GB/s (the
case's byte floor over the median) and the ratio to the eager composition of
the same run; writes kernels_<machine>.json and .md to OUT_DIR (default
benchmarks/results, or $OUT when set).
"""

from __future__ import annotations

import json
import os
import sys

from benchmarks.machine import describe_machine, write_results


def rows_from(run: dict) -> list[dict]:
    rows = []
    for bench in run["benchmarks"]:
        info = bench["extra_info"]
        median = bench["stats"]["median"]
        rows.append({**info, "case": f"{info['op']} {'x'.join(map(str, info['shape']))} {info['dtype']}",
                     "median_s": median, "gb_per_s": info["bytes"] / median / 1e9})
    eager = {(r["case"], r["mode"]): r["median_s"] for r in rows if r["provider"] == "eager"}
    for r in rows:
        base = eager.get((r["case"], r["mode"]))
        r["speedup_vs_eager"] = base / r["median_s"] if base else None
    return rows


def markdown(rows: list[dict], machine: str) -> str:
    lines = [f"# Kernel benchmarks on {machine}", "",
             "| case | mode | provider | median ms | GB/s | vs eager |", "|---|---|---|---:|---:|---:|"]
    for r in rows:
        ratio = f"{r['speedup_vs_eager']:.2f}x" if r["speedup_vs_eager"] else "-"
        lines.append(f"| {r['case']} | {r['mode']} | {r['provider']} | {r['median_s'] * 1e3:.3f} | "
                     f"{r['gb_per_s']:.1f} | {ratio} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> None:
    with open(argv[0]) as f:
        run = json.load(f)
    out_dir = argv[1] if len(argv) > 1 else os.environ.get("OUT") or "benchmarks/results"
    machine = describe_machine()
    rows = rows_from(run)
    text = markdown(rows, machine)
    print(text)
    stem = write_results(out_dir, "kernels", {"machine": machine, "rows": rows}, text)
    print(f"wrote {stem}.json and {stem}.md")


if __name__ == "__main__":
    main(sys.argv[1:])
