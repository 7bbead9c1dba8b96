"""An exclusive lock on a file, held by one process at a time and dropped by the system when
that process ends (killed included): what keeps two processes out of one run folder
(engine/run_lock.py) or one download (data/download.py, data/pretrained.py), and makes
writers of the kernel-choice cache take turns (engine/choice_cache.py)."""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import time


class LockHeld(Exception):
    """Another process holds the lock; `holder` is what it wrote into the file (its pid, host)."""

    def __init__(self, holder: str):
        super().__init__(holder)
        self.holder = holder


def take_lock(path: str, wait_s: float = 0.0):
    """Opens `path` (made if missing) and takes a POSIX record lock on it (lockf: the process's
    own, not its forked children's), writing this process's pid and host into it. Returns the
    open file, whose closing gives the lock back; None where the file system has no locks
    (some network mounts: the caller goes on unlocked). LockHeld when another process holds it
    after `wait_s` seconds of asking again."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            return _try_lock(path)
        except LockHeld:
            if time.monotonic() >= deadline:
                raise
        time.sleep(0.05)


def _try_lock(path: str):
    """take_lock's one try."""
    while True:
        f = open(path, "a+")
        try:
            fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = None
            if e.errno in (errno.EACCES, errno.EAGAIN):
                f.seek(0)
                holder = f.read().strip() or "a process"
            f.close()  # (this process's only descriptor on the file: closing it drops no lock of its own)
            if holder is None:
                return None
            raise LockHeld(holder) from None
        try:
            current = os.path.samestat(os.fstat(f.fileno()), os.stat(path))
        except FileNotFoundError:
            current = False
        if current:
            break
        f.close()  # a file its holder removed as it let go (drop_lock): lock the one at `path` now
    f.seek(0)
    f.truncate()
    f.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
    f.flush()
    return f


def drop_lock(f, path: str) -> None:
    """Gives back the lock take_lock returned (None: there was none) and removes its file: for a
    lock that guards one piece of work, not a folder's life. Removed before it is let go, so a
    process that opened it meanwhile finds it gone (take_lock then locks the new file)."""
    if f is None:
        return
    try:
        os.remove(path)
    except FileNotFoundError:
        pass
    f.close()
