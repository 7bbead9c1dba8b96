"""The machine a benchmark ran on, in words (GPU name, else CPU model and cores), and a
free port on it for ranks started by hand."""

from __future__ import annotations

import datetime
import json
import os
import random
import socket
import subprocess
import sys

import torch

from fastgan.machine import cpu_model

CODE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the checkout the benchmarks are in


def sync(device: torch.device | str) -> None:
    """Wait for the device's queued work (a no-op on the CPU): what every timer reads after."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def free_port() -> int:
    """A TCP port nothing is bound to on 127.0.0.1, for a master rank to listen on: one below
    the kernel's ephemeral range. One the kernel hands out (a bind to port 0) it can hand out
    again before the master binds it, to any outgoing connection, the other ranks' retried
    connects to that master included; below the range only a listener that picks it too can."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            ephemeral_low = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        ephemeral_low = 32768  # Linux's default
    low = max(1024, ephemeral_low - 12000)
    pick = random.SystemRandom()  # not the seeded global random: parallel runs would pick alike
    for _ in range(200):
        port = pick.randrange(low, ephemeral_low)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:  # taken
                continue
            return port
    raise RuntimeError(f"no free TCP port in [{low}, {ephemeral_low}) on 127.0.0.1 after 200 tries")


def describe_machine(device: torch.device | str | None = None) -> str:
    """The GPU's name, else the CPU's; the CPU's for a `device` on the CPU (a CPU run on a GPU
    machine must not be filed, and judged, under the card's name)."""
    if torch.cuda.is_available() and (device is None or torch.device(device).type == "cuda"):
        return f"{torch.cuda.get_device_name()} (torch {torch.__version__})"
    return f"{cpu_model()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads (torch {torch.__version__})"


def machine_slug(description: str | None = None) -> str:
    """A file-name-safe short name: the GPU's, or 'cpu'. Of a describe_machine() text when
    given (a report made elsewhere from a device's results), else of this machine."""
    description = description or describe_machine()
    if "cores" in description:  # describe_machine's CPU form
        return "cpu"
    gpu = description.split(" (torch")[0]
    return "".join(c if c.isalnum() else "-" for c in gpu.lower()).strip("-")


def provenance() -> dict:
    """Where a result comes from: the code's commit (git's, else $FASTGAN_COMMIT: a copy of the
    tree without .git, as on the lent GPU machine), whether files differed from it, when, and
    the command line."""
    def git(*args: str) -> str | None:
        try:
            # the code's own checkout, wherever the command was started from
            done = subprocess.run(["git", "-C", CODE_ROOT, *args], capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "--short=12", "HEAD")
    # (the results files the benchmarks rewrite are not a change to the code)
    changed = git("status", "--porcelain", "--untracked-files=no", "--", ":(top)",
                  ":(top,exclude)benchmarks/results") if commit else None
    return {"commit": commit or os.environ.get("FASTGAN_COMMIT"),
            "uncommitted_changes": bool(changed) if changed is not None else None,
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "command": " ".join([os.path.basename(sys.executable), *sys.argv])}


def write_results(out_dir: str, name: str, report: dict, text: str, slug: str | None = None) -> str:
    """benchmarks' results files: OUT_DIR/NAME_<machine>.json (report, with its provenance) and .md
    (text), the machine the report names (its "machine"), else this one; returns the stem."""
    os.makedirs(out_dir, exist_ok=True)
    stem = os.path.join(out_dir, f"{name}_{slug or machine_slug(report.get('machine'))}")
    report.setdefault("provenance", provenance())
    _replace(stem + ".json", json.dumps(report, indent=1))
    _replace(stem + ".md", text)
    return stem


def _replace(path: str, text: str) -> None:
    """path's content replaced by text at once: written beside it, then renamed over it (a run
    stopped while writing leaves the earlier results whole, not a truncated file)."""
    partial = f"{path}.{os.getpid()}.partial"
    try:
        with open(partial, "w") as f:
            f.write(text)
        os.replace(partial, path)
    finally:
        if os.path.exists(partial):
            os.remove(partial)
