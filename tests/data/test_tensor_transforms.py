"""The uint8 tensor transforms the cache and the CPU DALI path use, against PIL and the torch path."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from fastgan.data.tensor_transforms import crop_flip, resize_like_pil, to_batch
from fastgan.data.transforms import to_tensor


RESIZES = {  # (w, h) -> (w, h), by what happens to the width and the height
    "w down h down": [((40, 40), (36, 36)), ((600, 400), (286, 286)), ((50, 50), (28, 17))],
    "w down h down, rows lost > 2 x columns lost": [((38, 100), (36, 53)), ((400, 600), (286, 286))],
    "w down h down, rows lost = 2 x columns lost (width first)": [((33, 50), (30, 44)), ((60, 80), (50, 60))],
    "w up h down": [((33, 50), (36, 36)), ((200, 300), (286, 286)), ((66, 129), (123, 51))],
    "w up h up": [((33, 20), (36, 36)), ((20, 20), (104, 66))],
    "w down h up": [((37, 41), (36, 44)), ((99, 9), (61, 54))],
    "one axis": [((27, 30), (58, 30)), ((30, 54), (30, 40))],
}


@pytest.mark.parametrize("src,dst", [pytest.param(*r, id=f"{kind}: {r[0]}->{r[1]}")
                                     for kind, rs in RESIZES.items() for r in rs])
@pytest.mark.parametrize("channels", [1, 3])
def test_resize_is_pils_bicubic_within_one_level(src, dst, channels):
    """The two passes run in PIL's order (the module docstring), else pixel noise would be
    up to ~27 levels off."""
    rng = np.random.default_rng(sum(src) + channels)
    pixels = rng.integers(0, 256, (src[1], src[0], channels), dtype=np.uint8)  # noise: the hardest case
    pil = Image.fromarray(pixels[..., 0] if channels == 1 else pixels).resize(dst, Image.Resampling.BICUBIC)
    want = np.asarray(pil).reshape(dst[1], dst[0], channels).astype(int)
    for layout in ("HWC", "CHW"):  # DALI hands HWC images, the cache may store CHW
        img = torch.from_numpy(pixels).permute(2, 0, 1)
        img = img if layout == "HWC" else img.contiguous()
        got = resize_like_pil(img, dst).permute(1, 2, 0).numpy().astype(int)
        assert got.shape == want.shape and np.abs(got - want).max() <= 1
    same = torch.from_numpy(pixels).permute(2, 0, 1)
    assert resize_like_pil(same, src) is same  # PIL's path skips the resize at equal size too


def test_batch_equals_to_tensor_bit_for_bit():
    values = torch.arange(256, dtype=torch.uint8)
    assert torch.equal(to_batch([values.view(1, 16, 16)], torch.device("cpu"), False)[0],
                       values.float().div(255).sub(0.5).div(0.5).view(1, 16, 16))
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (3, 40, 44, 3), dtype=np.uint8)
    crops, flips = [(0, 0), (12, 8), (5, 3)], [False, True, True]
    want = torch.stack([to_tensor(Image.fromarray(p).crop((x, y, x + 32, y + 32)).transpose(
        Image.Transpose.FLIP_LEFT_RIGHT) if f else Image.fromarray(p).crop((x, y, x + 32, y + 32)))
        for p, (x, y), f in zip(pixels, crops, flips)])
    threads = torch.get_num_threads()
    for channels_last in (False, True):
        images = [torch.from_numpy(p).permute(2, 0, 1) for p in pixels]
        if not channels_last:
            images = [im.contiguous() for im in images]
        batch = to_batch([crop_flip(im, c, 32, f) for im, c, f in zip(images, crops, flips)],
                         torch.device("cpu"), channels_last)
        assert batch.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
        assert torch.equal(batch, want)
    assert torch.get_num_threads() == threads  # one_torch_thread gave the threads back


@pytest.mark.gpu
@pytest.mark.parametrize("source", ["cuda", "pinned"])
def test_batch_on_a_gpu_equals_the_cpu_bit_for_bit(source):
    """Every uint8 value, crops on the GPU (the cache there) or in pinned host memory."""
    values = torch.arange(256, dtype=torch.uint8).view(1, 16, 16)
    want = to_batch([values], torch.device("cpu"), False)
    image = values.cuda() if source == "cuda" else values
    got = to_batch([image], torch.device("cuda", torch.cuda.current_device()), False)
    assert got.is_cuda and torch.equal(got.cpu(), want)
