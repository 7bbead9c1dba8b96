"""benchmarks/kernels: the tolerance a fused op's result is checked against before it is timed."""

from __future__ import annotations

from types import SimpleNamespace

import torch

from benchmarks.kernels.test_kernels import check_tolerance


def test_tf32_convolutions_on_a_gpu_get_tf32_tolerance(monkeypatch):
    conv, norm = SimpleNamespace(op="reflect_conv2d", dtype=torch.float32), \
        SimpleNamespace(op="instance_norm_act", dtype=torch.float32)
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", True)
    assert check_tolerance(conv, cuda) == 5e-3
    assert check_tolerance(conv, cpu) == check_tolerance(norm, cuda) == 1e-4
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    assert check_tolerance(conv, cuda) == 1e-4
    assert check_tolerance(SimpleNamespace(op="reflect_conv2d", dtype=torch.bfloat16), cuda) == 2e-2
