"""Turns runs of benchmarks/kernels into the results files.

    python -m benchmarks.kernels.report RUN.json|RUN.jsonl [...] [--out DIR] [--ceilings FILE]

A run is a pytest-benchmark JSON (--benchmark-json, written when the run ends) or the
rows its benchmarks appended as they finished (--rows-jsonl, benchmarks/kernels/
conftest.py: what a run cut at its time limit leaves).

Prints one row per case x mode x provider: median time of one call, achieved GB/s
(the case's byte floor over that time) and the ratio to the eager composition of
the same run; with --ceilings (benchmarks/ceilings.py's JSON, measured on the same
device) also the share of the device-to-device copy bandwidth. Writes
kernels_<machine>.json and .md to --out (default $OUT when set, else
benchmarks/results). Several runs (one per op, as gpu_suite.sh makes them) merge.
"""

from __future__ import annotations

import argparse
import json
import os

from benchmarks.machine import describe_machine, write_results


def read_run(path: str) -> dict | None:
    """{"benchmarks": [...]} from a pytest-benchmark JSON or a --rows-jsonl file (its
    complete lines); None when there is no file or no complete result in it."""
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        return None
    if path.endswith(".jsonl"):
        entries = []
        for line in text.splitlines():
            try:
                entries.append(json.loads(line))
            except json.JSONDecodeError:  # the line being written when the run was cut
                pass
        return {"benchmarks": entries} if entries else None
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return None


def rows_from(run: dict, copy_gb_per_s: float | None = None) -> list[dict]:
    rows = []
    for bench in run["benchmarks"]:
        info = bench["extra_info"]
        # a graph-timed round: the time between its CUDA events (the wall clock adds the host's sync)
        median = info.get("device_round_s", bench["stats"]["median"]) / info.get("calls_per_round", 1)
        gb_per_s = info["bytes"] / median / 1e9
        rows.append({**info, "case": case_label(info),
                     "median_s": median, "gb_per_s": gb_per_s,
                     "share_of_copy": gb_per_s / copy_gb_per_s if copy_gb_per_s else None})
    # a ratio only between rows timed the same way: a provider whose capture failed is timed by
    # the wall clock, which counts the host's dispatch that eager's graph-timed row leaves out
    eager = {(r["case"], r["mode"], timing_method(r)): r["median_s"] for r in rows if r["provider"] == "eager"}
    for r in rows:
        base = eager.get((r["case"], r["mode"], timing_method(r)))
        r["speedup_vs_eager"] = base / r["median_s"] if base else None
    return rows


def case_label(info: dict) -> str:
    """`instance_norm_act 1x256x64x64 torch.bfloat16 channels_last` (contiguous unsaid)."""
    layout = info.get("layout", "contiguous")  # (runs before layouts were recorded: contiguous)
    return (f"{info['op']} {'x'.join(map(str, info['shape']))} {info['dtype']}"
            + ("" if layout == "contiguous" else f" {layout}"))


def timing_method(row: dict) -> str:
    """"wall", "cuda graph" (earlier runs: the wall clock around a replay) or "cuda events",
    without what follows in parentheses (the reason a capture failed, what the events time)."""
    return row.get("timing", "wall").split(" (")[0]


def selection_note(row: dict) -> str:
    """reflect_conv2d's measured choice per phase: `forward: aten (triton 1.20 ms, aten 0.80 ms)`."""
    parts = []
    for entry in row.get("selection", []):
        times = ", ".join(f"{name} {seconds * 1e3:.3f} ms" for name, seconds in entry["times"].items())
        parts.append(f"{entry['phase']}: {entry['choice']} ({times})")
    return "; ".join(parts)


def markdown(rows: list[dict], machine: str, ceilings: dict | None, missing: list[str] = ()) -> str:
    lines = [f"# Kernel benchmarks on {machine}", ""]
    if missing:
        lines += [f"Runs that did not finish (cut at their time limit), so without rows: {', '.join(missing)}.", ""]
    if ceilings:
        lines += [f"Device-to-device copy, measured in the same session: {ceilings['copy_gb_per_s']:.0f} GB/s "
                  "(bytes read + written); 'of copy' is each row's GB/s over it.", ""]
    lines += ["'median ms' is the time per call from rounds of back-to-back calls that end in one "
              "synchronization, timed as 'timed' says: 'wall' counts host-side dispatch, which dominates "
              "small shapes on a GPU; 'cuda events (graph replay)' replays the round captured once and times it "
              "between CUDA events, the device's work and the replay's launch ('cuda graph', in earlier runs: "
              "the wall clock around the replay).", "",
              "| case | mode | provider | timed | median ms | GB/s | of copy | vs eager |",
              "|---|---|---|---|---:|---:|---:|---:|"]
    for r in rows:
        ratio = f"{r['speedup_vs_eager']:.2f}x" if r["speedup_vs_eager"] else "-"
        share = f"{r['share_of_copy'] * 100:.0f}%" if r.get("share_of_copy") else "-"
        lines.append(f"| {r['case']} | {r['mode']} | {r['provider']} | {r.get('timing', 'wall')} | "
                     f"{r['median_s'] * 1e3:.3f} | "
                     f"{r['gb_per_s']:.1f} | {share} | {ratio} |")
    choices = [(r["case"], r["mode"], selection_note(r)) for r in rows if r.get("selection")]
    if choices:
        lines += ["", "reflect_conv2d's measured choice between the back end's fused kernel (triton on a GPU, "
                  "winograd on a CPU) and pad + the vendor convolution (aten), per case:", ""]
        lines += [f"- {case}, {mode}: {note}" for case, mode, note in choices]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="pytest-benchmark JSON files of benchmarks/kernels")
    parser.add_argument("--out", default=os.environ.get("OUT") or "benchmarks/results")
    parser.add_argument("--ceilings", default=None, help="benchmarks/ceilings.py's JSON for this device")
    args = parser.parse_args(argv)
    ceilings = None
    if args.ceilings and os.path.exists(args.ceilings):
        with open(args.ceilings) as f:
            ceilings = json.load(f)
    rows, missing = [], []
    for path in args.runs:
        run = read_run(path)
        if run is None:  # a run cut short by its time limit writes no JSON, or half of one
            print(f"{path}: missing or incomplete (that run did not finish)")
            missing.append(os.path.basename(path))
            continue
        rows += rows_from(run, ceilings["copy_gb_per_s"] if ceilings else None)
    if not rows:  # (a mistyped path would otherwise write an empty table over the results)
        parser.exit(1, f"no run gave a row ({', '.join(args.runs)}): nothing written to {args.out}\n")
    # the device the runs measured (a report may be made elsewhere from their files)
    machine = (next((r["machine"] for r in rows if "machine" in r), None)
               or (ceilings or {}).get("machine") or describe_machine())
    text = markdown(rows, machine, ceilings, missing)
    print(text)
    report = {"machine": machine, "ceilings": ceilings, "missing_runs": missing, "rows": rows}
    stem = write_results(args.out, "kernels", report, text)
    print(f"wrote {stem}.json and {stem}.md")


if __name__ == "__main__":
    main()
