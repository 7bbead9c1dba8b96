"""Measured choices (reflect_conv2d's kernels, the convolutions' algorithms): timing the
candidates after warm-up (candidate_seconds) and keeping the fastest per shape."""

from __future__ import annotations

import contextlib
import math
import statistics
import threading
import time
from typing import Callable, Iterator

import torch

from fastgan.ops._eager import saved_tensors_hooked

# (warm-up runs, timed runs) of each candidate: the first warm-up run of a Triton kernel
# compiles (and on a GPU autotunes) it; on a CPU the first runs also fault in a
# candidate's buffers (a few MB), which one warm-up run left in the timing
MEASURE_RUNS = {"cuda": (3, 10), "cpu": (3, 5)}


def candidate_seconds(candidates: dict[str, Callable[[], object]],
                      device: torch.device) -> dict[str, float | Exception]:
    """Each candidate's seconds per run after warm-up, or the exception it raised.

    On a GPU, the median of timed runs (CUDA events), one candidate after the other. On a
    CPU, rounds in which every candidate runs once in turn, and each one's fastest run:
    another process's load only ever adds time, and it then falls on all candidates
    alike. (Medians of runs taken one candidate after the other once kept oneDNN for a
    shape that Winograd runs 3x faster, on a machine other jobs were loading.)"""
    # the candidates' own graphs keep their saved tensors: a caller's saved-tensor hooks
    # (torch.utils.checkpoint(use_reentrant=False) measuring a new shape) must not see them
    # (pushing hooks while they are disabled would raise)
    hooked = saved_tensors_hooked() and torch._C._autograd._saved_tensors_hooks_is_enabled()
    with torch.autograd.graph.saved_tensors_hooks(_kept, _kept) if hooked else contextlib.nullcontext():
        return _candidate_seconds(candidates, device)


def _kept(tensor: torch.Tensor) -> torch.Tensor:
    return tensor


def _candidate_seconds(candidates: dict[str, Callable[[], object]],
                       device: torch.device) -> dict[str, float | Exception]:
    warmup, runs = MEASURE_RUNS.get(device.type, MEASURE_RUNS["cpu"])
    results: dict[str, float | Exception] = {}
    ready = {}
    for name, fn in candidates.items():
        try:
            for _ in range(warmup):
                fn()
            if device.type == "cuda":
                results[name] = _cuda_median_seconds(fn, device, runs)
            else:
                ready[name] = fn
        except Exception as e:
            results[name] = e
    fastest = dict.fromkeys(ready, math.inf)
    for _ in range(runs):
        for name, fn in list(ready.items()):
            start = time.perf_counter()
            try:
                fn()
            except Exception as e:
                results[name] = e
                del ready[name], fastest[name]
                continue
            fastest[name] = min(fastest[name], time.perf_counter() - start)
    results.update(fastest)
    return {name: results[name] for name in candidates}


def _cuda_median_seconds(fn: Callable[[], object], device: torch.device, runs: int) -> float:
    with torch.cuda.device(device):
        events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(runs)]
        for start, end in events:
            start.record()
            fn()
            end.record()
        torch.cuda.synchronize()
    return statistics.median(s.elapsed_time(e) / 1e3 for s, e in events)


UNREADABLE = (KeyError, TypeError, ValueError, AttributeError)  # what a saved entry of another shape raises


# Whether choices_by_size_class() is in force (process-wide: the test command's loop, a training run's)
_BY_SIZE_CLASS = {"on": False}


@contextlib.contextmanager
def choices_by_size_class() -> Iterator[None]:
    """Within the block, a choice measured for an activation of size (N, C, H, W) holds for
    every (N, C, H', W') of the same size class, H' * W' within the same power of 2 (rounded
    log2 of the pixels): images that keep sizes of their own (fastgan.test and fastgan.train
    under --preprocess none or scale_width) measure once per class, where each new size would
    measure anew (8 runs of both candidates per layer: several times the image's own time)."""
    previous = _BY_SIZE_CLASS["on"]
    _BY_SIZE_CLASS["on"] = True
    try:
        yield
    finally:
        _BY_SIZE_CLASS["on"] = previous


def activation_shape(shape) -> tuple:
    """The shape a measured choice's key holds for an activation (N, C, H, W): itself, or
    (N, C, "pixels 2^k") within choices_by_size_class()."""
    if not _BY_SIZE_CLASS["on"] or len(shape) != 4:
        return tuple(shape)
    n, c, h, w = shape
    return (n, c, f"pixels 2^{round(math.log2(max(h * w, 1)))}")


class MeasuredChoices:
    """Which candidate runs each shape, measured on the shape's first use and kept for the
    process: `key` is a hashable signature of everything the speed depends on.

    entries() / load() carry the choices to another process (a resumed training run keeps
    the kernels it measured before it stopped, so it continues bit for bit instead of
    re-measuring into a possibly different choice)."""

    def __init__(self, what: str, names: tuple[str, ...], default: str = "auto"):
        self.what = what
        self.names = names  # the candidates
        self.default = self.validate(default, forcing=True)  # the process's (its environment variable's)
        # .forced: this thread's innermost forced() block's choice, absent outside (read where
        # the op is called, through getattr: torch.compile guards on it, as on use_backend's)
        self._thread = threading.local()
        self._picks: dict[tuple, str] = {}
        self._times: dict[tuple, dict[str, float]] = {}
        # choices another process measured (the machine's cache, adopt()), taken into _picks
        # when their shape first comes: entries() then holds this process's shapes alone
        self._adopted: dict[tuple, tuple[str, dict[str, float]]] = {}

    @property
    def choice(self) -> str:
        """The choice in force in this thread: a candidate's name, or "auto" (measured)."""
        return getattr(self._thread, "forced", None) or self.default

    @contextlib.contextmanager
    def forced(self, name: str) -> Iterator[str]:
        """Within the block, in this thread, the choice is `name` (a candidate, or "auto")."""
        previous = getattr(self._thread, "forced", None)
        self._thread.forced = self.validate(name, forcing=True)
        try:
            yield name
        finally:
            self._thread.forced = previous

    def validate(self, name: str, forcing: bool = False) -> str:
        allowed = ("auto", *self.names) if forcing else self.names
        if name not in allowed:
            raise ValueError(f"{self.what}: unknown choice {name!r} (one of {', '.join(allowed)})")
        return name

    def get(self, key: tuple) -> str | None:
        pick = self._picks.get(key)
        if pick is None and self._adopted:
            adopted = self._adopted.get(key)
            if adopted is not None:  # recorded before it leaves _adopted: another thread asking finds one
                self.record(key, *adopted)
                self._adopted.pop(key, None)
                pick = adopted[0]
        return pick

    def record(self, key: tuple, pick: str, times: dict[str, float]) -> None:
        self._picks[key] = self.validate(pick)
        self._times[key] = dict(times)

    def entries(self) -> dict[tuple, dict]:
        """{key: {"choice": name, "times": {candidate: seconds}}} for every key this process
        measured, loaded or met among the adopted ones."""
        picks, times = self._picks.copy(), self._times.copy()  # (another thread may be measuring)
        return {k: {"choice": v, "times": dict(times.get(k, {}))} for k, v in picks.items()}

    def _read(self, entry: dict | str) -> tuple[str, dict[str, float]]:
        """(choice, times) of a saved entry; a bare name is also taken (the convolutions'
        choices were saved so before they kept their times)."""
        if isinstance(entry, str):
            entry = {"choice": entry, "times": {}}
        return self.validate(entry["choice"]), dict(entry.get("times", {}))

    def load(self, entries: dict[tuple, dict | str]) -> None:
        """Adopt what entries() returned. All or nothing: an entry that cannot be read raises
        before any is adopted."""
        for key, pick, times in self.checked(entries):
            self.record(key, pick, times)

    def checked(self, entries: dict[tuple, dict | str]) -> list[tuple[tuple, str, dict[str, float]]]:
        """(key, choice, times) of each entry, or a ValueError naming the first that cannot be read."""
        read = []
        for key, entry in entries.items():
            try:
                read.append((key, *self._read(entry)))
            except UNREADABLE as e:
                raise ValueError(f"{self.what}: the saved choice for {key} cannot be read ({e})") from None
        return read

    def adopt(self, entries: dict[tuple, dict | str]) -> None:
        """Keep readable() entries for the shapes this process may meet: each is taken when
        its shape first comes (get), as if measured here."""
        for key, entry in self.readable(entries).items():
            if key not in self._picks:
                self._adopted[key] = self._read(entry)

    def readable(self, entries: dict[tuple, dict | str]) -> dict[tuple, dict | str]:
        """The entries load() would adopt, each judged alone (another version's or a damaged
        file's cost only themselves); nothing adopted."""
        kept = {}
        for key, entry in entries.items():
            try:
                self._read(entry)
            except UNREADABLE:
                continue
            kept[key] = entry
        return kept

    def clear(self) -> None:
        self._picks.clear()
        self._times.clear()
        self._adopted.clear()

    def measure(self, key: tuple, candidates: dict[str, Callable[[], object]], device: torch.device,
                on_failure: Callable[[str, Exception], None] | None = None) -> str:
        """Times each candidate (candidate_seconds), keeps and returns the fastest's name.
        With `on_failure`, a candidate that raises is called with its name and error and
        counts as infinitely slow (unless all fail: the first error is raised); without
        it, the first error is raised."""
        results = candidate_seconds(candidates, device)
        errors = {name: r for name, r in results.items() if isinstance(r, Exception)}
        if errors and (on_failure is None or len(errors) == len(candidates)):
            raise next(iter(errors.values()))
        times = {name: math.inf if name in errors else r for name, r in results.items()}
        for name, e in errors.items():
            on_failure(name, e)
        pick = min(times, key=times.get)
        self.record(key, pick, times)
        return pick
