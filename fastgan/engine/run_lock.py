"""One training run per run folder at a time. Two runs writing one folder mix their
checkpoints, options and loss records: the folder is locked while a run lives."""

from __future__ import annotations

import os

from fastgan.file_lock import LockHeld, take_lock

LOCK_FILE = ".fastgan_train.lock"
_held: dict[str, object] = {}  # real path of a folder -> the open lock file this process holds


class RunFolderInUse(ValueError):
    """Another process trains in the run folder."""


def lock_run_folder(directory: str) -> None:
    """Takes `directory`'s lock for this process (again for a folder it holds already: runs
    one after another in one process). A POSIX record lock (lockf): the process's own, not
    its forked DataLoader workers', so the system drops it when the process ends, killed
    included. RunFolderInUse, naming the holder, when another process holds it; where the file
    system has no locks (some network mounts) the run goes on unlocked."""
    key = os.path.realpath(directory)
    if key in _held:
        return
    try:
        f = take_lock(os.path.join(directory, LOCK_FILE))
    except LockHeld as e:
        raise RunFolderInUse(f"{directory} is in use by another fastgan.train ({e.holder}): wait for it to end, "
                             "or train under another --name") from None
    if f is not None:
        _held[key] = f


def unlock_run_folder(directory: str) -> bool:
    """Gives `directory`'s lock back (a run that ended); whether this process held it."""
    f = _held.pop(os.path.realpath(directory), None)
    if f is not None:
        f.close()
    return f is not None
