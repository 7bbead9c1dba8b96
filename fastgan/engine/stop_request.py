"""SIGINT/SIGTERM during a training run: the first asks the run to stop after its current
iteration and save (a flag the loop reads), a second stops at once or right after the save
it came during; under torchrun, the copy of the signal torchrun's agent passes on is told
apart from a second request."""

from __future__ import annotations

import contextlib
import os
import signal
import sys


class StopNow(KeyboardInterrupt):
    """A second SIGINT/SIGTERM: stop at once (`signum`: that signal), unsaved, or right
    after the save it came during (`after_save`)."""

    def __init__(self, signum: int, after_save: bool = False):
        super().__init__(signal.Signals(signum).name)
        self.signum, self.after_save = signum, after_save


def launched_by_torchrun() -> bool:
    return "TORCHELASTIC_RUN_ID" in os.environ


class StopRequest:
    """Turns SIGINT/SIGTERM into a flag checked between iterations.

    Under torchrun a signal sent to every process of the job (Slurm's scancel, systemd's stop)
    reaches each rank twice: directly, and passed on by torchrun's agent. One repeat of the
    first signal is therefore taken for that copy, whenever it comes (a rank waiting in a
    collective for a slow peer runs its handler only once the wait ends), not for a second
    request; a later one stops at once. A copy still due when the run ends is swallowed too."""

    def __init__(self, label: str = ""):
        self.label = label  # ahead of each line it writes: which rank (distributed.rank_label)
        self.requested = False
        self.signal: int | None = None  # the first signal received
        self._previous = {}
        self._saving = False
        self._deferred: int | None = None  # a second signal that came during a save
        self._copy_due = launched_by_torchrun()  # torchrun's copy of the first signal, not yet seen

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: leave signals alone
                pass
        return self

    def _handle(self, signum, frame):
        if self.requested and self._copy_due and signum == self.signal:
            self._copy_due = False
            sys.stderr.write(f"\n{self.label}{signal.Signals(signum).name} again (torchrun passes on the one it "
                             "got): still stopping after this iteration and saving\n")
            return
        if self.requested and self._saving:  # a second signal waits for the files being written
            self._deferred = signum
            sys.stderr.write(f"\n{self.label}{signal.Signals(signum).name}: stopping once this save is written\n")
            return
        if self.requested:  # a second signal stops at once
            raise StopNow(signum)
        self.requested, self.signal = True, signum
        # straight to stderr: a handler must not wait for the progress bar's lock
        again = "twice more to stop at once, unsaved: torchrun passes on one copy" if self._copy_due \
            else "again to stop at once, unsaved"
        sys.stderr.write(f"\n{self.label}{signal.Signals(signum).name}: stopping after this iteration and saving "
                         f"({again})\n")

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            if sig == self.signal and self.requested and self._copy_due:
                handler = _swallow_once(sig, handler)  # torchrun's copy may still come
            signal.signal(sig, handler)

    @contextlib.contextmanager
    def saving(self):
        """A checkpoint being written: a second signal stops right after it rather than inside
        it, so the networks and the training state written together are of one iteration (a
        reference-style --continue_train or a test loads the networks alone)."""
        self._saving = True
        try:
            yield
        finally:
            self._saving = False
        if self._deferred is not None:
            raise StopNow(self._deferred, after_save=True)


def _swallow_once(signum: int, then):
    """A handler that ignores one `signum`, then puts `then` back."""
    def swallow(sig, frame):
        signal.signal(signum, then)
    return swallow
