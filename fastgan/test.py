"""`python -m fastgan.test`: translate images with a trained generator.

    python -m fastgan.test --name horse2zebra --dataroot ./datasets/horse2zebra/testA
    python -m fastgan.test --name demo_cyclegan                # the demo's test split
    python -m fastgan.test --checkpoint latest_net_G.pth --dataroot photos/ --netG resnet_9blocks

Loads {checkpoints_dir}/{name}/{epoch}_net_G_A.pth (iter_{load_iter}_net_G_A.pth with
--load_iter; G_B with --direction BtoA, G for pix2pix) or any reference checkpoint given
with --checkpoint. Model options come from the experiment's train_opt.json when it
exists; options typed here override them. As the reference's test: batch 1, serial order, no
flip, load_size defaults to crop_size. Writes {results_dir}/{name}/{phase}_{epoch}/
images/*_real.png, *_fake.png (and *_target.png for aligned data) and an
index.html showing input beside output ({phase}_{epoch}_iter{load_iter} with --load_iter,
as the reference; {phase}_{file's label} with --checkpoint).
"""

from __future__ import annotations

import argparse
import html
import json
import os
import sys

import torch
from tqdm import tqdm

from fastgan.cli import add_option_arguments, add_reference_arguments, fail, from_reference_arguments, with_suffix
from fastgan.options import checkpoint_label, resolve

# what a test run takes over from the training run's train_opt.json
MODEL_OPTIONS = ("arch", "input_nc", "output_nc", "ngf", "netG", "norm", "no_dropout", "padding_type",
                 "crop_size", "preprocess", "direction")
FILE_SUFFIX = {"input": "real", "output": "fake", "target": "target"}
# the reference's base options that a test run takes and has no use for (it translates with G
# alone, batch 1, serial order, no flip): accepted, so its test command lines run unchanged
ACCEPTED_UNUSED = ("ndf", "netD", "n_layers_D", "init_type", "init_gain", "serial_batches", "num_threads",
                   "batch_size", "no_flip")


def parse(argv=None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m fastgan.test", description=__doc__.split("\n\n")[0],
                                     usage="%(prog)s --name NAME [--dataroot DIR] [options] (--help lists them)")
    add_option_arguments(parser, names={
        "arch", "dataroot", "name", "checkpoints_dir", "device", "input_nc", "output_nc", "ngf", "netG",
        "norm", "no_dropout", "padding_type", "direction", "dataset_mode", "load_size", "crop_size",
        "preprocess", "epoch", "load_iter", "max_dataset_size", *ACCEPTED_UNUSED,
    })
    add_reference_arguments(parser, test=True)
    parser.add_argument("--checkpoint", default=None, help="a generator .pth file (fastgan's or the reference's)")
    parser.add_argument("--results_dir", default="./results/", help="where NAME/ goes (default: ./results/)")
    parser.add_argument("--phase", default="test", help="the split to translate (default: test)")
    parser.add_argument("--num_test", type=int, default=50, help="translate at most this many images (default: 50)")
    parser.add_argument("--aspect_ratio", type=float, default=1.0,
                        help="saved images' width / height, as the reference's (default: 1.0)")
    parser.add_argument("--eval", action="store_true", help="run the generator in eval mode")
    return vars(parser.parse_args(argv))


def saved_train_options(checkpoints_dir: str, name: str) -> dict:
    path = os.path.join(checkpoints_dir, name, "train_opt.json")
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        return json.load(f)


def test_options(args: dict):
    """Resolved options: defaults < the training run's saved options < what was typed.

    Returns (options, tool settings, the training run's dataroot or None).
    """
    tool = {k: args.pop(k) for k in ("checkpoint", "results_dir", "phase", "num_test", "eval", "aspect_ratio")}
    if tool["aspect_ratio"] <= 0:
        raise ValueError(f"--aspect_ratio {tool['aspect_ratio']} must be positive")
    suffix, notes = from_reference_arguments(args)
    for note in notes:
        print(note)
    saved = saved_train_options(args.get("checkpoints_dir", "./checkpoints"), args.get("name", "experiment_name"))
    merged = {**{k: saved[k] for k in MODEL_OPTIONS if k in saved}, **args}
    arch = merged.pop("arch", "cyclegan")
    opt = with_suffix(resolve(arch, merged), suffix)
    # the reference's test defaults load_size to crop_size (no crop); a typed one is kept
    opt = opt.replace(load_size=args.get("load_size", opt.crop_size), batch_size=1, serial_batches=True,
                      no_flip=True, num_threads=0, phase=tool["phase"], isTrain=False)
    training_root = None if saved.get("demo") else saved.get("dataroot")
    return opt, tool, training_root


def generator_file(opt, checkpoint: str | None) -> tuple[str, str]:
    """(net name in a training model, checkpoint path)."""
    if opt.arch == "pix2pix":
        net = "G"
    else:
        net = "G_A" if opt.direction == "AtoB" else "G_B"
    if checkpoint:
        return net, checkpoint
    folder, label = os.path.join(opt.checkpoints_dir, opt.name), checkpoint_label(opt)
    path = os.path.join(folder, f"{label}_net_{net}.pth")
    plain = os.path.join(folder, f"{label}_net_G.pth")  # published pretrained generators
    if not os.path.exists(path) and os.path.exists(plain):
        return net, plain
    if not os.path.exists(path):
        raise FileNotFoundError(f"no checkpoint {path}; train with --name {opt.name} first, "
                                "or give a generator file with --checkpoint")
    return net, path


def results_folder(opt, tool: dict, path: str) -> str:
    """The reference's {phase}_{epoch}[_iter{load_iter}]; with --checkpoint, {phase}_ and the
    label in the file's name (latest_net_G.pth: latest)."""
    if tool["checkpoint"]:
        return f"{tool['phase']}_{os.path.splitext(os.path.basename(path))[0].split('_net_')[0]}"
    folder = f"{tool['phase']}_{opt.epoch}"
    return f"{folder}_iter{opt.load_iter}" if opt.load_iter > 0 else folder


def input_dataset(opt, training_root: str | None):
    """Images to translate: --dataroot's; else the --phase split of the training run's data, or
    of the demo. A --dataroot is aligned pairs (its {phase}/ folder) with --dataset_mode aligned,
    the folder itself with single; unaligned (cyclegan's default) takes its {phase}A/ folder
    ({phase}B/ with --direction BtoA) where it has one, as the reference's unaligned data, and
    else the folder itself (a folder of images: testA/, photos/)."""
    from fastgan.data import create_dataset, prepare_demo

    root = opt.dataroot
    if root is None:
        root = training_root or prepare_demo(opt.arch)
        mode = "aligned" if opt.arch == "pix2pix" else "unaligned"
    else:
        mode = opt.dataset_mode
    if mode == "aligned":
        return create_dataset(opt.replace(dataroot=root, dataset_mode="aligned"))
    side = os.path.join(root, opt.phase + ("A" if opt.direction == "AtoB" else "B"))
    if mode == "unaligned" and os.path.isdir(side):
        root = side
    return create_dataset(opt.replace(dataroot=root, dataset_mode="single"))


def unique_stem(path: str, root: str, taken: set) -> str:
    """The file's name without extension, as the reference names results; where two files of a
    folder tree share it, the later one's path under the root (sub_dir_name) instead."""
    stem = os.path.splitext(os.path.basename(path))[0]
    if stem in taken:
        stem = os.path.splitext(os.path.relpath(path, root))[0].replace(os.sep, "_")
    taken.add(stem)
    return stem


def with_aspect_ratio(image, aspect_ratio: float):
    """The reference's save_image: wider by aspect_ratio above 1, taller by 1/aspect_ratio below."""
    w, h = image.size
    if aspect_ratio > 1.0:
        return image.resize((int(w * aspect_ratio), h), resample=3)  # 3: bicubic
    if aspect_ratio < 1.0:
        return image.resize((w, int(h / aspect_ratio)), resample=3)
    return image


def to_uint8_image(x: torch.Tensor):
    from PIL import Image

    image = ((x.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    array = image.permute(1, 2, 0).numpy()
    return Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array)


def write_index(path: str, title: str, rows: list[tuple[str, list[tuple[str, str]]]]) -> None:
    cells = []
    for name, images in rows:
        tds = "".join(f'<td><a href="{html.escape(src)}"><img src="{html.escape(src)}" width="256"></a>'
                      f"<br>{html.escape(label)}</td>" for label, src in images)
        cells.append(f"<tr><th>{html.escape(name)}</th>{tds}</tr>")
    with open(path, "w") as f:
        f.write(f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title></head>"
                f"<body><h1>{html.escape(title)}</h1><table>{''.join(cells)}</table></body></html>\n")


def translate(opt, tool: dict, training_root: str | None = None) -> str:
    from fastgan.engine.models import resolve_device
    from fastgan.models import define_G, load_reference_checkpoint

    device = resolve_device(opt.device)
    net_name, path = generator_file(opt, tool["checkpoint"])
    in_nc, out_nc = (opt.input_nc, opt.output_nc) if net_name != "G_B" else (opt.output_nc, opt.input_nc)
    G = define_G(in_nc, out_nc, opt.ngf, opt.netG, norm=opt.norm, use_dropout=not opt.no_dropout,
                 init_type=opt.init_type, padding_type=opt.padding_type)
    load_reference_checkpoint(G, path)
    G.to(device)
    if tool["eval"]:
        G.eval()
    dataset = input_dataset(opt, training_root)
    out_dir = os.path.join(tool["results_dir"], opt.name, results_folder(opt, tool, path))
    image_dir = os.path.join(out_dir, "images")
    os.makedirs(image_dir, exist_ok=True)
    rows, stems = [], set()
    count = min(len(dataset), tool["num_test"])
    with torch.no_grad():
        for i in tqdm(range(count), unit="image", mininterval=1.0, desc="translating"):
            item = dataset[i]
            real = item["A"].unsqueeze(0).to(device)
            fake = G(real)[0]
            stem = unique_stem(item["A_paths"], dataset.root, stems)
            images = [("input", item["A"]), ("output", fake)]
            if "B" in item:
                images.append(("target", item["B"]))
            entries = []
            for kind, tensor in images:
                file = f"{stem}_{FILE_SUFFIX[kind]}.png"
                with_aspect_ratio(to_uint8_image(tensor), tool["aspect_ratio"]).save(os.path.join(image_dir, file))
                entries.append((kind, f"images/{file}"))
            rows.append((stem, entries))
    index = os.path.join(out_dir, "index.html")
    write_index(index, f"{opt.name}: {net_name} from {path}", rows)
    print(f"translated {count} images with {path}; open {index}")
    return index


def main(argv=None) -> str:
    from fastgan.data import DatasetError
    from fastgan.models import CheckpointError

    try:
        opt, tool, training_root = test_options(parse(argv))
        return translate(opt, tool, training_root)
    except (DatasetError, CheckpointError, FileNotFoundError, ValueError) as e:
        fail(str(e))


if __name__ == "__main__":
    main(sys.argv[1:])
