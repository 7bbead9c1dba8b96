"""`python -m fastgan.test`: translate images with trained generators, as the reference's test.

    python -m fastgan.test --name horse2zebra --dataroot ./datasets/horse2zebra        # both ways
    python -m fastgan.test --name horse2zebra --dataroot ./datasets/horse2zebra/testA  # G_A only
    python -m fastgan.test --name demo_cyclegan                # the demo's test split
    python -m fastgan.test --checkpoint latest_net_G.pth --dataroot photos/ --netG resnet_9blocks

What runs follows the data, as the reference's test models (input_data):
- {phase}A/ and {phase}B/ (a CycleGAN dataset): its cycle_gan test, G_A and G_B both ways,
  writing *_real_A, *_fake_B, *_rec_A, *_real_B, *_fake_A, *_rec_B.png;
- aligned pairs (pix2pix's): G on A, writing *_real_A, *_fake_B, *_real_B.png;
- a folder of images, --model test or --checkpoint: one generator, its --model test, writing
  *_real.png and *_fake.png.
Generators: {checkpoints_dir}/{name}/{epoch}_net_G_A.pth (iter_{load_iter}_net_G_A.pth with
--load_iter; G_B with --direction BtoA, G for pix2pix) or any reference checkpoint given
with --checkpoint. Model options come from the experiment's train_opt.json when it
exists; options typed here override them. As the reference's test: batch 1, serial order, no
flip, load_size defaults to crop_size. Writes {results_dir}/{name}/{phase}_{epoch}/images/
and an index.html of the images side by side ({phase}_{epoch}_iter{load_iter} with
--load_iter, as the reference; {phase}_{file's label} with --checkpoint).
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
# what each translated item writes, {stem}_{name}.png, as the reference's test models name them
VISUALS = {
    "single": ("real", "fake"),  # --model test: one generator on a folder of images
    "paired": ("real_A", "fake_B", "real_B"),  # pix2pix on aligned pairs
    "cycle": ("real_A", "fake_B", "rec_A", "real_B", "fake_A", "rec_B"),  # cycle_gan on {phase}A, {phase}B
}
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
    tool["one_generator"] = args.get("model") == "test" or tool["checkpoint"] is not None
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


def translating_net(opt) -> str:
    """The net that translates A to the other domain: G_A (G_B with --direction BtoA), pix2pix's G."""
    if opt.arch == "pix2pix":
        return "G"
    return "G_A" if opt.direction == "AtoB" else "G_B"


def generator_file(opt, net: str, checkpoint: str | None) -> str:
    """The checkpoint of `net`: --checkpoint, else {label}_net_{net}.pth of the experiment (or
    a published pretrained generator's {label}_net_G.pth)."""
    if checkpoint:
        return checkpoint
    folder, label = os.path.join(opt.checkpoints_dir, opt.name), checkpoint_label(opt)
    path = os.path.join(folder, f"{label}_net_{net}.pth")
    plain = os.path.join(folder, f"{label}_net_G.pth")  # published pretrained generators
    if not os.path.exists(path) and os.path.exists(plain):
        return plain
    if not os.path.exists(path):
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


def input_data(opt, training_root: str | None, one_generator: bool):
    """(kind, the options of its dataset): what to translate, and how (VISUALS). --dataroot's data, else the --phase
    split of the training run's, or of the demo's. Aligned data (pix2pix's, --dataset_mode
    aligned): "paired", its {phase}/ folder. Unaligned data (cyclegan's default) holding {phase}A/
    and {phase}B/: "cycle", both generators both ways, as the reference's cycle_gan test; with
    only one of them, or --model test or --checkpoint: "single", that folder ({phase}A/, {phase}B/
    with --direction BtoA), else the folder itself (testA/, photos/), as its --model test."""
    from fastgan.data import prepare_demo

    root = opt.dataroot
    if root is None:
        root = training_root or prepare_demo(opt.arch)
        mode = "aligned" if opt.arch == "pix2pix" else "unaligned"
    else:
        mode = opt.dataset_mode
    if mode == "aligned":
        return "paired", opt.replace(dataroot=root, dataset_mode="aligned")
    sides = [os.path.join(root, opt.phase + domain) for domain in "AB"]
    if mode == "unaligned" and opt.arch == "cyclegan" and not one_generator and all(map(os.path.isdir, sides)):
        return "cycle", opt.replace(dataroot=root, dataset_mode="unaligned")
    side = sides[0 if opt.direction == "AtoB" else 1]
    if mode == "unaligned" and os.path.isdir(side):
        root = side
    return "single", opt.replace(dataroot=root, dataset_mode="single")


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


def load_generator(opt, net: str, path: str, device, eval_mode: bool):
    from fastgan.models import define_G, load_reference_checkpoint

    in_nc, out_nc = (opt.input_nc, opt.output_nc) if net != "G_B" else (opt.output_nc, opt.input_nc)
    G = define_G(in_nc, out_nc, opt.ngf, opt.netG, norm=opt.norm, use_dropout=not opt.no_dropout,
                 init_type=opt.init_type, padding_type=opt.padding_type)
    load_reference_checkpoint(G, path)
    G.to(device)
    if eval_mode:
        G.eval()
    return G


def visuals(kind: str, nets: dict, item: dict, device) -> dict:
    """The images the reference's test model of `kind` shows for one item (VISUALS)."""
    real_A = item["A"].unsqueeze(0).to(device)
    if kind == "single":
        return {"real": real_A, "fake": next(iter(nets.values()))(real_A)}
    real_B = item["B"].unsqueeze(0).to(device)
    if kind == "paired":
        return {"real_A": real_A, "fake_B": nets["G"](real_A), "real_B": real_B}
    fake_B, fake_A = nets["G_A"](real_A), nets["G_B"](real_B)
    return {"real_A": real_A, "fake_B": fake_B, "rec_A": nets["G_B"](fake_B),
            "real_B": real_B, "fake_A": fake_A, "rec_B": nets["G_A"](fake_A)}


def translate(opt, tool: dict, training_root: str | None = None) -> str:
    from fastgan.data import create_dataset
    from fastgan.engine.models import resolve_device

    device = resolve_device(opt.device)
    kind, data_options = input_data(opt, training_root, tool["one_generator"])
    names = ("G_A", "G_B") if kind == "cycle" else (translating_net(opt),)
    paths = {net: generator_file(opt, net, tool["checkpoint"]) for net in names}
    nets = {net: load_generator(opt, net, path, device, tool["eval"]) for net, path in paths.items()}
    dataset = create_dataset(data_options)
    out_dir = os.path.join(tool["results_dir"], opt.name, results_folder(opt, tool, next(iter(paths.values()))))
    image_dir = os.path.join(out_dir, "images")
    os.makedirs(image_dir, exist_ok=True)
    rows, stems = [], set()
    count = min(len(dataset), tool["num_test"])
    with torch.no_grad():
        for i in tqdm(range(count), unit="image", mininterval=1.0, desc="translating"):
            item = dataset[i]
            stem = unique_stem(item["A_paths"], dataset.root, stems)
            entries = []
            for name, tensor in visuals(kind, nets, item, device).items():
                file = f"{stem}_{name}.png"
                with_aspect_ratio(to_uint8_image(tensor[0]), tool["aspect_ratio"]).save(os.path.join(image_dir, file))
                entries.append((name, f"images/{file}"))
            rows.append((stem, entries))
    index = os.path.join(out_dir, "index.html")
    used = ", ".join(f"{net} from {path}" for net, path in paths.items())
    write_index(index, f"{opt.name}: {used}", rows)
    print(f"translated {count} images with {used}; open {index}")
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
