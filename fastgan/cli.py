"""Command-line plumbing shared by `fastgan.train` and `fastgan.test`.

Options are parsed with argparse.SUPPRESS defaults so that only what the user
typed is collected; `fastgan.options.resolve` then layers the defaults.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

from fastgan.options import Options

# flags that take no value, as in the reference
FLAGS = {"no_dropout", "serial_batches", "no_flip", "save_by_iter", "continue_train", "fast", "eager"}
# level switches: bare means on, and `--name false` turns off what a device's default turns on
SWITCHES = {"accelerate", "cuda_graphs", "channels_last", "merge_passes", "cudnn_benchmark"}
# options whose default is None: their value type
NONE_DEFAULT_TYPES = {"dataroot": str, "max_iters": int, "compile": str, "amp": str, "adam": str}
# options that may be given bare: the value they then take
BARE_VALUES = {"compile": "nets"}
HIDDEN = {"demo", "isTrain"}

CHOICES = {
    "arch": ("cyclegan", "pix2pix"),
    "netG": ("resnet_9blocks", "resnet_6blocks", "unet_256", "unet_128"),
    "netD": ("basic", "n_layers", "pixel"),
    "norm": ("instance", "instance_affine", "batch", "syncbatch", "none"),
    "init_type": ("normal", "xavier", "kaiming", "orthogonal"),
    "padding_type": ("reflect", "replicate", "zero"),
    "dataset_mode": ("unaligned", "aligned", "single"),
    "direction": ("AtoB", "BtoA"),
    "preprocess": ("resize_and_crop", "crop", "scale_width", "scale_width_and_crop", "none"),
    "gan_mode": ("lsgan", "vanilla", "wgangp", "hinge"),
    "lr_policy": ("linear", "step", "plateau", "cosine"),
    "loader": ("auto", "dali", "cache", "torch"),
    "compile": ("none", "nets"),
    "amp": ("none", "bf16", "fp16"),
    "adam": ("default", "foreach", "fused"),
}


def add_option_arguments(parser: argparse.ArgumentParser, names=None) -> None:
    for field in dataclasses.fields(Options):
        if field.name in HIDDEN or (names is not None and field.name not in names):
            continue
        flag = f"--{field.name}"
        if field.name in FLAGS:
            parser.add_argument(flag, action="store_true", default=argparse.SUPPRESS)
            continue
        if field.name in SWITCHES:
            parser.add_argument(flag, type=switch, nargs="?", const=True, default=argparse.SUPPRESS,
                                metavar="true|false", help="(default: the device's)")
            continue
        kind = NONE_DEFAULT_TYPES.get(field.name) or type(field.default)
        bare = {"nargs": "?", "const": BARE_VALUES[field.name]} if field.name in BARE_VALUES else {}
        parser.add_argument(flag, type=kind, default=argparse.SUPPRESS, choices=CHOICES.get(field.name),
                            help=f"(default: {field.default})", **bare)


def switch(text: str) -> bool:
    value = {"true": True, "1": True, "yes": True, "on": True, "false": False, "0": False, "no": False,
             "off": False}.get(text.lower())
    if value is None:
        raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
    return value


def fail(message: str) -> None:
    """One clear line on stderr and exit status 2: for bad input, not for bugs."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)
