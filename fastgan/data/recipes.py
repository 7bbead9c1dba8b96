"""What a dataset item is made of, decided without decoding it.

The torch path (datasets.py) decodes and transforms an item in one go. The DALI
and cache loaders decode elsewhere (in DALI's threads, or once for the whole
run), so they need the item's decisions up front: which file, or which half of
an aligned A|B file, each output image comes from, its size after the resize
stage, the crop position and the flip. `ItemRecipes` draws them from
``item_rng(seed, epoch, index)`` in exactly the order datasets.py draws them
(unaligned: B partner, A's params, B's params; aligned: one params draw for both
halves), so every loader applies the same crops, flips and unaligned partners as
the torch path; tests/data/test_loader_equivalence.py holds them to it.

When an item cannot be made (an image smaller than the crop, an aligned image
one pixel wide, a file that is no image), the recipe asks the torch path to
load the item, so the refusal is the DatasetError the torch path raises, word
for word.
"""

from __future__ import annotations

from dataclasses import dataclass

from PIL import Image

from fastgan.data.dali_misreads import dali_misreads
from fastgan.data.errors import DatasetError
from fastgan.data.loader import different_sizes_message
from fastgan.data.rng import item_rng
from fastgan.data.transforms import get_params, resized_size


@dataclass(frozen=True)
class ImageRecipe:
    """How one output image is made from its file."""

    path: str
    region: tuple[int, int, int, int] | None  # (x, y, w, h) of an aligned file's half; None: all of it
    resized: tuple[int, int]  # (w, h) after the resize stage (and --preprocess none's rounding)
    crop: tuple[int, int] | None  # top-left corner of the crop_size crop; None: no crop
    flip: bool

    def out_size(self, crop_size: int) -> tuple[int, int]:
        return (crop_size, crop_size) if self.crop is not None else self.resized


class Refused(Exception):
    """An item the transforms refuse; the torch path words the error."""


class ImageSizes:
    """(w, h) of image files from their headers (no decoding), remembered per path, and
    whether DALI would misread them (`dali_misreads(path)`). A header PIL cannot read (not an
    image, a decompression bomb, a damaged chunk) raises Refused."""

    def __init__(self):
        self._headers: dict[str, tuple[tuple[int, int], bool]] = {}

    def __call__(self, path: str) -> tuple[int, int]:
        return self._header(path)[0]

    def dali_misreads(self, path: str) -> bool:
        return self._header(path)[1]

    def _header(self, path: str) -> tuple[tuple[int, int], bool]:
        header = self._headers.get(path)
        if header is None:
            try:
                with Image.open(path) as im:
                    header = im.size, dali_misreads(im)
            except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError):
                raise Refused from None
            self._headers[path] = header
        return header


def output_channels(dataset) -> dict[str, int]:
    """Channels of each output image ("A", "B"): the folders' counts, swapped with BtoA."""
    if dataset.mode == "single":
        return {"A": dataset.A_nc}
    if dataset.btoa:
        return {"A": dataset.B_nc, "B": dataset.A_nc}
    return {"A": dataset.A_nc, "B": dataset.B_nc}


def resize_stage_size(opt, size: tuple[int, int]) -> tuple[int, int] | None:
    """(w, h) of an image of `size` after the resize stage; None when --preprocess none
    rounds a side to 0 (the transforms refuse it)."""
    w, h = resized_size(opt, size)
    if opt.preprocess == "none":  # transforms._make_multiple_of: Python's round, as the reference
        w, h = int(round(w / 4) * 4), int(round(h / 4) * 4)
        if w == 0 or h == 0:
            return None
    return w, h


class ItemRecipes:
    """recipes(index, epoch) -> {"A": ImageRecipe, "B": ..., "A_paths": str, "B_paths": str}
    (single: "A" and "A_paths"), the decisions dataset.get(index, epoch) makes.

    `size_of(path)` gives a file's decoded (w, h) from its header. Every file's header is
    read, also where a fixed resize makes its size moot: a file PIL cannot open is refused
    by the torch path's words when its item is due, where DALI would decode it anyway.
    """

    def __init__(self, dataset, size_of):
        self.dataset = dataset
        self.opt = dataset.opt
        self.size_of = size_of
        self.channels = output_channels(dataset)
        self._fixed_size = "resize" in self.opt.preprocess  # every image becomes load_size²

    def __call__(self, index: int, epoch: int) -> dict:
        try:
            return getattr(self, "_" + self.dataset.mode)(index, epoch)
        except Refused:
            self.dataset.get(index, epoch)  # raises the torch path's DatasetError
            raise DatasetError(f"item {index} of {self.dataset.root} cannot be loaded") from None

    def _size(self, path: str) -> tuple[int, int]:
        size = self.size_of(path)
        return (self.opt.load_size, self.opt.load_size) if self._fixed_size else size  # the resize ignores it

    def _unaligned(self, index: int, epoch: int) -> dict:
        ds, rng = self.dataset, item_rng(self.opt.seed, epoch, index)
        a_path = ds.A_paths[index % len(ds.A_paths)]
        if self.opt.serial_batches:
            b_index = index % len(ds.B_paths)
        else:
            b_index = int(rng.integers(len(ds.B_paths)))
        b_path = ds.B_paths[b_index]
        a_size = self._size(a_path)
        A = self._recipe(a_path, None, a_size, get_params(self.opt, a_size, rng))
        b_size = self._size(b_path)
        B = self._recipe(b_path, None, b_size, get_params(self.opt, b_size, rng))
        if ds.btoa:
            A, B, a_path, b_path = B, A, b_path, a_path
        return {"A": A, "B": B, "A_paths": a_path, "B_paths": b_path}

    def _aligned(self, index: int, epoch: int) -> dict:
        rng = item_rng(self.opt.seed, epoch, index)
        path = self.dataset.AB_paths[index]
        w, h = self.size_of(path)
        w2 = w // 2  # an odd width's last column belongs to neither half (datasets.AlignedDataset)
        if w2 == 0:
            raise Refused
        params = get_params(self.opt, (w2, h), rng)  # one draw for both halves
        A = self._recipe(path, (0, 0, w2, h), (w2, h), params)
        B = self._recipe(path, (w2, 0, w2, h), (w2, h), params)
        if self.dataset.btoa:
            A, B = B, A
        return {"A": A, "B": B, "A_paths": path, "B_paths": path}

    def _single(self, index: int, epoch: int) -> dict:
        rng = item_rng(self.opt.seed, epoch, index)
        path = self.dataset.A_paths[index]
        size = self._size(path)
        return {"A": self._recipe(path, None, size, get_params(self.opt, size, rng)), "A_paths": path}

    def _recipe(self, path: str, region, size: tuple[int, int], params: dict) -> ImageRecipe:
        resized = resize_stage_size(self.opt, size)
        if resized is None:
            raise Refused
        crop = None
        if "crop" in self.opt.preprocess:
            cs = self.opt.crop_size
            if resized[0] < cs or resized[1] < cs:
                raise Refused
            crop = params["crop_pos"]
        return ImageRecipe(path, region, resized, crop, params["flip"])


def check_same_size(items: list[dict], key: str, crop_size: int) -> None:
    """Refuse a batch whose `key` images would differ in size, as the torch loader's collate does."""
    sizes = [it[key].out_size(crop_size) for it in items]
    if any(s != sizes[0] for s in sizes):
        raise DatasetError(different_sizes_message([it[key + "_paths"] for it in items],
                                                   [(h, w) for w, h in sizes]))
