"""The reference's three dataset modes: unaligned, aligned, single.

Items are in the model's direction: with ``--direction BtoA`` the datasets
swap the domains themselves, so "A" is always the generator's input side (with
input_nc channels) and "B" its target side; the engine must not swap again.
Files are indexed exactly as in the reference (unaligned: folder A by
index mod |A|, folder B at random or index mod |B| with serial_batches).

Every random choice of an item comes from ``item_rng(opt.seed, epoch, index)``;
the epoch is passed explicitly to `get`, or set with `set_epoch` for plain
``dataset[index]`` access.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from PIL import Image

from fastgan.data.errors import DatasetError
from fastgan.data.image_folder import load_image, make_dataset
from fastgan.data.rng import item_rng
from fastgan.data.transforms import check_preprocess_options, get_params, transform_image

DIRECTIONS = ("AtoB", "BtoA")


class BaseDataset(torch.utils.data.Dataset):
    mode = ""
    layout = ""  # the expected folder layout, for error messages

    def __init__(self, opt):
        self.opt = opt
        self.epoch = 0
        if opt.direction not in DIRECTIONS:
            raise DatasetError(f"unknown --direction {opt.direction!r}; choose AtoB or BtoA")
        self.btoa = opt.direction == "BtoA"
        if not opt.max_dataset_size >= 1:  # 0 would read as an empty folder
            raise DatasetError(f"--max_dataset_size {opt.max_dataset_size:g} must be at least 1: it caps the "
                               f"images used of each folder (leave it out to use them all)")
        self.root = dataroot(opt)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __getitem__(self, index: int) -> dict:
        return self.get(index, self.epoch)

    def get(self, index: int, epoch: int) -> dict:
        raise NotImplementedError

    def _images(self, folder: str) -> list[str]:
        """The sorted image paths of `folder`, refusing a missing or empty one."""
        where = f"--dataset_mode {self.mode} expects {self.layout}"
        if os.path.isfile(folder):
            raise DatasetError(f"{folder} is a file, not a folder of images; {where}")
        if not os.path.isdir(folder):
            raise DatasetError(f"dataset folder {folder} does not exist; {where}")
        paths = make_dataset(folder, self.opt.max_dataset_size)
        if not paths:
            raise DatasetError(
                f"dataset folder {folder} holds no images (.jpg .jpeg .png .ppm .bmp .tif .tiff); {where}"
            )
        return paths

    def _check_channels(self, *counts: int) -> None:
        """Channel counts no loader produces, refused before any file is read (load_image
        refuses them too; DALI's pipeline would quietly make RGB of them)."""
        for nc in counts:
            if nc not in (1, 3):
                raise DatasetError(f"cannot load the images of {self.root} with {nc} channels: only 1 (grayscale) "
                                   f"or 3 (RGB) are supported; set --input_nc/--output_nc to 1 or 3")

    def _transformed(self, img: Image.Image, path: str, rng: np.random.Generator) -> torch.Tensor:
        return transform_image(self.opt, img, get_params(self.opt, img.size, rng), path)


def dataroot(opt) -> str:
    """opt.dataroot, or the embedded demo's (built on first use) when none is given."""
    if opt.dataroot is not None:
        return str(opt.dataroot)
    if getattr(opt, "demo", False):
        from fastgan.data.demo import prepare_demo

        return prepare_demo(opt.arch)
    raise DatasetError("no --dataroot given; pass --dataroot (or resolve the options with the demo defaults)")


class UnalignedDataset(BaseDataset):
    """Two unpaired folders, {dataroot}/{phase}A and {dataroot}/{phase}B."""

    mode = "unaligned"

    def __init__(self, opt):
        super().__init__(opt)
        self.layout = f"{self.root}/{opt.phase}A and {self.root}/{opt.phase}B, one image folder per domain"
        check_preprocess_options(opt)
        self.dir_A = os.path.join(self.root, opt.phase + "A")
        self.dir_B = os.path.join(self.root, opt.phase + "B")
        self.A_paths = self._images(self.dir_A)
        self.B_paths = self._images(self.dir_B)
        # Channel counts of the folders (the reference swaps them with the direction).
        self.A_nc = opt.output_nc if self.btoa else opt.input_nc
        self.B_nc = opt.input_nc if self.btoa else opt.output_nc
        self._check_channels(self.A_nc, self.B_nc)

    def __len__(self) -> int:
        return max(len(self.A_paths), len(self.B_paths))

    def get(self, index: int, epoch: int) -> dict:
        rng = item_rng(self.opt.seed, epoch, index)
        a_path = self.A_paths[index % len(self.A_paths)]
        if self.opt.serial_batches:
            b_index = index % len(self.B_paths)
        else:  # a random partner breaks fixed A/B pairings
            b_index = int(rng.integers(len(self.B_paths)))
        b_path = self.B_paths[b_index]
        A = self._transformed(load_image(a_path, self.A_nc), a_path, rng)
        B = self._transformed(load_image(b_path, self.B_nc), b_path, rng)
        if self.btoa:
            A, B, a_path, b_path = B, A, b_path, a_path
        return {"A": A, "B": B, "A_paths": a_path, "B_paths": b_path}


class AlignedDataset(BaseDataset):
    """{dataroot}/{phase}/* images holding a pair side by side, A left and B right.

    The image is split at w // 2 and both halves get the same resize, crop and
    flip. An odd-width image has one column more than two halves: it is dropped
    (B = columns w//2 .. 2*(w//2)), so both halves have the same size and stay
    pixel-aligned from the left, where the reference's B half would be one
    column wider and, under resize, scaled slightly differently from A.
    """

    mode = "aligned"

    def __init__(self, opt):
        super().__init__(opt)
        self.layout = f"{self.root}/{opt.phase}/ holding images with A and B side by side (A|B)"
        check_preprocess_options(opt, require_load_ge_crop=True)
        self.dir_AB = os.path.join(self.root, opt.phase)
        self.AB_paths = self._images(self.dir_AB)
        self.A_nc = opt.output_nc if self.btoa else opt.input_nc  # of the left half
        self.B_nc = opt.input_nc if self.btoa else opt.output_nc
        self._check_channels(self.A_nc, self.B_nc)

    def __len__(self) -> int:
        return len(self.AB_paths)

    def get(self, index: int, epoch: int) -> dict:
        rng = item_rng(self.opt.seed, epoch, index)
        path = self.AB_paths[index]
        AB = load_image(path, 3)
        w, h = AB.size
        w2 = w // 2
        if w2 == 0:
            raise DatasetError(f"aligned image {path} is {w} pixel wide: it cannot hold A|B side by side")
        A = AB.crop((0, 0, w2, h))
        B = AB.crop((w2, 0, 2 * w2, h))
        if self.A_nc == 1:
            A = A.convert("L")
        if self.B_nc == 1:
            B = B.convert("L")
        params = get_params(self.opt, A.size, rng)  # one draw for both halves
        A = transform_image(self.opt, A, params, path)
        B = transform_image(self.opt, B, params, path)
        if self.btoa:
            A, B = B, A
        return {"A": A, "B": B, "A_paths": path, "B_paths": path}


class SingleDataset(BaseDataset):
    """The images of {dataroot} itself, one domain (for translating a folder)."""

    mode = "single"

    def __init__(self, opt):
        super().__init__(opt)
        self.layout = f"{self.root} to be a folder of images"
        check_preprocess_options(opt)
        self.A_paths = self._images(self.root)
        self.A_nc = opt.output_nc if self.btoa else opt.input_nc  # as the reference
        self._check_channels(self.A_nc)

    def __len__(self) -> int:
        return len(self.A_paths)

    def get(self, index: int, epoch: int) -> dict:
        rng = item_rng(self.opt.seed, epoch, index)
        path = self.A_paths[index]
        return {"A": self._transformed(load_image(path, self.A_nc), path, rng), "A_paths": path}


DATASET_MODES = {"unaligned": UnalignedDataset, "aligned": AlignedDataset, "single": SingleDataset}


def create_dataset(opt) -> BaseDataset:
    """The dataset of opt.dataset_mode (unaligned, aligned or single)."""
    cls = DATASET_MODES.get(opt.dataset_mode)
    if cls is None:
        raise DatasetError(
            f"unknown --dataset_mode {opt.dataset_mode!r}; choose one of {', '.join(DATASET_MODES)}"
        )
    return cls(opt)
