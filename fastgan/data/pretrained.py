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
as NAME_pretrained/latest_net_G.pth.ARCH.part, resumed when the command runs again, and
is renamed into place only at the size the server announced (fastgan.data.download.fetch)
and when it loads as a state dict of tensors; downloaded_from.txt beside it keeps its address.
"""

from __future__ import annotations

import os

from fastgan.data.download import HOST, fetch, hold_download_lock, pick_arch
from fastgan.data.errors import DatasetError
from fastgan.file_lock import drop_lock

CYCLEGAN_MODELS = ("apple2orange", "orange2apple", "summer2winter_yosemite", "winter2summer_yosemite",
                   "horse2zebra", "zebra2horse", "monet2photo", "style_monet", "style_cezanne", "style_ukiyoe",
                   "style_vangogh", "sat2map", "map2sat", "cityscapes_photo2label", "cityscapes_label2photo",
                   "facades_photo2label", "facades_label2photo", "iphone2dslr_flower")
PIX2PIX_MODELS = ("edges2shoes", "sat2map", "map2sat", "facades_label2photo", "day2night")
FOLDERS = {"cyclegan": "cyclegan/pretrained_models", "pix2pix": "pix2pix/models-pytorch"}
SOURCE_FILE = "downloaded_from.txt"  # beside latest_net_G.pth: the address it came from
LOCK_FILE = ".download.lock"  # held while a process downloads into the folder


def model_source(name: str, arch: str | None = None, host: str = HOST) -> tuple[str, str]:
    """(arch, url) of pretrained generator `name`: the pix2pix one when both exist, unless
    arch says otherwise."""
    arch = pick_arch(name, arch, {"cyclegan": CYCLEGAN_MODELS, "pix2pix": PIX2PIX_MODELS}, "pretrained model",
                     "pretrained models", host)
    return arch, f"{host.rstrip('/')}/{FOLDERS[arch]}/{name}.pth"


def download_pretrained(name: str, checkpoints_dir: str = "./checkpoints", arch: str | None = None,
                        host: str = HOST, log=print) -> str:
    """Fetch generator `name` into checkpoints_dir/NAME_pretrained/latest_net_G.pth (resuming a
    partial download; nothing when the file is there) and return its path. The address it
    came from is kept beside it (SOURCE_FILE): a name both archs publish is not fetched in
    one form over the other's file."""
    arch, url = model_source(name, arch, host)
    folder = os.path.join(checkpoints_dir, f"{name}_pretrained")
    there = _already_there(name, arch, url, folder, log)  # (a read-only checkpoints folder included)
    if there is not None:
        return there
    os.makedirs(folder, exist_ok=True)
    lock_path = os.path.join(folder, LOCK_FILE)
    lock = hold_download_lock(lock_path, f"the pretrained {name} into {folder}")
    try:
        return _already_there(name, arch, url, folder, log) or _download_pretrained(name, arch, url, folder, log)
    finally:
        drop_lock(lock, lock_path)
        try:
            os.rmdir(folder)  # only when empty, nothing to resume from: no NAME_pretrained/ left behind
        except OSError:
            pass


def _already_there(name: str, arch: str, url: str, folder: str, log) -> str | None:
    """The model's path, said, where it is there from `url`; a DatasetError where it came from
    another address; None where it is not there."""
    path = os.path.join(folder, "latest_net_G.pth")
    if not os.path.exists(path):
        return None
    source_path = os.path.join(folder, SOURCE_FILE)
    came_from = None
    if os.path.exists(source_path):
        with open(source_path, encoding="utf-8") as f:
            came_from = f.read().strip()
    if came_from is not None and came_from != url:
        raise DatasetError(f"{path} came from {came_from}, not {url}: move it away to download the {arch} "
                           f"generator {name}")
    log(f"{path} is already there; nothing to download")
    return path


def _download_pretrained(name: str, arch: str, url: str, folder: str, log) -> str:
    """Fetches and checks the model, under the download's lock."""
    path = os.path.join(folder, "latest_net_G.pth")
    source_path = os.path.join(folder, SOURCE_FILE)
    part = f"{path}.{arch}.part"  # one per address: a resumed download never joins two files
    fetch(url, part)
    check_state_dict(part, url)
    os.replace(part, path)
    with open(source_path, "w", encoding="utf-8") as f:
        f.write(url + "\n")
    log(f"the pretrained {arch} generator {name} is {path}; translate with python -m fastgan.test "
        f"--name {name}_pretrained " + ("--model test --no_dropout --dataroot FOLDER_OF_IMAGES" if arch == "cyclegan"
                                         else "--model pix2pix --dataroot ALIGNED_DATASET (its --direction)"))
    return path


def check_state_dict(path: str, url: str) -> None:
    """A DatasetError, and `path` removed, unless it holds a state dict of tensors (a server
    may answer with a page of its own)."""
    import torch

    from fastgan.models.checkpoint import unreadable_network_file

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        ok = isinstance(state, dict) and state and all(isinstance(v, torch.Tensor) for v in state.values())
    except Exception as e:  # torch.load raises what its unpickler met: any of many types
        ok, why = False, unreadable_network_file(path, e)
    else:
        why = "not a state dict of tensors"
    if not ok:
        os.remove(path)
        raise DatasetError(f"{url} sent a file that is not a network's weights ({why}); removed it: try again "
                           "later, or check --host")
