"""Kernel benchmarks (pytest-benchmark): every case x provider x mode.

    make bench-kernels      # runs these and writes benchmarks/results/kernels_<machine>.{json,md}

Each benchmark records its case, provider, mode and the bytes it must move in
extra_info; benchmarks/kernels/report.py turns the run into GB/s and ratios
against the eager composition measured in the same run.
"""

import pytest
import torch

import fastgan.ops as ops
from benchmarks.kernels.cases import all_cases, providers

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
MODES = ["forward", "forward+backward"]


def sync():
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


def params():
    for case in all_cases(DEVICE):
        for provider in providers(DEVICE, case.op):
            for mode in MODES:
                yield pytest.param(case, provider, mode, id=f"{case.name}-{provider}-{mode}")


_compiled = {}


def runner(case, provider):
    if provider == "eager":
        return case.composition
    if provider == "compile":
        if case.name not in _compiled:
            _compiled[case.name] = torch.compile(case.composition, fullgraph=True)
        return _compiled[case.name]

    def fused(*args):
        with ops.use_backend(provider):
            return case.fused(*args)

    return fused


@pytest.mark.parametrize("case,provider,mode", list(params()))
def test_kernel(benchmark, case, provider, mode):
    inputs = case.make_inputs(DEVICE)
    fn = runner(case, provider)
    backward = mode == "forward+backward"

    grad_out = None

    def once():
        nonlocal grad_out
        for x in inputs:  # as a training step's zero_grad(set_to_none=True): gradients written, not added
            if isinstance(x, torch.Tensor):
                x.grad = None
        out = fn(*inputs)
        if backward:
            if grad_out is None:  # a fixed random upstream gradient, made outside the timing
                grad_out = torch.randn_like(out) if out.dim() else torch.ones_like(out)
            out.backward(grad_out)
        sync()
        return out

    # the fused result must equal the composition before its time means anything
    expected = case.composition(*inputs).detach().double()
    got = once().detach().double()
    tol = 1e-4 if case.dtype == torch.float32 else 2e-2
    assert torch.allclose(got, expected, rtol=tol, atol=tol), (provider, float((got - expected).abs().max()))

    benchmark.extra_info.update(op=case.op, shape=list(case.shape), dtype=str(case.dtype), provider=provider,
                                mode=mode, bytes=case.bytes_moved(mode), device=DEVICE.type)
    benchmark.pedantic(once, rounds=10, iterations=1, warmup_rounds=2)
