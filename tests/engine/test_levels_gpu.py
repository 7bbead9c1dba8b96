"""The GPU levels: CUDA-graph capture and replay, bf16/fp16 autocast, compile, on a CUDA device."""

from __future__ import annotations

import copy
import sys
import threading
import time

import pytest
import torch

import fastgan
import fastgan.ops as ops
from fastgan.engine.graphs import signature

pytestmark = pytest.mark.gpu


@pytest.fixture(autouse=True)
def vendor_reflect_convolutions():
    """reflect_conv2d as pad + cuDNN: these tests are about capture, autocast and compile;
    its Triton kernels (compiled and autotuned on first use per shape: CycleGAN's accelerate
    level warmed up 53 s on the H200, most of the GPU suite's test step) have their own
    tests in tests/ops, and the suite's training throughput runs them captured."""
    with ops.reflect_conv2d_choice("aten"):
        yield


def model(**level):
    return fastgan.build_model("cyclegan", ngf=8, ndf=8, netG="resnet_6blocks", device="cuda", seed=4,
                               **{"pool_size": 0, **level})


def batches(n, batch=2, size=64):
    g = torch.Generator().manual_seed(5)
    return [[(torch.rand(batch, 3, size, size, generator=g) * 2 - 1).cuda() for _ in range(2)] for _ in range(n)]


def test_graph_replay_matches_the_uncaptured_iteration():
    # cuDNN's deterministic algorithms, untimed: over 8 iterations Adam's first, sign-like
    # steps would turn an atomics-ordered gradient's last bits into loss differences
    torch.backends.cudnn.deterministic = True  # (tests/conftest.py restores it)
    plain = model(accelerate=True, compile="none", cuda_graphs=False, adam="fused", cudnn_benchmark=False)
    graphed = model(accelerate=True, compile="none", cuda_graphs=True, adam="fused", cudnn_benchmark=False)
    assert_replays_match(plain, graphed, batches(8))  # 3 warm-up, 1 capture, 4 replays


def assert_replays_match(plain, graphed, data):
    assert graphed.levels.cuda_graphs
    for i, (A, B) in enumerate(data):
        expected = plain.step(A, B)
        got = graphed.step(A, B)
        for k, v in expected.items():
            torch.testing.assert_close(got[k], v, rtol=1e-4, atol=1e-5, msg=f"iteration {i}: {k}")
    assert graphed._iterate.graph is not None
    torch.testing.assert_close(graphed.visuals["fake_B"], plain.visuals["fake_B"], rtol=1e-3, atol=1e-4)


def test_the_image_pool_draws_alike_in_a_replay_and_uncaptured():
    """pool_size > 0 (the other tests run without a pool): the device ring draws its coins and
    slots from the default CUDA generator, which the graph registers, so from the same seed a
    replay draws what the uncaptured iteration draws. Batches of 2 into pools of 3: filling,
    then swapping, over 3 warm-ups, the capture and 5 replays."""
    torch.backends.cudnn.deterministic = True  # (tests/conftest.py restores it)
    level = dict(pool_size=3, accelerate=True, compile="none", adam="fused", cudnn_benchmark=False)
    plain, graphed = model(cuda_graphs=False, **level), model(cuda_graphs=True, **level)
    for i, (A, B) in enumerate(batches(9)):
        torch.cuda.manual_seed(100 + i)
        expected = plain.step(A, B)
        torch.cuda.manual_seed(100 + i)
        got = graphed.step(A, B)
        for k, v in expected.items():
            torch.testing.assert_close(got[k], v, rtol=1e-4, atol=1e-5, msg=f"iteration {i}: {k}")
    assert graphed._iterate.graph is not None
    for name in ("fake_A_pool", "fake_B_pool"):
        mine, theirs = getattr(graphed, name), getattr(plain, name)
        assert int(mine.count) == int(theirs.count) == 3
        torch.testing.assert_close(mine.images, theirs.images, rtol=1e-3, atol=1e-4, msg=name)


def test_capture_goes_on_while_another_thread_allocates_pinned_memory():
    """A loader's threads (the DataLoader's pinning thread, DALI's) allocate page-locked
    memory while the training thread captures its iteration: fastgan/engine/graphs.py
    captures in thread_local mode, where only the capturing thread is restricted."""
    stop, errors, held = threading.Event(), [], []

    def pin():  # every block kept: each allocation is a fresh cudaHostAlloc, not a cached block
        try:
            while not stop.is_set() and len(held) < 4096:
                held.append(torch.empty(1 << 20, dtype=torch.uint8, pin_memory=True))
                time.sleep(0.001)
        except RuntimeError as e:
            errors.append(e)

    graphed = model(compile="none", cuda_graphs=True)
    iterate, during_capture = graphed._iterate, []
    capture = iterate._capture

    def counted_capture(inputs):  # how many blocks the thread pinned while this one captured
        before = len(held)
        capture(inputs)
        during_capture.append(len(held) - before)

    iterate._capture = counted_capture
    data = batches(graphed.iterations_before_replay + 2)
    for A, B in data[:graphed.iterations_before_replay - 1]:  # the side-stream warm-up
        graphed.step(A, B)
    pinning = threading.Thread(target=pin, daemon=True)
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-4)  # the threads take turns often: a short capture still sees pinning
    pinning.start()
    try:
        for A, B in data[graphed.iterations_before_replay - 1:]:  # the capture, then 2 replays
            losses = graphed.step(A, B)
    finally:
        stop.set()
        pinning.join()
        sys.setswitchinterval(interval)
    assert not errors, errors
    assert during_capture and during_capture[0] > 0, "no block was pinned while the iteration was captured"
    assert graphed._iterate.graph is not None
    assert all(torch.isfinite(v) for v in losses.values())


def test_replay_starts_after_iterations_before_replay():
    graphed = model(compile="none", cuda_graphs=True)
    data = batches(graphed.iterations_before_replay)
    assert len(data) == graphed._iterate.warmup + 1
    for A, B in data[:-1]:
        graphed.step(A, B)
    assert graphed._iterate.graph is None
    graphed.step(*data[-1])
    assert graphed._iterate.graph is not None


def test_a_short_batch_runs_outside_the_graph_and_replay_goes_on():
    """An epoch's short last batch, after the capture: it runs uncaptured, the same graph
    replays the next full batch, and every iteration's losses are the uncaptured run's."""
    torch.backends.cudnn.deterministic = True  # (tests/conftest.py restores it)
    level = dict(accelerate=True, compile="none", adam="fused", cudnn_benchmark=False)
    plain, graphed = model(cuda_graphs=False, **level), model(cuda_graphs=True, **level)
    data = batches(5) + batches(1, batch=1) + batches(1)
    assert_replays_match(plain, graphed, data[:5])  # 3 warm-up, 1 capture, 1 replay
    graph = graphed._iterate.graph
    assert_replays_match(plain, graphed, data[5:])  # the short batch, then a replay
    assert graphed._iterate.graph is graph


def test_a_short_batch_where_the_capture_would_come_warms_up_instead():
    """The capture needs warmed-up shapes (cuDNN's timing, a compiled net's compile
    cannot run inside it): an epoch's short batch arriving at the capture point is
    warmed up, and the full shape is captured on its own next call."""
    graphed = model(compile="none", cuda_graphs=True)
    full, (short,) = batches(graphed.iterations_before_replay), batches(1, batch=1)
    for A, B in full[:-1]:
        graphed.step(A, B)
    losses = graphed.step(*short)
    assert graphed._iterate.graph is None
    assert all(torch.isfinite(v) for v in losses.values())
    graphed.step(*full[-1])
    assert graphed._iterate.graph is not None
    assert graphed._iterate.plan.captured == signature(full[-1])


def test_the_learning_rate_schedule_reaches_the_graph():
    graphed = model(compile="none", cuda_graphs=True)
    data = batches(6)
    for A, B in data[:5]:
        graphed.step(A, B)
    for optimizer in graphed.optimizers.values():  # what a scheduler does: fill the lr tensor in place
        for group in optimizer.param_groups:
            group["lr"].fill_(0.0)
    before = {k: v.clone() for k, v in graphed.nets["G_A"].state_dict().items()}
    graphed.step(*data[5])
    after = graphed.nets["G_A"].state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # lr 0: Adam moves nothing


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_autocast_trains_close_to_fp32(amp):
    fp32 = model(compile="none", cuda_graphs=False)
    mixed = model(compile="none", cuda_graphs=False, amp=amp)
    assert (mixed.scaler is not None) == (amp == "fp16")
    (A, B), = batches(1)
    expected, got = fp32.step(A, B), mixed.step(A, B)
    for k in ("G_A", "cycle_A", "cycle_B", "D_A"):
        assert float(got[k]) == pytest.approx(float(expected[k]), rel=5e-2), k


@pytest.mark.timeout(180)  # inductor compiles four nets
@pytest.mark.parametrize("level", [{}, {"fast": True}], ids=["default", "fast"])
def test_the_default_and_fast_levels_train_as_the_plain_iteration(level):
    """The default level (compiled, captured, fp32) against the plain uncompiled, uncaptured
    iteration: inductor's fusions only reorder float32 rounding. --fast (bf16 autocast) against
    it at the autocast test's bound on the first iteration (before bf16's rounding has moved
    the weights apart), finite after."""
    torch.backends.cudnn.deterministic = True  # (tests/conftest.py restores it)
    m = model(cudnn_benchmark=False, **level)
    assert m.levels.cuda_graphs and m.levels.compile == "nets"
    plain = model(accelerate=True, compile="none", cuda_graphs=False, cudnn_benchmark=False)
    for i, (A, B) in enumerate(batches(6)):  # 3 warm-up, 1 capture, 2 replays
        expected, got = plain.step(A, B), m.step(A, B)
        for k, v in expected.items():
            if not level:
                torch.testing.assert_close(got[k], v, rtol=1e-3, atol=1e-4, msg=f"iteration {i}: {k}")
            elif i == 0 and k in ("G_A", "cycle_A", "cycle_B", "D_A"):
                assert float(got[k]) == pytest.approx(float(v), rel=5e-2), k
            else:
                assert torch.isfinite(got[k]), (i, k)
    assert m._iterate.graph is not None


@pytest.mark.parametrize("adam", ["foreach", "fused"])
def test_a_state_saved_without_graphs_resumes_into_a_captured_run_and_back(adam):
    """A run saved without CUDA graphs (torchrun, --eager, --amp fp16) resumed with them: its
    Adam is this run's capturable one, so the capture and the replays go through, and the
    schedule's end-of-epoch step keeps the graph's learning-rate tensor; resumed back
    without graphs, the optimizer steps with float rates."""
    torch.backends.cudnn.deterministic = True  # (tests/conftest.py restores it)
    level = dict(accelerate=True, compile="none", adam=adam, cudnn_benchmark=False)
    plain = model(cuda_graphs=False, **level)
    for A, B in batches(2):
        plain.step(A, B)
    graphed, continued = model(cuda_graphs=True, **level), model(cuda_graphs=False, **level)
    graphed.load_state_dict(plain.state_dict())
    continued.load_state_dict(plain.state_dict())  # the same state, resumed without graphs
    for i, (A, B) in enumerate(batches(6)):  # 3 warm-up, 1 capture, 2 replays
        expected, got = continued.step(A, B), graphed.step(A, B)
        for k, v in expected.items():
            torch.testing.assert_close(got[k], v, rtol=1e-3, atol=1e-4, msg=f"iteration {i}: {k}")
        if i == 4:
            lr = [g["lr"] for o in graphed.optimizers.values() for g in o.param_groups]
            graphed.update_learning_rate()
            continued.update_learning_rate()
            assert all(g["lr"] is t for g, t in zip((g for o in graphed.optimizers.values() for g in o.param_groups),
                                                     lr))
    assert graphed._iterate.graph is not None
    back = model(cuda_graphs=False, **level)
    back.load_state_dict(graphed.state_dict())
    back.update_learning_rate()
    continued.update_learning_rate()
    for i, (A, B) in enumerate(batches(2)):
        expected, got = continued.step(A, B), back.step(A, B)
        for k, v in expected.items():
            torch.testing.assert_close(got[k], v, rtol=1e-3, atol=1e-4, msg=f"resumed back, iteration {i}: {k}")


def test_a_captured_run_resumed_from_its_own_state_goes_on_as_the_uninterrupted_run():
    """The state of a run that replays a graph (device learning-rate tensors, capturable
    Adam's device step counters) loads into a fresh captured run, which warms up and
    captures again and trains as the run that was never stopped."""
    torch.backends.cudnn.deterministic = True  # (tests/conftest.py restores it)
    level = dict(accelerate=True, compile="none", cuda_graphs=True, adam="fused", cudnn_benchmark=False)
    data = batches(10)
    uninterrupted, stopped = model(**level), model(**level)
    expected = [{k: v.clone() for k, v in uninterrupted.step(A, B).items()} for A, B in data]
    for A, B in data[:6]:  # 3 warm-up, 1 capture, 2 replays
        stopped.step(A, B)
    assert stopped._iterate.graph is not None
    resumed = model(**level)
    resumed.load_state_dict(stopped.state_dict())
    for i, (A, B) in enumerate(data[6:], start=6):  # its own warm-up, then the capture
        got = resumed.step(A, B)
        for k, v in expected[i].items():
            torch.testing.assert_close(got[k], v, rtol=1e-4, atol=1e-5, msg=f"iteration {i}: {k}")


def test_a_state_loaded_into_a_run_that_replays_a_graph_trains_as_a_fresh_run_with_it():
    """load_state_dict after the capture (a library user's resume; the command line loads
    before its first step): the loaded optimizers' moments, steps and learning rates are new
    tensors, so the model drops its graph, warms up and captures again, and trains as a
    fresh captured run that loaded the same state."""
    torch.backends.cudnn.deterministic = True  # (tests/conftest.py restores it)
    level = dict(accelerate=True, compile="none", cuda_graphs=True, adam="fused", cudnn_benchmark=False)
    source = model(**level)
    for A, B in batches(2):
        source.step(A, B)
    state = copy.deepcopy(source.state_dict())  # (the optimizers' state holds the live tensors)
    replaying, fresh = model(**level), model(**level)
    for A, B in batches(6):  # 3 warm-up, 1 capture, 2 replays
        replaying.step(A, B)
    assert replaying._iterate.graph is not None
    replaying.load_state_dict(state)
    fresh.load_state_dict(state)
    for i, (A, B) in enumerate(batches(7)):  # warm-up, capture and replays again
        expected = {k: v.clone() for k, v in fresh.step(A, B).items()}
        got = replaying.step(A, B)
        for k, v in expected.items():
            torch.testing.assert_close(got[k], v, rtol=1e-4, atol=1e-5, msg=f"iteration {i}: {k}")
    assert replaying._iterate.graph is not None


def pix2pix_model(**level):
    return fastgan.build_model("pix2pix", ngf=8, ndf=8, netG="unet_128", device="cuda", seed=4, **level)


def test_pix2pix_graph_replay_matches_the_uncaptured_iteration():
    torch.backends.cudnn.deterministic = True  # (tests/conftest.py restores it)
    level = dict(accelerate=True, compile="none", adam="fused", cudnn_benchmark=False, no_dropout=True)
    plain, graphed = pix2pix_model(cuda_graphs=False, **level), pix2pix_model(cuda_graphs=True, **level)
    assert_replays_match(plain, graphed, batches(7, batch=1, size=128))  # 3 warm-up, 1 capture, 3 replays


def test_pix2pix_dropout_draws_fresh_masks_at_each_replay():
    """The reference's pix2pix G keeps dropout on in training: a replayed graph must draw new
    masks each time (CUDA graphs advance the generator's offset per replay), not repeat the
    captured ones. With the learning rate 0, the same input gives a new fake_B only through them."""
    graphed = pix2pix_model(accelerate=True, compile="none", cuda_graphs=True)
    (A, B), = batches(1, batch=1, size=128)
    for _ in range(4):  # 3 warm-up, 1 capture
        graphed.step(A, B)
    for optimizer in graphed.optimizers.values():
        for group in optimizer.param_groups:
            group["lr"].fill_(0.0)
    fakes = []
    for _ in range(2):
        losses = graphed.step(A, B)
        assert all(torch.isfinite(v) for v in losses.values())
        fakes.append(graphed.visuals["fake_B"].clone())
    assert not torch.equal(fakes[0], fakes[1])
