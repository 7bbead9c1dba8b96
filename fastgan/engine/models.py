"""`build_model(arch, **options)`: a training model from the CLI's option names."""

from __future__ import annotations

import torch

from fastgan.engine.levels import resolve_levels
from fastgan.options import Options, resolve


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: no CUDA device is available here; use --device cpu")
    return device


def model_from_options(opt: Options):
    """The model for resolved options; weights initialised from opt.seed, speed levels from
    opt's level options and the device (fastgan.engine.levels)."""
    from fastgan.engine.cyclegan import CycleGAN
    from fastgan.engine.pix2pix import Pix2Pix

    device = resolve_device(opt.device)
    levels = resolve_levels(opt, device)
    torch.manual_seed(opt.seed)
    cls = {"cyclegan": CycleGAN, "pix2pix": Pix2Pix}[opt.arch]
    return cls(opt, device, levels)


def build_model(arch: str, **options):
    """Reference defaults, then `arch`'s, then `options` (names as the CLI's, level options
    included: accelerate=, compile=, amp=, channels_last=, adam=, fast=, eager=)."""
    return model_from_options(resolve(arch, options))
