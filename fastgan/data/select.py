"""Which loader makes the batches: the one opt.loader names, or what `auto` picks.

auto, in order:
  cache  when the decoded set (uint8 at load size) fits in opt.cache_memory_fraction
         of the device's free memory (GPU memory; available host memory on a CPU
         run): nothing is decoded after the first epoch, the fastest input there is;
  dali   else, when NVIDIA DALI imports: decoding in DALI's threads, nvJPEG on a GPU;
  torch  else: PIL in DataLoader workers.
The choice and its reason are printed once (by rank 0), and so is a DALI that
cannot be imported, or cannot build its pipeline on the device, when auto would
have taken it (auto then takes torch). The dataset is opened first,
so a missing or empty folder is refused in the same words whatever the loader.
"""

from __future__ import annotations

import torch

from fastgan.data.cache_loader import (CacheLoader, amount, cached_images, free_memory, host_memory_words,
                                       memory_share)
from fastgan.data.dali_loader import DaliLoader, DaliUnavailable, dali_import_error
from fastgan.data.datasets import create_dataset
from fastgan.data.errors import DatasetError
from fastgan.data.loader import TorchLoader, worker_count
from fastgan.data.recipes import ImageSizes

LOADERS = ("auto", "dali", "cache", "torch")
DALI_PICKED = "; DALI decodes each batch"  # what auto's reason for DALI ends with (a fallback replaces it)

_said: set = set()


def say_once(message: str, rank: int = 0, key=None) -> None:
    """Print the message once a process (rank 0's), or once per `key` where the message holds
    figures of the moment (free memory), which differ from one call to the next."""
    key = message if key is None else key
    if rank == 0 and key not in _said:
        _said.add(key)
        print(message, flush=True)


def select_loader(opt, device: torch.device, rank: int = 0, world_size: int = 1):
    if opt.loader not in LOADERS:
        raise DatasetError(f"unknown --loader {opt.loader!r}; choose one of {', '.join(LOADERS)}")
    dataset = create_dataset(opt)
    sizes = ImageSizes()  # header reads shared by auto's measure and the cache
    kind, why = opt.loader, "--loader " + opt.loader
    if kind == "auto":
        kind, why = auto_choice(opt, dataset, sizes, device, rank)
    if kind == "cache":
        loader = CacheLoader(opt, device, dataset, rank, world_size, sizes=sizes)
        why += f"; {amount(loader.nbytes)} kept in {loader.placement}"
    elif kind == "dali":
        try:
            loader = DaliLoader(opt, device, dataset, rank, world_size, sizes=sizes)
        except DaliUnavailable as e:
            if opt.loader != "auto":
                raise
            say_once(f"{e.reason}: --loader auto falls back to the torch DataLoader", rank)
            kind, why = "torch", why.replace(DALI_PICKED, " and DALI cannot run here")
    if kind == "torch":
        loader = TorchLoader(opt, device, dataset, rank, world_size)
        if worker_count(opt) < int(opt.num_threads):
            why += f"; DataLoader workers: {worker_count(opt)}, one per CPU (--num_threads asks {opt.num_threads})"
    # once the loader took the dataset (not before its refusal); once a process for each dataset and choice
    say_once(f"loader: {kind} ({why})", rank, key=("loader", opt.loader, kind, opt.dataroot, opt.phase))
    return loader


def auto_choice(opt, dataset, sizes, device: torch.device, rank: int = 0) -> tuple[str, str]:
    """(loader, reason) by the rules of the module docstring."""
    need = sum(im.nbytes for im in cached_images(dataset, sizes))
    share, free = memory_share(opt), free_memory(device)
    where = f"{amount(free)} {'free on the GPU' if device.type == 'cuda' else host_memory_words()}"
    if need <= share * free:
        return "cache", f"auto: the decoded dataset, {amount(need)}, fits in {share:g} of the {where}"
    too_big = f"auto: the decoded dataset, {amount(need)}, does not fit in {share:g} of the {where}"
    problem = dali_import_error()
    if problem is None:
        return "dali", too_big + DALI_PICKED
    say_once(f"NVIDIA DALI cannot be imported ({problem}): --loader auto falls back to the torch DataLoader",
             rank)
    return "torch", too_big + " and DALI is not available"
