"""Which dataset items each batch of an epoch holds, for every loader and rank.

An epoch visits the items in `epoch_order(seed, epoch)`. Consecutive runs of
batch_size × world_size items form one global batch; rank r takes the r-th
slice of it, so a run on W ranks at batch B sees, iteration by iteration, the
same images as a run on one rank at batch W×B. Every rank gets the same number
of batches (DistributedDataParallel needs that): the last global batch, when
short, is split as evenly as it goes, and when it holds fewer items than
there are ranks it is topped up from the start of the epoch's order (as
torch's DistributedSampler pads), so no rank gets an empty batch. Such a batch
is uneven: `rank_shares` says how many of its real items (padding not counted)
each rank holds, which weighs each rank's losses
(fastgan.engine.distributed.GradientShares) so that the step is the one batch's.
"""

from __future__ import annotations

import math

import numpy as np

from fastgan.data.rng import epoch_order


def batches_per_epoch(num_images: int, batch_size: int, world_size: int = 1) -> int:
    return math.ceil(num_images / (batch_size * world_size))


def rank_shares(num_images: int, batch_size: int, world_size: int, batch: int) -> list[int]:
    """How many real items (padding not counted) each rank holds of global batch `batch`,
    as epoch_plan splits it."""
    step = batch_size * world_size
    real = max(0, min(step, num_images - batch * step))
    sizes = [len(part) for part in np.array_split(np.arange(max(real, world_size)), world_size)]
    starts = np.cumsum([0] + sizes)
    return [int(max(0, min(start + size, real) - start)) for start, size in zip(starts, sizes)]


def epoch_plan(seed: int, epoch: int, num_images: int, batch_size: int, shuffle: bool = True,
               rank: int = 0, world_size: int = 1, skip: int = 0) -> list[list[int]]:
    """This rank's batches of `epoch` (lists of item indices), after the first `skip`."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in [0, {world_size})")
    if skip < 0:
        raise ValueError(f"skip must be >= 0, got {skip}")
    order = epoch_order(seed, epoch, num_images, shuffle=shuffle)
    step = batch_size * world_size
    plan = []
    for b in range(skip, batches_per_epoch(num_images, batch_size, world_size)):
        global_batch = order[b * step : (b + 1) * step]
        if len(global_batch) < world_size:  # too few for every rank: pad from the epoch's start
            global_batch = np.concatenate([global_batch, np.resize(order, world_size - len(global_batch))])
        plan.append([int(i) for i in np.array_split(global_batch, world_size)[rank]])
    return plan
