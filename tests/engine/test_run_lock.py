"""fastgan/engine/run_lock.py: one training run per run folder at a time."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from fastgan.engine.run_lock import lock_run_folder, unlock_run_folder

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_a_run_folders_lock_is_the_process_own_not_its_forked_workers(tmp_path):
    """DataLoader workers are forked with the lock's file open: with flock they shared the lock,
    which outlived the run (its end, even SIGKILL) as long as they lived."""
    code = ("import os, sys, time; from fastgan.engine.run_lock import lock_run_folder; "
            "lock_run_folder(sys.argv[1]); child = os.fork()\n"
            "if child == 0: time.sleep(30); os._exit(0)\n"
            "print(child, flush=True); time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True,
                              cwd=REPO)
    worker = int(holder.stdout.readline())
    try:
        with pytest.raises(ValueError, match=f"in use by another fastgan.train \\(pid {holder.pid} on "):
            lock_run_folder(str(tmp_path))
        holder.kill()  # the run killed; its forked worker lives on
        holder.wait()
        lock_run_folder(str(tmp_path))
        assert unlock_run_folder(str(tmp_path))
    finally:
        os.kill(worker, signal.SIGKILL)


def test_locking_a_folder_this_process_holds_again_keeps_one_lock(tmp_path):
    from fastgan.engine import run_lock

    lock_run_folder(str(tmp_path))
    held = dict(run_lock._held)
    lock_run_folder(str(tmp_path))  # runs one after another in one process
    assert run_lock._held == held and len(held) == 1
    assert unlock_run_folder(str(tmp_path)) and not run_lock._held
    assert not unlock_run_folder(str(tmp_path))
