"""Building the embedded demo datasets from the photographs inside scikit-image's wheel.

Only files shipped in the wheel are read (skimage/data/*.png|jpg, opened
directly, never through skimage's fetchers, so nothing can be downloaded).
Every photo is split by columns: the left TRAIN_FRACTION feeds the training
crops, the right rest the held-out test crops, so no test pixel is ever seen
in training. Crops are taken at a few scales at positions drawn from a fixed
seed, so a build is the same every time.
"""

from __future__ import annotations

import functools
import json
import os

import numpy as np
from PIL import Image

from fastgan.data.errors import DatasetError

# Natural colour photographs in the wheel (the other colour images are
# microscopy, astronomy or synthetic). CycleGAN domains use disjoint photos,
# paired by content (the two views of the stereo motorcycle pair; a portrait
# against an animal; an object against an object), so that what tells the
# domains apart is the colour grade, not what the photos show.
PHOTOS_A = ("astronaut.png", "coffee.png", "motorcycle_left.png")
PHOTOS_B = ("chelsea.png", "rocket.jpg", "motorcycle_right.png")
TRAIN_FRACTION = 0.7
SCALES = (1.0, 0.7, 0.5, 0.35)
BUILD_SEED = 20170330  # CycleGAN's arXiv date; any fixed value

# The known style of domain B: a strong warm ("golden hour") grade, per channel
# out = gain * in ** gamma (in [0, 1]): red lifted, green nearly kept, blue darkened.
# Pointwise and strictly increasing, so a generator can learn it pixel by pixel.
# Strong on purpose: it moves pixels by 0.14 on average (the identity baseline's
# error); with a milder grade (0.09) a small CycleGAN's early artifacts cost more
# than it gains, while with this one a 1,200-iteration run already beats identity.
STYLE_GAMMA = (0.45, 0.85, 2.0)
STYLE_GAIN = (1.0, 0.95, 0.6)

COUNTS = {
    # crops per folder and their side in pixels
    "cyclegan": {"train": 400, "test": 60, "train_size": 72, "test_size": 64},
    "pix2pix": {"train": 300, "test": 48, "train_size": 144, "test_size": 128},
}


def demo_style(x, channel_axis: int = -1):
    """The true style transform on floats in [0, 1] (numpy array or torch tensor, RGB on `channel_axis`)."""
    shape = [1] * x.ndim
    shape[channel_axis] = 3
    gamma = np.asarray(STYLE_GAMMA, dtype=np.float32).reshape(shape)
    gain = np.asarray(STYLE_GAIN, dtype=np.float32).reshape(shape)
    if not isinstance(x, np.ndarray):  # torch
        import torch

        gamma, gain = (torch.as_tensor(a, dtype=x.dtype, device=x.device) for a in (gamma, gain))
    return gain * x.clip(0, 1) ** gamma


def style_uint8(rgb: np.ndarray) -> np.ndarray:
    """demo_style on an H x W x 3 uint8 image, rounded back to uint8."""
    out = demo_style(rgb.astype(np.float32) / 255.0)
    return np.clip(np.round(out * 255.0), 0, 255).astype(np.uint8)


@functools.lru_cache(maxsize=None)
def load_photo(name: str) -> np.ndarray:
    import skimage

    path = os.path.join(os.path.dirname(skimage.__file__), "data", name)
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except OSError as e:
        raise DatasetError(
            f"the demo needs {path}, which scikit-image {skimage.__version__} does not ship ({e}); "
            f"install a scikit-image wheel that includes its sample photos, or pass --dataroot"
        ) from None


def sample_crops(photo: np.ndarray, part: str, size: int, count: int, rng) -> list[np.ndarray]:
    """`count` size x size crops of the train (left) or test (right) part of `photo`."""
    split = int(photo.shape[1] * TRAIN_FRACTION)
    region = Image.fromarray(photo[:, :split] if part == "train" else photo[:, split:])
    scaled = []
    for s in SCALES:
        w, h = round(region.width * s), round(region.height * s)
        if w >= size and h >= size:
            scaled.append(np.asarray(region.resize((w, h), Image.Resampling.LANCZOS)) if s != 1 else np.asarray(region))
    if not scaled:
        raise DatasetError(f"demo photo part too small for {size}px crops ({region.size})")
    crops = []
    for k in range(count):
        img = scaled[k % len(scaled)]
        y = int(rng.integers(img.shape[0] - size + 1))
        x = int(rng.integers(img.shape[1] - size + 1))
        crops.append(img[y : y + size, x : x + size])
    return crops


def _crops(photos, part: str, size: int, total: int, rng) -> list[tuple[str, np.ndarray]]:
    out = []
    for i, name in enumerate(photos):
        n = total // len(photos) + (i < total % len(photos))
        stem = os.path.splitext(name)[0]
        out += [(stem, c) for c in sample_crops(load_photo(name), part, size, n, rng)]
    return out


def _save(folder: str, items: list[tuple[str, np.ndarray]]) -> list[str]:
    os.makedirs(folder, exist_ok=True)
    names = []
    for i, (stem, arr) in enumerate(items):
        name = f"{i:04d}_{stem}.png"
        # Fast zlib level: a few % larger files, several times faster to build.
        Image.fromarray(arr).save(os.path.join(folder, name), compress_level=1)
        names.append(name)
    return names


def build_cyclegan(root: str) -> dict:
    """trainA/testA: photos A; trainB/testB: photos B graded; testA_true: testA graded."""
    c = COUNTS["cyclegan"]
    rng = np.random.default_rng(BUILD_SEED)
    train_a = _crops(PHOTOS_A, "train", c["train_size"], c["train"], rng)
    train_b = _crops(PHOTOS_B, "train", c["train_size"], c["train"], rng)
    test_a = _crops(PHOTOS_A, "test", c["test_size"], c["test"], rng)
    test_b = _crops(PHOTOS_B, "test", c["test_size"], c["test"], rng)
    _save(os.path.join(root, "trainA"), train_a)
    _save(os.path.join(root, "trainB"), [(s, style_uint8(a)) for s, a in train_b])
    _save(os.path.join(root, "testA"), test_a)
    _save(os.path.join(root, "testA_true"), [(s, style_uint8(a)) for s, a in test_a])
    _save(os.path.join(root, "testB"), [(s, style_uint8(a)) for s, a in test_b])
    return {
        "task": "A -> B: apply the warm colour grade out = gain * in ** gamma per RGB channel",
        "style": {"gamma": STYLE_GAMMA, "gain": STYLE_GAIN},
        "photos": {"A": PHOTOS_A, "B": PHOTOS_B},
        "counts": {"trainA": len(train_a), "trainB": len(train_b), "testA": len(test_a),
                   "testA_true": len(test_a), "testB": len(test_b)},
    }


def build_pix2pix(root: str) -> dict:
    """train/test: A|B pairs, A the grayscale (luma, replicated to RGB) of the photo B."""
    c = COUNTS["pix2pix"]
    rng = np.random.default_rng(BUILD_SEED + 1)
    photos = PHOTOS_A + PHOTOS_B
    counts = {}
    for part in ("train", "test"):
        crops = _crops(photos, part, c[f"{part}_size"], c[part], rng)
        _save(os.path.join(root, part), [(s, np.concatenate([gray3(a), a], axis=1)) for s, a in crops])
        counts[part] = len(crops)
    return {"task": "A -> B: colourize a grayscale photo", "photos": photos, "counts": counts}


def gray3(rgb: np.ndarray) -> np.ndarray:
    """PIL's luma (ITU-R 601-2), replicated to 3 channels."""
    luma = np.asarray(Image.fromarray(rgb).convert("L"))
    return np.repeat(luma[:, :, None], 3, axis=2)


BUILDERS = {"cyclegan": build_cyclegan, "pix2pix": build_pix2pix}


def write_manifest(root: str, arch: str, version: int, info: dict) -> None:
    with open(os.path.join(root, "demo.json"), "w", encoding="utf-8") as f:
        json.dump({"arch": arch, "version": version, **info}, f, indent=1)
