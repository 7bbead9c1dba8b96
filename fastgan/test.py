"""`python -m fastgan.test`: translate images with trained generators, as the reference's test.

    python -m fastgan.test --name horse2zebra --dataroot ./datasets/horse2zebra        # both ways
    python -m fastgan.test --name horse2zebra --dataroot ./datasets/horse2zebra/testA  # G_A only
    python -m fastgan.test --name demo_cyclegan                # the demo's test split
    python -m fastgan.test --checkpoint latest_net_G.pth --dataroot photos/ --netG resnet_9blocks

What runs follows the data, as the reference's test models (input_data):
- {phase}A/ and {phase}B/ (a CycleGAN dataset): its cycle_gan test, G_A and G_B both ways,
  writing *_real_A, *_fake_B, *_rec_A, *_real_B, *_fake_A, *_rec_B.png;
- aligned pairs (pix2pix's): G on A, writing *_real_A, *_fake_B, *_real_B.png (with
  --dataset_mode unaligned, typed or the run's, {phase}A/ beside {phase}B/'s unpaired images,
  as the reference's);
- a folder of images, --model test or --checkpoint: one generator, its --model test, writing
  *_real.png and *_fake.png.
Generators: {checkpoints_dir}/{name}/{epoch}_net_G_A.pth (iter_{load_iter}_net_G_A.pth with
--load_iter; G_B with --direction BtoA, G for pix2pix, and for --model test where the run
has a {epoch}_net_G.pth) or any reference checkpoint given with --checkpoint. Model
options come from the experiment's train_opt.json when it exists; options typed here
override them (a typed --direction too: real_A is then the other
side's image, as in the reference's test). One generator on a folder reads the side it
takes with its input's channels (G_B: the B side, output_nc). As the reference's test:
batch 1, serial order, no flip, load_size defaults to crop_size. Writes
{results_dir}/{name}/{phase}_{epoch}/images/ and an index.html of each item's images in a row
({phase}_{epoch}_iter{load_iter} with --load_iter, as the reference; {phase}_{file's label}
with --checkpoint).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys

import torch
from PIL import Image
from tqdm import tqdm

from fastgan.cli import (add_option_arguments, add_reference_arguments, check_backend_variable, fail,
                         from_reference_arguments, import_ops_or_fail, warnings_in_one_line, with_suffix)
from fastgan.errors import first_line, folder_problem, os_error_line
from fastgan.image_pages import tensor2im, write_image_page
from fastgan.option_help import HELP
from fastgan.options import checkpoint_label, resolve, size_class_note, sizes_vary

# what a test run takes over from the training run's train_opt.json
MODEL_OPTIONS = ("arch", "input_nc", "output_nc", "ngf", "netG", "norm", "no_dropout", "padding_type",
                 "crop_size", "preprocess", "direction", "seed")
# what each translated item writes, {stem}_{name}.png, as the reference's test models name them
VISUALS = {
    "single": ("real", "fake"),  # --model test: one generator on a folder of images
    "paired": ("real_A", "fake_B", "real_B"),  # pix2pix on aligned pairs
    "cycle": ("real_A", "fake_B", "rec_A", "real_B", "fake_A", "rec_B"),  # cycle_gan on {phase}A, {phase}B
}
# what the options say in a test, where the training's words would mislead
TEST_HELP = {
    "arch": "the run's architecture: cyclegan (unpaired) or pix2pix (paired); the reference's --model",
    "name": "the run to test: its networks are read from checkpoints_dir/name",
    "dataroot": "what to translate: a dataset (testA/ and testB/, or test/ of A|B pairs) or a folder of images",
    "seed": "seeds the dropout a generator keeps without --eval, so a test translates alike every time (the "
            "reference's draws it anew each run; default: the run's seed)",
}
# the test's own options (not the model's or the data's) and their defaults
TOOL_DEFAULTS = {"checkpoint": None, "results_dir": "./results/", "phase": "test", "num_test": 50,
                 "aspect_ratio": 1.0, "eval": False, "eager": False, "model_suffix": None}
# the reference's base options that a test run takes and has no use for (it translates with G
# alone, batch 1, serial order, no flip): accepted, so its test command lines run unchanged
ACCEPTED_UNUSED = ("ndf", "netD", "n_layers_D", "init_type", "init_gain", "serial_batches", "num_threads",
                   "batch_size", "no_flip")
# the options a test takes from fastgan's own (the test's, TOOL_DEFAULTS, and the reference's
# spellings come besides)
OPTION_NAMES = {"arch", "dataroot", "name", "checkpoints_dir", "device", "input_nc", "output_nc", "ngf", "netG",
                "norm", "no_dropout", "padding_type", "direction", "dataset_mode", "load_size", "crop_size",
                "preprocess", "epoch", "load_iter", "max_dataset_size", "verbose", "display_winsize", "seed",
                *ACCEPTED_UNUSED}
# what the reference's test.py sets after its option table is printed (the table shows them as typed)
FORCED_AFTER_TABLE = ("batch_size", "serial_batches", "no_flip", "num_threads")


def parse(argv=None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m fastgan.test", description=__doc__.split("\n\n")[0],
                                     usage="%(prog)s --name NAME [--dataroot DIR] [options] (--help lists them)")
    add_option_arguments(
        parser, names=OPTION_NAMES,
        defaults={"load_size": "--crop_size", "dataset_mode": "the arch's; single with --model test",
                  "dataroot": "the run's data"},
        texts={**TEST_HELP, **{name: f"accepted, unused by a test: {HELP[name]}" for name in ACCEPTED_UNUSED}})
    add_reference_arguments(parser, test=True)
    parser.add_argument("--model_suffix", help="with --model test: the generator {epoch}_net_G{SUFFIX}.pth, as the "
                        "reference's (_A: G_A, _B: G_B; default: the one --direction asks for)")
    parser.add_argument("--checkpoint", help="a generator .pth file (fastgan's or the reference's)")
    parser.add_argument("--results_dir", help="where NAME/ goes (default: %(default)s)")
    parser.add_argument("--phase", help="the split to translate (default: %(default)s)")
    parser.add_argument("--num_test", type=int, help="translate at most this many images (default: %(default)s)")
    parser.add_argument("--aspect_ratio", type=float,
                        help="resize saved images as the reference's save_image does (default: %(default)s, none)")
    parser.add_argument("--eval", action="store_true", help="run the generator in eval mode")
    parser.add_argument("--eager", action="store_true",
                        help="the reference's plain modules (on a CPU the generators otherwise run through "
                             "fastgan.accelerate, ResNet ones in channels_last: equal to float32 rounding)")
    parser.set_defaults(**TOOL_DEFAULTS)
    return vars(parser.parse_args(argv))


def saved_train_options(checkpoints_dir: str, name: str) -> dict:
    path = os.path.join(checkpoints_dir, name, "train_opt.json")
    if not os.path.exists(path):
        return {}
    with open(path, encoding="utf-8") as f:
        try:
            saved = json.load(f)
        except ValueError as e:
            saved = e
    if not isinstance(saved, dict):
        what = first_line(saved) if isinstance(saved, Exception) else f"a {type(saved).__name__}"
        raise ValueError(f"{path} holds no options ({what}): "
                         "remove it and type the run's model options (--netG, --ngf, --norm ...), as for a "
                         "reference checkpoint")
    return saved


def test_options(args: dict):
    """Resolved options: defaults < the training run's saved options < what was typed.

    Returns (options, tool settings, the training run's data: (dataroot, dataset_mode) or None).
    tool["trained_direction"] is the run's --direction (what its G_A takes), which a typed one
    may reverse.
    """
    tool = {k: args.pop(k) for k in TOOL_DEFAULTS}
    if tool["aspect_ratio"] <= 0:
        raise ValueError(f"--aspect_ratio {tool['aspect_ratio']} must be positive")
    if tool["num_test"] < 0:
        raise ValueError(f"--num_test {tool['num_test']} must not be negative")
    model = args.get("model")
    if model is None and tool["model_suffix"] is not None:
        model = args["model"] = "test"  # the reference's test default model, the one --model_suffix is of
    tool["model"] = model  # the reference's --model, when typed
    tool["typed_forced"] = {k: args[k] for k in FORCED_AFTER_TABLE if k in args}
    tool["model_test"] = model == "test"
    # typed channel counts describe the generator --model test loads (the reference builds it
    # with input_nc, output_nc whatever the suffix); the run's own are those of its G_A
    tool["typed_nc"] = {k: args[k] for k in ("input_nc", "output_nc") if k in args}
    tool["typed_single"] = args.get("dataset_mode") == "single"
    tool["one_generator"] = tool["model_test"] or tool["checkpoint"] is not None
    if tool["model_suffix"] is not None and model != "test":
        raise ValueError("--model_suffix names the generator of --model test; add --model test")
    suffix, notes = from_reference_arguments(args, test=True)
    tool["reference_entries"] = suffix.table_entries(training=False)
    for note in notes:
        print(note)
    # the experiment's folder as the reference names it (--suffix formatted with the typed
    # options over the test's defaults), and then what its training run saved
    typed = resolve(args.get("arch", "cyclegan"), dict(args))
    typed = with_suffix(as_a_test(typed, args, tool["phase"]), suffix, model)
    args["name"] = typed.name
    saved = saved_train_options(typed.checkpoints_dir, typed.name)
    merged = {**{k: saved[k] for k in MODEL_OPTIONS if k in saved}, **args}
    # no train_opt.json (a reference checkpoint) and --no_dropout not typed: a generator tested
    # alone (translate(): kind "single", which --model test and --checkpoint always are for a
    # cyclegan; pix2pix's default has dropout) is built as the reference's test model (its
    # default --model) builds it, with dropout (cycle_gan's default is not its)
    tool["reference_dropout"] = "no_dropout" not in merged
    if tool["model_test"] and "dataset_mode" not in args:
        merged["dataset_mode"] = "single"  # the reference's test model reads a folder of images
    arch = merged.pop("arch", "cyclegan")
    opt = as_a_test(resolve(arch, merged), args, tool["phase"])
    note_run_options(arch, saved, args)
    tool["trained_direction"] = saved.get("direction", opt.direction)
    tool["run_nc"] = (saved.get("input_nc", 3), saved.get("output_nc", 3))  # its G_A's (the reference's defaults)
    if "direction" in args and args["direction"] != tool["trained_direction"]:
        print(f"note: --direction {args['direction']} is not the run's ({tool['trained_direction']}, "
              "train_opt.json): real_A is the other side's image")
    training = None if saved.get("demo") or not saved.get("dataroot") else \
        (saved["dataroot"], saved.get("dataset_mode", "aligned" if arch == "pix2pix" else "unaligned"))
    return opt, tool, training


def note_run_options(arch: str, saved: dict, typed: dict) -> None:
    """Says which image sizes and direction the test takes from the run's train_opt.json where
    they differ from the reference's test defaults (its test reads the command line alone)."""
    default = resolve(arch, {})
    taken = {k: saved[k] for k in ("preprocess", "crop_size", "direction") if k in saved and k not in typed
             and saved[k] != getattr(default, k)}
    if taken:
        print(f"note: {' '.join(f'--{k} {v}' for k, v in taken.items())} from the run's train_opt.json (the "
              f"reference's test would take {' '.join(f'--{k} {getattr(default, k)}' for k in taken)} unless typed)")


def as_a_test(opt, typed: dict, phase: str):
    """The reference's test options: batch 1, serial order, no flip, the phase, not
    training; load_size the crop size in force unless typed (no crop: the reference's is
    its default crop size, 256, whatever --crop_size says; README, "fastgan.test")."""
    return opt.replace(load_size=typed.get("load_size", opt.crop_size), batch_size=1, serial_batches=True,
                       no_flip=True, num_threads=0, phase=phase, isTrain=False)


def test_table_entries(opt, tool: dict, device, dataset_mode: str, net: str | None) -> dict[str, tuple]:
    """(value, default) of the test table's options beyond fastgan's: the reference's test
    table shows its TestOptions' defaults (phase test, --model test, load_size the default
    crop size; under --model test, that model's: the base options' norm and netG, single
    images, dropout, --model_suffix ''), and is printed before its test.py forces batch 1,
    serial order, no flip, no workers; with --suffix and wandb's options, which fastgan
    drops. `dataset_mode`: how the images are read (a run's unaligned data read as single).
    `net`: the one generator a test of single images loads (its --model test, typed or not: the
    table says so, and names the generator by its --model_suffix), else None."""
    from fastgan.engine.logs import reference_table_entries

    arch_defaults = resolve(opt.arch, {})
    one_generator = net is not None
    entries = {**reference_table_entries(opt.arch, device, "test" if one_generator else None, default="test"),
               **tool["reference_entries"],
               **{k: (tool[k], default) for k, default in TOOL_DEFAULTS.items() if k != "model_suffix"},
               "load_size": (opt.load_size, arch_defaults.crop_size),
               **{k: (tool["typed_forced"].get(k, getattr(arch_defaults, k)), getattr(arch_defaults, k))
                  for k in FORCED_AFTER_TABLE},
               "dataset_mode": (dataset_mode, "single" if one_generator else arch_defaults.dataset_mode)}
    if one_generator:  # no arch's defaults: cyclegan's are the base options' but for its no_dropout
        base = resolve("cyclegan", {})
        entries.update({k: (getattr(opt, k), getattr(base, k)) for k in ("norm", "netG")},
                       no_dropout=(opt.no_dropout, False), model_suffix=(net[1:], ""))  # G_A: _A
    return entries


def translating_net(opt, tool: dict) -> str:
    """The one generator of a single-image test: pix2pix's G; --model_suffix's; under --model
    test the experiment's {label}_net_G.pth where it has one (what the reference's test model
    loads: G + the empty suffix); else G_A where --direction is the run's (G_A takes its A
    side), G_B where it reverses it."""
    if opt.arch == "pix2pix":
        if tool["model_suffix"]:  # (the reference would look for G{suffix}, which a pix2pix run lacks)
            raise ValueError(f"--model_suffix {tool['model_suffix']}: a pix2pix run has one generator, "
                             f"{checkpoint_label(opt)}_net_G.pth; leave --model_suffix out")
        return "G"
    if tool["model_suffix"] is not None:
        return f"G{tool['model_suffix']}"
    if tool["model_test"] and not tool["checkpoint"] and os.path.exists(
            os.path.join(opt.checkpoints_dir, opt.name, f"{checkpoint_label(opt)}_net_G.pth")):
        return "G"
    return "G_A" if opt.direction == tool["trained_direction"] else "G_B"


def generator_channels(opt, net: str, tool: dict) -> tuple[int, int]:
    """(input, output) channels of generator `net`: G_A's (and G's) input_nc, output_nc, G_B's
    swapped. Under --model test a typed --input_nc or --output_nc is the loaded generator's own
    (the reference builds define_G(input_nc, output_nc) whatever the suffix), and one not typed
    is the run's for that generator."""
    a_in, a_out = tool["run_nc"] if tool["model_test"] else (opt.input_nc, opt.output_nc)
    own = (a_out, a_in) if net == "G_B" else (a_in, a_out)
    if tool["model_test"]:
        typed = tool["typed_nc"]
        own = (typed.get("input_nc", own[0]), typed.get("output_nc", own[1]))
    return own


def generator_file(opt, net: str, tool: dict, alone: bool) -> str:
    """The checkpoint of `net`: --checkpoint, else {label}_net_{net}.pth of the experiment (or,
    for a generator tested `alone` and not named by --model_suffix, a published pretrained
    generator's {label}_net_G.pth)."""
    if tool["checkpoint"]:
        if not os.path.exists(tool["checkpoint"]):
            raise FileNotFoundError(f"--checkpoint {tool['checkpoint']}: no such file")
        return tool["checkpoint"]
    folder, label = os.path.join(opt.checkpoints_dir, opt.name), checkpoint_label(opt)
    path = os.path.join(folder, f"{label}_net_{net}.pth")
    plain = os.path.join(folder, f"{label}_net_G.pth")  # published pretrained generators
    if not os.path.exists(path) and os.path.exists(plain):
        if tool["model_suffix"] is not None:  # the generator the user named, as the reference's test model
            raise FileNotFoundError(f"no checkpoint {path} (--model_suffix {tool['model_suffix']}); {folder} "
                                    f"holds one generator, {os.path.basename(plain)}: leave --model_suffix out "
                                    "to test it")
        if alone:
            return plain
        # one generator cannot stand for both directions of the cycle test
        raise FileNotFoundError(f"no checkpoint {path}; {folder} holds one generator, {os.path.basename(plain)} "
                                "(a published pretrained model): test it alone with --model test")
    if not os.path.exists(path):
        saved = sorted({f.split("_net_")[0] for f in os.listdir(folder) if "_net_" in f and f.endswith(".pth")}) \
            if os.path.isdir(folder) else []
        if label in saved:
            others = sorted(f for f in os.listdir(folder) if f.startswith(f"{label}_net_") and f.endswith(".pth"))
            raise FileNotFoundError(f"no checkpoint {path}; {folder} holds {', '.join(others)} of --epoch {label}, "
                                    f"not {os.path.basename(path)}")
        if saved:
            raise FileNotFoundError(f"no checkpoint {path}; {folder} holds the networks of --epoch "
                                    f"{', '.join(saved)} (iter_N: --load_iter N)")
        raise FileNotFoundError(f"no checkpoint {path}; train with --name {opt.name} first, "
                                "or give a generator file with --checkpoint")
    return path


def results_folder(opt, tool: dict, path: str) -> str:
    """The reference's {phase}_{epoch}[_iter{load_iter}]; with --checkpoint, {phase}_ and the
    label in the file's name (latest_net_G.pth: latest)."""
    if tool["checkpoint"]:
        return f"{tool['phase']}_{os.path.splitext(os.path.basename(path))[0].split('_net_')[0]}"
    folder = f"{tool['phase']}_{opt.epoch}"
    return f"{folder}_iter{opt.load_iter}" if opt.load_iter > 0 else folder


# folders that make a folder a dataset's root rather than a folder of images
DATASET_FOLDERS = ("trainA", "trainB", "testA", "testB", "valA", "valB", "train", "test", "val")


def input_data(opt, tool: dict, training: tuple[str, str] | None):
    """(kind, the options of its dataset): what to translate, and how (VISUALS). --dataroot's
    data, else the training run's (the demo's), its --phase split:
    - pix2pix on aligned data: "paired", G on the A halves, as its pix2pix test (with
      --dataset_mode unaligned, typed or the run's, on {phase}A/ beside an unpaired {phase}B/);
    - cyclegan on aligned data, or on unaligned data with {phase}A/ and {phase}B/: "cycle", both
      generators both ways in the run's direction, as the reference's cycle_gan test;
    - otherwise, with --model test (the reference's test model: one generator on a folder) or
      a cyclegan --checkpoint: "single", one generator on the A halves of aligned data, on the
      {phase}A/ folder ({phase}B/ with --direction BtoA) of a dataset's root, or on the folder
      of images given (testA/, photos/).
    """
    from fastgan.data import DatasetError, prepare_demo

    root, mode = opt.dataroot, opt.dataset_mode
    if root is None:
        root, mode = training or (prepare_demo(opt.arch), "aligned" if opt.arch == "pix2pix" else "unaligned")
    if not os.path.exists(root):
        raise DatasetError(f"--dataroot {root} does not exist")
    if tool["typed_single"]:  # the reference's single dataset: the folder itself, whatever it holds
        net = translating_net(opt, tool)
        return "single", opt.replace(dataroot=root, direction="AtoB", input_nc=generator_channels(opt, net, tool)[0])
    data = opt.replace(dataroot=root)  # --direction as typed, else the run's: the reference's real_A
    sides = [os.path.join(root, opt.phase + domain) for domain in "AB"]
    if mode == "unaligned" and not any(map(os.path.isdir, sides)) and os.path.isdir(os.path.join(root, opt.phase)):
        mode = "aligned"  # a dataset of A|B pairs given to a run trained on unaligned folders
    if mode == "aligned":
        if opt.arch == "pix2pix" and not tool["model_test"]:
            if not os.path.isdir(os.path.join(root, opt.phase)):
                raise DatasetError(f"{root} holds no {opt.phase}/ of A|B pairs for the pix2pix test (G on the A "
                                   "halves, beside B); to translate a folder of images with G, use --model test")
            return "paired", data.replace(dataset_mode="aligned")
        if opt.arch == "cyclegan" and not tool["one_generator"]:
            return "cycle", data.replace(dataset_mode="aligned")
        # the reference's aligned dataset never swaps the halves (its pix2pix model does): the
        # one generator takes the A (left) halves whatever the direction
        net = translating_net(opt, tool)
        return "single", data.replace(dataset_mode="aligned", direction="AtoB",
                                      input_nc=generator_channels(opt, net, tool)[0])
    if mode == "unaligned" and not tool["one_generator"] and all(map(os.path.isdir, sides)):
        # (pix2pix on unaligned data, as the reference's pix2pix test runs it: G on A, beside an unpaired B)
        return ("cycle" if opt.arch == "cyclegan" else "paired"), data.replace(dataset_mode="unaligned")
    if opt.arch == "pix2pix" and not tool["one_generator"]:  # (--dataset_mode unaligned without its folders)
        raise DatasetError(f"{root} holds neither {opt.phase}/ of A|B pairs nor {opt.phase}A/ and {opt.phase}B/ for "
                           "the pix2pix test (G on A, beside B); to translate a folder of images with G, use "
                           "--model test")
    # one generator on a folder: the side it takes (G_A the run's input side, G_B the other),
    # read with its input's channels (a single dataset reads input_nc AtoB, output_nc BtoA)
    net = translating_net(opt, tool)
    side = sides[(tool["trained_direction"] == "BtoA") != (net == "G_B")] if net != "G" else \
        sides[opt.direction == "BtoA"]
    typed = {"cycle_gan": f"both generators on {opt.phase}A/ and {opt.phase}B/ (or {opt.phase}/ of A|B pairs)",
             "pix2pix": f"G on {opt.phase}/ of A|B pairs"}.get(tool["model"])
    if typed and not tool["checkpoint"]:  # a typed model is honoured, not swapped for one generator
        raise DatasetError(f"--model {tool['model']} tests {typed}: {root} holds none; to translate a folder "
                           "of images with one generator, use --model test")
    if os.path.isdir(side):
        root = side
    elif any(os.path.isdir(os.path.join(root, folder)) for folder in DATASET_FOLDERS):
        raise DatasetError(f"{root} holds no {os.path.basename(side)}/ to translate: give --phase the split "
                           "it has, or --dataroot a folder of images")
    # read with the generator's input channels (a single dataset reads input_nc, AtoB)
    return "single", opt.replace(dataroot=root, dataset_mode="single", direction="AtoB",
                                 input_nc=generator_channels(opt, net, tool)[0])


def unique_stem(path: str, root: str, taken: dict[str, str]) -> str:
    """The file's name without extension, as the reference names results; where two files of a
    folder tree share it, the later one's path under the root (sub_dir_name) instead. A file
    met again (a side with fewer images than the other) keeps its name: its images are written
    over, as the reference's are. `taken`: {stem: path} so far."""
    stem = os.path.splitext(os.path.basename(path))[0]
    if taken.get(stem, path) != path:
        stem = os.path.splitext(os.path.relpath(path, root))[0].replace(os.sep, "_")
    taken[stem] = path
    return stem


def with_aspect_ratio(image, aspect_ratio: float):
    """The reference's save_image, as it is: for an h x w image, PIL size (h, w * aspect_ratio)
    above 1 and (h / aspect_ratio, w) below (width first: a square image comes out taller
    above 1, wider below)."""
    w, h = image.size
    if aspect_ratio > 1.0:
        return image.resize((h, int(w * aspect_ratio)), resample=3)  # 3: bicubic
    if aspect_ratio < 1.0:
        return image.resize((int(h / aspect_ratio), w), resample=3)
    return image


def load_generator(opt, path: str, device, eval_mode: bool, channels: tuple[int, int]):
    """The --netG generator built with (input, output) `channels` and loaded from path."""
    from fastgan.models import define_G, load_reference_checkpoint

    in_nc, out_nc = channels
    G = define_G(in_nc, out_nc, opt.ngf, opt.netG, norm=opt.norm, use_dropout=not opt.no_dropout,
                 init_type=opt.init_type, padding_type=opt.padding_type)
    load_reference_checkpoint(G, path)
    G.to(device)
    if eval_mode:
        G.eval()
    return G


def print_network_sizes(nets: dict, verbose: bool) -> None:
    """The reference's print_networks: each net (with --verbose) and its size, between rules."""
    from fastgan.models import count_parameters

    print("---------- Networks initialized -------------")
    for name, G in nets.items():
        if verbose:
            print(G)
        print(f"[Network {name}] Total number of parameters : {count_parameters(G) / 1e6:.3f} M")
    print("-----------------------------------------------")


def check_size(opt, kind: str, item: dict, eval_mode: bool) -> None:
    """An image a generator of `kind` cannot take, named (--preprocess none or scale_width keep
    each image's size): a U-Net's sides must be multiples of its N; a ResNet generator takes
    any size from 5 pixels, 4 with --padding_type zero or replicate (its output is then of another,
    as in the reference's test), but not 4x4 with instance norm, nor with batch norm without --eval."""
    from fastgan.engine.models import check_image_fits

    multiple = None if opt.netG.startswith("unet_") else 1
    for side in ("A", "B") if kind == "cycle" else ("A",):  # (a pair's B is not translated)
        check_image_fits(opt, item[side], item[side + "_paths"], multiple=multiple, discriminator=False,
                         eval_mode=eval_mode)


def generator_path(opt, tool: dict, device) -> tuple[bool, bool]:
    """(fastgan.accelerate, channels_last) for the test's generators. On a CPU: the fused
    modules, and NHWC for ResNet generators without live dropout (as training's CPU
    defaults: NHWC pays through the Winograd kernels of ResNet blocks, and dropout draws its
    mask in memory order, which NHWC would change). The reference's modules with --eager
    and on a GPU: the fused convolutions measure their kernels on each shape's first use,
    which a GPU test of a few images does not repay (unmeasured there). Images that keep
    sizes of their own measure once per size class (translate: choices_by_size_class)."""
    if tool["eager"] or device.type != "cpu":
        return False, False
    live_dropout = not opt.no_dropout and not tool["eval"]
    return True, opt.netG.startswith("resnet") and not live_dropout


def time_cudnn_algorithms(opt, tool: dict, device) -> None:
    """On a GPU, whether cuDNN times its algorithms per convolution shape and keeps the fastest
    (torch.backends.cudnn.benchmark), as training sets it: under --eager as the reference's test
    (on, but for --preprocess scale_width), else where every image has one size (each new
    size would be timed anew). Left as it was on other devices."""
    from fastgan.engine.levels import eager_levels

    if device.type == "cuda":
        torch.backends.cudnn.benchmark = (eager_levels(opt, device).cudnn_benchmark if tool["eager"]
                                          else not sizes_vary(opt.preprocess))


def speed_up(nets: dict, opt, tool: dict, device) -> torch.memory_format:
    """The generators as generator_path says, in place, said in one line; the memory format
    their inputs take."""
    import fastgan
    from fastgan.engine import choice_cache
    from fastgan.engine.host_memory import reuse_freed_memory

    accelerate, channels_last = generator_path(opt, tool, device)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    adopted = 0
    if accelerate:  # (as training's CPU levels: each image's activations otherwise fault their pages in anew)
        reuse_freed_memory()
        adopted = choice_cache.adopt(device)  # (translate records this test's own when it ends)
    for G in nets.values():
        if accelerate:
            fastgan.accelerate(G)
        if channels_last:
            G.to(memory_format=memory_format)
    if accelerate:
        print("generators: fastgan's fused modules" + (", channels_last" if channels_last else "")
              + " (--eager: the reference's)"
              + (f"; {size_class_note(opt.preprocess)}" if sizes_vary(opt.preprocess) else ""))
        if adopted:
            print(choice_cache.adopted_note(adopted, device, "test"))
    elif tool["eager"]:
        print("generators: the reference's modules (--eager)")
    else:
        print("generators: the reference's modules")
    return memory_format


def visuals(kind: str, nets: dict, item: dict, device, memory_format=torch.contiguous_format) -> dict:
    """The images the reference's test model of `kind` shows for one item, named by VISUALS,
    the inputs in `memory_format`."""
    real_A = item["A"].unsqueeze(0).to(device, memory_format=memory_format)
    if kind == "single":
        images = (real_A, next(iter(nets.values()))(real_A))
    elif kind == "paired":
        images = (real_A, nets["G"](real_A), item["B"].unsqueeze(0).to(device))
    else:
        real_B = item["B"].unsqueeze(0).to(device, memory_format=memory_format)
        fake_B = nets["G_A"](real_A)  # the reference's forward() order (dropout draws follow it)
        rec_A = nets["G_B"](fake_B)
        fake_A = nets["G_B"](real_B)
        images = (real_A, fake_B, rec_A, real_B, fake_A, nets["G_A"](fake_A))
    return dict(zip(VISUALS[kind], images, strict=True))


def translate(opt, tool: dict, training: tuple[str, str] | None = None) -> str:
    from fastgan import ops
    from fastgan.data import create_dataset
    from fastgan.engine import choice_cache
    from fastgan.engine.logs import options_table_of, write_options_table
    from fastgan.engine.models import resolve_device

    device = resolve_device(opt.device)
    check_backend_variable(device)
    if problem := folder_problem(tool["results_dir"]):  # before the generators are built
        raise ValueError(f"--results_dir {tool['results_dir']}: {problem}")
    kind, data_options = input_data(opt, tool, training)
    if tool["reference_dropout"] and kind == "single":
        opt = opt.replace(no_dropout=False)
    names = ("G_A", "G_B") if kind == "cycle" else (translating_net(opt, tool),)
    paths = {net: generator_file(opt, net, tool, alone=len(names) == 1) for net in names}
    # printed first, as the reference's option parser does, and as the reference's test written beside
    # the networks (always test_opt.txt: --phase train would overwrite the training run's train_opt.txt)
    # where that folder can be written
    entries = test_table_entries(opt, tool, device, data_options.dataset_mode, names[0] if kind == "single" else None)
    table = (opt, entries, OPTION_NAMES | set(entries) | {"isTrain"})
    print(options_table_of(*table), end="")
    try:
        write_options_table(os.path.join(opt.checkpoints_dir, opt.name, "test_opt.txt"), *table)
    except OSError:
        pass
    nets = {}
    for net, path in paths.items():
        print(f"loading the model from {path}")  # the reference's lines, for the scripts that read them
        nets[net] = load_generator(opt, path, device, tool["eval"], generator_channels(opt, net, tool))
    print_network_sizes(nets, opt.verbose)
    memory_format = speed_up(nets, opt, tool, device)
    time_cudnn_algorithms(opt, tool, device)
    dataset = create_dataset(data_options)
    folder = results_folder(opt, tool, next(iter(paths.values())))
    out_dir = os.path.join(tool["results_dir"], opt.name, folder)
    image_dir = os.path.join(out_dir, "images")  # made with the first image (a refused one leaves none)
    rows, stems = [], {}
    unlisted: list[str] = []  # the files of the image being written, until its row is listed
    count = min(len(dataset), tool["num_test"])
    index = os.path.join(out_dir, "index.html")
    epoch = folder[len(tool["phase"]) + 1:] if tool["checkpoint"] else opt.epoch  # (the file's label)
    title = f"Experiment = {opt.name}, Phase = {tool['phase']}, Epoch = {epoch}"  # the reference's
    torch.manual_seed(opt.seed)  # the dropout of a generator not in eval mode (the U-Net's, as the reference's)
    by_size_class = ops.choices_by_size_class() if sizes_vary(opt.preprocess) else contextlib.nullcontext()
    try:
        with torch.no_grad(), by_size_class:
            for i in tqdm(range(count), unit="image", mininterval=1.0, desc="translating"):
                item = dataset[i]
                if i % 5 == 0:  # the reference's progress line
                    tqdm.write(f"processing ({i:04d})-th image... {[item['A_paths']]}")
                check_size(opt, kind, item, tool["eval"])
                stem = unique_stem(item["A_paths"], dataset.root, stems)
                entries = []
                images = visuals(kind, nets, item, device, memory_format)
                os.makedirs(image_dir, exist_ok=True)  # (once the first image is translated)
                for name, tensor in images.items():
                    file = f"{stem}_{name}.png"
                    image = Image.fromarray(tensor2im(tensor[0]))
                    unlisted.append(os.path.join(image_dir, file))
                    with_aspect_ratio(image, tool["aspect_ratio"]).save(unlisted[-1])
                    entries.append((name, f"images/{file}"))
                rows.append((stem, entries))
                unlisted.clear()
    except KeyboardInterrupt:  # the page lists what this run translated, not an earlier run's whole set
        for path in unlisted:  # an image stopped in the middle: no stray part of it is left
            with contextlib.suppress(OSError):
                os.remove(path)
        if rows:
            write_image_page(index, title, rows, opt.display_winsize)
        print(f"\nstopped after {len(rows)} of {count} images" + (f"; {index} lists those" if rows else ""),
              file=sys.stderr)
        raise SystemExit(128 + signal.SIGINT) from None
    finally:  # what the fused modules measured, for later runs on this machine (choice_cache)
        if generator_path(opt, tool, device)[0]:
            choice_cache.record(device)
    os.makedirs(out_dir, exist_ok=True)  # (--num_test 0: an empty page)
    write_image_page(index, title, rows, opt.display_winsize)
    used = f"the generator in {tool['checkpoint']}" if tool["checkpoint"] else \
        ", ".join(f"{net} from {path}" for net, path in paths.items())
    print(f"translated {count} image{'' if count == 1 else 's'} with {used}; open {index}")
    return index


def main(argv=None) -> str:
    args = parse(argv)  # --help before torch is imported
    import_ops_or_fail()
    from fastgan.data import DatasetError
    from fastgan.engine.distributed import launched_world_size
    from fastgan.models import CheckpointError

    if launched_world_size() > 1:  # each rank would translate everything into the same files
        fail(f"fastgan.test runs in one process (started as one of {launched_world_size()} by torchrun): run "
             "python -m fastgan.test without torchrun")
    try:
        opt, tool, training = test_options(args)
        return translate(opt, tool, training)
    except (DatasetError, CheckpointError, FileNotFoundError, ValueError) as e:
        fail(str(e))
    except OSError as e:  # a results folder that is a file, or cannot be written
        fail(os_error_line(e))


if __name__ == "__main__":
    warnings_in_one_line()
    try:
        main(sys.argv[1:])
    except KeyboardInterrupt:  # Ctrl-C: the images written so far stay
        print("\nstopped", file=sys.stderr)
        sys.exit(128 + signal.SIGINT)
