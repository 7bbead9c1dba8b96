"""`build_model(arch, **options)`: a training model from the CLI's option names."""

from __future__ import annotations

import torch

from fastgan.engine.levels import resolve_levels
from fastgan.models import generator_norm_gets_one_value, generator_size_multiple, generator_smallest_side
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


def fixed_side_option(opt: Options) -> str | None:
    """The option that sets a side of every training image: crop_size where the preprocess
    crops, load_size under resize (both sides) and scale_width (every width); None under none."""
    if "crop" in opt.preprocess:
        return "crop_size"
    return "load_size" if opt.preprocess in ("resize", "scale_width") else None


def fixed_square_side(opt: Options) -> int | None:
    """The side of every (square) training image where the preprocess makes them all one
    size: crop_size where it crops, load_size under resize; else None."""
    if "crop" in opt.preprocess:
        return opt.crop_size
    return opt.load_size if opt.preprocess == "resize" else None


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
    smallest = generator_smallest_side(opt.netG, opt.padding_type)
    size = fixed_side_option(opt)
    if size and getattr(opt, size) < smallest:
        raise ValueError(f"--netG {opt.netG} takes sides of {smallest} pixels or more (got --{size} "
                         f"{getattr(opt, size)}): use a larger --{size}")
    square = fixed_square_side(opt)
    if square and generator_norm_gets_one_value(opt.netG, opt.norm, square, square, opt.batch_size):
        raise ValueError(one_value_norm_message(opt, f"--{size} {square}") + f": use a larger --{size}")
    if opt.preprocess in ("resize", "scale_width") and opt.load_size % multiple:
        made = "every width" if opt.preprocess == "scale_width" else "every image's sides"
        raise ValueError(f"--netG {opt.netG} needs sides that are multiples of {multiple}; --preprocess "
                         f"{opt.preprocess} makes {made} --load_size {opt.load_size}: use --load_size "
                         f"{max(multiple, opt.load_size // multiple * multiple)}")


def one_value_norm_message(opt: Options, what: str) -> str:
    per = " per channel of a batch of 1" if opt.norm == "batch" else ""
    return (f"--netG {opt.netG} --padding_type {opt.padding_type} shrinks {what} to 1x1 pixel in its ResNet blocks, "
            f"and --norm {opt.norm} cannot normalize one value{per} (the reference fails on it too)")


def patch_discriminator_sides(netD: str, n_layers_D: int, side: int) -> list[int]:
    """The output sides of a PatchGAN's convs for square inputs of `side`: its 4x4 convs with
    padding 1 halve a side (stride 2) or take one off it (stride 1)."""
    sides = [side // 2]
    for _ in range(1, 3 if netD == "basic" else n_layers_D):
        sides.append(sides[-1] // 2)
    return sides + [sides[-1] - 1, sides[-1] - 2]  # the two stride-1 convs


def patch_discriminator_smallest_side(netD: str, n_layers_D: int) -> int:
    """The smallest input side for which a PatchGAN's last conv gives a pixel or more
    (patch_discriminator_sides' last >= 1): its k halvings must leave 3."""
    if netD == "pixel":
        return 1
    return 3 * 2 ** (3 if netD == "basic" else max(n_layers_D, 1))


def check_discriminator_input_size(opt: Options) -> None:
    """A PatchGAN too deep for the cropped images (a small --crop_size, a large --n_layers_D)
    is refused before anything runs, where the reference fails at its first iteration: a
    conv would get less than its kernel. (Its last conv's input is the smallest side, so an
    output of a pixel or more also spares every norm layer a single pixel.)"""
    size = fixed_side_option(opt)
    if opt.netD == "pixel" or size is None:
        return
    sides = patch_discriminator_sides(opt.netD, opt.n_layers_D, getattr(opt, size))
    if sides[-1] >= 1:
        return
    depth = "--netD basic (3 layers)" if opt.netD == "basic" else f"--netD n_layers --n_layers_D {opt.n_layers_D}"
    raise ValueError(f"{depth} is too deep for --{size} {getattr(opt, size)}: its 4x4 convs shrink the "
                     f"{'crop' if size == 'crop_size' else 'width' if opt.preprocess == 'scale_width' else 'image'} to "
                     f"{' -> '.join(str(s) for s in sides if s >= 1)}, too small for the next; use a larger "
                     f"--{size} or a shallower discriminator")


def check_image_fits(opt: Options, image: torch.Tensor, path: str, multiple: int | None = None,
                     discriminator: bool = True, eval_mode: bool = False) -> None:
    """Under --preprocess none or scale_width each image keeps a size of its own (heights, and
    for none the widths, follow the files): a DatasetError names `path` when a side of `image`
    (a batch, or one image) is not a multiple of `multiple` (default: what the generator gives
    back), or is too small for the generator (its norm layers included, in eval mode with
    `eval_mode`) or, when it trains too, the discriminator, before the nets or the losses fail
    on it."""
    from fastgan.data import DatasetError

    multiple = multiple or generator_size_multiple(opt.netG)
    h, w = image.shape[-2:]
    where = f"{path}: {w}x{h} after --preprocess {opt.preprocess}"
    if h % multiple or w % multiple:
        raise DatasetError(f"{where}; --netG {opt.netG} takes sides that are multiples of {multiple} (the "
                           "reference fails on it too): use a --preprocess that crops, or --load_size/--crop_size "
                           "multiples of it")
    needs = [(generator_smallest_side(opt.netG, opt.padding_type), f"--netG {opt.netG}")]
    if discriminator:
        needs.append((patch_discriminator_smallest_side(opt.netD, opt.n_layers_D), f"--netD {opt.netD}"))
    smallest, net = max(needs)
    fix = "larger images or a --preprocess that resizes them" if opt.preprocess == "none" else \
        "a larger --load_size or --crop_size"
    if min(h, w) < smallest:
        raise DatasetError(f"{where}; {net} takes sides of {smallest} pixels or more (the reference fails on it "
                           f"too): use {fix}")
    batch = image.shape[0] if image.dim() == 4 else 1
    if generator_norm_gets_one_value(opt.netG, opt.norm, h, w, batch, eval_mode):
        raise DatasetError(f"{where}; {one_value_norm_message(opt, 'it')}: use {fix}")


def model_from_options(opt: Options):
    """The model for resolved options; weights initialised from opt.seed, speed levels from
    opt's level options and the device (fastgan.engine.levels)."""
    from fastgan.engine.cyclegan import CycleGAN
    from fastgan.engine.pix2pix import Pix2Pix

    check_generator_input_size(opt)
    check_discriminator_input_size(opt)
    device = resolve_device(opt.device)
    levels = resolve_levels(opt, device)
    torch.manual_seed(opt.seed)
    cls = {"cyclegan": CycleGAN, "pix2pix": Pix2Pix}[opt.arch]
    return cls(opt, device, levels)


def build_model(arch: str, **options):
    """Reference defaults, then `arch`'s, then `options` (names as the CLI's, level options
    included: accelerate=, compile=, amp=, channels_last=, adam=, fast=, eager=)."""
    return model_from_options(resolve(arch, options))
