"""benchmarks/inference_throughput.py (fastgan.test's forward pass against the reference's modules)."""

from __future__ import annotations

import json

import pytest
import torch

from benchmarks import inference_throughput
from tests.benchmarks.usage import assert_usage_error


def test_each_path_timed_in_rounds_against_eager_and_fastgan_tests_marked(tmp_path):
    inference_throughput.main(["--ngf", "4", "--size", "32", "--images", "1", "--rounds", "3", "--warmup", "1",
                               "--out", str(tmp_path)])
    report = json.loads((tmp_path / "inference_throughput_cpu.json").read_text())
    rows = {r["path"]: r for r in report["rows"]}
    assert list(rows) == list(inference_throughput.PATHS) and report["rounds"] == 3
    assert rows["eager"]["vs_eager"] == 1.0 and rows["eager"]["round_ratio_median"] == 1.0
    for r in rows.values():
        assert r["images_per_second"] > 0 and r["spread"] >= 0
        assert r["vs_eager"] == pytest.approx(r["images_per_second"] / rows["eager"]["images_per_second"])
    assert report["fastgan_test_path"] == "accelerate+channels_last"  # a ResNet generator on a CPU
    md = (tmp_path / "inference_throughput_cpu.md").read_text()
    assert "| accelerate+channels_last (fastgan.test) |" in md and md.count("(fastgan.test)") == 1


def test_the_paths_it_times_are_fastgan_tests():
    from fastgan.nn import FusedInstanceNormAct

    nets = inference_throughput.generators("resnet_6blocks", 4, torch.device("cpu"))
    assert not any(isinstance(m, FusedInstanceNormAct) for m in nets["eager"][0].modules())
    for path in ("accelerate", "accelerate+channels_last"):
        assert any(isinstance(m, FusedInstanceNormAct) for m in nets[path][0].modules())
    assert nets["accelerate+channels_last"][1] == torch.channels_last
    assert inference_throughput.fastgan_test_path("unet_256", torch.device("cpu")) == "accelerate"
    assert inference_throughput.fastgan_test_path("resnet_9blocks", torch.device("cuda")) == "eager"


@pytest.mark.parametrize("args,message", [
    (["--rounds", "0"], "argument --rounds: 0 is not at least 1"),
    (["--netG", "unet_256", "--size", "128"], "--size 128: unet_256 takes sides that are multiples of 256"),
])
def test_arguments_it_cannot_run_are_usage_errors(args, message, tmp_path, capsys):
    assert_usage_error(inference_throughput.main, args, tmp_path / "out", message, capsys)
