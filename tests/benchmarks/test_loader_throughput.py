"""benchmarks/loader_throughput.py on this CPU, tiny: rows side by side, written as each
loader finishes (the GPU suite caps the step; a cut run keeps what it measured)."""

from __future__ import annotations

import json

import pytest

from benchmarks import loader_throughput
from tests.benchmarks.usage import assert_usage_error

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


def test_a_dali_that_cannot_run_here_is_left_out_and_the_other_rows_go_on(tmp_path, monkeypatch):
    import torch

    from fastgan.data.dali_loader import DaliUnavailable

    monkeypatch.chdir(tmp_path)
    real = loader_throughput.loaders

    def dali_cannot_build(opt, device):
        def refused():
            raise DaliUnavailable(torch.device("cpu"), "no driver")
        rows = real(opt, device)
        return {"torch": rows["torch"], "dali": refused, "cache": rows["cache"]}

    monkeypatch.setattr(loader_throughput, "loaders", dali_cannot_build)
    loader_throughput.main([*TINY, "--out", str(tmp_path / "out")])
    written = results(tmp_path / "out")
    assert [r["loader"] for r in written["rows"]] == ["torch", "cache"]
    assert written["config"]["dali"] == "left out (NVIDIA DALI cannot build its pipeline on cpu (no driver))"


@pytest.mark.parametrize("change,message", [
    (["--seconds", "nan"], "--seconds nan: a number of seconds"),
    (["--size", "64"], "--size 64: expected WxH"),
    (["--size", "0x0"], "--size 0x0: expected WxH"),
    (["--batch_size", "0"], "--batch_size 0: must be at least 1"),
    (["--crop_size", "64"], "--crop_size 64 is larger than --load_size 40"),
    (["--loaders", "torch,foo"], "--loaders foo: the rows here are torch"),
])
def test_arguments_it_cannot_run_are_usage_errors(change, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    args = dict(zip(TINY[::2], TINY[1::2]))
    args.update(zip(change[::2], change[1::2]))
    assert_usage_error(loader_throughput.main, [item for pair in args.items() for item in pair], tmp_path / "out",
                       message, capsys)


def test_without_dali_the_results_say_its_rows_were_left_out(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(loader_throughput, "dali_import_error", lambda: "No module named 'nvidia.dali'")
    loader_throughput.main([*TINY, "--out", str(tmp_path / "out")])
    report = results(tmp_path / "out")
    assert [r["loader"] for r in report["rows"]] == ["torch", "cache"]
    assert report["config"]["dali"] == "left out (No module named 'nvidia.dali')"


def test_a_cpu_run_on_a_gpu_machine_is_filed_under_the_cpu(tmp_path, monkeypatch):
    """--device cpu where a GPU is present: the rows are the CPU's, so is the file's name (the
    card's file is the one the GPU targets are judged from)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("torch.cuda.is_available", lambda: True)
    monkeypatch.setattr("torch.cuda.get_device_name", lambda *a: "NVIDIA H200")
    loader_throughput.main([*TINY, "--device", "cpu", "--loaders", "torch", "--out", str(tmp_path / "out")])
    assert [p.name for p in (tmp_path / "out").glob("loader_*.json")] == ["loader_cpu.json"]
    assert "cores" in results(tmp_path / "out")["machine"]


@pytest.mark.parametrize("device,order", [
    ("cpu", ["torch", "dali", "dali, all in DALI", "cache"]),
    ("cuda", ["torch", "cache", "dali"]),  # the cache's row before DALI's GPU decoding, never run elsewhere
])
def test_the_loaders_are_measured_in_an_order_that_keeps_the_judged_rows(device, order, monkeypatch):
    import torch

    monkeypatch.setattr(loader_throughput, "dali_import_error", lambda: None)  # (as where DALI imports)
    # (the loaders are only named here, not made: no GPU needed)
    assert list(loader_throughput.loaders(None, torch.device(device))) == order
