"""Helpers for the data tests: small images written into tmp_path, options."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from fastgan.options import Options


def coord_image(w: int, h: int, offset: int = 0, step: int = 1) -> np.ndarray:
    """An RGB image whose pixels say where they are: R = step * x, G = step * y, B = offset."""
    assert step * max(w, h) <= 256
    y, x = np.mgrid[0:h, 0:w] * step
    return np.stack([x, y, np.full_like(x, offset)], axis=-1).astype(np.uint8)


def save(path, arr: np.ndarray) -> str:
    path = str(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


def random_image(rng, w: int, h: int) -> np.ndarray:
    return rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def make_opt(dataroot, **kw) -> Options:
    """Small images, no workers, and the torch loader unless `loader` says otherwise."""
    base = dict(dataroot=str(dataroot), num_threads=0, load_size=36, crop_size=32, seed=0, loader="torch")
    base.update(kw)
    return Options(**base)


@pytest.fixture
def unaligned_root(tmp_path):
    """trainA: 5 images, trainB: 3 images, each 40x40 with distinct content (B offset marks it)."""
    rng = np.random.default_rng(0)
    for i in range(5):
        save(tmp_path / "trainA" / f"a{i}.png", random_image(rng, 40, 40))
    for i in range(3):
        save(tmp_path / "trainB" / f"b{i}.png", random_image(rng, 40, 40))
    return tmp_path
