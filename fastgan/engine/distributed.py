"""Data-parallel training on torch.distributed: one process per device, started by torchrun.

    torchrun --nproc_per_node=N -m fastgan.train ...

torchrun (or any launcher that sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR
and MASTER_PORT) starts the processes; `init_from_env` joins them into one
process group: NCCL on CUDA (rank r on the node's GPU LOCAL_RANK), gloo on the
CPU. What the ranks share and what each keeps:

- The nets. Every net runs in its own DistributedDataParallel (`distribute`,
  called by TrainingModel._finish_setup when a group of several ranks is up),
  which broadcasts rank 0's weights and buffers at construction, so every rank
  starts from rank 0's weights, and averages the gradients in every backward.
  The reducer's defaults (no find_unused_parameters, no static_graph) are the
  correct configuration for a GAN step: a net called several times before one
  backward (G_A three times in CycleGAN's generator update) gets each
  parameter's gradient accumulated once, because autograd sums the
  contributions before AccumulateGrad fires the reducer's hook, so it is
  reduced once; a net whose parameters are frozen (D during the generator
  update) fires no hooks and reduces nothing; and each backward of the
  iteration reaches the parameters of different nets (loss_G: G_A and G_B;
  loss_D_A: D_A; loss_D_B: D_B). static_graph would be wrong (which
  parameters take part changes between calls of the same D) and
  find_unused_parameters would all-reduce D's zeros in the generator update.
  tests/engine/test_distributed.py proves the configuration: 2 ranks at batch
  B train as 1 rank at batch 2B, to float32 rounding.
- The data: each rank loads its slice of every global batch (fastgan.data.plan).
  A short last batch splits unevenly (3 images: 2 and 1; 1 image: 1 and a
  padding copy), and DDP's plain average of the ranks' batch means would weigh
  those images unequally (1/4, 1/4, 1/2). Before each iteration the trainer
  therefore sets this rank's weight in `GradientShares`, world size x its real
  images / the global batch's (1 for an even batch, 0 for a padding copy), and
  the model multiplies each of its losses by it before the backward, so DDP's
  plain average is the one batch's mean gradient. The losses, not the
  gradients: under --norm syncbatch a rank's backward also carries the other
  ranks' loss terms (SyncBatchNorm all-reduces its gradient statistics), which
  a weight on the finished gradient would scale with this rank's share.
- --norm syncbatch: nn.SyncBatchNorm, batch statistics over every rank's
  batch. torch's SyncBatchNorm takes CUDA tensors only; on the CPU (gloo) the
  same statistics come from GlooSyncBatchNorm (fastgan.engine.gloo_sync_batch_norm).
  A padding copy is in those statistics too (it is in the rank's batch; only
  its losses weigh nothing): the one step of an epoch whose last global batch
  holds fewer images than there are ranks normalizes with it.
- Random streams: rank 0 keeps a single-process run's; every other rank draws
  dropout masks and image-pool choices from streams of its own (`rank_seed`),
  so ranks do not drop the same units. The image pools stay per rank.
- Host-side agreement (`Ranks`): once per iteration the ranks add up the
  images they trained and take the signal one of them was asked to stop by, on a gloo
  group (the main one on the CPU, a second one beside NCCL), so every rank
  stops after the same iteration and the images count is global. A rank that
  dies breaks that group's connections: the others fail at the next
  iteration. A rank that hangs makes the others time out after
  $FASTGAN_DIST_TIMEOUT seconds (default 600), the process groups' timeout
  (on NCCL, torch's watchdog then ends a process stuck in a collective:
  TORCH_NCCL_ASYNC_ERROR_HANDLING, on by default).
- The end (`Ranks.close`): after a run that every rank finished, the ranks
  meet at a barrier, drop the DDP wrappers and destroy the groups for good,
  so no gloo thread outlives the run into interpreter exit.
"""

from __future__ import annotations

import datetime
import gc
import os
import warnings
import weakref
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from fastgan.engine.gloo_sync_batch_norm import use_gloo_sync_batch_norm
from fastgan.errors import first_line

TIMEOUT_ENV = "FASTGAN_DIST_TIMEOUT"
DEFAULT_TIMEOUT_S = 600.0


def launched_world_size() -> int:
    """How many processes the launcher started (WORLD_SIZE; 1 when not launched by torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank_label(ranks: "Ranks") -> str:
    """"rank R of W: " ahead of what one of several ranks says ("" for a single process); the
    launcher's RANK and WORLD_SIZE while the process group is not up yet."""
    if ranks.world_size > 1:
        return f"rank {ranks.rank} of {ranks.world_size}: "
    try:  # (a launch whose variables are wrong says so itself: no label then)
        rank, world = int(os.environ["RANK"]), launched_world_size()
    except (KeyError, ValueError):
        return ""
    return f"rank {rank} of {world}: " if 0 <= rank < world and world > 1 else ""


def is_data_parallel() -> bool:
    """Is a process group of more than one rank up in this process?"""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def timeout_seconds() -> float:
    value = os.environ.get(TIMEOUT_ENV, str(DEFAULT_TIMEOUT_S))
    try:
        seconds = float(value)
    except ValueError:
        raise ValueError(f"${TIMEOUT_ENV}={value!r} is not a number of seconds") from None
    if seconds <= 0:
        raise ValueError(f"${TIMEOUT_ENV}={value!r} must be positive")
    return seconds


def rank_device(device: torch.device, local_rank: int) -> torch.device:
    """This rank's device: the node's GPU number LOCAL_RANK, or the CPU that all ranks share.

    With one visible GPU per process (a launcher that sets CUDA_VISIBLE_DEVICES
    per rank) every rank takes its only GPU. Several processes of a node on its one
    GPU, with nothing restricting what they see, are refused here: NCCL would fail
    later on them ("Duplicate GPU detected").
    """
    if device.type != "cuda":
        return device
    count = torch.cuda.device_count()
    local_size = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    if count == 1 and local_size > 1 and not os.environ.get("CUDA_VISIBLE_DEVICES"):
        raise ValueError(f"{local_size} processes on this node share its one CUDA device: NCCL needs a GPU per "
                         "process; start --nproc_per_node 1 (or give each process its own GPU with "
                         "CUDA_VISIBLE_DEVICES)")
    if count == 1:
        return torch.device("cuda", 0)
    if local_rank >= count:
        raise ValueError(f"LOCAL_RANK {local_rank} but this node has {count} CUDA devices: "
                         f"start at most {count} processes per node (--nproc_per_node {count})")
    return torch.device("cuda", local_rank)


@dataclass
class Ranks:
    """Where this process stands among the ranks, and the host-side collectives the trainer needs.

    `control` is the gloo group those collectives use (None: the default group,
    itself gloo on the CPU; `close` sets it back to None). With world_size 1
    every method answers locally.
    """

    rank: int = 0
    world_size: int = 1
    control: dist.ProcessGroup | None = None

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that writes checkpoints, logs, samples and the progress bar."""
        return self.rank == 0

    def agree(self, images: int, stop_signal: int) -> tuple[int, int]:
        """(images trained by all ranks this iteration, the signal a rank was asked to stop by:
        0 for none, the highest number where ranks got different ones), in one collective."""
        if self.world_size == 1:
            return images, stop_signal
        mine = torch.tensor([images, stop_signal], dtype=torch.int64)
        every = [torch.empty_like(mine) for _ in range(self.world_size)]
        dist.all_gather(every, mine, group=self.control)
        every = torch.stack(every)
        return int(every[:, 0].sum()), int(every[:, 1].max())

    def mean(self, values: list[float], images: int = 1) -> list[float]:
        """Each value averaged over the ranks, weighted by each rank's `images` (losses, the
        ranks' batch means: the global batch's mean)."""
        if self.world_size == 1:
            return list(values)
        total = torch.tensor([v * images for v in values] + [images], dtype=torch.float64)
        dist.all_reduce(total, group=self.control)
        return (total[:-1] / total[-1]).tolist() if total[-1] > 0 else [0.0] * len(values)

    def gather_to_main(self, obj) -> list | None:
        """Every rank's `obj` on rank 0 (in rank order), None on the others."""
        if self.world_size == 1:
            return [obj]
        gathered = [None] * self.world_size if self.is_main else None
        dist.gather_object(obj, gathered, dst=0, group=self.control)
        return gathered

    def all_gather(self, obj) -> list:
        if self.world_size == 1:
            return [obj]
        gathered = [None] * self.world_size
        dist.all_gather_object(gathered, obj, group=self.control)
        return gathered

    def close(self, model=None) -> None:
        """Leave the process group after a run that every rank finished; `model`: the one whose nets
        `distribute` wrapped. Not after an error: a barrier with a dead, hung or busy peer would wait
        for the timeout, and so would joining a gloo worker stuck in a collective.

        destroy_process_group alone only forgets the groups: each DDP wrapper's reducer (and
        `control`) still holds one, so the gloo worker and I/O threads would live on into interpreter
        exit. There a worker that drops the last reference to a tensor made in Python (the final
        save's gather_object input) must take the GIL to free it, and a thread that takes the GIL
        once the interpreter is finalizing is ended by pthread_exit, whose unwinding through the
        work's noexcept destructor calls std::terminate: "terminate called without an active
        exception", SIGABRT, after a run that succeeded. Hence, in this order:
        """
        if self.world_size == 1 or not dist.is_initialized():
            return
        # 1. every rank is done with every collective (rank 0 writes the checkpoints after gathering
        #    the ranks' state): no rank closes its connections while a peer still works with them
        dist.barrier(group=self.control)
        # 2. drop every reference to the groups but destroy_process_group's own
        if model is not None:
            model.run_nets = dict(model.nets)
        groups = [weakref.ref(g) for g in (dist.group.WORLD, self.control) if g is not None]
        self.control = None
        dist.destroy_process_group()
        # 3. the wrappers sit in reference cycles: collect them now, so each ProcessGroupGloo's
        #    destructor runs here and joins its threads (torch releases the GIL around it, so a
        #    worker that needs the GIL gets it) while the interpreter is fully alive
        gc.collect()
        if any(g() is not None for g in groups):
            warnings.warn("a process group outlived Ranks.close (something still references it): its gloo "
                          "threads run on into interpreter exit, where they may abort the process",
                          RuntimeWarning, stacklevel=2)


def init_from_env(device: torch.device) -> tuple[Ranks, torch.device]:
    """Join the process group torchrun describes; returns the ranks and this rank's device.
    A launch that cannot work (RANK outside [0, WORLD_SIZE), a rendezvous that fails or
    times out) is a ValueError of one line."""
    try:
        rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    except KeyError as e:
        raise ValueError(f"${e.args[0]} is not set: start data-parallel runs with torchrun") from None
    if not 0 <= rank < world_size:
        raise ValueError(f"$RANK {rank} is not in [0, $WORLD_SIZE {world_size}): start data-parallel runs with "
                         "torchrun, or give each of the WORLD_SIZE processes its own RANK")
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    device = rank_device(device, local_rank)
    timeout = datetime.timedelta(seconds=timeout_seconds())
    try:
        if device.type == "cuda":
            torch.cuda.set_device(device)
            dist.init_process_group("nccl", timeout=timeout, device_id=device)
            # host-side agreement beside NCCL: CPU tensors, no stream sync
            control = dist.new_group(backend="gloo", timeout=timeout)
        else:
            dist.init_process_group("gloo", timeout=timeout)
            control = None
    except dist.DistError as e:
        where = f"{os.environ.get('MASTER_ADDR', '?')}:{os.environ.get('MASTER_PORT', '?')}"
        raise ValueError(f"could not join the other ranks at {where} ({first_line(e)}): every "
                         f"rank must start within {timeout_seconds():g} s (${TIMEOUT_ENV}) and reach that "
                         "address") from None
    return Ranks(rank, world_size, control), device


# options that may differ between ranks: where a node keeps the data and the checkpoints
# (mounts differ), its device, its CPU count and how it decodes (the batches are the same)
PER_NODE_OPTIONS = {"device", "dataroot", "checkpoints_dir", "num_threads", "loader", "cache_memory_fraction"}


def check_ranks_agree(ranks: Ranks, opt, num_images: int, loader: str | None = None) -> None:
    """ValueError naming what differs when the ranks were started with different options
    or datasets of different sizes. Unchecked, such ranks train apart without a word, or
    wait for each other in different collectives until the timeout. Ranks whose --loader
    auto took different loaders (another node's free memory, a GPU DALI cannot run) are
    said, not refused: their images differ by decoder rounding only."""
    if ranks.world_size == 1:
        return
    mine = {f"--{k}": v for k, v in opt.as_dict().items() if k not in PER_NODE_OPTIONS}
    mine["images in the dataset"] = num_images
    every = ranks.all_gather({**mine, "loader": loader})
    loaders = [f.get("loader") for f in every]
    if len(set(loaders)) > 1 and ranks.is_main:
        print("note: the ranks' loaders differ (" + ", ".join(f"rank {r} {k}" for r, k in enumerate(loaders))
              + "): their images differ by decoder rounding; --loader with one of them on every rank makes "
              "them alike", flush=True)
    differ = [k for k in mine if any(f.get(k) != mine[k] for f in every)]
    if differ:
        detail = "; ".join(f"{k}: " + ", ".join(f"rank {r} {f.get(k)!r}" for r, f in enumerate(every))
                           for k in differ[:4])
        # every rank saw every rank's settings and refuses here alike: leave the group together,
        # so no gloo thread lives on into interpreter exit (where one aborted the process once)
        ranks.close()
        raise ValueError(f"the ranks were started with different settings ({detail}): start every rank with "
                         "the same command, on the same dataset")


# what gloo's RuntimeErrors say when the peer is gone or silent
# a gloo error names its source file (".../gloo/transport/tcp/pair.cc"): "gloo/", not the bare
# word, which errors that are no peer's failure ("gloo backend does not support ...") hold too
GLOO_PEER_FAILURES = ("gloo/", "pair closure", "Connection closed by peer", "Connection reset by peer")


def is_peer_failure(error: BaseException) -> bool:
    """Did `error` come from the process group (a rank died or stopped answering)?

    NCCL and the store raise torch.distributed.DistError; gloo raises plain
    RuntimeErrors whose message names its source file under gloo/, or, when the
    timeout strikes inside DDP's backward, only says what happened to the pair.
    """
    if isinstance(error, dist.DistError):
        return True
    return isinstance(error, RuntimeError) and any(mark in str(error) for mark in GLOO_PEER_FAILURES)


# -- random streams per rank --------------------------------------------------
def rank_seed(seed: int, rank: int, *salt: int) -> int:
    """A 63-bit seed of rank `rank`'s own streams, from the run's seed (and a salt)."""
    words = [int(x) % (1 << 64) for x in (seed, rank, *salt)]
    return int(np.random.SeedSequence(words).generate_state(1, np.uint64)[0] >> 1)


def seed_rank_streams(model, rank: int, *salt: int) -> None:
    """Give rank `rank` (> 0) streams of its own: the torch RNG (dropout masks, the device
    pools, the gradient penalty's weights) and each reference image pool's `random.Random`."""
    torch.manual_seed(rank_seed(model.opt.seed, rank, *salt))  # the CPU and every CUDA device
    for i, pool in enumerate(model.pools().values()):
        rng = getattr(pool, "rng", None)  # the device pools draw from the torch RNG
        if rng is not None:
            rng.seed(rank_seed(model.opt.seed, rank, *salt, i + 1))


# -- wrapping the nets --------------------------------------------------------
class GradientShares:
    """This rank's weight of its losses in the iteration about to run: world size x its real
    images / the global batch's (see the module docstring). The trainer sets it; the
    model's backward multiplies each loss by it."""

    def __init__(self):
        self.weight = 1.0


def distribute(model) -> dict[str, nn.Module]:
    """`model.run_nets` for data-parallel training: each net in its own DistributedDataParallel.

    `model.nets` stay the plain nets (the reference's state_dict keys; rank-0-only
    work such as scoring calls them, since a forward of a DDP wrapper on one rank
    alone may broadcast buffers and wait for the others). Called once, after the
    optimizers are built, before anything compiles the nets.
    """
    if model.levels.cuda_graphs:
        raise ValueError("--cuda_graphs cannot be combined with data-parallel training yet: DDP "
                         "all-reduces the gradients from autograd hooks, outside a captured graph. "
                         "Pass --cuda_graphs false, or train on one process")
    if model.device.type == "cpu":
        for net in model.nets.values():
            use_gloo_sync_batch_norm(net)
    rank = dist.get_rank()
    if rank > 0:
        seed_rank_streams(model, rank)
    device_ids = [model.device.index] if model.device.type == "cuda" else None
    model.gradient_shares = GradientShares()
    return {name: DistributedDataParallel(net, device_ids=device_ids) for name, net in model.nets.items()}
