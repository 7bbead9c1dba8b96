"""The reference's image pool (Shrivastava et al.): D sees a history of fakes.

Per image of the batch (detached): while fewer than `size` are stored, store
it and return it; afterwards, with probability 0.5 return a random stored
image and store the new one in its slot, else return the new one. size 0
passes images through.

The pool draws from its own `random.Random`, so a run's pool decisions are
reproducible from the seed and restored exactly on resume (`state_dict`).

Fakes of several sizes (`--preprocess none` or `scale_width`, or a resume at
another size) are kept as they come. In a batch of several images a stored fake
of another size than the batch's cannot join it (the reference's pool fails
there): the new image is stored in its slot and returned, after the same draws.
"""

from __future__ import annotations

import random

import torch


class ImagePool:
    def __init__(self, size: int, seed: int = 0):
        if size < 0:
            raise ValueError(f"pool_size must be >= 0, got {size}")
        self.size = size
        self.images: list[torch.Tensor] = []
        self.rng = random.Random(seed)

    def query(self, images: torch.Tensor) -> torch.Tensor:
        if self.size == 0:
            return images
        if self.images and self.images[0].dtype != images.dtype:  # resumed from a run of another precision
            self.images = [t.to(images.dtype) for t in self.images]
        out = []
        for image in images.detach():
            image = image.unsqueeze(0)
            if len(self.images) < self.size:
                self.images.append(image)
                out.append(image)
            elif self.rng.uniform(0, 1) > 0.5:
                slot = self.rng.randint(0, self.size - 1)
                stored = self.images[slot]
                joins = len(images) == 1 or stored.shape == image.shape
                out.append(stored.clone() if joins else image)
                self.images[slot] = image
            else:
                out.append(image)
        return torch.cat(out, 0)

    def clear(self) -> None:
        """Drops the stored fakes (a run resumed at another image size); the RNG goes on."""
        self.images = []

    def state_dict(self) -> dict:
        return {"size": self.size, "images": [t.cpu() for t in self.images], "rng": self.rng.getstate()}

    def load_state_dict(self, state: dict, device: torch.device | str) -> None:
        """The saved pool; one of another size (a run resumed with another --pool_size) gives
        its first stored images, up to this pool's size."""
        self.images = [t.to(device) for t in saved_images(state, self.size)]
        if "rng" in state:  # the device pool draws from the torch RNG: keep this pool's own stream
            self.rng.setstate(state["rng"])


def saved_images(state: dict, size: int) -> list[torch.Tensor]:
    """The first `size` images a saved pool of either kind holds (this pool's list, or the
    device pool's ring and count: a run resumed at another level), as (1, C, H, W) tensors."""
    images = state["images"]
    if isinstance(images, torch.Tensor):
        images = list(images[: state["count"]].split(1))
    return list(images or [])[:size]
