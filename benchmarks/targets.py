"""The issues' benchmark targets, judged from the result files: met, missed or unmeasured.

    python -m benchmarks.targets                                         # benchmarks/results
    python -m benchmarks.targets --results build/gpu_suite/results --out build/gpu_suite/results

Reads the kernels_*, loader_* and train_throughput_* JSON files in --results (of the
training runs, make bench's and the GPU suite's --tag b1 and b16 only). A CPU
target is judged from a CPU's files (*_cpu.json), a GPU target from an NVIDIA card's; a
target none of whose rows is in any file is "unmeasured", never met. A training config is
judged from the newest file that ran it (benchmarks.targets.newest_runs); a best-of target
that a run cut short missed (a planned level not timed) is "unmeasured" too. Each verdict shows
the figures it rests on (the worst row where a target holds for every row) and the
file they come from; the list of files read says when git last committed each (a GPU
file can be older than the code it judges). Prints the table and writes it to
--out/targets.md.
"""

from __future__ import annotations

import argparse
import datetime
import glob
import json
import math
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from typing import Callable

FWD, FWD_BWD = "forward", "forward+backward"


@dataclass(frozen=True)
class Figure:
    value: float
    what: str      # the row it comes from
    source: str    # the result file's name
    missing: tuple[str, ...] = ()  # levels its run planned and did not time (a best-of target)


@dataclass(frozen=True)
class Target:
    issue: int
    device: str                      # "cpu" or "gpu": whose result files judge it
    text: str
    figures: Callable[[dict], list]  # the figures the target must hold for, from one device's results
    threshold: float
    unit: str = "x"                  # how the figures print: "x" (a ratio), "%" (a share), "/s"

    def judge(self, results: dict) -> tuple[str, str]:
        found = self.figures(results[self.device])
        if not found:
            return "unmeasured", ""
        worst = min(found, key=lambda f: f.value)
        verdict = "met" if worst.value >= self.threshold else "missed"
        lead = "worst of %d: " % len(found) if len(found) > 1 else ""
        if verdict == "missed" and worst.missing:  # a level not timed might have reached it
            verdict, lead = "unmeasured", f"incomplete (not timed: {', '.join(worst.missing)}); best timed: "
        return verdict, f"{lead}{self._format(worst.value)} ({worst.what}; {worst.source})"

    def _format(self, value: float) -> str:
        """The value with enough digits to stay on its side of the threshold (2.996 is no 3.00x)."""
        for digits in range(6):
            if self.unit == "%":
                text, shown = f"{value:.{digits}%}", round(value * 100, digits) / 100
            elif self.unit == "/s":
                text, shown = f"{value:,.{digits}f}/s", round(value, digits)
            else:
                text, shown = f"{value:.{digits + 2}f}x", round(value, digits + 2)
            if (shown >= self.threshold) == (value >= self.threshold):
                return text
        return text


def _shape(row: dict) -> str:
    return "x".join(str(d) for d in row["shape"])


def _row_what(row: dict, mode: str) -> str:
    layout = "" if row.get("layout", "contiguous") == "contiguous" else f" {row['layout']}"
    what = f"{row['op']} {_shape(row)} {row['dtype'].replace('torch.', '')}{layout} {mode}"
    if row["device"] == "cuda":  # wall: host dispatch included; cuda graph: the device's work
        what += f", timed {row.get('timing', 'wall')}"
    return what


def _kernel_rows(results: dict, op: str, provider: str, modes: tuple[str, ...], shape, dtype, batch):
    """(doc, row) of every kernels row of op x provider x mode, of `shape`, `dtype` and
    `batch` where given."""
    for doc in results.get("kernels", []):
        for row in doc["rows"]:
            if (row["op"] == op and row["provider"] == provider and row["mode"] in modes
                    and (shape is None or tuple(row["shape"]) == shape)
                    and (batch is None or row["shape"][0] == batch)
                    and (dtype is None or row["dtype"] == dtype)):
                yield doc, row


def kernel_figures(op: str, provider: str, modes: tuple[str, ...], key: str, shape: tuple[int, ...] | None = None,
                   dtype: str | None = None, batch: int | None = None) -> Callable[[dict], list]:
    """`key` ("speedup_vs_eager" or "share_of_copy") of every kernels row of op x provider x mode."""

    def figures(results: dict) -> list[Figure]:
        return [Figure(row[key], _row_what(row, row["mode"]), doc["source"])
                for doc, row in _kernel_rows(results, op, provider, modes, shape, dtype, batch)
                if row.get(key) is not None]

    return figures


def kernel_backward_share(op: str, provider: str, batch: int) -> Callable[[dict], list]:
    """The backward's share of copy bandwidth, from each pair of forward and forward+backward rows
    of one case in one file: the bytes and the time the forward+backward row has beyond the
    forward's (the benchmarks time no backward alone)."""

    def figures(results: dict) -> list[Figure]:
        forward = {(doc["source"], row["case"], row.get("layout", "contiguous")): row
                   for doc, row in _kernel_rows(results, op, provider, (FWD,), None, None, batch)}
        out = []
        for doc, both in _kernel_rows(results, op, provider, (FWD_BWD,), None, None, batch):
            fwd = forward.get((doc["source"], both["case"], both.get("layout", "contiguous")))
            if fwd is None or not fwd.get("share_of_copy") or both["median_s"] <= fwd["median_s"]:
                continue
            copy_gb_per_s = fwd["gb_per_s"] / fwd["share_of_copy"]
            backward_gb_per_s = (both["bytes"] - fwd["bytes"]) / (both["median_s"] - fwd["median_s"]) / 1e9
            out.append(Figure(backward_gb_per_s / copy_gb_per_s, _row_what(both, "backward (forward+backward less "
                                                                                  "forward)"), doc["source"]))
        return out

    return figures


def loader_figures(loader: str, key: str) -> Callable[[dict], list]:
    """`key` ("vs_torch" or "images_per_s") of the `loader` rows."""

    def figures(results: dict) -> list[Figure]:
        # (a ratio without its torch row in the run is NaN: no measurement of the target)
        return [Figure(row[key], f"--loader {loader}", doc["source"])
                for doc in results.get("loader", []) for row in doc["rows"]
                if row["loader"] == loader and math.isfinite(row[key])]

    return figures


def train_figures(levels: tuple[str, ...] | None, key: str, arch: str, size: int, batch: int,
                  best: bool = False) -> Callable[[dict], list]:
    """`key` of the rows of `levels` (None: every level but eager) at one config; with
    `best`, only the best of them (a target the fastest level must reach)."""

    def figures(results: dict) -> list[Figure]:
        out = []
        for doc, result in newest_runs(results.get("train", []), (arch, size, batch)):
            # a planned level with no row: the run was cut before it (a refused or failed level has one)
            rowed = [row["level"] for row in result["rows"]]
            missing = tuple(level for level in result.get("levels_planned", ()) if level not in rowed
                            and level != "eager" and (levels is None or level in levels))
            for row in result["rows"]:
                wanted = row["level"] != "eager" if levels is None else row["level"] in levels
                if wanted and row.get(key) is not None:
                    out.append(Figure(row[key], f"{arch} {size}² batch {batch}, level {row['level']}",
                                      doc["source"], missing if best else ()))
        return [max(out, key=lambda f: f.value)] if best and out else out

    return figures


def newest_runs(docs: list[dict], config: tuple) -> list[tuple[dict, dict]]:
    """(doc, result) of the newest files holding a run of `config` (arch, size, batch): the fewest
    commits ago (files not committed are newest), then the latest provenance date. An older
    file of the same config (a run before a results file was renamed) is left out."""
    runs = [(doc, result) for doc in docs for result in doc["results"]
            if (result["config"]["arch"], result["config"]["size"], result["config"]["batch"]) == config]
    if not runs:
        return []
    newest = min(age(doc) for doc, _ in runs)
    return [(doc, result) for doc, result in runs if age(doc) == newest]


def age(doc: dict) -> tuple[int, float]:
    """Sorts newest first: commits since the file was committed, then the run's date, latest first
    (an undated file older than any dated one)."""
    match = re.search(r", (\d+) commits ago", doc.get("committed", ""))
    commits = -1 if doc.get("committed") == "not committed" else int(match.group(1)) if match else 0
    date = doc.get("provenance", {}).get("date")
    return commits, -datetime.datetime.fromisoformat(date).timestamp() if date else math.inf


IN_SHAPE = (1, 256, 64, 64)
# the bandwidth targets: batch 16, whose tensors exceed the GPU's L2 (a batch-1 plane set of a few
# MB moves in about a kernel launch's time; benchmarks/gpu_suite.sh times these cases first)
BANDWIDTH_BATCH = 16
TARGETS = [
    Target(3, "cpu", "instance_norm_act forward+backward ≥2x eager (1x256x64x64 fp32)",
           kernel_figures("instance_norm_act", "cpu", (FWD_BWD,), "speedup_vs_eager", IN_SHAPE, "torch.float32"), 2.0),
    Target(3, "cpu", "cycle_losses forward+backward ≥2x eager",
           kernel_figures("cycle_losses", "cpu", (FWD_BWD,), "speedup_vs_eager"), 2.0),
    Target(3, "gpu", "instance_norm_act forward ≥85% of copy bandwidth (batch 16)",
           kernel_figures("instance_norm_act", "cuda", (FWD,), "share_of_copy", batch=BANDWIDTH_BATCH), 0.85, "%"),
    Target(3, "gpu", "instance_norm_act forward ≥3x eager",
           kernel_figures("instance_norm_act", "cuda", (FWD,), "speedup_vs_eager"), 3.0),
    Target(3, "gpu", "instance_norm_act backward ≥70% of copy bandwidth (batch 16)",
           kernel_backward_share("instance_norm_act", "cuda", BANDWIDTH_BATCH), 0.70, "%"),
    Target(3, "gpu", "reflect_conv2d never slower than pad + cuDNN (its measured choice; 5% for timing noise)",
           kernel_figures("reflect_conv2d", "triton", (FWD, FWD_BWD), "speedup_vs_eager"), 0.95),
    Target(3, "gpu", "cycle_losses ≥85% of copy bandwidth (batch 16)",
           kernel_figures("cycle_losses", "cuda", (FWD, FWD_BWD), "share_of_copy", batch=BANDWIDTH_BATCH), 0.85, "%"),
    Target(4, "cpu", "--loader dali ≥1.5x the DataLoader", loader_figures("dali", "vs_torch"), 1.5),
    Target(4, "cpu", "--loader cache ≥10x the DataLoader", loader_figures("cache", "vs_torch"), 10.0),
    Target(4, "gpu", "--loader dali (mixed) ≥5,000 images/s", loader_figures("dali", "images_per_s"), 5000, "/s"),
    Target(4, "gpu", "--loader cache ≥5,000 images/s", loader_figures("cache", "images_per_s"), 5000, "/s"),
    Target(5, "cpu", "--fast ≥3x eager (cyclegan 128², batch 1)",
           train_figures(("fast",), "vs_eager", "cyclegan", 128, 1), 3.0),
    Target(5, "cpu", "the default fp32 level ≥1.3x eager (cyclegan 128², batch 1)",
           train_figures(("default",), "vs_eager", "cyclegan", 128, 1), 1.3),
    Target(5, "gpu", "the fastest level ≥5x eager (cyclegan 256², batch 1)",
           train_figures(None, "vs_eager", "cyclegan", 256, 1, best=True), 5.0),
    Target(5, "gpu", "bf16 (--fast) ≥40% of the card's bf16 peak in model FLOPs (cyclegan 256², batch 16)",
           train_figures(("fast",), "share_of_datasheet_bf16_peak", "cyclegan", 256, 16), 0.40, "%"),
]

# the files the targets are judged from: make bench's (train_throughput_<machine>) and the GPU
# suite's (--tag b1, b16); a run of one's own config or tag is not judged
KINDS = {"kernels": "kernels_*.json", "loader": "loader_*.json", "train": "train_throughput_*.json"}
TRAIN_TAGS = ("b1", "b16")


def judged_file(name: str) -> bool:
    """Whether a results file is one the targets are judged from (machine names hold no "_")."""
    if not name.startswith("train_throughput_"):
        return True
    rest = name[len("train_throughput_"):]
    return "_" not in rest or rest.split("_", 1)[0] in TRAIN_TAGS


def load_results(folder: str) -> dict:
    """{"cpu": {kind: [doc, ...]}, "gpu": {...}} of the result files in `folder`."""
    results = {"cpu": {}, "gpu": {}}
    for kind, pattern in KINDS.items():
        for path in sorted(p for p in glob.glob(os.path.join(folder, pattern)) if judged_file(os.path.basename(p))):
            try:
                with open(path) as f:
                    doc = {**json.load(f), "source": os.path.basename(path), "committed": committed(path)}
            except (OSError, ValueError) as e:  # one unreadable file leaves the others' targets judged
                print(f"note: {path} cannot be read ({e}): its targets count as unmeasured", file=sys.stderr)
                continue
            device = "cpu" if path.endswith("_cpu.json") else "gpu"
            results[device].setdefault(kind, []).append(doc)
    return results


def committed(path: str) -> str:
    """"committed <hash> <date>, N commits ago" for a file git holds unchanged (N says
    how much code changed since its figures), "not committed" for one
    it does not hold or that differs from HEAD, "" outside a git checkout."""
    folder, name = os.path.split(os.path.abspath(path))

    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", "-C", folder, *args], capture_output=True, text=True)

    try:
        if git("rev-parse", "--is-inside-work-tree").returncode != 0:
            return ""
    except OSError:  # no git
        return ""
    last = git("log", "-1", "--format=%h %cs", "--", name)
    if last.returncode != 0 or not last.stdout.strip() or git("diff", "--quiet", "HEAD", "--", name).returncode != 0:
        return "not committed"
    commit = last.stdout.split()[0]
    since = git("rev-list", "--count", f"{commit}..HEAD").stdout.strip()
    return f"committed {last.stdout.strip()}, {since} commits ago"


def verdicts(results: dict, devices: tuple[str, ...] = ("cpu", "gpu")) -> list[tuple[Target, str, str]]:
    return [(t, *t.judge(results)) for t in TARGETS if t.device in devices]


def markdown(judged: list[tuple[Target, str, str]], folder: str, results: dict) -> str:
    sources = [f"{doc['source']} ({'; '.join(filter(None, (doc['machine'], doc.get('committed'))))})"
               for device in results.values()
               for docs in device.values() for doc in docs]
    lines = [f"# Benchmark targets, judged from {folder}", "",
             "Generated by `python -m benchmarks.targets` from the result files; a target none of whose "
             "rows was measured is unmeasured. Read: " + ("; ".join(sources) or "no result files") + ".", "",
             "| issue | where | target | verdict | figures |", "|---:|---|---|---|---|"]
    for target, verdict, figures in judged:
        lines.append(f"| {target.issue} | {target.device} | {target.text} | {verdict} | {figures} |")
    counts = {v: sum(1 for _, verdict, _ in judged if verdict == v) for v in ("met", "missed", "unmeasured")}
    lines += ["", ", ".join(f"{n} {v}" for v, n in counts.items()) + f" of {len(judged)}.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", default="benchmarks/results", help="the folder of result files")
    parser.add_argument("--out", default=None, help="where targets.md goes (default: --results)")
    parser.add_argument("--device", choices=("cpu", "gpu", "all"), default="all",
                        help="only the targets of this kind of device")
    args = parser.parse_args(argv)
    devices = ("cpu", "gpu") if args.device == "all" else (args.device,)
    if not os.path.isdir(args.results):  # (every target "unmeasured" said nothing of why)
        parser.error(f"--results {args.results}: no such folder of result files")
    results = load_results(args.results)
    text = markdown(verdicts(results, devices), args.results, results)
    out = args.out or args.results
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "targets.md"), "w") as f:
        f.write(text)
    print(text)
    return text


if __name__ == "__main__":
    main()
