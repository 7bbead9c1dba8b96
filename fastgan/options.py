"""Training options: the reference's names and defaults, in one place.

The CLI (fastgan.train), `fastgan.build_model` and the data pipeline all read
an `Options` object, so a name means the same thing everywhere. Defaults are
layered: the reference's base defaults, then the architecture's own
(pix2pix: batch norm, unet_256, aligned data, no pool, vanilla GAN; cyclegan:
no dropout), then the embedded demo's when no --dataroot is given, then what
the caller set explicitly.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import os
import sys
from dataclasses import dataclass, field
from typing import Any

ARCHS = ("cyclegan", "pix2pix")
# the reference's --model name of each arch (its options table and --suffix {model} say it)
REFERENCE_MODEL = {"cyclegan": "cycle_gan", "pix2pix": "pix2pix"}


# Option overrides for runs without --dataroot, the embedded demo (fastgan.data.demo; resolve's
# demo_defaults).
# The files are already crop-sized (train crops crop_size + 8, test crops crop_size),
# so "crop" preprocessing takes random crops without resampling and the held-out
# crops go through unchanged. cyclegan, chosen by measured runs (held-out error vs
# identity, 2-core CPU): ngf 16 / ndf 16 with the reference's identity loss (0.5) over
# 4,000 iterations reached 0.116 vs 0.131 by iteration 2,400, where ndf 32 without
# identity loss ended at 0.134 vs 0.140 and wandered above the baseline mid-run; a
# step takes ~0.1 s, so the run takes about 7 minutes. unet_128 needs crops of a
# multiple of 128 px. num_threads 0: decoding a demo crop takes ~0.1 ms, so workers
# would only add start-up time and memory.
DEMO_DEFAULTS: dict[str, dict] = {
    "cyclegan": {
        "load_size": 72,
        "crop_size": 64,
        "preprocess": "crop",
        "netG": "resnet_6blocks",
        "ngf": 16,
        "ndf": 16,
        "n_epochs": 5,
        "n_epochs_decay": 5,
        "num_threads": 0,
    },
    "pix2pix": {
        "load_size": 144,
        "crop_size": 128,
        "preprocess": "crop",
        "netG": "unet_128",
        "ngf": 16,
        "ndf": 32,
        "n_epochs": 5,
        "n_epochs_decay": 5,
        "num_threads": 0,
    },
}


@dataclass
class Options:
    # what to train, where
    arch: str = "cyclegan"
    dataroot: str | None = None
    name: str = "experiment_name"
    checkpoints_dir: str = "./checkpoints"
    device: str = "auto"
    seed: int = 0
    max_iters: int | None = None
    # models
    input_nc: int = 3
    output_nc: int = 3
    ngf: int = 64
    ndf: int = 64
    netG: str = "resnet_9blocks"
    netD: str = "basic"
    n_layers_D: int = 3
    norm: str = "instance"
    init_type: str = "normal"
    init_gain: float = 0.02
    no_dropout: bool = False
    padding_type: str = "reflect"
    # data
    dataset_mode: str = "unaligned"
    direction: str = "AtoB"
    serial_batches: bool = False
    num_threads: int = 4
    batch_size: int = 1
    load_size: int = 286
    crop_size: int = 256
    max_dataset_size: float = math.inf
    preprocess: str = "resize_and_crop"
    no_flip: bool = False
    phase: str = "train"
    loader: str = "auto"  # auto | dali | cache | torch (fastgan.data)
    cache_memory_fraction: float = 0.5  # --loader cache/auto: share of free device (CPU: host) memory the set may take
    # checkpoints and logging
    epoch: str = "latest"
    load_iter: int = 0
    print_freq: int = 100
    display_freq: int = 400
    update_html_freq: int = 1000  # web/ keeps a display crossing a multiple of this, and each epoch's first
    no_html: bool = False
    display_winsize: int = 256  # width of the images on web/index.html and fastgan.test's page
    save_latest_freq: int = 5000
    save_epoch_freq: int = 5
    save_by_iter: bool = False
    verbose: bool = False  # print the networks
    continue_train: bool = False
    epoch_count: int = 1
    # optimisation
    n_epochs: int = 100
    n_epochs_decay: int = 100
    lr: float = 0.0002
    beta1: float = 0.5
    gan_mode: str = "lsgan"
    lambda_gp: float = 0.0  # fastgan's: weight of the WGAN-GP gradient penalty (the reference: none)
    pool_size: int = 50
    lr_policy: str = "linear"
    lr_decay_iters: int = 50
    lambda_A: float = 10.0
    lambda_B: float = 10.0
    lambda_identity: float = 0.5
    lambda_L1: float = 100.0
    # fastgan's speed levels (fastgan.engine.levels); None: the device's default
    accelerate: bool | None = None
    compile: str | None = None  # none | nets
    cuda_graphs: bool | None = None
    amp: str | None = None  # none | bf16 | fp16
    channels_last: bool | None = None
    adam: str | None = None  # default | foreach | fused
    merge_passes: bool | None = None
    cudnn_benchmark: bool | None = None
    fast: bool = False
    eager: bool = False
    # a run on the embedded demo (no --dataroot; set by resolve)
    demo: bool = field(default=False)
    # the reference's name: training-time transforms (random crop, flip) whatever --phase names
    # the split; fastgan.test sets it False
    isTrain: bool = True

    def replace(self, **changes: Any) -> "Options":
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def checkpoint_label(opt: Options) -> str:
    """The label of the networks --epoch and --load_iter name ({label}_net_G_A.pth ...): as
    the reference, iter_{load_iter} when load_iter > 0, else the epoch ("latest", "5", ...)."""
    return f"iter_{opt.load_iter}" if opt.load_iter > 0 else str(opt.epoch)


ARCH_DEFAULTS: dict[str, dict[str, Any]] = {
    "cyclegan": {"no_dropout": True},
    "pix2pix": {
        "norm": "batch",
        "netG": "unet_256",
        "dataset_mode": "aligned",
        "pool_size": 0,
        "gan_mode": "vanilla",
    },
}

OPTION_NAMES = frozenset(f.name for f in dataclasses.fields(Options))


def check_option_names(names) -> None:
    unknown = sorted(set(names) - OPTION_NAMES)
    if unknown:
        raise TypeError(
            f"unknown option(s) {', '.join(unknown)}; known options are the reference's names "
            f"(see fastgan.options.Options)"
        )


# each option's annotation (a string: `from __future__ import annotations`) -> the values it takes
_FIELD_TYPES = {f.name: f.type for f in dataclasses.fields(Options)}
_VALUE_TYPES = {"str": str, "int": numbers.Integral, "float": numbers.Real, "bool": bool}


def _is_numpy_bool(value) -> bool:
    """numpy's bool, without importing numpy (a value cannot be one unless it was imported): `import
    fastgan` stays quick, and a Ctrl-C at `python -m fastgan.train`'s start meets its handler."""
    numpy = sys.modules.get("numpy")
    return numpy is not None and isinstance(value, numpy.bool_)


def typed_options(explicit: dict[str, Any]) -> dict[str, Any]:
    """`explicit` with each value as its option's type, or a TypeError naming an option given a
    value of another type (the Python API's callers; the command line parses each option to
    its type). Paths may be os.PathLike, an epoch an int, a switch a numpy bool, a number a
    numpy one."""
    typed = {}
    for name, value in explicit.items():
        kind = _FIELD_TYPES[name]
        base, optional = kind.removesuffix(" | None"), kind.endswith(" | None")
        if base == "str" and isinstance(value, os.PathLike):
            value = os.fspath(value)
        elif name == "epoch" and isinstance(value, numbers.Integral) and not isinstance(value, bool):
            value = str(value)  # --epoch 200 names the networks 200_net_*.pth
        elif base == "bool" and _is_numpy_bool(value):
            value = bool(value)
        if not (value is None and optional) and (
                not isinstance(value, _VALUE_TYPES[base]) or (base != "bool" and isinstance(value, bool))):
            raise TypeError(f"option {name} takes a{'n' if base == 'int' else ''} {base}"
                            f"{' or None' if optional else ''}, got {value!r}")
        if value is not None and base in ("int", "float"):
            value = int(value) if base == "int" else float(value)  # numpy numbers as Python's (train_opt.json)
        typed[name] = value
    return typed


def resolve(arch: str, explicit: dict[str, Any], demo_defaults: dict[str, Any] | None = None) -> Options:
    """Options for `arch`: reference defaults < arch defaults < demo defaults < explicit."""
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; choose one of {', '.join(ARCHS)}")
    check_option_names(explicit)
    explicit = typed_options(explicit)
    values: dict[str, Any] = dict(ARCH_DEFAULTS[arch])
    if explicit.get("dataroot") is None and demo_defaults:
        values.update(demo_defaults)
        values["demo"] = True
    values.update(explicit)
    values["arch"] = arch
    opt = Options(**values)
    check_values(opt)
    return opt


def sizes_vary(preprocess: str) -> bool:
    """Whether the images of a run keep sizes of their own (no crop to crop_size, no resize
    to load_size²): under none and scale_width each image's size follows its file's."""
    return "crop" not in preprocess and "resize" not in preprocess


def square_side(preprocess: str, crop_size: int, load_size: int) -> int | None:
    """The side of a run's square images: --crop_size where the preprocess crops, --load_size
    where it only resizes (resize), None where each image keeps a size of its own (sizes_vary)."""
    if "crop" in preprocess:
        return crop_size
    return load_size if "resize" in preprocess else None


def size_class_note(preprocess: str) -> str:
    """What the fused modules' measured kernels do where sizes vary (fastgan.ops.choices_by_size_class)."""
    return f"--preprocess {preprocess} keeps each image's size: kernels measured once per size class (pixels " \
        "within a power of 2)"


# options that count something or weigh a term: never negative
NON_NEGATIVE = ("max_iters", "num_threads", "n_epochs", "n_epochs_decay", "lambda_gp", "pool_size", "lambda_A",
                "lambda_B", "lambda_identity", "lambda_L1", "update_html_freq", "print_freq", "display_freq",
                "save_latest_freq", "n_layers_D")


# options one arch's model adds (the reference's modify_commandline_options): the other's
# command line refuses them, as the reference's does ("unrecognized arguments")
ARCH_OPTIONS = {"cyclegan": ("lambda_A", "lambda_B", "lambda_identity"), "pix2pix": ("lambda_L1",)}
# the options that shape the networks' layers and sizes (their checkpoints fit only networks built alike)
NET_OPTIONS = ("input_nc", "output_nc", "ngf", "ndf", "netG", "netD", "n_layers_D", "norm", "no_dropout",
               "padding_type")


def check_arch_options(arch: str, typed) -> None:
    """Refuse options typed for the other arch's model, which this one would ignore."""
    for other, names in ARCH_OPTIONS.items():
        for name in names if other != arch else ():
            if name in typed:
                raise ValueError(f"--{name} is a {other} option: --arch {arch} has no use for it")


def check_values(opt: Options) -> None:
    for name in NON_NEGATIVE:
        value = getattr(opt, name)
        if value is not None and value < 0:
            raise ValueError(f"--{name} {value} must not be negative")
    if opt.display_winsize <= 0:
        raise ValueError(f"--display_winsize {opt.display_winsize} must be positive (pixels)")
    if not 0 <= opt.seed < 2 ** 64:  # torch's generators take 64 bits (a negative seed wraps onto a positive one)
        raise ValueError(f"--seed {opt.seed} must be from 0 to 2**64 - 1")
    if opt.batch_size < 1:
        raise ValueError(f"--batch_size {opt.batch_size} must be at least 1")
    for name in ("ngf", "ndf"):
        if getattr(opt, name) < 1:
            raise ValueError(f"--{name} {getattr(opt, name)} must be at least 1 (filters)")
    if opt.init_gain < 0 and (opt.init_type in ("normal", "xavier") or opt.norm in ("batch", "syncbatch")):
        why = f"--init_type {opt.init_type}" if opt.init_type in ("normal", "xavier") else \
            f"--norm {opt.norm} (its weights are drawn around 1 with it)"
        raise ValueError(f"--init_gain {opt.init_gain} must not be negative with {why}: it is a standard deviation")
    # divisors: the reference fails on 0 only once the first epoch has trained
    if opt.save_epoch_freq < 1:
        raise ValueError(f"--save_epoch_freq {opt.save_epoch_freq} must be at least 1 (epochs)")
    if opt.lr_policy == "step" and opt.lr_decay_iters < 1:
        raise ValueError(f"--lr_decay_iters {opt.lr_decay_iters} must be at least 1 (epochs) with --lr_policy step")
    if opt.lr_policy == "cosine" and opt.n_epochs < 1:  # its period, T_max
        raise ValueError(f"--n_epochs {opt.n_epochs} must be at least 1 with --lr_policy cosine (the cosine's "
                         "period, in epochs)")
    if opt.lr < 0:
        raise ValueError(f"--lr {opt.lr} must not be negative")
    if not 0 <= opt.beta1 < 1:
        raise ValueError(f"--beta1 {opt.beta1} must be in [0, 1) (Adam's first-moment decay)")
    if opt.lambda_gp > 0 and opt.arch == "cyclegan" and sizes_vary(opt.preprocess):
        raise ValueError(f"--lambda_gp interpolates real and fake images, which --preprocess {opt.preprocess} "
                         "leaves of different sizes in a CycleGAN (each domain's own, and the pool's); use a "
                         "--preprocess that crops")
