"""fastgan/file_lock.py: one process at a time holds a lock; the system drops it when that
process ends; a lock dropped with its file removed is taken anew on the next file."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from fastgan.file_lock import LockHeld, drop_lock, take_lock

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def hold_in_another_process(path: str) -> subprocess.Popen:
    """A process that takes the lock at `path` and waits, with it, until killed."""
    code = "import sys, time; from fastgan.file_lock import take_lock; f = take_lock(sys.argv[1]); print('held', " \
           "flush=True); time.sleep(60)"
    holder = subprocess.Popen([sys.executable, "-c", code, path], stdout=subprocess.PIPE, text=True, cwd=REPO)
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_a_lock_another_process_holds_names_it_until_that_process_ends(tmp_path):
    path = str(tmp_path / "x.lock")
    holder = hold_in_another_process(path)
    try:
        with pytest.raises(LockHeld) as e:
            take_lock(path)
        assert e.value.holder.startswith(f"pid {holder.pid} on ")
    finally:
        holder.kill()
        holder.wait()
    f = take_lock(path)  # killed: the system let go of its lock
    assert open(path).read() == f"pid {os.getpid()} on {os.uname().nodename}\n"
    drop_lock(f, path)
    assert not os.path.exists(path)


def test_a_lock_whose_file_its_holder_removed_is_taken_on_the_file_now_there(tmp_path, monkeypatch):
    """drop_lock removes the file before letting go: a process that opened the old file in
    between locks it once the holder lets go, and must not take that for the lock (it would
    run beside the process that locked the new file at the path)."""
    from fastgan import file_lock

    path = str(tmp_path / "x.lock")
    stale = open(path, "a+")  # opened just before its holder removed it and let go
    os.remove(path)
    newer = hold_in_another_process(path)  # the next process: a new file at the path, locked
    opened = []

    def open_the_stale_file_first(*args, **kwargs):
        opened.append(args[0])
        return stale if len(opened) == 1 else open(*args, **kwargs)

    monkeypatch.setattr(file_lock, "open", open_the_stale_file_first, raising=False)
    try:
        with pytest.raises(LockHeld) as e:
            take_lock(path)
        assert e.value.holder.startswith(f"pid {newer.pid} on ") and opened == [path, path]
    finally:
        stale.close()
        newer.kill()
        newer.wait()


def test_a_wait_takes_the_lock_once_its_holder_ends_and_gives_up_at_its_limit(tmp_path):
    import threading
    import time

    path = str(tmp_path / "x.lock")
    holder = hold_in_another_process(path)
    try:
        start = time.monotonic()
        with pytest.raises(LockHeld):
            take_lock(path, wait_s=0.3)
        assert time.monotonic() - start >= 0.3
        threading.Timer(0.3, holder.kill).start()
        f = take_lock(path, wait_s=30)  # taken once the holder is gone, long before 30 s
        assert time.monotonic() - start < 20
    finally:
        holder.kill()
        holder.wait()
    drop_lock(f, path)


def test_a_file_system_without_locks_goes_on_unlocked(tmp_path, monkeypatch):
    """lockf refused with ENOLCK (some network mounts): no lock, no error (not "in use")."""
    import errno
    import fcntl

    def no_locks(f, flags):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "lockf", no_locks)
    assert take_lock(str(tmp_path / "lock")) is None
