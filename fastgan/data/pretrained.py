"""The reference's published pretrained generators, fetched from their addresses.

    python -m fastgan.data download_model horse2zebra          # CycleGAN, one direction
    python -m fastgan.data download_model facades_label2photo  # pix2pix

As the reference's scripts/download_cyclegan_model.sh and download_pix2pix_model.sh:
CycleGAN generators come from HOST/cyclegan/pretrained_models/NAME.pth, pix2pix ones
from HOST/pix2pix/models-pytorch/NAME.pth, and each is saved as
{checkpoints_dir}/NAME_pretrained/latest_net_G.pth, where the reference's test command
lines find it:

    python -m fastgan.test --dataroot datasets/horse2zebra/testA --name horse2zebra_pretrained \\
        --model test --no_dropout
    python -m fastgan.test --dataroot datasets/facades --name facades_label2photo_pretrained \\
        --model pix2pix --direction BtoA

sat2map, map2sat and facades_label2photo exist in both forms: the pix2pix one unless
--arch cyclegan (as for the datasets both have). The file arrives
as NAME_pretrained/latest_net_G.pth.part, resumed when the command runs again and
renamed into place only at the size the server announced (fastgan.data.download.fetch).
"""

from __future__ import annotations

import os

from fastgan.data.download import HOST, fetch, pick_arch
from fastgan.data.errors import DatasetError

CYCLEGAN_MODELS = ("apple2orange", "orange2apple", "summer2winter_yosemite", "winter2summer_yosemite",
                   "horse2zebra", "zebra2horse", "monet2photo", "style_monet", "style_cezanne", "style_ukiyoe",
                   "style_vangogh", "sat2map", "map2sat", "cityscapes_photo2label", "cityscapes_label2photo",
                   "facades_photo2label", "facades_label2photo", "iphone2dslr_flower")
PIX2PIX_MODELS = ("edges2shoes", "sat2map", "map2sat", "facades_label2photo", "day2night")
FOLDERS = {"cyclegan": "cyclegan/pretrained_models", "pix2pix": "pix2pix/models-pytorch"}


def model_source(name: str, arch: str | None = None, host: str = HOST) -> tuple[str, str]:
    """(arch, url) of pretrained generator `name`: the pix2pix one when both exist, unless
    arch says otherwise."""
    arch = pick_arch(name, arch, {"cyclegan": CYCLEGAN_MODELS, "pix2pix": PIX2PIX_MODELS}, "pretrained model",
                     "pretrained models", host)
    return arch, f"{host.rstrip('/')}/{FOLDERS[arch]}/{name}.pth"


def download_pretrained(name: str, checkpoints_dir: str = "./checkpoints", arch: str | None = None,
                        host: str = HOST, log=print) -> str:
    """Fetch generator `name` into checkpoints_dir/NAME_pretrained/latest_net_G.pth (resuming a
    partial download; nothing when the file is there) and return its path."""
    arch, url = model_source(name, arch, host)
    folder = os.path.join(checkpoints_dir, f"{name}_pretrained")
    path = os.path.join(folder, "latest_net_G.pth")
    if os.path.exists(path):
        log(f"{path} is already there; nothing to download")
        return path
    os.makedirs(folder, exist_ok=True)
    try:
        fetch(url, path + ".part")
    except DatasetError:
        if not os.listdir(folder):  # nothing to resume from: no empty NAME_pretrained/ left behind
            os.rmdir(folder)
        raise
    os.replace(path + ".part", path)
    log(f"the pretrained {arch} generator {name} is {path}; translate with python -m fastgan.test "
        f"--name {name}_pretrained " + ("--model test --no_dropout --dataroot FOLDER_OF_IMAGES" if arch == "cyclegan"
                                         else "--model pix2pix --dataroot ALIGNED_DATASET (its --direction)"))
    return path
