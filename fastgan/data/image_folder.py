"""Finding image files and decoding them the way the reference does.

The reference opens every image with PIL and calls ``convert('RGB')`` (and a
Grayscale transform for 1-channel sides). ``load_image`` keeps those semantics
and fixes what a plain convert lets through silently: a truncated file decodes
lazily (or, with LOAD_TRUNCATED_IMAGES, as grey padding) instead of failing on the
spot, and 16- or 32-bit grayscale values clipped at 255 get a warning.
"""

from __future__ import annotations

import math
import os
import warnings

import numpy as np
from PIL import Image, ImageFile

from fastgan.data.errors import DatasetError

IMG_EXTENSIONS = tuple(
    ext
    for e in (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".tif", ".tiff")
    for ext in (e, e.upper())
)

# Modes PIL uses for 16/32-bit single-channel integer images (16-bit PNG, PGM, TIFF).
WIDE_GRAY_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")
_said_clipped = False  # whether this process has warned of wide grayscale values clipped


def is_image_file(filename: str) -> bool:
    """The reference's test: an extension in all lower or all upper case (".Jpg" is not one)."""
    return filename.endswith(IMG_EXTENSIONS)


def make_dataset(dir: str, max_dataset_size: float = math.inf) -> list[str]:
    """Image paths under `dir` (recursive, symlinks followed), sorted, at most `max_dataset_size`.

    Symlinked folders are followed, but each real folder (device and inode) is
    visited once: a link back up the tree (trainA/loop -> ../trainA) would
    otherwise list the same images again at every depth until the path grows too
    long, and two links to one folder would count its images twice. The copy
    kept is the first one in sorted order (the walk descends in sorted order).

    Unlike the reference, which truncates before sorting (so which files survive
    max_dataset_size depends on the file system's listing order), the full list
    is sorted first: the kept files are always the first ones by path.
    """
    if not os.path.isdir(dir):
        raise DatasetError(f"image folder {dir} does not exist (or is not a folder); check --dataroot")
    images = []
    seen: set[tuple[int, int]] = set()
    for root, dirs, fnames in os.walk(dir, followlinks=True):
        st = os.stat(root)
        if (st.st_dev, st.st_ino) in seen:
            dirs[:] = []  # a folder already listed, reached again through a link
            continue
        seen.add((st.st_dev, st.st_ino))
        dirs.sort()  # which of two links to one folder is kept does not depend on the listing order
        images.extend(os.path.join(root, f) for f in fnames if is_image_file(f))
    images.sort()
    if max_dataset_size < len(images):
        images = images[: int(max_dataset_size)]
    return images


def load_image(path: str, channels: int = 3) -> Image.Image:
    """Decode `path` fully into an 8-bit PIL image of mode "RGB" (channels=3) or "L" (channels=1).

    Grayscale, palette, CMYK and alpha images are converted as the reference's
    ``convert('RGB')`` does (alpha dropped, not composited); 1-channel sides get
    RGB -> L (ITU-R 601-2 luma) like its Grayscale transform. 16- and 32-bit
    grayscale values are clipped to 0..255, as the reference's convert() reads them
    (a warning says so once where values were clipped); 16-bit colour PNGs are
    reduced by PIL itself (to the high byte). A file that is not an image or is
    truncated raises DatasetError naming it.
    """
    if channels not in (1, 3):
        raise DatasetError(
            f"cannot load {path} with {channels} channels: only 1 (grayscale) or 3 (RGB) are "
            f"supported; set --input_nc/--output_nc to 1 or 3"
        )
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        # Someone (another library) turned this on globally; it would turn truncated
        # files into silently grey-padded images.
        raise DatasetError(
            "PIL.ImageFile.LOAD_TRUNCATED_IMAGES is True in this process; fastgan refuses to "
            "train on silently padded truncated images. Set it back to False"
        )
    try:
        with Image.open(path) as im:
            im.load()  # force the full decode now, so a truncated file fails here
        img = _to_8bit(im, path)
    except DatasetError:
        raise
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as e:
        raise DatasetError(
            f"cannot read image {path}: {e}. Replace the file with a valid image or remove it "
            f"from the dataset"
        ) from None
    if channels == 3:
        return img if img.mode == "RGB" else img.convert("RGB")
    if img.mode == "L":
        return img
    return img.convert("RGB").convert("L")  # the reference's order: RGB first, then luma


def _to_8bit(im: Image.Image, path: str) -> Image.Image:
    """8-bit version of `im`, keeping its colour model (L, RGB, RGBA, P, CMYK, ...)."""
    global _said_clipped
    if im.mode in WIDE_GRAY_MODES:
        a = np.asarray(im)
        if a.size and (a.min() < 0 or a.max() > 255) and not _said_clipped:
            _said_clipped = True
            warnings.warn(f"{path} holds grayscale values from {a.min()} to {a.max()}: they are clipped to "
                          f"0..255, as the reference reads them (said for the first such file only); save "
                          f"the images with 8 bits to train on their whole range", stacklevel=3)
        return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8), "L")
    if im.mode == "1":
        return im.convert("L")
    return im
