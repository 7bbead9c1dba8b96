"""End-to-end training throughput: the reference-style eager trainer against fastgan's levels.

    python -m benchmarks.train_throughput                      # this device's configs
    python -m benchmarks.train_throughput --arch cyclegan --size 128 --batch 1 --iters 20

Every row is full training iterations (both generators and discriminators,
forward and backward, both Adam steps, the image pools) on one fixed batch
already on the device, so the loader is not measured (benchmarks/
loader_throughput.py does that). The baseline, "eager", is the reference's
path: plain nn modules, fp32, the reference's update order and pool, torch's
own Adam, cuDNN as the reference sets it (fastgan.engine.levels.eager_levels). Each
level is built from the same seed and warmed up (compilation and CUDA-graph capture
happen there) and timed in --rounds blocks: the first right after its warm-up, the
others in interleaved rounds, each level's block in turn (the order reversed every
other round); over --iters iterations and at least --min_seconds in all (short
iterations would otherwise be timed over a fraction of a second, at the mercy of a
shared machine's noise), the device synchronized before the clock stops. A row holds
the median round's images/s and the rounds' spread; a level whose losses are not
finite gets no ratio. Eager takes part in the rounds like any level (see run()).

Model FLOPs per iteration are counted once (torch.utils.flop_counter on one
eager iteration); on a GPU the table adds the share of the card's dense bf16
matrix peak those FLOPs reach: the datasheet's, and the one benchmarks/ceilings.py
measured (--ceilings). With --profile_iters N, N more iterations of each level run
under torch.profiler (benchmarks/profiler.py): its top ops, and the device's busy
time against the wall time (on a GPU: bound by the device or by the host?). Results:
printed, and written as JSON and markdown to $OUT, else benchmarks/results/
(train_throughput[_<tag>]_<machine>.*).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks import profiler
from benchmarks.arguments import non_negative_int, non_negative_seconds, positive
from benchmarks.machine import describe_machine, sync, write_results
from fastgan.engine.levels import apply_process_levels
from fastgan.engine.models import model_from_options, patch_discriminator_smallest_side
from fastgan.models import generator_size_multiple
from fastgan.options import resolve

# dense bf16 tensor-core peaks (TFLOP/s, no sparsity), by a substring of the device name, the
# first that matches (the NVL cards, at a lower power, before the names they contain)
BF16_PEAK_TFLOPS = {"H200 NVL": 835.0, "H100 NVL": 835.0, "H200": 989.0, "H100 SXM": 989.0, "H100 PCIe": 756.0,
                    "H100": 989.0, "A100": 312.0}

CPU_LEVELS = {
    "eager": dict(eager=True),
    "accelerate alone": dict(accelerate=True, channels_last=False, merge_passes=False, adam="default"),
    "accelerate+merge_passes": dict(accelerate=True, channels_last=False, adam="default"),
    "default": dict(),
    "compile": dict(accelerate=False, compile="nets"),
    "fast": dict(fast=True),
}
GPU_LEVELS = {
    "eager": dict(eager=True),
    "accelerate": dict(accelerate=True, compile="none", cuda_graphs=False),
    "default (fp32)": dict(),
    "fast": dict(fast=True),
}


def config(args) -> list[dict]:
    """The (arch, size, batch, net) configs of this run."""
    if args.size is not None:
        return [dict(arch=args.arch, size=args.size, batch=args.batch)]
    if torch.cuda.is_available():
        return [dict(arch="cyclegan", size=256, batch=1), dict(arch="cyclegan", size=256, batch=16)]
    return [dict(arch="cyclegan", size=128, batch=1), dict(arch="pix2pix", size=128, batch=1)]


def generator(arch: str, size: int) -> str:
    return {"cyclegan": "resnet_9blocks", "pix2pix": "unet_128" if size == 128 else "unet_256"}[arch]


# the reference's widths; the tests narrow them (tests/benchmarks), the benchmarks never do
WIDTHS = dict(ngf=64, ndf=64)


def build(cfg: dict, level: dict, device: str):
    explicit = dict(netG=generator(cfg["arch"], cfg["size"]), **WIDTHS, batch_size=cfg["batch"],
                    crop_size=cfg["size"], device=device, seed=0, **level)
    return model_from_options(resolve(cfg["arch"], explicit))


def batch(cfg: dict, device: str) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    shape = (cfg["batch"], 3, cfg["size"], cfg["size"])
    return [(torch.rand(shape, generator=g) * 2 - 1).to(device) for _ in range(2)]


class Timed:
    """One level of one config, built and warmed up once, then timed in blocks: the rounds of
    `measure_group` run each level's block in turn, so a load spike on a shared machine falls
    on all of them alike and the spread between rounds shows the noise."""

    def __init__(self, cfg: dict, level: dict, device: str, warmup: int):
        self.cfg, self.device = cfg, device
        self.model = build(cfg, level, device)
        self.inputs = batch(cfg, device)
        start = time.perf_counter()
        # at least until a captured level replays: the capture's own step is not timed
        for _ in range(max(warmup, self.model.iterations_before_replay)):
            self.losses = self.model.step(*self.inputs)
        sync(device)
        self.warmup_seconds = time.perf_counter() - start
        self.rates: list[float] = []  # images/s of each timed block
        self.iterations, self.seconds = 0, 0.0

    def time_block(self, iters: int, min_seconds: float) -> None:
        apply_process_levels(self.model.levels, torch.device(self.device))  # cuDNN's flag is process-wide
        start = time.perf_counter()
        done = 0
        while done < iters or time.perf_counter() - start < min_seconds:
            self.losses = self.model.step(*self.inputs)
            done += 1
        sync(self.device)
        seconds = time.perf_counter() - start
        self.rates.append(done * self.cfg["batch"] / seconds)
        self.iterations, self.seconds = self.iterations + done, self.seconds + seconds

    def row(self) -> dict:
        rate = statistics.median(self.rates)
        row = {"levels": self.model.levels.describe(), "images_per_second": rate,
               "seconds_per_iteration": self.cfg["batch"] / rate, "iterations": self.iterations,
               "rounds": len(self.rates), "images_per_second_rounds": self.rates,
               "spread": (max(self.rates) - min(self.rates)) / rate, "warmup_seconds": self.warmup_seconds,
               "losses_finite": all(torch.isfinite(v).item() for v in self.losses.values())}
        if not row["losses_finite"]:  # timed, but no speed-up to claim from it
            row["error"] = "its losses are not finite"
        return row


def measure_group(result: dict, names: list[str], levels: dict, device: str, args, peaks: dict, on_row) -> None:
    """Time the named levels of `result`'s config in --rounds blocks each (--iters and
    --min_seconds split among them): each level's first block right after its build and
    warm-up (a run cut while later levels compile keeps a row of every level built), the
    other rounds interleaved. Each row holds the median block's images/s and is written
    after every round. The profiles come after all rounds: a profiler session can leave
    later CUDA work slower (CUPTI not torn down: pytorch/pytorch#144455), which would fall
    on some levels' blocks and not others'."""
    cfg, rows = result["config"], result["rows"]
    per_round, seconds = max(1, -(-args.iters // args.rounds)), args.min_seconds / args.rounds
    timed = {}

    def time_round(group: dict) -> None:
        for name, t in list(group.items()):
            try:
                t.time_block(per_round, seconds)
                set_row(rows, {"level": name, **t.row()})
            except RuntimeError as e:  # out of memory, say: the level's row says so
                del timed[name]
                set_row(rows, {"level": name, "error": str(e).splitlines()[0]})
        add_ratios(result, peaks)
        on_row()

    for name in names:
        try:
            timed[name] = Timed(cfg, levels[name], device, args.warmup)
        except (ValueError, RuntimeError) as e:  # a level this device refuses: say so in the table
            rows.append({"level": name, "error": str(e).splitlines()[0]})
            print(f"{cfg} {name}: {rows[-1]['error']}", flush=True)
            continue
        time_round({name: timed[name]})
    for i in range(args.rounds - 1):  # the order reversed every other round: a steady drift falls on all alike
        time_round(dict(reversed(timed.items())) if i % 2 == 0 else timed)
    for name, t in timed.items():
        print(f"{cfg} {name}: {rows_by_level(rows)[name]}", flush=True)
        if args.profile_iters:  # on the model just timed: nothing is built or compiled again
            apply_process_levels(t.model.levels, torch.device(device))
            try:
                profile = profiler.profile_iterations(t.model, t.inputs, device, args.profile_iters, args.top)
            except RuntimeError as e:  # out of memory, a CUPTI error: the row keeps its timing
                profile = {"error": str(e).splitlines()[0]}
            rows_by_level(rows)[name]["profile"] = profile
            on_row()


def rows_by_level(rows: list[dict]) -> dict[str, dict]:
    return {r["level"]: r for r in rows}


def set_row(rows: list[dict], row: dict) -> None:
    """Replace the row of the same level, or add it."""
    for i, r in enumerate(rows):
        if r["level"] == row["level"]:
            rows[i] = row
            return
    rows.append(row)


def iteration_flops(cfg: dict, device: str) -> int:
    model = build(cfg, dict(eager=True), device)
    with FlopCounterMode(display=False) as counter:
        model.step(*batch(cfg, device))
    return counter.get_total_flops()


def bf16_peak() -> float | None:
    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name()
    for key, tflops in BF16_PEAK_TFLOPS.items():
        if key in name:
            return tflops * 1e12
    return None


def device_levels() -> dict[str, dict]:
    return GPU_LEVELS if torch.cuda.is_available() else CPU_LEVELS


def chosen_levels(names: str | None) -> dict[str, dict]:
    """--levels' names (empty ones, as a trailing comma leaves, skipped), else all the device's."""
    levels = device_levels()
    return {k: levels[k] for k in names.split(",") if k} if names else levels


def run(args, on_row=lambda report: None) -> dict:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    levels = chosen_levels(args.levels)
    peaks = {"datasheet": bf16_peak(), "measured": measured_bf16_peak(args.ceilings)}
    results = []
    report = {"machine": describe_machine(), "device": device, "warmup": args.warmup, "iters": args.iters,
              "rounds": args.rounds, "min_seconds": args.min_seconds,
              "bf16_peak_tflops": {k: v / 1e12 if v else None for k, v in peaks.items()}, "results": results}
    for cfg in config(args):
        results.append({"config": cfg, "flops_per_iteration": iteration_flops(cfg, device), "rows": []})

    def names(cfg: dict) -> list[str]:  # at batch 16 on a GPU the question is the bf16 share of peak
        return [n for n in levels if device == "cpu" or cfg["batch"] == 1 or n in ("eager", "fast")]

    for result in results:  # benchmarks.targets tells a run cut short from a complete one
        result["levels_planned"] = names(result["config"])
    # eager interleaved with the others too: on a shared machine, whose speed drifts over minutes,
    # rounds of eager first and of the others later would compare two periods. Its first block
    # runs before any other level's build; the later ones after the malloc setting the other
    # levels apply on a CPU (fastgan/engine/host_memory.py), which ran eager 0-4% faster on a
    # 2-core EPYC (0.236-0.254 against 0.259-0.264 images/s): the ratios lean against fastgan if
    # anything. On a GPU cuDNN's process-wide flag is set to each level's before its block.
    for result in results:
        measure_group(result, names(result["config"]), levels, device, args, peaks, lambda: on_row(report))
    for result in results:  # the levels' order
        result["rows"].sort(key=lambda r: list(levels).index(r["level"]))
    return report


def add_ratios(result: dict, peaks: dict) -> None:
    """vs eager, model TFLOP/s and the shares of the bf16 peaks, for every timed row of one config."""
    rows, cfg = result["rows"], result["config"]
    base = next((r["images_per_second"] for r in rows if r["level"] == "eager" and "error" not in r), None)
    for r in rows:
        if "error" not in r:
            r["vs_eager"] = r["images_per_second"] / base if base else None
            achieved = result["flops_per_iteration"] * r["images_per_second"] / cfg["batch"]
            r["model_tflops_per_second"] = achieved / 1e12
            for kind, peak in peaks.items():
                r[f"share_of_{kind}_bf16_peak"] = achieved / peak if peak else None


def measured_bf16_peak(path: str | None) -> float | None:
    """The bf16 matrix rate benchmarks/ceilings.py measured on this device (FLOP/s), if given."""
    if not path or not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)["bf16_matmul_tflops"] * 1e12


def markdown(report: dict) -> str:
    peaks = report["bf16_peak_tflops"]
    peak_note = ", ".join(f"{kind} {tflops:.0f} TFLOP/s" for kind, tflops in peaks.items() if tflops)
    lines = [f"# Training throughput on {report['machine']}", "",
             f"Full iterations on one fixed batch on the device; {report['warmup']} warm-up (and the "
             "CUDA graph's capture, where one is), then at least "
             f"{report['iters']} timed" + (f" and {report['min_seconds']:g} s" if report.get("min_seconds") else "")
             + f" per level, in {report['rounds']} interleaved rounds: images/s is the median round's, ± half "
             "the rounds' range. Baseline: the reference-style eager trainer (same run and rounds)."
             + (f" Dense bf16 peaks: {peak_note}." if peak_note else ""), ""]
    for res in report["results"]:
        cfg = res["config"]
        lines += [f"## {cfg['arch']}, {cfg['size']}², batch {cfg['batch']} "
                  f"({res['flops_per_iteration'] / 1e9:.1f} GFLOP per iteration)", "",
                  "| level | what runs | images/s | vs eager | model TFLOP/s | of bf16 peak (datasheet / measured) |",
                  "|---|---|---:|---:|---:|---:|"]
        for r in res["rows"]:
            if "error" in r:
                what = f"{r['levels']}; not counted: {r['error']}" if "levels" in r else f"refused: {r['error']}"
                lines.append(f"| {r['level']} | {what} | - | - | - | - |")
                continue
            shares = [r.get(f"share_of_{kind}_bf16_peak") for kind in ("datasheet", "measured")]
            share = " / ".join(f"{v * 100:.1f}%" if v else "-" for v in shares)
            ratio = f"{r['vs_eager']:.2f}x" if r["vs_eager"] else "-"
            lines.append(f"| {r['level']} | {r['levels']} | {r['images_per_second']:.3g} ±{r['spread'] * 50:.0f}% | "
                         f"{ratio} | {r['model_tflops_per_second']:.2f} | {share} |")
        lines.append("")
        for r in res["rows"]:
            if "profile" in r and "error" in r["profile"]:
                lines += [f"### {r['level']}: not profiled ({r['profile']['error']})", ""]
            elif "profile" in r:
                lines += [f"### {r['level']}: {profiler.busy_note(r['profile'], r['seconds_per_iteration'] * 1e3)} "
                          "per iteration", ""] + profiler.top_table(r["profile"]) + [""]
    return "\n".join(lines)


def check_arguments(parser: argparse.ArgumentParser, args) -> None:
    """Level names of this device, and a --size the config's nets take, refused as usage errors."""
    unknown = [k for k in (args.levels or "").split(",") if k and k not in device_levels()]
    if unknown or args.levels is not None and not chosen_levels(args.levels):
        parser.error(f"--levels {args.levels!r}: the levels on this device are {', '.join(device_levels())}")
    if args.size is None:
        return
    net = generator(args.arch, args.size)
    if args.size % generator_size_multiple(net):
        parser.error(f"--size {args.size}: --arch {args.arch} runs {net} here, which takes multiples of "
                     f"{generator_size_multiple(net)}")
    if args.size < patch_discriminator_smallest_side("basic", 3):
        parser.error(f"--size {args.size}: the PatchGAN discriminator takes "
                     f"{patch_discriminator_smallest_side('basic', 3)} pixels or more")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="cyclegan", choices=("cyclegan", "pix2pix"))
    parser.add_argument("--size", type=positive, default=None, help="crop size (default: the device's configs)")
    parser.add_argument("--batch", type=positive, default=1)
    parser.add_argument("--warmup", type=non_negative_int, default=3)
    parser.add_argument("--iters", type=positive, default=10, help="timed iterations of each level, at least, "
                                                                   "over all rounds")
    parser.add_argument("--rounds", type=positive, default=5, help="interleaved rounds: each level's timed block "
                                                                  "in turn; a row holds the median round")
    parser.add_argument("--min_seconds", type=non_negative_seconds, default=0.0 if torch.cuda.is_available() else 20.0,
                        help="time each level at least this long over all rounds (default: 20 s on a CPU, whose "
                             "shared cores are noisy)")
    parser.add_argument("--levels", default=None, help="comma-separated subset of the level names: on a GPU "
                                                      f"{', '.join(GPU_LEVELS)}; on a CPU {', '.join(CPU_LEVELS)}")
    parser.add_argument("--out", default=os.environ.get("OUT") or "benchmarks/results")
    parser.add_argument("--ceilings", default=None, help="benchmarks/ceilings.py's JSON (measured bf16 peak)")
    parser.add_argument("--profile_iters", type=non_negative_int, default=0,
                        help="after timing each level, profile this many more iterations: its top --top ops "
                             "and how busy the device was (benchmarks/profiler.py)")
    parser.add_argument("--top", type=positive, default=8, help="ops listed per profiled level")
    parser.add_argument("--tag", default="", help="results file train_throughput_<tag>_<machine>.* (runs of "
                                                  "different configs side by side; default with --size: "
                                                  "<arch><size>_b<batch>)")
    args = parser.parse_args(argv)
    check_arguments(parser, args)
    # a config of one's own never writes over the device's configs' file, which benchmarks.targets judges
    tag = args.tag or (f"{args.arch}{args.size}_b{args.batch}" if args.size is not None else "")
    name = f"train_throughput_{tag}" if tag else "train_throughput"

    def write(report: dict) -> str:
        return write_results(args.out, name, report, markdown(report))

    report = run(args, on_row=write)
    stem = write(report)
    print(markdown(report))
    print(f"wrote {stem}.json and {stem}.md")


if __name__ == "__main__":
    main()
