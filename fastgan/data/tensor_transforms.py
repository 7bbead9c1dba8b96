"""The reference's transforms on uint8 image tensors, for the loaders that do not
run PIL per item: the cache (crop, flip, normalize on the device) and DALI on the
CPU (resize as well).

`resize_like_pil`: torch's antialiased bicubic on uint8 is PIL's BICUBIC
algorithm (a = -0.5, kernel widened by the downscale factor and renormalised at
the borders, 8-bit rounding), one pass per axis with an 8-bit image between
them. The order of the passes matters (the clipping between them differs):
torch's single call runs the width first, as Pillow always did; Pillow now runs
the height first when the height loses more than twice as many rows as the
width loses columns (a portrait 375x500 -> 286x286, any image whose width grows
while its height shrinks). There `resize_like_pil` makes two calls, height
first; a single call would be up to ~27 levels off on pixel noise. So it is
within one level of PIL on every pixel, borders included, at every size pair the
test holds it to (tests/data/test_tensor_transforms.py, pixel noise: the hardest
case; two levels seen at 100x100 -> 286x286, an upscale both ways), where
DALI's CPU resize is a different cubic kernel and ~15x slower here (9 ms vs
0.5 ms for a 600x400 -> 286x286 image on this 2-core Xeon).

`to_batch` writes each crop straight into a float batch (the uint8 -> float
conversion rides on the first arithmetic op) and finishes the whole batch with
one in-place op: x / 127.5 - 1 is bit-identical in float32 to ToTensor +
Normalize(0.5, 0.5)'s (x / 255 - 0.5) / 0.5 for every uint8 value (tested), so
the cache's batches equal the torch path's exactly. (On a GPU the divisor is a
0-dim tensor on the device: CUDA divides by a Python scalar as a product with its
reciprocal, one bit off the quotient for 111 of the 256 values.)

On the CPU these per-image ops run on the calling thread alone
(`one_torch_thread`): an OpenMP team per op of ~0.2 ms costs more in barriers
than it gains, and stalls whenever another process or DALI's decoding threads
hold a core. Measured on this 2-core machine under load, a batch of 16 crops
of 256² takes 1.9 ms on one thread against 16-260 ms with two.
"""

from __future__ import annotations

import contextlib
import functools

import torch
import torch.nn.functional as F


@contextlib.contextmanager
def one_torch_thread():
    """torch's CPU ops on the calling thread only, while the block runs (see the module docstring)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def resize_like_pil(img: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """A (C, H, W) uint8 CPU image resized to size = (w, h) like PIL's BICUBIC (unchanged when equal).

    Both resize in two 8-bit passes, one per axis, and the order of the passes
    shows (see the module docstring): torch's single call runs the width first;
    PIL runs the height first when `pil_resizes_height_first` says so.
    """
    w, h = size
    in_h, in_w = img.shape[1], img.shape[2]
    if (in_w, in_h) == (w, h):
        return img
    if in_w != w and in_h != h and pil_resizes_height_first((in_w, in_h), size):
        img = F.interpolate(img[None], size=(h, in_w), mode="bicubic", antialias=True)
        return F.interpolate(img, size=(h, w), mode="bicubic", antialias=True)[0]
    return F.interpolate(img[None], size=(h, w), mode="bicubic", antialias=True)[0]


def pil_resizes_height_first(src: tuple[int, int], dst: tuple[int, int]) -> bool:
    """Whether the installed Pillow resizes (w, h) `src` to `dst` height first.

    Pillow resized width first always, until it came to run the height first when
    the height loses more than twice as many rows as the width loses columns (so
    whenever the width grows while the height shrinks): the rule read off Pillow
    13.0's output, which it matched on 1,464 random size pairs of 6..90 pixels.
    Which kind of Pillow is installed is found out once, on a small image where
    the two orders differ.
    """
    (sw, sh), (dw, dh) = src, dst
    return sh > dh and sh - dh > 2 * (sw - dw) and _pillow_can_resize_height_first()


@functools.cache
def _pillow_can_resize_height_first() -> bool:
    import numpy as np
    from PIL import Image

    noise = np.random.default_rng(0).integers(0, 256, (50, 33), dtype=np.uint8)  # 33x50 -> 36x36: w up, h down
    pil = torch.from_numpy(np.array(Image.fromarray(noise).resize((36, 36), Image.Resampling.BICUBIC))).int()
    img = torch.from_numpy(noise)[None, None]
    width_first = F.interpolate(img, size=(36, 36), mode="bicubic", antialias=True)[0, 0]
    height_first = F.interpolate(F.interpolate(img, size=(36, 33), mode="bicubic", antialias=True),
                                 size=(36, 36), mode="bicubic", antialias=True)[0, 0]
    return bool((height_first.int() - pil).abs().max() < (width_first.int() - pil).abs().max())


def crop_flip(img: torch.Tensor, crop: tuple[int, int] | None, crop_size: int, flip: bool) -> torch.Tensor:
    """The crop_size crop at crop = (x, y) of a (C, H, W) image (a view), mirrored when flip."""
    if crop is not None:
        x, y = crop
        img = img[:, y : y + crop_size, x : x + crop_size]
    return img.flip(-1) if flip else img


def to_batch(images: list[torch.Tensor], device: torch.device, channels_last: bool) -> torch.Tensor:
    """(C, h, w) uint8 images -> one float batch in [-1, 1] on `device`, in the asked memory format.

    Images on another device than `device` (the cache in pinned host memory for
    a GPU run) are staged as uint8 in pinned memory and copied without blocking,
    a quarter of the bytes of a float batch.
    """
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    shape = (len(images), *images[0].shape)
    if images[0].device != device:
        with one_torch_thread():
            staged = torch.empty(shape, dtype=torch.uint8, pin_memory=True, memory_format=fmt)
            for i, img in enumerate(images):
                staged[i].copy_(img)
        return torch.div(staged.to(device, non_blocking=True), _divisor(device)).sub_(1)
    divisor = _divisor(device)
    with contextlib.nullcontext() if device.type == "cuda" else one_torch_thread():
        out = torch.empty(shape, dtype=torch.float32, device=device, memory_format=fmt)
        for i, img in enumerate(images):
            torch.div(img, divisor, out=out[i])
        return out.sub_(1)


_DIVISORS: dict[torch.device, torch.Tensor] = {}


def _divisor(device: torch.device) -> float | torch.Tensor:
    """127.5 as the CPU divides by it exactly: the number on a CPU, a 0-dim float32
    tensor on a GPU (made once per device)."""
    if device.type == "cpu":
        return 127.5
    if device not in _DIVISORS:
        _DIVISORS[device] = torch.tensor(127.5, dtype=torch.float32, device=device)
    return _DIVISORS[device]
