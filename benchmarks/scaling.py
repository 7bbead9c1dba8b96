"""Data-parallel scaling: images/s at 1, 2, ... ranks, and the gradient all-reduce against compute.

    python -m benchmarks.scaling                        # this machine: 1 and 2 CPU ranks, or 1..N GPUs
    python -m benchmarks.scaling --ranks 1 2 4 8 --size 256 --batch 4
    python -m benchmarks.scaling --size 32 --ngf 8 --ndf 8 --warmup 1 --iters 2   # a quick check

For each rank count W the script starts W processes as torchrun would (RANK,
WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT) and each joins the process group
through fastgan.engine.distributed (NCCL, one GPU per rank; gloo on a CPU). Each
rank trains full CycleGAN iterations, DistributedDataParallel nets as a
torchrun run has them, on a fixed batch of --batch images per rank already on
its device: the loader is not measured (benchmarks/train_throughput.py says
the same of one process). W = 1 is one plain process, the baseline.
images/s = W × batch × iterations / time, timed on rank 0 between barriers
(the gradient all-reduce keeps the ranks in step). Efficiency at W is the
compute time over the measured one: images/s(W) / (W × images/s(1)) with a
GPU per rank; on a CPU, whose cores the W ranks share, images/s(W) / images/s(1).

Then the all-reduce alone, on the same ranks: a flat fp32 buffer of the nets'
gradient size (CycleGAN, resnet_9blocks, ngf/ndf 64: 2 × (11.4M + 2.8M) values,
113 MB an iteration) reduced in DDP's buckets (25 MB), timed over several
repetitions. It is printed per iteration next to the compute time of one
iteration (W = 1), and next to what the W-rank iteration costs beyond it
(DDP overlaps the reduction with the backward; what is left shows there).

On a CPU the ranks share the cores: one rank uses them all, W ranks cores/W
threads each, so every row uses the same CPU. CUDA graphs are off in every
row (they do not compose with DDP yet); the other speed levels are the
device's defaults. Results: printed, and written as JSON and markdown to --out
(default $OUT, else benchmarks/results/), scaling_<machine>.*.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from benchmarks.arguments import non_negative_int, positive
from benchmarks.machine import describe_machine, free_port, sync, write_results
from fastgan.engine.distributed import init_from_env
from fastgan.engine.models import check_discriminator_input_size, check_generator_input_size, model_from_options
from fastgan.models import count_parameters
from fastgan.options import resolve

DDP_BUCKET_BYTES = 25 * 1024 * 1024  # DistributedDataParallel's default bucket_cap_mb


def options(args, device: str):
    return resolve("cyclegan", dict(netG=args.netG, ngf=args.ngf, ndf=args.ndf, batch_size=args.batch,
                                    crop_size=args.size, device=device, seed=0, pool_size=50,
                                    cuda_graphs=False))


def barrier(world_size: int, device: torch.device) -> None:
    sync(device)
    if world_size > 1:
        dist.barrier()


def time_iterations(model, args, rank: int, world_size: int) -> tuple[float, dict]:
    """Seconds per iteration (after --warmup untimed ones) and the last losses; each rank its own batch."""
    g = torch.Generator().manual_seed(1 + rank)
    shape = (args.batch, 3, args.size, args.size)
    inputs = [(torch.rand(shape, generator=g) * 2 - 1).to(model.device) for _ in range(2)]
    for _ in range(args.warmup):
        model.step(*inputs)
    barrier(world_size, model.device)
    start = time.perf_counter()
    for _ in range(args.iters):
        losses = model.step(*inputs)
    barrier(world_size, model.device)
    return (time.perf_counter() - start) / args.iters, losses


def time_all_reduce(numel: int, device: torch.device, reps: int) -> float:
    """Median seconds to all-reduce `numel` fp32 values in DDP-sized buckets."""
    bucket = DDP_BUCKET_BYTES // 4
    buffers = [torch.ones(min(bucket, numel - i), device=device) for i in range(0, numel, bucket)]
    times = []
    for _ in range(reps + 1):  # the first one connects and allocates: not counted
        barrier(dist.get_world_size(), device)
        start = time.perf_counter()
        for b in buffers:
            dist.all_reduce(b)
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:])


def rank_main(local_rank: int, world_size: int, port: int, args, result_path: str) -> None:
    """One rank of a W-rank measurement; rank 0 writes the row to result_path."""
    os.environ.update(RANK=str(local_rank), LOCAL_RANK=str(local_rank), WORLD_SIZE=str(world_size),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    use_cuda = torch.cuda.is_available()
    if not use_cuda:  # the ranks share the cores
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world_size))
    device = torch.device("cuda" if use_cuda else "cpu")
    ranks = None
    if world_size > 1:
        ranks, device = init_from_env(device)
    elif use_cuda:
        torch.cuda.set_device(0)
        device = torch.device("cuda", 0)
    model = model_from_options(options(args, str(device)))
    seconds, losses = time_iterations(model, args, local_rank, world_size)
    numel = sum(count_parameters(net) for net in model.nets.values())
    all_reduce = time_all_reduce(numel, device, args.reps) if world_size > 1 else 0.0
    if local_rank == 0:
        row = {"ranks": world_size, "threads_per_rank": torch.get_num_threads(), "levels": model.levels.describe(),
               "seconds_per_iteration": seconds, "images_per_second": world_size * args.batch / seconds,
               "all_reduce_seconds_per_iteration": all_reduce, "gradient_values": numel,
               "gradient_megabytes": numel * 4 / 1e6,
               "losses_finite": all(bool(torch.isfinite(v)) for v in losses.values())}
        with open(result_path, "w") as f:
            json.dump(row, f)
    if ranks is not None:
        ranks.close(model)  # not destroy_process_group alone: see Ranks.close


def measure(world_size: int, args) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "row.json")
        mp.spawn(rank_main, args=(world_size, free_port(), args, path), nprocs=world_size, join=True)
        with open(path) as f:
            return json.load(f)


def default_ranks() -> list[int]:
    if torch.cuda.is_available():
        count = torch.cuda.device_count()
        return sorted({w for w in (1, 2, 4, 8, count) if w <= count})
    return [1, 2]


def run(args) -> dict:
    ranks = args.ranks or default_ranks()
    if torch.cuda.is_available() and max(ranks) > torch.cuda.device_count():
        raise SystemExit(f"--ranks {max(ranks)}: this machine has {torch.cuda.device_count()} GPUs (one per rank)")
    rows = []
    for w in ranks:
        row = measure(w, args)
        print(f"{w} rank(s): {row}", flush=True)
        rows.append(row)
    add_efficiency(rows, shared_cores=not torch.cuda.is_available())
    config = {"arch": "cyclegan", "netG": args.netG, "ngf": args.ngf, "ndf": args.ndf, "size": args.size,
              "batch_per_rank": args.batch, "warmup": args.warmup, "iters": args.iters, "reps": args.reps,
              "backend": "nccl" if torch.cuda.is_available() else "gloo"}
    return {"machine": describe_machine(), "config": config, "rows": rows}


def add_efficiency(rows: list[dict], shared_cores: bool) -> None:
    """Each row's efficiency: the iteration time without communication over the measured one.
    On GPUs a rank's compute is the 1-rank run's; on a CPU the ranks share its cores (each
    gets 1/W of the threads), so a W-rank iteration's compute is W times the 1-rank one."""
    base = next((r for r in rows if r["ranks"] == 1), None)
    if base is None:
        return
    for r in rows:
        compute = base["seconds_per_iteration"] * (r["ranks"] if shared_cores else 1)
        r["efficiency"] = compute / r["seconds_per_iteration"]
        r["compute_seconds_per_iteration"] = compute
        r["all_reduce_vs_compute"] = r["all_reduce_seconds_per_iteration"] / compute
        r["beyond_compute_seconds"] = r["seconds_per_iteration"] - compute


def markdown(report: dict) -> str:
    c = report["config"]
    lines = [f"# Data-parallel scaling on {report['machine']}", "",
             f"CycleGAN {c['netG']}, ngf {c['ngf']}, ndf {c['ndf']}, {c['size']}², batch {c['batch_per_rank']} "
             f"per rank, {c['backend']}; {c['warmup']} warm-up and {c['iters']} timed iterations on a fixed "
             f"batch on the device (no loader); all-reduce: median of {c['reps']}. Efficiency: the "
             "compute time over the measured one; the compute is the 1-rank iteration's"
             + (", times the ranks: they share the CPU's cores" if c["backend"] == "gloo" else "") + ".", "",
             "| ranks | threads/rank | images/s | efficiency | ms/iteration | all-reduce ms/iteration "
             "| all-reduce / compute | ms beyond compute |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in report["rows"]:
        eff = f"{r['efficiency'] * 100:.0f}%" if "efficiency" in r else "-"
        ratio = f"{r['all_reduce_vs_compute']:.2f}" if r["ranks"] > 1 and "efficiency" in r else "-"
        beyond = f"{r['beyond_compute_seconds'] * 1e3:.1f}" if r["ranks"] > 1 and "efficiency" in r else "-"
        reduce_ms = f"{r['all_reduce_seconds_per_iteration'] * 1e3:.1f}" if r["ranks"] > 1 else "-"
        lines.append(f"| {r['ranks']} | {r['threads_per_rank']} | {r['images_per_second']:.2f} | {eff} | "
                     f"{r['seconds_per_iteration'] * 1e3:.1f} | {reduce_ms} | {ratio} | {beyond} |")
    first = report["rows"][0]
    lines += ["", f"Gradients all-reduced per iteration: {first['gradient_values']:,} fp32 values "
                  f"({first['gradient_megabytes']:.1f} MB). Speed levels: {first['levels']}.", ""]
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ranks", type=positive, nargs="+", default=None,
                        help="rank counts to measure (default: 1 2 on a CPU, 1 2 4 8 up to the GPUs)")
    parser.add_argument("--netG", default="resnet_9blocks", choices=("resnet_9blocks", "resnet_6blocks"))
    parser.add_argument("--ngf", type=positive, default=64)
    parser.add_argument("--ndf", type=positive, default=64)
    parser.add_argument("--size", type=positive, default=None,
                        help="crop size (default: 256 on a GPU, 64 on a CPU)")
    parser.add_argument("--batch", type=positive, default=1, help="images per rank")
    parser.add_argument("--warmup", type=non_negative_int, default=3)
    parser.add_argument("--iters", type=positive, default=10)
    parser.add_argument("--reps", type=positive, default=5, help="timed repetitions of the all-reduce")
    parser.add_argument("--out", default=os.environ.get("OUT") or "benchmarks/results")
    args = parser.parse_args(argv)
    if args.size is None:
        args.size = 256 if torch.cuda.is_available() else 64
    try:  # in this process: in the ranks' it would be a traceback from each, after the spawn
        opt = options(args, "cpu")
        check_generator_input_size(opt)
        check_discriminator_input_size(opt)
    except ValueError as e:
        parser.error(str(e).replace("--crop_size", "--size").replace("--batch_size", "--batch"))
    report = run(args)
    text = markdown(report)
    print(text)
    stem = write_results(args.out, "scaling", report, text)
    print(f"wrote {stem}.json and {stem}.md")


if __name__ == "__main__":
    main()
