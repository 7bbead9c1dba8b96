"""Loader throughput: each loader alone, images per second, against the torch DataLoader.

    python -m benchmarks.loader_throughput                       # 1,000 JPEGs of 400x600 -> 256²
    python -m benchmarks.loader_throughput --images 100 --seconds 2 --out /tmp/bench

A generated set of --images JPEGs (crops of scikit-image's photographs, so the
decoder sees photographic content; cached under build/) is read as a "single"
dataset in training mode: resize to --load_size (bicubic), random --crop_size
crop and flip, normalized, batches of --batch_size on the device, every loader
with the same --workers (DataLoader workers, DALI threads, cache build threads).
Each loader first runs a few batches (worker start, pipeline build; the cache's
one decode of the set is timed apart as "build s"), then whole epochs until
--seconds have passed; the device is synchronized before the clock stops.
Rows: torch (the baseline), dali (the default for the device: on a CPU, DALI
decodes and torch resizes; on a GPU, nvJPEG and DALI's GPU ops), cache, and on a
CPU also "dali, all in DALI" (the GPU's graph run on the CPU, for reference).
Targets: on a CPU dali >= 1.5x and cache >= 10x the DataLoader; on an H100,
dali and cache >= 5,000 images/s. Results are printed and written as JSON and
markdown to --out, else $OUT, else benchmarks/results/ (loader_<machine>.*).
"""

from __future__ import annotations

import argparse
import math
import os
import re
import time

import numpy as np
import torch
from PIL import Image

from benchmarks.machine import describe_machine, sync, write_results
from fastgan.data import CacheLoader, DaliLoader, TorchLoader, dali_import_error
from fastgan.data.dali_loader import DaliUnavailable
from fastgan.options import Options

TARGETS = {"cpu": {"dali": 1.5, "cache": 10.0}, "gpu_images_per_s": 5000}


def generated_set(n: int, width: int, height: int, root: str = "build/loader_bench") -> str:
    """A folder of n JPEGs of width x height: random crops of scikit-image's photographs, made once."""
    from skimage import data

    folder = os.path.join(root, f"{n}_{width}x{height}")
    if os.path.isdir(folder) and len(os.listdir(folder)) == n:
        return folder
    os.makedirs(folder, exist_ok=True)
    photos = [getattr(data, name)() for name in ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry")]
    rng = np.random.default_rng(0)
    for i in range(n):
        photo = Image.fromarray(photos[i % len(photos)])
        scale = rng.uniform(1.0, 1.5) * max(width / photo.width, height / photo.height)
        photo = photo.resize((int(photo.width * scale) + 1, int(photo.height * scale) + 1), Image.Resampling.BICUBIC)
        x, y = rng.integers(0, photo.width - width + 1), rng.integers(0, photo.height - height + 1)
        photo.crop((x, y, x + width, y + height)).save(os.path.join(folder, f"{i:05d}.jpg"), quality=90)
    return folder


def measure(make, device: torch.device, seconds: float, warmup_batches: int = 3) -> dict:
    """images/s over whole epochs after a few warm-up batches; the loader's making (DALI's
    pipeline) and the warm-up (the cache's build) timed apart, as setup_s."""
    start = time.perf_counter()
    loader = make()
    for i, _ in enumerate(loader.epoch_batches(0)):
        if i + 1 >= warmup_batches:
            break
    sync(device)
    setup = time.perf_counter() - start
    images, epoch, start = 0, 1, time.perf_counter()
    while True:
        for batch in loader.epoch_batches(epoch):
            images += batch["A"].shape[0]
        sync(device)
        epoch += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            break
    loader.close()
    return {"images_per_s": images / elapsed, "images": images, "seconds": elapsed, "epochs": epoch - 1,
            "setup_s": setup}


def loaders(opt: Options, device: torch.device) -> dict:
    """name -> a function making that loader, in the order measured (DALI rows only when DALI
    imports). On a GPU the cache before DALI: the GPU suite's capped step then keeps the
    cache's row whatever DALI's GPU decoding (carried there, run nowhere else) does."""
    rows = {"torch": lambda: TorchLoader(opt, device)}
    if device.type != "cpu":
        rows["cache"] = lambda: CacheLoader(opt, device)
    if dali_import_error() is None:
        rows["dali"] = lambda: DaliLoader(opt, device)
        if device.type == "cpu":
            rows["dali, all in DALI"] = lambda: DaliLoader(opt, device, transform_on="dali")
    rows["cache"] = lambda: CacheLoader(opt, device)  # (last on a CPU; on a GPU, its place above)
    return rows


def markdown(machine: str, config: dict, rows: list[dict]) -> str:
    lines = [f"# Loader throughput on {machine}", "",
             "config: " + ", ".join(f"{k} {v}" for k, v in config.items()), "",
             "| loader | images/s | vs torch DataLoader | warm-up s | epochs timed |",
             "|---|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['loader']} | {r['images_per_s']:.0f} | {r['vs_torch']:.2f}x | {r['setup_s']:.2f} | "
                     f"{r['epochs']} |")
    return "\n".join(lines) + "\n"


def check_arguments(parser: argparse.ArgumentParser, args) -> tuple[int, int]:
    """(width, height) of --size; a value the benchmark cannot run is a usage error."""
    size = re.fullmatch(r"(\d+)x(\d+)", args.size.lower())
    if not size or 0 in (int(size[1]), int(size[2])):
        parser.error(f"--size {args.size}: expected WxH in pixels, e.g. 400x600")
    for name in ("images", "load_size", "crop_size", "batch_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} {getattr(args, name)}: must be at least 1")
    if args.crop_size > args.load_size:
        parser.error(f"--crop_size {args.crop_size} is larger than --load_size {args.load_size}")
    if args.workers < 0:
        parser.error(f"--workers {args.workers}: must not be negative")
    if not math.isfinite(args.seconds) or args.seconds < 0:  # (a NaN never ends the timing)
        parser.error(f"--seconds {args.seconds}: a number of seconds, 0 or more")
    return int(size[1]), int(size[2])


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--size", default="400x600", help="generated images, WxH (default 400x600)")
    parser.add_argument("--load_size", type=int, default=286)
    parser.add_argument("--crop_size", type=int, default=256)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--workers", type=int, default=os.cpu_count(), help="default: the CPU count")
    parser.add_argument("--seconds", type=float, default=10.0, help="timed per loader (at least one epoch)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--loaders", default=None, help="comma-separated subset of the rows")
    parser.add_argument("--out", default=None, help="results folder (default: $OUT, else benchmarks/results)")
    args = parser.parse_args(argv)
    width, height = check_arguments(parser, args)
    device = torch.device(args.device)
    folder = generated_set(args.images, width, height)
    opt = Options(dataroot=folder, dataset_mode="single", phase="train", load_size=args.load_size,
                  crop_size=args.crop_size, batch_size=args.batch_size, num_threads=args.workers, seed=0)
    config = {"images": args.images, "image size": args.size, "load_size": args.load_size,
              "crop_size": args.crop_size, "batch_size": args.batch_size, "workers": args.workers,
              "device": str(device), "seconds per loader": args.seconds}
    available = loaders(opt, device)
    wanted = args.loaders.split(",") if args.loaders else list(available)
    unknown = [name for name in wanted if name not in available]
    if unknown:
        dali = f" (DALI: {dali_import_error()})" if dali_import_error() is not None else ""
        parser.error(f"--loaders {','.join(unknown)}: the rows here are {', '.join(available)}{dali}")
    if dali_import_error() is not None:
        config["dali"] = f"left out ({dali_import_error()})"
    machine = describe_machine(device)
    print(f"{machine}\n" + ", ".join(f"{k} {v}" for k, v in config.items()))
    out_dir = args.out or os.environ.get("OUT") or "benchmarks/results"
    rows = []
    for name, make in available.items():
        if name not in wanted:
            continue
        try:
            result = {"loader": name, **measure(make, device, args.seconds)}
        except DaliUnavailable as e:  # (DALI imports but cannot run here: the other rows go on)
            config[name] = f"left out ({e.reason})"
            print(f"  {name:18s} left out: {e.reason}", flush=True)
            continue
        rows.append(result)
        print(f"  {name:18s} {result['images_per_s']:8.0f} images/s  (warm-up {result['setup_s']:.2f} s)", flush=True)
        # written after every row: a run cut at its time limit keeps the loaders it measured
        text, stem = write_rows(out_dir, machine, config, rows)
    print("\n" + text)
    print(f"wrote {stem}.json and {stem}.md")
    return {"machine": machine, "rows": rows}


def write_rows(out_dir: str, machine: str, config: dict, rows: list[dict]) -> tuple[str, str]:
    """The results files of the rows so far (ratios against the torch row, the first)."""
    base = next((r["images_per_s"] for r in rows if r["loader"] == "torch"), None)
    for r in rows:
        r["vs_torch"] = r["images_per_s"] / base if base else float("nan")
    text = markdown(machine, config, rows)
    stem = write_results(out_dir, "loader", {"machine": machine, "config": config, "targets": TARGETS,
                                             "rows": rows}, text)
    return text, stem


if __name__ == "__main__":
    main()
