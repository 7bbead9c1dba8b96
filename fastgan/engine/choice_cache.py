"""Measured kernel choices kept per machine, from one training run to the next.

reflect_conv2d and the convolutions time their candidate kernels on each shape's first use
and keep the faster (fastgan/ops/_reflect_conv2d.py, _unfolded_conv.py). Timing takes a
while at large shapes, and on a busy machine two runs can time their way to different
kernels, whose rounding then makes the losses of one command drift apart between runs.
So the trainer adopts, before its first iteration, the choices an earlier run measured on
this machine, and adds the ones it measured itself whenever it saves a checkpoint: the
first run measures, later ones (same machine, torch, thread count) compute with its kernels.

The file is ~/.cache/fastgan/choices/<machine key>.pt; FASTGAN_CHOICE_CACHE names another
folder, or is "off" for a run that measures everything itself. A resumed run's own choices
(training_state.pt) take precedence: they are loaded after these.
"""

from __future__ import annotations

import hashlib
import os

import torch

from fastgan.engine.state import load_measured_choices, measured_choices
from fastgan.machine import cpu_model

ENV = "FASTGAN_CHOICE_CACHE"
# bump when the candidates or the keys of the measured choices change
VERSION = 2  # 2: the convolutions' choices keep their times ({"choice", "times"})
# (not bumped for the convolutions' float32 candidates under autocast: those keys are new
# ones, the others unchanged; a fastgan older than them drops a file that holds them)


def cache_folder() -> str | None:
    setting = os.environ.get(ENV, "")
    if setting.lower() == "off":
        return None
    return setting or os.path.join(os.path.expanduser("~"), ".cache", "fastgan", "choices")


def machine_key(device: torch.device) -> str:
    """What a kernel's measured speed depends on besides its shape: the processor (or GPU),
    the threads torch runs on, the torch build and this file's version."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        hardware = f"{torch.cuda.get_device_name(index)} sm{torch.cuda.get_device_capability(index)}"
    else:
        hardware = f"{cpu_model()} x{os.cpu_count()} threads{torch.get_num_threads()}"
    text = f"{hardware} | torch {torch.__version__} | v{VERSION}"
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def cache_file(device: torch.device) -> str | None:
    folder = cache_folder()
    return None if folder is None else os.path.join(folder, f"{machine_key(device)}.pt")


def _read(path: str) -> dict:
    """The file's choices; none where it is missing, cut short or not ours (measured again and
    overwritten later)."""
    if not os.path.exists(path):
        return {}
    try:
        return torch.load(path, map_location="cpu", weights_only=False)  # our own file: tuples of dtypes
    except Exception:
        return {}


def adopt(device: torch.device) -> int:
    """Take the choices saved for this machine that this process has not measured itself;
    returns how many."""
    path = cache_file(device)
    if path is None:
        return 0
    saved = _read(path)
    current = measured_choices()
    fresh = {kind: {k: v for k, v in saved.get(kind, {}).items() if k not in current[kind]} for kind in current}
    try:
        load_measured_choices(fresh)
    except ValueError:  # an entry this fastgan cannot read: measure anew (a cache never fails a run)
        return 0
    return sum(len(entries) for entries in fresh.values())


def record(device: torch.device) -> str | None:
    """Write this process's choices, and those already in the file, for later runs. Never fails
    a run: a cache that cannot be written is only slower next time."""
    path = cache_file(device)
    if path is None:
        return None
    from fastgan.models import remove_stale_temporaries, save_checkpoint_file

    saved = _read(path)
    current = measured_choices()
    merged = {kind: {**saved.get(kind, {}), **entries} for kind, entries in current.items()}
    if merged == saved:
        return path
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        remove_stale_temporaries(os.path.dirname(path))
        save_checkpoint_file(merged, path)
    except OSError:
        return None
    return path
