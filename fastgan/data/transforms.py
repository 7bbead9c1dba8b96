"""The reference's preprocessing, with its randomness made explicit.

Per image: (Grayscale: done by load_image for 1-channel sides) -> resize
(``resize*``: to load_size x load_size, BICUBIC, aspect ignored; ``scale_width*``:
width to load_size keeping aspect, height at least crop_size) -> crop crop_size
(``*crop``) -> ``none``: round each side to a multiple of 4 (BICUBIC) -> flip ->
tensor in [-1, 1] (ToTensor, then Normalize(0.5, 0.5)).

The random choices live in a params dict ``{"crop_pos": (x, y), "flip": bool}``
drawn by `get_params` from an explicit generator, so aligned halves can share
one and every draw is reproducible (see rng.py). At test time (``not
opt.isTrain``) or without a generator the params are fixed: centre crop, no flip.

Images too small to crop (only possible with ``--preprocess crop``: the resize
modes bring every image to at least crop_size) are refused with a DatasetError
naming the file, rather than the reference's behaviour (PIL pads the missing
part with black, or the image keeps its size and batching fails later). The
reference's stretch of a very wide image's height up to crop_size under
``scale_width*`` is kept: it is its documented handling of that case.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from fastgan.data.errors import DatasetError

# the reference tests its option for substrings ("resize", "crop", ...): "resize" alone is
# a mode of its own there, though not among the values its help lists
PREPROCESS = ("resize_and_crop", "crop", "resize", "scale_width", "scale_width_and_crop", "none")
BICUBIC = Image.Resampling.BICUBIC


def check_preprocess_options(opt, require_load_ge_crop: bool = False) -> None:
    """Refuse option combinations that cannot produce crop_size images."""
    p = opt.preprocess
    if p not in PREPROCESS:
        raise DatasetError(f"unknown --preprocess {p!r}; choose one of {', '.join(PREPROCESS)}")
    if opt.crop_size < 1 or opt.load_size < 1:
        raise DatasetError(
            f"--load_size {opt.load_size} and --crop_size {opt.crop_size} must both be positive"
        )
    resized_then_cropped = "crop" in p and p != "crop"
    if (require_load_ge_crop or resized_then_cropped) and opt.load_size < opt.crop_size:
        why = ("images are resized to load_size before a crop_size crop is taken" if "crop" in p else
               f"the reference's aligned dataset requires it, though --preprocess {p} takes no crop")
        raise DatasetError(f"--load_size {opt.load_size} is smaller than --crop_size {opt.crop_size}: {why}. "
                           f"Use --load_size >= --crop_size")


def resized_size(opt, size: tuple[int, int]) -> tuple[int, int]:
    """(w, h) of an image of `size` after the resize stage of opt.preprocess."""
    w, h = size
    if "resize" in opt.preprocess:
        return opt.load_size, opt.load_size
    if "scale_width" in opt.preprocess:
        if w == opt.load_size and h >= opt.crop_size:
            return w, h
        # The reference stretches the height up to crop_size rather than fail.
        return opt.load_size, int(max(opt.load_size * h / w, opt.crop_size))
    return w, h


def get_params(opt, size: tuple[int, int], rng: np.random.Generator | None = None) -> dict:
    """Crop position and flip for an image of original `size` (w, h).

    Random (x, y uniform over every valid position, flip with probability 0.5
    unless no_flip) when training with a generator; else centre crop, no flip.
    """
    new_w, new_h = resized_size(opt, size)
    max_x, max_y = max(0, new_w - opt.crop_size), max(0, new_h - opt.crop_size)
    if rng is None or not opt.isTrain:
        return {"crop_pos": (max_x // 2, max_y // 2), "flip": False}
    x = int(rng.integers(0, max_x + 1))
    y = int(rng.integers(0, max_y + 1))
    flip = bool(rng.random() > 0.5) and not opt.no_flip  # always draw: keeps the stream's layout fixed
    return {"crop_pos": (x, y), "flip": flip}


def transform_image(opt, img: Image.Image, params: dict, path: str = "<image>") -> torch.Tensor:
    """Apply opt.preprocess with `params` to a loaded image: a C x H x W float tensor in [-1, 1]."""
    p = opt.preprocess
    new_size = resized_size(opt, img.size)
    if new_size != img.size:
        img = img.resize(new_size, BICUBIC)
    if "crop" in p:
        img = _crop(img, params["crop_pos"], opt.crop_size, path)
    if p == "none":
        img = _make_multiple_of(img, 4, path)
    if params["flip"]:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return to_tensor(img)


def to_tensor(img: Image.Image) -> torch.Tensor:
    """ToTensor + Normalize(0.5, 0.5), the same float32 operations as torchvision's."""
    a = np.asarray(img)
    if a.ndim == 2:
        a = a[:, :, None]
    t = torch.from_numpy(a.transpose(2, 0, 1).astype(np.float32))
    return t.div_(255).sub_(0.5).div_(0.5)


def _crop(img: Image.Image, pos: tuple[int, int], size: int, path: str) -> Image.Image:
    w, h = img.size
    if w < size or h < size:
        raise DatasetError(
            f"image {path} is {w}x{h} pixels, smaller than --crop_size {size} (--preprocess crop "
            f"does not resize). Use --preprocess resize_and_crop or scale_width_and_crop, a "
            f"--crop_size <= {min(w, h)}, or remove the image"
        )
    if (w, h) == (size, size):
        return img
    x, y = pos
    return img.crop((x, y, x + size, y + size))


def _make_multiple_of(img: Image.Image, base: int, path: str) -> Image.Image:
    ow, oh = img.size
    w, h = int(round(ow / base) * base), int(round(oh / base) * base)  # Python's round, as the reference
    if w == 0 or h == 0:
        raise DatasetError(
            f"image {path} is {ow}x{oh} pixels, too small for --preprocess none (sides are rounded "
            f"to a multiple of {base}); use a larger image or another --preprocess"
        )
    return img if (w, h) == (ow, oh) else img.resize((w, h), BICUBIC)
