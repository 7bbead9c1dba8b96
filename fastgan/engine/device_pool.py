"""The reference's image pool as a ring buffer on the device: no Python random, no host sync.

Same rule as fastgan.engine.image_pool.ImagePool, image by image through the
batch: while fewer than `size` images are stored, store the new one and return
it; afterwards, with probability 1/2 return a uniformly chosen stored image and
store the new one in its slot, else return the new one. Here the stored images
live in one preallocated tensor, the fill count is a device tensor and the
coin and slot come from torch.rand on the images' device (the torch RNG, whose
state the training state saves), so a query is a fixed sequence of tensor ops:
a CUDA graph can capture it and torch.compile can trace it.

The reference draws from Python's `random`; the decisions here are the same in
distribution, not draw for draw (tests/engine/test_device_pool.py compares the
two statistically).
"""

from __future__ import annotations

import torch

from fastgan.engine.image_pool import saved_images


class DeviceImagePool:
    def __init__(self, size: int):
        if size < 0:
            raise ValueError(f"pool_size must be >= 0, got {size}")
        self.size = size
        self.images: torch.Tensor | None = None  # (size, C, H, W), allocated by the first query
        self.count: torch.Tensor | None = None  # images stored so far, at most size

    def _allocate(self, like: torch.Tensor) -> None:
        self.images = torch.empty((self.size, *like.shape[1:]), dtype=like.dtype, device=like.device,
                                  memory_format=_memory_format(like)).zero_()
        self.count = torch.zeros((), dtype=torch.int64, device=like.device)

    def query(self, images: torch.Tensor) -> torch.Tensor:
        if self.size == 0:
            return images
        images = images.detach()
        if self.images is None:
            self._allocate(images)
        elif self.images.shape[1:] != images.shape[1:]:
            raise ValueError(f"image pool holds images of shape {tuple(self.images.shape[1:])}, "
                             f"got {tuple(images.shape[1:])}")
        elif self.images.dtype != images.dtype:  # resumed from a run of another precision
            self.images = self.images.to(images.dtype)  # (before any capture: the first query)
        out = []
        draws = torch.rand(images.shape[0], 2, device=images.device)
        for i in range(images.shape[0]):
            out.append(self._query_one(images[i : i + 1], draws[i]))
        return torch.cat(out, 0)

    def _query_one(self, image: torch.Tensor, draw: torch.Tensor) -> torch.Tensor:
        filling = self.count < self.size
        swap = ~filling & (draw[0] > 0.5)
        random_slot = (draw[1] * self.size).long().clamp_(max=self.size - 1)
        slot = torch.where(filling, self.count.clamp(max=self.size - 1), random_slot).reshape(1)
        stored = self.images.index_select(0, slot)
        out = torch.where(swap, stored, image)
        self.images.index_copy_(0, slot, torch.where(filling | swap, image, stored).to(self.images.dtype))
        self.count.add_(filling.long())
        return out

    def clear(self) -> None:
        """Drops the stored fakes (a run resumed at another image size), before any query: the
        first query allocates the ring at its images' shape."""
        self.images = None
        self.count = None

    def state_dict(self) -> dict:
        if self.images is None:
            return {"size": self.size, "images": None, "count": 0}
        return {"size": self.size, "images": self.images.cpu(), "count": int(self.count)}

    def load_state_dict(self, state: dict, device: torch.device | str) -> None:
        """The saved pool; one of another size (a run resumed with another --pool_size) gives
        its first stored images, up to this pool's size."""
        images = saved_images(state, self.size)  # either kind: the reference's list from an --eager run
        if len({t.shape for t in images}) > 1:  # a run of images of several sizes: no one ring holds
            images = []  # them (the resumed run says its pools start empty: Trainer.resume)
        count = len(images)
        images = _stack_into_ring(images, self.size) if images else None
        if self.images is not None:  # keep the tensors (a captured CUDA graph points at them)
            if images is not None and images.shape != self.images.shape:
                raise ValueError(f"the saved image pool holds images of shape {tuple(images.shape[1:])}, this "
                                 f"run's {tuple(self.images.shape[1:])}")
            self.count.fill_(count)
            if images is not None:
                self.images.copy_(images)
            return
        if images is None:
            return  # empty: allocated by the first query
        self.images = images.to(device)
        self.count = torch.tensor(count, dtype=torch.int64, device=device)


def _stack_into_ring(images: list, size: int) -> torch.Tensor:
    """A list of (1, C, H, W) images as a ring of `size` slots, in their memory format."""
    ring = torch.empty((size, *images[0].shape[1:]), dtype=images[0].dtype,
                       memory_format=_memory_format(images[0])).zero_()
    ring[: len(images)] = torch.cat(images, 0)
    return ring


def _memory_format(t: torch.Tensor) -> torch.memory_format:
    return torch.channels_last if t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last) \
        and not t.is_contiguous() else torch.contiguous_format
