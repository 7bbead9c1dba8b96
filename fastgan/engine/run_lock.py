"""One training run per run folder at a time. Two runs writing one folder mix their
checkpoints, options and loss records, and the second's start would remove the first's
half-written saves as a killed run's leftovers: the folder is locked while a run lives."""

from __future__ import annotations

import fcntl
import os
import socket

LOCK_FILE = ".fastgan_train.lock"
_held: dict[str, object] = {}  # real path of a folder -> the open lock file this process holds


def lock_run_folder(directory: str) -> None:
    """Takes `directory`'s lock for this process (again for a folder it holds already: runs
    one after another in one process). The OS drops it when the process ends, killed
    included. ValueError, naming the holder, when another process holds it; where the file
    system has no locks (some network mounts) the run goes on unlocked."""
    key = os.path.realpath(directory)
    if key in _held:
        return
    f = open(os.path.join(directory, LOCK_FILE), "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        holder = f.read().strip() or "a process"
        f.close()
        raise ValueError(f"{directory} is in use by another fastgan.train ({holder}): wait for it to end, "
                         "or train under another --name") from None
    except OSError:  # no locks here
        f.close()
        return
    f.seek(0)
    f.truncate()
    f.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
    f.flush()
    _held[key] = f


def unlock_run_folder(directory: str) -> None:
    """Gives `directory`'s lock back (a run that ended; nothing when this process holds none)."""
    f = _held.pop(os.path.realpath(directory), None)
    if f is not None:
        f.close()
