"""benchmarks/loader_throughput.py on this CPU, tiny: rows side by side, written as each
loader finishes (the GPU suite caps the step; a cut run keeps what it measured)."""

from __future__ import annotations

import json

import pytest

from benchmarks import loader_throughput

TINY = ["--images", "8", "--size", "64x48", "--load_size", "40", "--crop_size", "32", "--batch_size", "4",
        "--workers", "1", "--seconds", "0.05"]


def results(out) -> dict:
    return json.loads(next(out.glob("loader_*.json")).read_text())


def test_rows_side_by_side(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the generated set goes under ./build
    loader_throughput.main([*TINY, "--loaders", "torch,cache", "--out", str(tmp_path / "out")])
    rows = results(tmp_path / "out")["rows"]
    assert [r["loader"] for r in rows] == ["torch", "cache"]
    assert rows[0]["vs_torch"] == 1.0 and all(r["images_per_s"] > 0 and r["epochs"] >= 1 for r in rows)


def test_a_run_stopped_after_its_first_loader_keeps_that_row(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    real = loader_throughput.loaders

    def torch_then_stopped(opt, device):
        def stopped():
            raise KeyboardInterrupt  # what the suite's time limit does to the run
        return {"torch": real(opt, device)["torch"], "cache": stopped}

    monkeypatch.setattr(loader_throughput, "loaders", torch_then_stopped)
    with pytest.raises(KeyboardInterrupt):
        loader_throughput.main([*TINY, "--out", str(tmp_path / "out")])
    assert [r["loader"] for r in results(tmp_path / "out")["rows"]] == ["torch"]
