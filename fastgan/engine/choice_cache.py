"""Measured kernel choices kept per machine, from one training or test run to the next.

reflect_conv2d and the convolutions time their candidate kernels on each shape's first use
and keep the faster (fastgan/ops/_reflect_conv2d.py, _unfolded_conv.py). Timing takes a
while at large shapes, and on a busy machine two runs can time their way to different
kernels, whose rounding then makes the losses of one command drift apart between runs.
So the trainer adopts, before its first iteration, the choices an earlier run measured on
this machine, and adds the ones it measured itself whenever it saves a checkpoint: the
first run measures, later ones (same machine, torch, thread count) compute with its kernels.
fastgan.test does the same where its generators run the fused modules (on a CPU): it adopts
at start and adds its own choices when it ends.

The file is ~/.cache/fastgan/choices/<machine key>.pt; FASTGAN_CHOICE_CACHE names another
folder, or is "off" for a run that measures everything itself. A resumed run's own choices
(training_state.pt) take precedence: they are loaded after these. Runs saving at the same
time take turns (a lock on <file>.lock, waited for up to LOCK_WAIT_S), so none drops
another's choices; an entry this fastgan cannot read (another version's, a damaged file's)
is passed over and left out of the next write, and the file is read as weights only (no
code runs from it).
"""

from __future__ import annotations

import hashlib
import os

import torch

from fastgan.engine.state import adopt_measured_choices, measured_choices, readable_choices
from fastgan.file_lock import LockHeld, take_lock
from fastgan.machine import cpu_model
from fastgan.ops import _native

ENV = "FASTGAN_CHOICE_CACHE"
# bump when the candidates or the keys of the measured choices change
VERSION = 2  # 2: the convolutions' choices keep their times ({"choice", "times"})
# (not bumped for the convolutions' float32 candidates under autocast: those keys are new
# ones, the others unchanged, and a fastgan that cannot read them passes them over)


def cache_folder() -> str | None:
    setting = os.environ.get(ENV, "")
    if setting.lower() == "off":
        return None
    return setting or os.path.join(os.path.expanduser("~"), ".cache", "fastgan", "choices")


def machine_key(device: torch.device) -> str:
    """What a kernel's measured speed depends on besides its shape: the processor (or GPU),
    the threads torch runs on, the torch build, fastgan._C's sources and this file's version
    (a rebuild from other sources measures again: its kernels may be other ones)."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        hardware = f"{torch.cuda.get_device_name(index)} sm{torch.cuda.get_device_capability(index)}"
    else:
        hardware = f"{cpu_model()} x{os.cpu_count()} threads{torch.get_num_threads()}"
    text = f"{hardware} | torch {torch.__version__} | fastgan._C {_native.source_hash()} | v{VERSION}"
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def cache_file(device: torch.device) -> str | None:
    folder = cache_folder()
    return None if folder is None else os.path.join(folder, f"{machine_key(device)}.pt")


def _read(path: str) -> tuple[dict, bool]:
    """The file's choices that this fastgan can read (none where it is missing, cut short or not
    ours: measured again and overwritten later), and whether that is all the file holds."""
    if not os.path.exists(path):
        return readable_choices({}), True
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)  # tuples of str, int, dtype
    except Exception:
        return readable_choices({}), False
    readable = readable_choices(saved)
    return readable, readable == saved


def adopt(device: torch.device) -> int:
    """Take the choices saved for this machine that this process has not measured itself;
    returns how many."""
    path = cache_file(device)
    if path is None:
        return 0
    saved, _ = _read(path)
    current = measured_choices()
    fresh = {kind: {k: v for k, v in saved[kind].items() if k not in current[kind]} for kind in current}
    adopt_measured_choices(fresh)  # each entry read already: cannot fail
    return sum(len(entries) for entries in fresh.values())


def adopted_note(count: int, device: torch.device, what: str) -> str:
    """The line a command prints when it adopted `count` choices (`what`: "run", "test")."""
    return (f"kernel choices: {count} measured by earlier runs on this machine, each taken if this {what} meets its "
            f"shape ({cache_file(device)}; {ENV}=off measures anew)")


# how long record() waits for another process's write: past it, this one is left out (a run
# stopped with Ctrl-Z while it held the lock must not stall every other run's saves)
LOCK_WAIT_S = 10.0


def record(device: torch.device) -> str | None:
    """Write this process's choices, and those already in the file, for later runs (one process
    at a time: the read, merge and write hold a lock), leaving out entries it cannot read. Never
    fails a run: a cache that cannot be written is only slower next time."""
    path = cache_file(device)
    if path is None:
        return None
    from fastgan.models import remove_stale_temporaries, save_checkpoint_file

    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        # None: no locks on this file system (some network homes): written unlocked
        lock = take_lock(f"{path}.lock", wait_s=LOCK_WAIT_S)
    except (LockHeld, OSError):
        return None
    try:
        saved, whole = _read(path)
        merged = {kind: {**saved[kind], **entries} for kind, entries in measured_choices().items()}
        if merged != saved or not whole:
            remove_stale_temporaries(os.path.dirname(path))
            save_checkpoint_file(merged, path)
    except OSError:
        return None
    finally:
        if lock is not None:
            lock.close()
    return path
