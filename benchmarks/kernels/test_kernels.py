"""Kernel benchmarks (pytest-benchmark): every case x provider x mode.

    make bench-kernels      # runs these and writes benchmarks/results/kernels_<machine>.{json,md}

Each benchmark records its case, provider, mode and the bytes it must move in
extra_info; benchmarks/kernels/report.py turns the run into GB/s and ratios
against the eager composition measured in the same run.
"""

import statistics

import pytest
import torch

import fastgan.ops as ops
from fastgan.ops import _reflect_conv2d as conv_choice
from benchmarks.kernels.cases import all_cases, providers
from benchmarks.machine import describe_machine, sync
from fastgan.engine.host_memory import reuse_freed_memory

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
if DEVICE.type == "cpu":
    # Every provider under the allocator setting fastgan's trainer and test command run with
    # (fastgan/engine/host_memory.py). Without it, whether a call's outputs fault their pages
    # in anew depended on the cases run before (glibc's mmap threshold moves as blocks are
    # freed): the cpu back end's instance_norm_act 1x256x64x64 fp32 forward+backward took
    # 1.22 ms in the whole suite at 9130a1c, 0.63 ms with its own cases alone.
    reuse_freed_memory()
else:
    # cuDNN times its algorithms per shape, as the reference's trainer and test and fastgan's levels
    # run it: the pad + cuDNN baseline and the measured choice's aten candidate at their best
    torch.backends.cudnn.benchmark = True
MODES = ["forward", "forward+backward"]
WARMUP_ROUNDS = 2
# On a GPU one batch-1 call is microseconds of kernel behind tens of microseconds of
# launch and synchronization: a round runs the op this many times back to back and
# synchronizes once (report.py divides by it). On the CPU a call is synchronous.
CALLS_PER_ROUND = 20 if DEVICE.type == "cuda" else 1


def params():
    for case in all_cases(DEVICE):
        for provider in providers(DEVICE, case.op):
            for mode in MODES:
                yield pytest.param(case, provider, mode, id=f"{case.name}-{provider}-{mode}")


_compiled = {}
# every case of an op compiles the same code object (its composition's lambda), each case a
# recompile under dynamic=False: more cases than dynamo's default limit of 8
torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)


def runner(case, provider):
    if provider == "eager":
        return case.composition
    if provider == "compile":
        if case.name not in _compiled:  # static shapes: each case its own kernels, as a training step gets
            _compiled[case.name] = torch.compile(case.composition, fullgraph=True, dynamic=False)
        return _compiled[case.name]

    def fused(*args):
        with ops.use_backend(provider):
            return case.fused(*args)

    return fused


def check_tolerance(case, device: torch.device) -> float:
    """Of the largest value (sums of many products). float32 convolutions on a GPU run
    in TF32 where cuDNN may (torch's default, which the Triton kernels follow): both
    sides then round their products to 10-bit mantissas, apart by ~1e-3."""
    if case.dtype != torch.float32:
        return 2e-2
    if case.op == "reflect_conv2d" and device.type == "cuda" and torch.backends.cudnn.allow_tf32:
        return 5e-3
    return 1e-4


@pytest.mark.parametrize("case,provider,mode", list(params()))
def test_kernel(benchmark, case, provider, mode):
    measures_conv_choice = case.op == "reflect_conv2d" and provider in ("triton", "cpu")
    if measures_conv_choice:  # so that the cache afterwards holds this case's choices alone
        conv_choice.clear_selection_cache()
    inputs = case.make_inputs(DEVICE)
    fn = runner(case, provider)
    backward = mode == "forward+backward"

    grad_out = None

    def call():
        nonlocal grad_out
        for x in inputs:  # as a training step's zero_grad(set_to_none=True): gradients written, not added
            if isinstance(x, torch.Tensor):
                x.grad = None
        out = fn(*inputs)
        if backward:
            if grad_out is None:  # a fixed random upstream gradient, made outside the timing
                grad_out = torch.randn_like(out) if out.dim() else torch.ones_like(out)
            out.backward(grad_out)
        return out

    def once():
        out = call()
        sync(DEVICE)
        return out

    def calls():
        for _ in range(CALLS_PER_ROUND):
            call()

    def round_of_calls():
        calls()
        sync(DEVICE)

    # the fused result must equal the composition before its time means anything
    expected = case.composition(*inputs).detach().double()
    got = once().detach().double()
    tol = check_tolerance(case, DEVICE)
    scale = float(expected.abs().max()) or 1.0
    assert torch.allclose(got, expected, rtol=tol, atol=tol * scale), (provider, float((got - expected).abs().max()))

    timed, timing, device_seconds = round_of_calls, "wall", []
    if DEVICE.type == "cuda":
        timed, timing, device_seconds = graphed(calls, round_of_calls)
    benchmark.extra_info.update(op=case.op, shape=list(case.shape), dtype=str(case.dtype), layout=case.layout,
                                provider=provider,
                                mode=mode, bytes=case.bytes_moved(mode), device=DEVICE.type,
                                calls_per_round=CALLS_PER_ROUND, timing=timing, machine=describe_machine())
    benchmark.pedantic(timed, rounds=10, iterations=1, warmup_rounds=WARMUP_ROUNDS)
    if len(device_seconds) > WARMUP_ROUNDS:  # the rounds' device time (report.py takes it over the wall clock's;
        # none with --benchmark-disable, which runs the round once)
        benchmark.extra_info["device_round_s"] = statistics.median(device_seconds[WARMUP_ROUNDS:])
    if measures_conv_choice:  # what the measured choice took per phase, with both candidates' times
        benchmark.extra_info["selection"] = [{"phase": key[0], **entry}
                                             for key, entry in conv_choice.selection_cache().items()]


def graphed(calls, fallback):
    """(a round of `calls` captured once in a CUDA graph and replayed, "cuda events (graph
    replay)", the seconds of each round between CUDA events recorded around the replay): the
    device's work, as a step under --cuda_graphs runs it, without Python's per-call dispatch or
    the host's synchronization (the replay's launch still counts: the first event completes as
    soon as it is enqueued). A provider whose calls cannot be captured is timed as `fallback`
    (wall clock), and says why."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up off the capture: allocator pools, lazy inits
        calls()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    try:
        with torch.cuda.graph(graph):
            calls()
    except Exception as e:  # noqa: BLE001  (any capture failure: time it the plain way)
        torch.cuda.synchronize()
        return fallback, f"wall (capture failed: {str(e).splitlines()[0][:120]})", []
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    device_seconds = []

    def replay():
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        device_seconds.append(start.elapsed_time(end) / 1e3)  # (milliseconds)

    return replay, "cuda events (graph replay)", device_seconds
