"""The embedded demo: a small dataset with a known answer, so a run without
--dataroot trains on something real and can be scored.

cyclegan: trainA = crops of three photos, trainB = crops of three other photos
under a known warm colour grade (demo_build.demo_style); testA = held-out crops
of the A photos with testA_true = their graded truth (same file names).
pix2pix: grayscale -> colour pairs (A|B side by side) in train/ and test/.

The photographs are the ones scikit-image ships inside its wheel: nothing is
downloaded. See demo_build.py for how the crops are taken.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time

import numpy as np
import torch
from PIL import Image

from fastgan.data.demo_build import BUILDERS, COUNTS, demo_style, style_uint8, write_manifest
from fastgan.data.errors import DatasetError
from fastgan.errors import os_error_line
from fastgan.options import DEMO_DEFAULTS

DEMO_VERSION = 2  # bump when the recipe changes: cached demos of older versions are rebuilt

_STALE_BUILD_S = 3600  # leftovers of killed builds older than this are removed


def demo_root(root: str | None = None) -> str:
    return root or os.environ.get("FASTGAN_DEMO_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "fastgan", "demo")


def _complete(path: str, arch: str) -> bool:
    """Whether `path` holds this version's demo of `arch`, each folder with the files its
    manifest counts (a folder deleted or emptied since is rebuilt, not found missing when the
    run ends and scores)."""
    try:
        with open(os.path.join(path, "demo.json"), encoding="utf-8") as f:
            m = json.load(f)
        if not isinstance(m, dict) or m.get("version") != DEMO_VERSION or m.get("arch") != arch:
            return False
        return all(_images_in(os.path.join(path, folder)) == n for folder, n in m.get("counts", {}).items())
    except (OSError, ValueError, KeyError, AttributeError, TypeError):
        return False


def _images_in(folder: str) -> int:
    """The demo's images in `folder` (its .png files: what a file manager adds, .DS_Store or
    Thumbs.db, is not counted)."""
    return sum(name.endswith(".png") for name in os.listdir(folder))


def prepare_demo(arch: str, root: str | None = None) -> str:
    """The dataroot of `arch`'s demo under `root` (default $FASTGAN_DEMO_DIR or
    ~/.cache/fastgan/demo), built on first use.

    The build goes to a temporary folder that is renamed into place once its
    manifest (demo.json, written last) exists, so a killed build is never used;
    concurrent builders are safe (the first rename wins).
    """
    if arch not in BUILDERS:
        raise DatasetError(f"no demo for arch {arch!r}; choose one of {', '.join(BUILDERS)}")
    base = demo_root(root)
    final = os.path.join(base, arch)
    try:
        if os.path.isdir(base):
            _remove_stale_builds(base, arch)  # a killed build's leftovers, also once the demo exists
        if _complete(final, arch):
            return final
        return _build(arch, base, final)
    except OSError as e:  # a full disk said only "[Errno 28] No space left on device"
        raise DatasetError(f"cannot build the {arch} demo in {base} ({os_error_line(e)}); point "
                           f"FASTGAN_DEMO_DIR at a writable folder with {DEMO_MEGABYTES[arch]} MB free") from None


# what a built demo takes on disk (du of version 2's)
DEMO_MEGABYTES = {"cyclegan": 11, "pix2pix": 22}


def _build(arch: str, base: str, final: str) -> str:
    os.makedirs(base, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{arch}.building-", dir=base)
    try:
        os.chmod(tmp, 0o755)  # mkdtemp's 0700 would hide a shared cache from other users
        info = BUILDERS[arch](tmp)
        write_manifest(tmp, arch, DEMO_VERSION, info)
        if os.path.exists(final) and not _complete(final, arch):
            # an older version (or a hand-made folder): move it aside, then delete
            shutil.rmtree(_move_aside(base, arch, final))
        try:
            os.rename(tmp, final)
        except OSError:
            if not _complete(final, arch):  # not a concurrent builder's finished demo
                raise
    finally:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def _move_aside(base: str, arch: str, path: str) -> str:
    trash = tempfile.mkdtemp(prefix=f".{arch}.old-", dir=base)
    os.rename(path, os.path.join(trash, arch))
    return trash


def _remove_stale_builds(base: str, arch: str) -> None:
    now = time.time()
    for name in os.listdir(base):
        if name.startswith((f".{arch}.building-", f".{arch}.old-")):
            path = os.path.join(base, name)
            try:
                if now - os.path.getmtime(path) > _STALE_BUILD_S:
                    shutil.rmtree(path, ignore_errors=True)
            except OSError:
                pass


def _read(path: str) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def score_pairs(arch: str, dataroot: str) -> tuple[np.ndarray, np.ndarray]:
    """(inputs, targets): N x H x W x 3 uint8 arrays of the held-out test crops."""
    if arch == "cyclegan":
        folder, truth = os.path.join(dataroot, "testA"), os.path.join(dataroot, "testA_true")
        names = sorted(os.listdir(folder)) if os.path.isdir(folder) else []
        if not names or not os.path.isdir(truth):
            raise DatasetError(f"{dataroot} is not a cyclegan demo (needs testA/ and testA_true/); use prepare_demo")
        return (np.stack([_read(os.path.join(folder, n)) for n in names]),
                np.stack([_read(os.path.join(truth, n)) for n in names]))
    if arch == "pix2pix":
        folder = os.path.join(dataroot, "test")
        names = sorted(os.listdir(folder)) if os.path.isdir(folder) else []
        if not names:
            raise DatasetError(f"{dataroot} is not a pix2pix demo (needs test/); use prepare_demo")
        ab = np.stack([_read(os.path.join(folder, n)) for n in names])
        w2 = ab.shape[2] // 2
        return ab[:, :, :w2], ab[:, :, w2:]
    raise DatasetError(f"no demo for arch {arch!r}; choose one of {', '.join(BUILDERS)}")


def demo_score(arch: str, generator, dataroot: str, device="cpu", batch_size: int = 16) -> dict[str, float]:
    """Mean absolute error, in [0, 1] pixel units, on the held-out test crops:
    {"model": generator's output vs the true target, "identity": input vs target}.

    `generator` maps the model's A side to B (cyclegan: G_A; pix2pix: G) and
    sees inputs exactly as in training, normalized to [-1, 1], uncropped and
    unflipped. It runs in eval mode under no_grad; its mode is restored after.
    """
    inputs, targets = score_pairs(arch, dataroot)
    x01 = torch.from_numpy(inputs).permute(0, 3, 1, 2).float().div_(255)
    t01 = torch.from_numpy(targets).permute(0, 3, 1, 2).float().div_(255)
    params = list(generator.parameters()) if hasattr(generator, "parameters") else []
    dtype = params[0].dtype if params and params[0].is_floating_point() else torch.float32
    was_training = getattr(generator, "training", False)
    if hasattr(generator, "eval"):
        generator.eval()
    err = 0.0
    try:
        with torch.no_grad():
            for s in range(0, len(x01), batch_size):
                x = x01[s : s + batch_size].sub(0.5).div(0.5).to(device, dtype)
                out = generator(x).float().cpu()
                if out.shape != x.shape:
                    raise ValueError(f"generator output {tuple(out.shape)} does not match input {tuple(x.shape)}")
                err += (out.add(1).div(2) - t01[s : s + batch_size]).abs().sum().item()
    finally:
        if was_training and hasattr(generator, "train"):
            generator.train()
    return {"model": err / t01.numel(), "identity": (x01 - t01).abs().mean().item()}


__all__ = ["DEMO_DEFAULTS", "DEMO_VERSION", "COUNTS", "prepare_demo", "demo_score", "demo_style", "style_uint8", "score_pairs"]
