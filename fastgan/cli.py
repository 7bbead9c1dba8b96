"""Command-line plumbing shared by `fastgan.train` and `fastgan.test`.

Options are parsed with argparse.SUPPRESS defaults so that only what the user
typed is collected; `fastgan.options.resolve` then layers the defaults.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import warnings

from fastgan.option_help import DEFAULT_TEXT, HELP
from fastgan.options import REFERENCE_MODEL, Options

# flags that take no value, as in the reference
FLAGS = {"no_dropout", "serial_batches", "no_flip", "save_by_iter", "continue_train", "fast", "eager", "verbose",
         "no_html"}
# level switches: bare means on, and `--name false` turns off what a device's default turns on
SWITCHES = {"accelerate", "cuda_graphs", "channels_last", "merge_passes", "cudnn_benchmark"}
# options whose default is None: their value type
NONE_DEFAULT_TYPES = {"dataroot": str, "max_iters": int, "compile": str, "amp": str, "adam": str}
# options that may be given bare: the value they then take
BARE_VALUES = {"compile": "nets"}
HIDDEN = {"demo", "isTrain"}

# the values each option takes, written out here so that parsing a command line imports no torch
# or data code (seconds); tests/cli check each against the list its module keeps
CHOICES = {
    "arch": ("cyclegan", "pix2pix"),
    "netG": ("resnet_9blocks", "resnet_6blocks", "unet_256", "unet_128"),
    "netD": ("basic", "n_layers", "pixel"),
    "norm": ("instance", "instance_affine", "batch", "syncbatch", "none"),
    "init_type": ("normal", "xavier", "kaiming", "orthogonal"),
    "padding_type": ("reflect", "replicate", "zero"),
    "dataset_mode": ("unaligned", "aligned", "single"),
    "direction": ("AtoB", "BtoA"),
    "preprocess": ("resize_and_crop", "crop", "resize", "scale_width", "scale_width_and_crop", "none"),
    "gan_mode": ("lsgan", "vanilla", "wgangp", "hinge"),
    "lr_policy": ("linear", "step", "plateau", "cosine"),
    "loader": ("auto", "dali", "cache", "torch"),
    "compile": ("none", "nets"),
    "amp": ("none", "bf16", "fp16"),
    "adam": ("default", "foreach", "fused"),
}


def add_option_arguments(parser: argparse.ArgumentParser, names=None, defaults: dict | None = None,
                         texts: dict | None = None) -> None:
    """An argument per option (of `names`, default all); `defaults`: what --help says a default
    is where the command's differs from the option's; `texts`: the command's own help texts."""
    for field in dataclasses.fields(Options):
        if field.name in HIDDEN or (names is not None and field.name not in names):
            continue
        flag, text = f"--{field.name}", {**HELP, **(texts or {})}[field.name]
        if field.name in FLAGS:
            parser.add_argument(flag, action="store_true", default=argparse.SUPPRESS, help=text)
            continue
        if field.name in SWITCHES:
            parser.add_argument(flag, type=switch, nargs="?", const=True, default=argparse.SUPPRESS,
                                metavar="true|false", help=f"{text} (default: the device's)")
            continue
        kind = NONE_DEFAULT_TYPES.get(field.name) or type(field.default)
        bare = {"nargs": "?", "const": BARE_VALUES[field.name]} if field.name in BARE_VALUES else {}
        default = {**DEFAULT_TEXT, **(defaults or {})}.get(field.name, field.default)
        choices = CHOICES.get(field.name)
        parser.add_argument(flag, type=kind, default=argparse.SUPPRESS,
                            choices=choices and TakenChoices(field.name, choices),
                            help=f"{text} (default: {default})", **bare)


# the reference's options for its visdom and wandb displays, which fastgan replaces with
# samples/*.png and loss_curve.png: accepted (its command lines run unchanged), and unused
DISPLAY_OPTIONS = {"display_id": int, "display_ncols": int, "display_server": str, "display_env": str,
                   "display_port": int, "use_wandb": None, "wandb_project_name": str}
# what the reference's --suffix reads of its options fastgan drops: their defaults there
SUFFIX_DEFAULTS = {"gpu_ids": "0", "display_id": 1, "display_ncols": 4, "display_server": "http://localhost",
                   "display_env": "main", "display_port": 8097, "use_wandb": False,
                   "wandb_project_name": "CycleGAN-and-pix2pix"}
MODEL_NAMES = {model: arch for arch, model in REFERENCE_MODEL.items()}
# the reference's models and dataset modes fastgan has not: parsed, then refused in words (an
# argparse "invalid choice" did not say they are the reference's and left out)
NOT_IN_FASTGAN = {
    ("model", "colorization"): "the reference's colorization model (pix2pix from L to ab in Lab colour)",
    ("dataset_mode", "colorization"): "the reference's colorization dataset (L and ab in Lab colour)",
    ("model", "template"): "the reference's template for a model of one's own",
}


class TakenChoices(tuple):
    """An option's choices as argparse lists them, which also takes the option's values in
    NOT_IN_FASTGAN (from_reference_arguments refuses those, saying why)."""

    def __new__(cls, option: str, choices):
        taken = super().__new__(cls, choices)
        taken.refused = tuple(value for name, value in NOT_IN_FASTGAN if name == option)
        return taken

    def __contains__(self, value) -> bool:
        return tuple.__contains__(self, value) or value in self.refused


def add_reference_arguments(parser: argparse.ArgumentParser, test: bool = False) -> None:
    """The reference's options that fastgan spells otherwise, or has no use for."""
    models = (*MODEL_NAMES, "test") if test else tuple(MODEL_NAMES)
    parser.add_argument("--model", choices=TakenChoices("model", models), default=argparse.SUPPRESS,
                        help="the reference's name for --arch" + (" (test: one generator only)" if test else ""))
    parser.add_argument("--gpu_ids", default=argparse.SUPPRESS,
                        help="the reference's device choice: -1 is --device cpu, N is --device cuda:N "
                             + ("(a test runs on one)" if test else "(several GPUs: torchrun, see README)"))
    parser.add_argument("--suffix", default=argparse.SUPPRESS,
                        help="appended to --name as _SUFFIX, formatted with the options: {netG}_size{load_size}")
    for name, kind in DISPLAY_OPTIONS.items():
        unused = "the reference's visdom/wandb option: accepted, unused" + (
            "" if test else " (fastgan writes samples/ and loss_curve.png)")
        if kind is None:
            parser.add_argument(f"--{name}", action="store_true", default=argparse.SUPPRESS, help=unused)
        else:
            parser.add_argument(f"--{name}", type=kind, default=argparse.SUPPRESS, help=unused)


@dataclasses.dataclass(frozen=True)
class Suffix:
    """The reference's --suffix ('' when not typed), and the values of the options fastgan drops
    (as typed, else the reference's defaults), which a suffix may name."""

    text: str
    dropped: dict

    def table_entries(self, training: bool) -> dict[str, tuple]:
        """(value, default) of --suffix and the display options fastgan drops, as the reference's
        options table lists them: its visdom options are training options, wandb's both's."""
        names = [name for name in DISPLAY_OPTIONS if training or not name.startswith("display_")]
        return {"suffix": (self.text, ""), **{name: (self.dropped[name], SUFFIX_DEFAULTS[name]) for name in names}}


def from_reference_arguments(args: dict, test: bool = False) -> tuple[Suffix, list[str]]:
    """Turns the reference's spellings in parsed `args` into fastgan's, in place (--model into
    --arch, --gpu_ids into --device) and drops the display options; `test`: for fastgan.test.
    Returns the --suffix (applied to the resolved options by `with_suffix`) and notes to print."""
    notes = []
    for (name, value), what in NOT_IN_FASTGAN.items():
        if args.get(name) == value:
            raise ValueError(f"--{name} {value}: {what} is not in fastgan, which trains cycle_gan and pix2pix "
                             f"(and tests one generator with --model test)")
    dropped = {**SUFFIX_DEFAULTS, **{k: args[k] for k in SUFFIX_DEFAULTS if k in args}}
    model = args.pop("model", None)
    if model in MODEL_NAMES:
        if args.get("arch", MODEL_NAMES[model]) != MODEL_NAMES[model]:
            raise ValueError(f"--model {model} and --arch {args['arch']} disagree; give one of them")
        args["arch"] = MODEL_NAMES[model]
    if "gpu_ids" in args:
        gpu_ids = args.pop("gpu_ids")
        device = device_of_gpu_ids(gpu_ids, test)
        typed = args.get("device", device)
        if typed != device and {typed, device} != {"cuda", "cuda:0"}:
            raise ValueError(f"--gpu_ids {gpu_ids} (--device {device}) and --device {typed} disagree; give one of them")
        args["device"] = device
    unused = [name for name in DISPLAY_OPTIONS if args.pop(name, None) is not None]
    if unused:
        notes.append(f"unused: --{', --'.join(unused)} (the reference's visdom/wandb display"
                     + (")" if test else "; fastgan writes samples/ and loss_curve.png)"))
    return Suffix(args.pop("suffix", None) or "", dropped), notes


def device_of_gpu_ids(text: str, test: bool = False) -> str:
    ids = [part.strip() for part in text.split(",") if part.strip()]
    if not ids or any(not (part.isdigit() or part == "-1") for part in ids):
        raise ValueError(f"--gpu_ids {text!r}: expected -1 or GPU numbers such as 0 or 0,1")
    if ids == ["-1"]:
        return "cpu"
    if len(ids) > 1 and test:
        raise ValueError(f"--gpu_ids {text}: fastgan.test runs on one device; pick one, such as --gpu_ids {ids[0]}")
    if len(ids) > 1:
        raise ValueError(f"--gpu_ids {text}: fastgan trains on several GPUs with one process per GPU: "
                         f"torchrun --nproc_per_node {len(ids)} -m fastgan.train ... (CUDA_VISIBLE_DEVICES={text} "
                         "picks them)")
    return f"cuda:{ids[0]}"


def with_suffix(opt: Options, suffix: Suffix, model: str | None = None) -> Options:
    """The reference's --suffix: name + '_' + suffix.format(**options), {model} being the
    reference's model name (cycle_gan, pix2pix; test in fastgan.test's --model test), and the
    options fastgan drops ({gpu_ids}, the display's) as typed, else their reference defaults."""
    if not suffix.text:
        return opt
    fields = {**suffix.dropped, **opt.as_dict(), "model": model or REFERENCE_MODEL[opt.arch]}
    try:
        formatted = suffix.text.format(**fields)
    except KeyError as e:
        raise ValueError(f"--suffix {suffix.text!r}: {{{e.args[0]}}} is not an option name") from None
    except (IndexError, ValueError) as e:
        raise ValueError(f"--suffix {suffix.text!r} is not a format such as {{netG}}_size{{load_size}}: {e}") from None
    return opt.replace(name=f"{opt.name}_{formatted}")


def switch(text: str) -> bool:
    value = {"true": True, "1": True, "yes": True, "on": True, "false": False, "0": False, "no": False,
             "off": False}.get(text.lower())
    if value is None:
        raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
    return value


def import_ops_or_fail() -> None:
    """Import fastgan.ops, which reads FASTGAN_REFLECT_CONV2D and FASTGAN_CONV: a bad value is one
    line (fail), not an import's traceback. Call before anything that imports it."""
    try:
        import fastgan.ops  # noqa: F401
    except ValueError as e:
        fail(str(e))


def check_backend_variable(device) -> None:
    """FASTGAN_BACKEND naming a back end that cannot run on `device` (unknown, not built, for
    another device): a ValueError now, not at the first op of the first iteration."""
    from fastgan import ops

    name = ops.get_default_backend()
    usable = ops.available_backends(device)
    if name != "auto" and name not in usable:
        try:
            ops.check_backend(name)
            why = "it runs on other devices"
        except (ValueError, ops.BackendUnavailableError) as e:  # unknown, or not built: in use_backend's words
            why = str(e)
        raise ValueError(f"FASTGAN_BACKEND={name!r} cannot run on {device} ({why}); back ends that can: "
                         f"{', '.join(usable)} (or auto, the default)")


def warnings_in_one_line() -> None:
    """A command line's warnings as `warning: message` lines, without the Python source
    line that raised them (a user's 16-bit image is no bug of theirs to trace)."""
    warnings.formatwarning = lambda message, category, filename, lineno, line=None: f"warning: {message}\n"


def fail(message: str) -> None:
    """One clear line on stderr and exit status 2: for bad input, not for bugs."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)
