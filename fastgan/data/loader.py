"""Batches on the device, and the one entry point that picks the loader making them.

Three loaders implement one interface (`create_loader` picks one from opt.loader,
fastgan.data.select says how `auto` chooses):
  torch  this module: PIL in DataLoader workers, pinned memory, persistent workers
  dali   dali_loader.py: NVIDIA DALI decodes (nvJPEG on a GPU, libjpeg-turbo threads on a CPU)
  cache  cache_loader.py: decoded once, kept on the device; crop, flip, normalize as tensor ops

The interface:
  len(loader)                       batches per epoch (the last one may be short)
  loader.dataset, loader.num_images
  loader.epoch_batches(epoch, skip) the epoch's batches after the first `skip`: dicts of
                                    "A" (and "B") float tensors on the device in [-1, 1], in the
                                    model's memory format (channels_last when opt.channels_last),
                                    and "A_paths" (and "B_paths") lists
  loader.close()                    stop background work (optional; the next epoch restarts it)

Every loader visits the items fastgan.data.plan assigns to its rank and batch,
and makes each item as datasets.py does (same crop, flip and unaligned partner,
fastgan.data.recipes), so switching loaders changes speed and decoder rounding,
not what trains (README, Loaders, gives the bounds).

The torch loader's sampler yields (epoch, index) pairs rather than indices:
workers keep their own copy of the dataset (persistent workers never see a
set_epoch made in the main process), so the epoch travels with each index instead.
"""

from __future__ import annotations

import os
import signal
from typing import Iterator

import torch
from torch.utils.data import DataLoader, Dataset, default_collate

from fastgan.data.datasets import create_dataset
from fastgan.data.errors import DatasetError
from fastgan.data.plan import batches_per_epoch, epoch_plan


class _Failed:
    """What a worker returns instead of raising a DatasetError.

    torch re-raises worker exceptions with the worker's traceback folded into
    the message; passing the message back as data lets the main process raise
    a fresh DatasetError with the original one-line text.
    """

    def __init__(self, message: str):
        self.message = message


class _EpochItems(Dataset):
    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key):
        epoch, index = key
        try:
            return self.dataset.get(index, epoch)
        except DatasetError as e:
            return _Failed(str(e))


def different_sizes_message(paths: list[str], sizes: list[tuple[int, int]]) -> str:
    """The refusal of a batch whose images differ in size, the same from every loader.

    `sizes` are (h, w) pairs (tensor shapes); the message writes them as WxH, as image sizes are read.
    """
    listed = ", ".join(f"{p} {int(w)}x{int(h)}" for p, (h, w) in zip(paths, sizes))
    return (
        f"images of one batch have different sizes (width x height: {listed}): --preprocess scale_width "
        f"and none keep each image's aspect. Use --batch_size 1 or a --preprocess that "
        f"crops or resizes to a square (resize_and_crop, crop, resize, scale_width_and_crop)"
    )


def with_index(device: torch.device) -> torch.device:
    """A bare "cuda" as the current device with its index ("cuda:0"), as tensors report theirs."""
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return device


def to_memory_format(batch: torch.Tensor, channels_last: bool) -> torch.Tensor:
    return batch.contiguous(memory_format=torch.channels_last) if channels_last else batch


def to_device(batch: dict, device: torch.device, channels_last: bool) -> dict:
    """A collated batch with its tensors on `device` (non-blocking copies: pinned memory
    on a GPU run) in the model's memory format; the path lists as they are."""
    return {k: to_memory_format(v.to(device, non_blocking=True), channels_last) if isinstance(v, torch.Tensor)
            else v for k, v in batch.items()}


def load_batch(dataset, epoch: int, indices: list[int], device: torch.device, channels_last: bool) -> dict:
    """The batch of `indices` (one batch of `epoch`'s plan) as TorchLoader makes it: each item
    decoded with PIL (dataset.get) in this process, collated, on `device` in the memory format.

    A DatasetError of an item (the first one in the batch) or of mixed sizes is raised
    in TorchLoader's words. The DALI loader loads the batches DALI cannot decode with it.
    """
    items = _EpochItems(dataset)
    batch = _collate([items[(epoch, i)] for i in indices])
    if isinstance(batch, _Failed):
        raise DatasetError(batch.message)
    return to_device(batch, with_index(torch.device(device)), channels_last)


def _collate(items: list):
    for item in items:
        if isinstance(item, _Failed):
            return item
    for key, value in items[0].items():
        if isinstance(value, torch.Tensor) and any(it[key].shape != value.shape for it in items):
            return _Failed(different_sizes_message([it[key + "_paths"] for it in items],
                                                   [it[key].shape[1:] for it in items]))
    return default_collate(items)


class _EpochPlan:
    """A batch sampler whose batches are set before each epoch's iteration."""

    def __init__(self):
        self.batches: list[list[tuple[int, int]]] = []

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


class PlannedLoader:
    """What every loader shares: the dataset, this rank's part of each epoch's plan, the batch layout.

    `dataset` (default: create_dataset(opt)) needs __len__ and get(index, epoch).
    With world_size > 1 each rank loads its slice of every global batch
    (fastgan.data.plan).
    """

    def __init__(self, opt, device, dataset=None, rank: int = 0, world_size: int = 1):
        self.opt = opt
        self.rank, self.world_size = int(rank), int(world_size)
        self.device = with_index(torch.device(device))
        self.channels_last = bool(opt.channels_last)  # None (the device default) counts as off: NCHW
        self.dataset = dataset if dataset is not None else create_dataset(opt)
        self.batch_size = int(opt.batch_size)
        if self.batch_size < 1:
            raise DatasetError(f"--batch_size {opt.batch_size} must be at least 1")

    @property
    def num_images(self) -> int:
        return len(self.dataset)

    def __len__(self) -> int:
        return batches_per_epoch(self.num_images, self.batch_size, self.world_size)  # drop_last=False

    def plan(self, epoch: int, skip: int = 0) -> list[list[int]]:
        """This rank's batches of `epoch` after the first `skip`: a permutation seeded by
        (opt.seed, epoch), or the dataset order with serial_batches."""
        return epoch_plan(self.opt.seed, epoch, self.num_images, self.batch_size,
                          shuffle=not self.opt.serial_batches, rank=self.rank,
                          world_size=self.world_size, skip=skip)

    def close(self) -> None:
        """Stop background work, if any (the next epoch restarts it)."""


def usable_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def worker_count(opt) -> int:
    """opt.num_threads, at most one worker per usable CPU: more only compete for the
    same cores (and torch warns at every epoch's iterator); the items do not depend on it."""
    return min(int(opt.num_threads), usable_cpus())


def _ignore_stop_signals(worker_id: int) -> None:
    """A DataLoader worker ignores SIGINT and SIGTERM: sent to the whole process group (Ctrl-C
    in a terminal, Slurm's scancel, systemd's stop), they would kill the workers, and torch
    would raise "DataLoader worker is killed" in the training process wherever it was,
    instead of its own handler stopping after the iteration and saving. The training process
    shuts its workers down, and torch's watchdog ends them if it dies."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


class TorchLoader(PlannedLoader):
    """PIL decoding in `worker_count(opt)` DataLoader workers (0: in this process).

    Batches come through pinned memory with non-blocking copies on a GPU.
    """

    kind = "torch"  # its --loader name

    def __init__(self, opt, device, dataset=None, rank: int = 0, world_size: int = 1):
        super().__init__(opt, device, dataset, rank, world_size)
        workers = worker_count(opt)
        self._plan = _EpochPlan()
        self._loader = DataLoader(
            _EpochItems(self.dataset),
            batch_sampler=self._plan,
            num_workers=workers,
            collate_fn=_collate,
            pin_memory=self.device.type == "cuda",
            persistent_workers=workers > 0,
            worker_init_fn=_ignore_stop_signals,
            # DataLoader draws a base seed for every iterator it creates; from the global
            # RNG that would shift dropout masks and the like between a resumed run and an
            # uninterrupted one. Items are seeded by (seed, epoch, index) anyway.
            generator=torch.Generator().manual_seed(opt.seed),
        )

    def epoch_batches(self, epoch: int, skip: int = 0) -> Iterator[dict]:
        """The batches of `epoch`, after the first `skip` (never loaded: resuming costs nothing).

        One epoch iteration at a time.
        """
        return self._iterate([[(epoch, i) for i in batch] for batch in self.plan(epoch, skip)])

    def _iterate(self, plan) -> Iterator[dict]:
        self._plan.batches = plan  # read when the DataLoader iterator starts
        try:
            for batch in self._loader:
                if isinstance(batch, _Failed):
                    raise DatasetError(batch.message) from None
                yield to_device(batch, self.device, self.channels_last)
        except GeneratorExit:  # the caller stopped early: the next epoch's iter() resets the workers
            raise
        except BaseException:
            # Stop the workers now: left mid-task they would otherwise be shut down
            # whenever the garbage collector reaches the iterator, possibly after
            # their queues, and each then waits out a 5 s join timeout.
            self.close()
            raise

    def close(self) -> None:
        """Stop the worker processes (the next epoch starts new ones)."""
        it = self._loader._iterator
        if it is not None and hasattr(it, "_shutdown_workers"):
            it._shutdown_workers()
        self._loader._iterator = None


def create_loader(opt, device="cpu", rank: int = 0, world_size: int = 1):
    """The loader opt.loader names (auto: fastgan.data.select decides), yielding this rank's batches on `device`."""
    from fastgan.data.select import select_loader  # select builds this module's TorchLoader

    return select_loader(opt, torch.device(device), rank, world_size)
