"""The decoded dataset kept on the device: decoding happens once, batches are tensor ops.

The first epoch decodes every image once, exactly as the torch path does (PIL:
load_image, then the resize stage: BICUBIC to load_size or scale_width, and
--preprocess none's rounding), into one uint8 buffer at load size: on the GPU
when it fits in opt.cache_memory_fraction of the free GPU memory, else in pinned
host memory (horse2zebra's 2,401 training images take 0.59 GB at 286x286).
Every batch is then the recipe's crop and flip of stored images
(fastgan.data.recipes) normalized into a float batch on the device
(tensor_transforms.to_batch): nothing is decoded after the first epoch.

PIL rather than DALI for that one decode: the stored pixels are then the torch
path's, and since the recipes draw what datasets.py draws, the cache's batches
equal the torch loader's bit for bit, augmentation included. The decode runs in
opt.num_threads threads (PIL releases the GIL while decoding and resizing).
"""

from __future__ import annotations

import contextlib
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch

from fastgan.data.errors import DatasetError
from fastgan.data.image_folder import load_image
from fastgan.data.loader import PlannedLoader
from fastgan.data.recipes import ImageSizes, ItemRecipes, Refused, check_same_size, resize_stage_size
from fastgan.data.tensor_transforms import crop_flip, one_torch_thread, to_batch
from fastgan.data.transforms import BICUBIC, _crop, _make_multiple_of, resized_size


@dataclass(frozen=True)
class CachedImage:
    """One stored image: a file, or a half of an aligned file, at load size."""

    path: str
    region: tuple[int, int, int, int] | None  # (x, y, w, h) of an aligned half; None: the whole file
    channels: int
    size: tuple[int, int] | None  # (w, h) after the resize stage; None: the transforms refuse it
    item: int  # an item made from it: its refusal is worded by dataset.get(item)

    @property
    def nbytes(self) -> int:
        return self.channels * self.size[0] * self.size[1] if self.size else 0


def cached_images(dataset, size_of) -> list[CachedImage]:
    """Every image the dataset's items are made from, once each, with its size at load size.

    Sizes come from the files' headers (`size_of`) where the resize stage keeps
    the aspect or aligned files must be split; resize_and_crop needs none.
    """
    opt = dataset.opt
    fixed = "resize" in opt.preprocess

    def image(path, channels, item, half=None):
        try:
            w, h = (opt.load_size, opt.load_size) if fixed and half is None else size_of(path)
        except Refused:  # not an image: decoding it says so
            return CachedImage(path, None, channels, None, item)
        region = None
        if half is not None:
            w2 = w // 2
            region, (w, h) = ((0, 0, w2, h) if half == 0 else (w2, 0, w2, h)), (w2, h)
            if w2 == 0:
                return CachedImage(path, region, channels, None, item)
        size = resize_stage_size(opt, (w, h))
        if size is not None and "crop" in opt.preprocess and min(size) < opt.crop_size:
            size = None
        return CachedImage(path, region, channels, size, item)

    if dataset.mode == "unaligned":
        return ([image(p, dataset.A_nc, i) for i, p in enumerate(dataset.A_paths)]
                + [image(p, dataset.B_nc, i) for i, p in enumerate(dataset.B_paths)])
    if dataset.mode == "aligned":
        return [image(p, nc, i, half)
                for i, p in enumerate(dataset.AB_paths)
                for half, nc in ((0, dataset.A_nc), (1, dataset.B_nc))]
    return [image(p, dataset.A_nc, i) for i, p in enumerate(dataset.A_paths)]


def available_host_memory() -> int:
    """Bytes the kernel could hand out now without swapping (MemAvailable)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def ranks_on_this_node() -> int:
    """The processes torchrun started on this node (LOCAL_WORLD_SIZE; 1 without torchrun)."""
    return max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))


def host_memory_per_rank() -> int:
    """Available host memory, divided among the ranks of this node: each caches the whole
    dataset in the same memory, so each may take its part of the share, not the share."""
    return available_host_memory() // ranks_on_this_node()


def host_memory_words() -> str:
    ranks = ranks_on_this_node()
    return "of available host memory" + (f" (1/{ranks} of it: {ranks} ranks on this node)" if ranks > 1 else "")


def free_memory(device: torch.device) -> int:
    """Free memory of `device`: the GPU's, or this rank's part of the available host memory for the CPU."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    return host_memory_per_rank()


def pinned_bytes(nbytes: int) -> int:
    """What torch's caching pinned-memory allocator takes for a block of nbytes: the next power
    of two."""
    return 1 << max(nbytes - 1, 0).bit_length()


def amount(nbytes: float) -> str:
    for unit, scale, digits in (("GB", 1e9, 2), ("MB", 1e6, 1)):
        if nbytes >= scale:
            return f"{nbytes / scale:.{digits}f} {unit}"
    return f"{nbytes / 1e3:.0f} kB"


def memory_share(opt) -> float:
    share = float(opt.cache_memory_fraction)
    if not 0 <= share <= 1:
        raise DatasetError(f"--cache_memory_fraction {share} must be between 0 and 1")
    return share


class CacheLoader(PlannedLoader):
    """Batches cut from the decoded dataset held on the device (see the module docstring).

    `sizes` (an ImageSizes) shares header reads with whoever measured the
    dataset before (fastgan.data.select).
    """

    kind = "cache"  # its --loader name

    def __init__(self, opt, device, dataset=None, rank: int = 0, world_size: int = 1, sizes=None):
        super().__init__(opt, device, dataset, rank, world_size)
        self.sizes = sizes if sizes is not None else ImageSizes()
        self.recipes = ItemRecipes(self.dataset, self.sizes)
        self.images = cached_images(self.dataset, self.sizes)
        self.nbytes = sum(im.nbytes for im in self.images)
        self.store_device, self.pinned = self._placement()
        self._store: dict | None = None  # (path, region) -> (C, H, W) uint8 view; built by the first epoch

    @property
    def placement(self) -> str:
        """Where the decoded set is kept, in words."""
        if self.store_device.type == "cuda":
            return "GPU memory"
        return "pinned host memory (it does not fit in the GPU's share)" if self.pinned else "host memory"

    def _placement(self) -> tuple[torch.device, bool]:
        """The device memory when the set fits in its share of it, else (GPU runs) pinned host
        memory when the pinned block fits (torch's pinned allocator rounds a block up to a power
        of two: up to twice the set), else plain host memory."""
        share = memory_share(self.opt)
        if self.device.type == "cuda" and self.nbytes <= share * free_memory(self.device):
            return self.device, False
        host = host_memory_per_rank()
        if self.device.type == "cuda" and pinned_bytes(self.nbytes) <= share * host:
            return torch.device("cpu"), True
        if self.nbytes <= share * host:
            return torch.device("cpu"), False
        room = f"{amount(host)} {host_memory_words()}"
        if self.device.type == "cuda":
            room = f"{amount(free_memory(self.device))} free on the GPU, " + room
        raise DatasetError(
            f"--loader cache: the decoded dataset takes {amount(self.nbytes)}, more than "
            f"--cache_memory_fraction {share:g} of the memory it may use ({room}); use --loader dali "
            f"or torch, or a larger --cache_memory_fraction"
        )

    def epoch_batches(self, epoch: int, skip: int = 0) -> Iterator[dict]:
        """The batches of `epoch` after the first `skip`; the first call decodes the dataset."""
        return self._iterate(epoch, self.plan(epoch, skip))

    def _iterate(self, epoch: int, plan: list[list[int]]) -> Iterator[dict]:
        if self._store is None:
            self._store = self._build()
        cs = self.opt.crop_size
        for indices in plan:
            items = [self.recipes(i, epoch) for i in indices]
            batch = {}
            for key in self.recipes.channels:
                check_same_size(items, key, cs)
                # a flip is a copy: on a CPU store one per image, on the calling thread as the
                # other per-image ops (tensor_transforms; two threads stalled 1.4 ms a flip under load)
                with one_torch_thread() if self.store_device.type == "cpu" else contextlib.nullcontext():
                    images = [crop_flip(self._store[it[key].path, it[key].region], it[key].crop, cs, it[key].flip)
                              for it in items]
                batch[key] = to_batch(images, self.device, self.channels_last)
            for key in self.recipes.channels:
                batch[key + "_paths"] = [it[key + "_paths"] for it in items]
            yield batch

    # -- the one decode ------------------------------------------------------------
    def _build(self) -> dict:
        buffer = torch.empty(self.nbytes, dtype=torch.uint8, device=self.store_device, pin_memory=self.pinned)
        store, offset = {}, 0
        for im in self.images:
            if im.size is not None:
                w, h = im.size
                flat = buffer[offset : offset + im.nbytes]
                # (C, H, W) views laid out as the batches will be: copies stay layout-preserving
                store[im.path, im.region] = (flat.view(h, w, im.channels).permute(2, 0, 1)
                                             if self.channels_last else flat.view(im.channels, h, w))
                offset += im.nbytes

        def decode_file(images: list[CachedImage]) -> None:
            for im, pixels in zip(images, self._decode(images)):
                pixels = torch.from_numpy(pixels)
                store[im.path, im.region].copy_(pixels.view(pixels.shape[0], pixels.shape[1], -1).permute(2, 0, 1))

        files: dict[str, list[CachedImage]] = {}  # an aligned file's two halves: decoded once
        for im in self.images:
            files.setdefault(im.path, []).append(im)
        workers = max(1, int(self.opt.num_threads))
        if workers == 1:
            for images in files.values():
                decode_file(images)
        else:
            with ThreadPoolExecutor(workers) as pool:
                for _ in pool.map(decode_file, files.values()):  # re-raises the first refusal
                    pass
        return store

    def _decode(self, images: list[CachedImage]) -> list[np.ndarray]:
        """One file's images at load size as the torch path makes them before its crop: (H, W[, C]) uint8."""
        first = images[0]
        if first.region is None:  # a whole file (unaligned, single), or an aligned one without a readable header
            parts = [load_image(first.path, first.channels)]
        else:
            AB = load_image(first.path, 3)
            parts = []
            for im in images:
                x, y, w, h = im.region
                if w == 0:
                    self.dataset.get(im.item, 0)  # raises the aligned dataset's refusal
                part = AB.crop((x, y, x + w, y + h))
                parts.append(part.convert("L") if im.channels == 1 else part)
        return [self._before_crop(img, im) for img, im in zip(parts, images)]

    def _before_crop(self, img, im: CachedImage) -> np.ndarray:
        """The resize stage (and --preprocess none's rounding), refusing what the torch path refuses."""
        opt = self.opt
        new_size = resized_size(opt, img.size)
        if new_size != img.size:
            img = img.resize(new_size, BICUBIC)
        if "crop" in opt.preprocess:
            _crop(img, (0, 0), opt.crop_size, im.path)  # refuses an image smaller than the crop
        if opt.preprocess == "none":
            img = _make_multiple_of(img, 4, im.path)
        if im.size is None:
            raise DatasetError(f"cannot cache {im.path}: its size at --load_size could not be read")
        return np.array(img)  # writable: torch wants to own what it wraps
