"""benchmarks/machine.py: results files replaced whole, and the code's commit in their provenance."""

from __future__ import annotations

import json
import os
import socket
import subprocess
from pathlib import Path

import pytest

from benchmarks import machine

REPO = Path(__file__).resolve().parents[2]


def test_a_write_stopped_midway_leaves_the_earlier_results_whole(tmp_path, monkeypatch):
    machine.write_results(str(tmp_path), "loader", {"rows": [1]}, "earlier\n", slug="m")

    def stopped(src, dst):  # the time limit arriving once the new text is written, before it replaces the old
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", stopped)
    with pytest.raises(KeyboardInterrupt):
        machine.write_results(str(tmp_path), "loader", {"rows": [1, 2]}, "later\n", slug="m")
    assert json.loads((tmp_path / "loader_m.json").read_text())["rows"] == [1]
    assert (tmp_path / "loader_m.md").read_text() == "earlier\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["loader_m.json", "loader_m.md"]


def test_the_provenance_names_the_codes_commit_wherever_the_command_runs(tmp_path, monkeypatch):
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)  # another checkout as the working folder
    monkeypatch.chdir(tmp_path)
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short=12", "HEAD"], capture_output=True,
                          text=True, check=True).stdout.strip()
    assert machine.provenance()["commit"] == head


def test_a_free_port_is_free_and_below_the_kernels_ephemeral_range():
    """Ranks started by hand (tests/engine/test_distributed.py, benchmarks/scaling.py) listen on
    it: one the kernel could hand to another connection before the master binds it is no use."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    ports = {machine.free_port() for _ in range(20)}
    assert len(ports) > 1 and all(1024 <= p < low for p in ports)
    for port in ports:
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))
            s.listen()
