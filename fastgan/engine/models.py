"""`build_model(arch, **options)`: a training model from the CLI's option names."""

from __future__ import annotations

import torch

from fastgan.engine.levels import resolve_levels
from fastgan.models import generator_size_multiple
from fastgan.options import Options, resolve


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"--device {name!r} is not a device; use auto, cpu, cuda or cuda:N") from None
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"--device {name}: fastgan trains on cpu or cuda devices")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: no CUDA device is available here; use --device cpu")
    return device


def check_generator_input_size(opt: Options) -> None:
    """Cropped training images of a size the generator cannot give back (its output would not
    match the target of the cycle or L1 loss) are refused before anything runs."""
    multiple = generator_size_multiple(opt.netG)
    if "crop" in opt.preprocess and opt.crop_size % multiple:
        fits = [n for n in ("resnet_9blocks", "unet_128", "unet_256")
                if opt.crop_size % generator_size_multiple(n) == 0]
        raise ValueError(f"--netG {opt.netG} needs --crop_size a multiple of {multiple} (got {opt.crop_size}): "
                         f"use --crop_size {max(multiple, opt.crop_size // multiple * multiple)}"
                         + (f" or --netG {' / '.join(fits)}" if fits else ""))
    if opt.preprocess == "scale_width" and opt.load_size % multiple:  # every image's width
        raise ValueError(f"--netG {opt.netG} needs sides that are multiples of {multiple}; --preprocess scale_width "
                         f"makes every width --load_size {opt.load_size}: use --load_size "
                         f"{max(multiple, opt.load_size // multiple * multiple)}")


def check_image_fits(opt: Options, image: torch.Tensor, path: str, multiple: int | None = None) -> None:
    """Under --preprocess none or scale_width each image keeps a size of its own (heights, and
    for none the widths, follow the files): a DatasetError names `path` when a side of `image`
    is not a multiple of `multiple` (default: what the generator gives back), before the net
    or the losses fail on it."""
    from fastgan.data import DatasetError

    multiple = multiple or generator_size_multiple(opt.netG)
    h, w = image.shape[-2:]
    if h % multiple or w % multiple:
        raise DatasetError(f"{path}: {w}x{h} after --preprocess {opt.preprocess}; --netG {opt.netG} takes sides "
                           f"that are multiples of {multiple} (the reference fails on it too): use a --preprocess "
                           "that crops, or --load_size/--crop_size multiples of it")


def model_from_options(opt: Options):
    """The model for resolved options; weights initialised from opt.seed, speed levels from
    opt's level options and the device (fastgan.engine.levels)."""
    from fastgan.engine.cyclegan import CycleGAN
    from fastgan.engine.pix2pix import Pix2Pix

    check_generator_input_size(opt)
    device = resolve_device(opt.device)
    levels = resolve_levels(opt, device)
    torch.manual_seed(opt.seed)
    cls = {"cyclegan": CycleGAN, "pix2pix": Pix2Pix}[opt.arch]
    return cls(opt, device, levels)


def build_model(arch: str, **options):
    """Reference defaults, then `arch`'s, then `options` (names as the CLI's, level options
    included: accelerate=, compile=, amp=, channels_last=, adam=, fast=, eager=)."""
    return model_from_options(resolve(arch, options))
