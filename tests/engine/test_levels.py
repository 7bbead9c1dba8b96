"""Speed levels: how they resolve per device, what is refused, and fidelity to the eager path."""

from __future__ import annotations

import pytest
import torch

import fastgan
from fastgan.engine.levels import EAGER, Levels, apply_process_levels, fast_note, resolve_levels
from fastgan.options import resolve
from tests.engine.cancelled_biases import instance_norm_cancelled_biases

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


@pytest.fixture(autouse=True)
def an_h100_where_there_is_no_gpu(monkeypatch):
    """The CUDA levels are resolved for a GPU's compute capability: without a GPU, an H100's."""
    if not torch.cuda.is_available():
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))


@pytest.mark.parametrize("capability", [(6, 1), (7, 0), (7, 5)])
def test_gpus_too_old_for_a_level_leave_its_default_out_and_refuse_it(capability, monkeypatch):
    """Triton and inductor need compute capability 7.0, bf16 arithmetic 8.0: a Pascal card's
    defaults do not compile, a Turing card's --fast stays fp32, and asking for either says why."""
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    can_compile = capability >= (7, 0)
    assert levels(CUDA).compile == ("nets" if can_compile else "none")
    assert levels(CUDA, fast=True).amp == "none" and levels(CUDA, fast=True).cuda_graphs
    with pytest.raises(ValueError, match=r"--amp bf16 needs compute capability 8.0 or newer.*\(compute capability "
                                         rf"{capability[0]}\.{capability[1]}\)"):
        levels(CUDA, amp="bf16")
    if not can_compile:
        with pytest.raises(ValueError, match="--compile needs Triton, which needs compute capability 7.0"):
            levels(CUDA, compile="nets")


def levels(device=CPU, arch="cyclegan", **explicit) -> Levels:
    return resolve_levels(resolve(arch, explicit), device)


def test_defaults_keep_fp32_and_fit_the_device():
    assert levels(CPU) == Levels(accelerate=True, channels_last=True, adam="fused", merge_passes=True)
    assert levels(CUDA) == Levels(accelerate=True, compile="nets", cuda_graphs=True, adam="fused", merge_passes=True,
                                  cudnn_benchmark=True)
    assert levels(CPU, eager=True) == EAGER and EAGER.describe().startswith("eager")


def test_fast_adds_mixed_precision_where_it_pays(monkeypatch):
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    assert levels(CPU, fast=True) == Levels(accelerate=True, channels_last=True, amp="bf16", adam="fused",
                                            merge_passes=True)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert levels(CPU, fast=True) == Levels(accelerate=True, channels_last=True, adam="fused", merge_passes=True)
    assert fast_note(CPU, levels(CPU, fast=True)) == ("--fast on cpu: accelerate, channels_last, merge_passes, "
                                                      "adam=fused (no AMX, so bf16 convolutions would be slower "
                                                      "than fp32)")
    fast_gpu = levels(CUDA, fast=True)
    assert fast_gpu.amp == "bf16" and fast_gpu.cuda_graphs and fast_gpu.channels_last and fast_gpu.cudnn_benchmark
    assert "amp=bf16" in fast_gpu.describe()


def test_the_fast_note_says_what_the_run_took(monkeypatch):
    """It described the device's fastest levels whatever the run took (--amp none: still amp=bf16)."""
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    assert fast_note(CPU, levels(CPU, fast=True)) == "--fast on cpu: accelerate, channels_last, merge_passes, " \
                                                     "amp=bf16, adam=fused"
    assert fast_note(CPU, levels(CPU, fast=True, amp="none")) == (
        "--fast on cpu: accelerate, channels_last, merge_passes, adam=fused; of the device's fastest (accelerate, "
        "channels_last, merge_passes, amp=bf16, adam=fused) the options or the model leave out the rest")


def test_explicit_options_override_the_defaults():
    assert levels(CPU, accelerate=False, merge_passes=False, adam="default") == EAGER  # channels_last: below
    assert levels(CUDA, cuda_graphs=False, compile="none").cuda_graphs is False
    assert levels(CPU, fast=True, amp="bf16", channels_last=False) == Levels(accelerate=True, amp="bf16",
                                                                            adam="fused", merge_passes=True)
    assert levels(CPU, channels_last=False) == Levels(accelerate=True, adam="fused", merge_passes=True)
    assert levels(CPU, adam="foreach", channels_last=True) == Levels(accelerate=True, adam="foreach",
                                                                    channels_last=True, merge_passes=True)


def test_a_cpu_default_that_cannot_apply_is_left_out():
    """channels_last is a CPU default, but without --accelerate torch's own instance norm
    runs, whose channels_last backward is wrong at batch 1: left out there; asked for, refused."""
    assert not levels(CPU, accelerate=False).channels_last
    assert not levels(CPU, accelerate=False, norm="instance_affine").channels_last
    assert levels(CPU, accelerate=False, norm="batch").channels_last
    with pytest.raises(ValueError, match="needs --accelerate"):
        levels(CPU, accelerate=False, channels_last=True)
    # dropout draws its mask in memory order: the default keeps NCHW, and the reference's draws
    resnet = dict(arch="pix2pix", netG="resnet_9blocks")
    assert not levels(CPU, **resnet).channels_last
    assert levels(CPU, **resnet, no_dropout=True).channels_last
    assert levels(CPU, **resnet, fast=True).channels_last  # --fast: the draws equal in distribution
    assert levels(CPU, arch="pix2pix", channels_last=True).channels_last


def test_channels_last_on_a_cpu_only_for_resnet_generators():
    """NHWC pays on a CPU through the Winograd kernels of ResNet blocks; the U-Net measured
    slower in it (benchmarks/train_throughput.py): neither the default nor --fast takes it
    there, asked for it runs; a GPU keeps it under --fast."""
    for level in ({}, {"fast": True}, {"no_dropout": True}):
        assert not levels(CPU, arch="pix2pix", **level).channels_last, level
        assert not levels(CPU, arch="cyclegan", netG="unet_256", **level).channels_last, level
    assert levels(CPU, arch="cyclegan", netG="resnet_6blocks", fast=True).channels_last
    assert levels(CPU, arch="pix2pix", netG="unet_256", channels_last=True).channels_last
    assert levels(CUDA, arch="pix2pix", fast=True).channels_last


def test_merged_passes_only_for_per_sample_nets():
    """Batch norm mixes the samples of a batch: merging passes would change its statistics. The
    default then stays off (pix2pix's reference default is batch norm); asked for, it is refused."""
    assert levels(CPU, norm="instance").merge_passes and levels(CPU, norm="none").merge_passes
    assert not levels(CPU, norm="batch").merge_passes
    assert not levels(CPU, arch="pix2pix").merge_passes
    assert "merge_passes" in levels(CPU).describe()
    with pytest.raises(ValueError, match="--merge_passes needs nets that treat each sample alone"):
        levels(CPU, norm="batch", merge_passes=True)
    from fastgan.engine.pix2pix import Pix2Pix

    with pytest.raises(ValueError, match="merge_passes needs nets that treat each sample alone"):
        Pix2Pix(resolve("pix2pix", dict(ngf=4, ndf=4)), CPU, Levels(merge_passes=True))  # levels given as such


@pytest.mark.parametrize("explicit,message", [
    (dict(cuda_graphs=True), "--cuda_graphs needs a CUDA device"),
    (dict(amp="fp16"), "--amp fp16 needs a CUDA device"),
    (dict(cudnn_benchmark=True), "--cudnn_benchmark needs a CUDA device"),
    (dict(eager=True, amp="bf16"), "cannot be combined with --amp bf16"),
    (dict(eager=True, accelerate=False, channels_last=True), "cannot be combined with --channels_last true$"),
    (dict(eager=True, fast=True), "contradict"),
    (dict(channels_last=True, accelerate=False), "needs --accelerate"),
])
def test_levels_the_cpu_cannot_run_are_refused(explicit, message):
    with pytest.raises(ValueError, match=message):
        levels(CPU, **explicit)


def test_eager_takes_level_options_that_agree_with_it():
    assert levels(CPU, eager=True, accelerate=False, compile="none", amp="none", adam="default").is_eager
    # cuDNN's setting, the reference's too: typed, it stands on a GPU (which the reference's
    # eager_levels turns on) and is refused on a CPU for want of cuDNN, not for --eager
    assert levels(CPU, eager=True, cudnn_benchmark=False).is_eager
    with pytest.raises(ValueError, match="--cudnn_benchmark needs a CUDA device"):
        levels(CPU, eager=True, cudnn_benchmark=True)
    for preprocess in ("resize_and_crop", "scale_width"):
        chosen = levels(CUDA, eager=True, cudnn_benchmark=False, preprocess=preprocess)
        assert not chosen.cudnn_benchmark and chosen.is_eager
        assert levels(CUDA, eager=True, cudnn_benchmark=True, preprocess=preprocess).cudnn_benchmark


def test_cuda_levels_that_do_not_compose_are_refused():
    with pytest.raises(ValueError, match="gradient scaler"):
        levels(CUDA, amp="fp16", cuda_graphs=True)
    with pytest.raises(ValueError, match="--compile 'step'"):
        levels(CUDA, compile="step")


def test_fp16_leaves_out_the_graphs_it_cannot_run_unless_they_were_asked_for():
    for base in ({}, {"fast": True}):
        chosen = levels(CUDA, amp="fp16", **base)
        assert chosen.amp == "fp16" and not chosen.cuda_graphs
        assert chosen.compile == "nets" and chosen.accelerate  # the other defaults stay


@pytest.mark.parametrize("arch", ["cyclegan", "pix2pix"])
def test_the_gradient_penalty_leaves_out_compile_which_cannot_differentiate_twice(arch):
    """--lambda_gp differentiates each discriminator's input gradient: torch.compile's AOT
    autograd refuses that double backward (at the first step, once a compiled net had run), so
    the GPU defaults and --fast leave --compile out, and asking for it is refused in words."""
    for base in ({}, {"fast": True}):
        chosen = levels(CUDA, arch, gan_mode="wgangp", lambda_gp=10.0, **base)
        assert chosen.compile == "none" and chosen.cuda_graphs and chosen.accelerate  # the other defaults stay
    assert levels(CUDA, arch, gan_mode="wgangp").compile == "nets"
    for device in (CPU, CUDA):
        with pytest.raises(ValueError, match="--compile nets with --lambda_gp: the gradient penalty differentiates "
                                             "the discriminators twice, which torch.compile does not support"):
            levels(device, arch, gan_mode="wgangp", lambda_gp=10.0, compile="nets")


@pytest.mark.parametrize("preprocess", ["none", "scale_width"])
def test_images_of_their_own_sizes_leave_out_the_graphs_of_a_pooled_cyclegan(preprocess):
    """The pool of fakes of several sizes is the reference's list (host draws): no capture."""
    assert not levels(CUDA, preprocess=preprocess).cuda_graphs
    assert levels(CUDA, preprocess=preprocess).compile == "nets"  # the other defaults stay
    assert levels(CUDA, preprocess=preprocess, pool_size=0).cuda_graphs
    assert levels(CUDA, "pix2pix", preprocess=preprocess).cuda_graphs  # no pool there
    assert levels(CUDA, preprocess="scale_width_and_crop").cuda_graphs
    assert levels(CUDA, preprocess="resize").cuda_graphs  # every image load_size²
    with pytest.raises(ValueError, match=f"--cuda_graphs with --preprocess {preprocess}: the images keep sizes"):
        levels(CUDA, preprocess=preprocess, cuda_graphs=True)


def test_cudnn_benchmark_follows_each_models_levels(monkeypatch):
    """A process-wide flag, set on a GPU to the levels of the model being built (a benchmark's
    eager baseline runs cuDNN as the reference sets it); untouched on a CPU."""
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    apply_process_levels(levels(CUDA), CUDA)
    assert torch.backends.cudnn.benchmark
    apply_process_levels(levels(CUDA, cudnn_benchmark=False), CUDA)
    assert not torch.backends.cudnn.benchmark
    apply_process_levels(levels(CUDA, fast=True), CUDA)
    apply_process_levels(EAGER, CPU)
    assert torch.backends.cudnn.benchmark
    apply_process_levels(levels(CUDA, eager=True, preprocess="scale_width"), CUDA)
    assert not torch.backends.cudnn.benchmark
    assert "cudnn_benchmark" in levels(CUDA).describe() and "cudnn_benchmark" not in levels(CPU).describe()


def test_eager_sets_cudnn_as_the_reference_does():
    """The reference's BaseModel turns torch.backends.cudnn.benchmark on, except under
    --preprocess scale_width (its images vary in size): --eager on a GPU does the same; fastgan's
    own defaults leave it off wherever sizes vary."""
    eager = levels(CUDA, eager=True)
    assert eager == Levels(cudnn_benchmark=True) and eager.is_eager and eager.describe().startswith("eager")
    assert levels(CUDA, eager=True, preprocess="scale_width") == EAGER
    assert levels(CUDA, eager=True, preprocess="none").cudnn_benchmark
    assert levels(CUDA, eager=True, preprocess="scale_width_and_crop").cudnn_benchmark  # (only scale_width)
    assert levels(CPU, eager=True) == EAGER
    for preprocess in ("none", "scale_width"):
        assert not levels(CUDA, preprocess=preprocess, cuda_graphs=False).cudnn_benchmark, preprocess
    assert levels(CUDA, preprocess="none", cuda_graphs=False, cudnn_benchmark=True).cudnn_benchmark  # asked for
    assert not Levels(accelerate=True).is_eager


def test_build_model_takes_level_options():
    model = fastgan.build_model("cyclegan", ngf=4, ndf=4, netG="resnet_6blocks", device="cpu", amp="bf16")
    assert model.levels == Levels(accelerate=True, amp="bf16", channels_last=True, adam="fused", merge_passes=True)
    with pytest.raises(ValueError, match="--cuda_graphs"):
        fastgan.build_model("cyclegan", device="cpu", cuda_graphs=True)


# -- fidelity: every fp32 level against the eager path -------------------------------------
# The trajectories are compared in float64. In float32 this tiny CycleGAN is chaotic: the eager
# path itself, run on 1 and then 2 CPU threads, drifts from 1e-7 to 1e-3 relative by iteration 8
# and to 1e-1 by iteration 20 (Adam turns rounding-level gradients into lr-sized steps), so a
# float32 trajectory cannot tell a level's rounding from a level's bug. In float64 the same runs
# agree to ~1e-11, which leaves the 1e-4 bound free to catch any real difference.
# pool_size 0: the eager path keeps the reference's pool (Python's random), the other levels the
# device ring buffer (the torch RNG); equal in distribution (test_device_pool.py), not draw for draw.
ITERATIONS = 20
NETS = {"cyclegan": dict(netG="resnet_6blocks", pool_size=0),
        "pix2pix": dict(netG="unet_128", no_dropout=True, norm="instance")}


def run(arch, iterations=ITERATIONS, dtype=torch.float64, lr=0.0002, **level):
    model = fastgan.build_model(arch, ngf=4, ndf=4, device="cpu", seed=2, lr=lr, **NETS[arch], **level)
    for net in model.nets.values():
        net.to(dtype)
    size = 32 if arch == "cyclegan" else 128
    g = torch.Generator().manual_seed(9)
    history = []
    for _ in range(iterations):
        A, B = (torch.rand(1, 3, size, size, generator=g, dtype=torch.float64).to(dtype) * 2 - 1 for _ in range(2))
        history.append(model.train_step({"A": A, "B": B}))
    return model, history


def assert_losses_close(history, reference, rel):
    for i, (losses, ref) in enumerate(zip(history, reference)):
        for k, v in ref.items():
            assert losses[k] == pytest.approx(v, rel=rel, abs=1e-9), f"iteration {i}: {k}"


@pytest.fixture(scope="module")
def eager_runs():
    return {arch: run(arch, eager=True) for arch in ("cyclegan", "pix2pix")}


FP32_LEVELS = [
    dict(accelerate=True),  # with merged passes (the default)
    dict(accelerate=True, merge_passes=False),
    dict(accelerate=True, channels_last=True),
    dict(accelerate=True, adam="foreach"),
    dict(accelerate=False, adam="fused"),
]


@pytest.mark.parametrize("arch", ["cyclegan", "pix2pix"])
@pytest.mark.parametrize("level", FP32_LEVELS, ids=lambda d: ",".join(f"{k}={v}" for k, v in d.items()))
def test_fp32_levels_match_the_eager_path_over_20_iterations(eager_runs, arch, level):
    model, history = run(arch, **level)
    assert model.levels != EAGER
    assert_losses_close(history, eager_runs[arch][1], rel=1e-4)
    eager_model = eager_runs[arch][0]
    for name, net in model.nets.items():
        reference = eager_model.nets[name].state_dict()
        # the biases an instance norm cancels move by Adam-scaled float64 rounding noise (larger on the
        # Winograd path the per-shape measurement may pick): ~1e-9, not the other weights' bound
        cancelled = instance_norm_cancelled_biases(eager_model.nets[name])
        for key, value in net.state_dict().items():
            atol = 1e-7 if key in cancelled else 1e-9
            torch.testing.assert_close(value, reference[key], rtol=1e-4, atol=atol, msg=f"{name}.{key}")


def test_compiled_nets_match_the_eager_path(eager_runs):
    # cyclegan: its generators share their graphs, as do its discriminators (half the compile
    # time of pix2pix's U-Net, whose every level is a kernel of its own)
    model, history = run("cyclegan", iterations=3, accelerate=True, compile="nets")
    assert model.levels.compile == "nets" and all(model.run_nets[k] is not model.nets[k] for k in model.nets)
    assert_losses_close(history, eager_runs["cyclegan"][1][:3], rel=1e-4)


def test_the_eager_comparison_can_fail(eager_runs):
    """A 5% different learning rate must break the 1e-4 match (the check above is not vacuous)."""
    _, history = run("cyclegan", lr=0.00021, accelerate=True)
    with pytest.raises(AssertionError):
        assert_losses_close(history, eager_runs["cyclegan"][1], rel=1e-4)


def test_float32_levels_match_the_eager_path_while_not_yet_chaotic():
    """In float32: the first iterations' losses to float32 rounding (before the drift above starts).

    Weights are compared in float64 only: the biases of convs that an instance norm follows have a
    zero gradient in exact arithmetic, and Adam turns their rounding noise into lr-sized steps.
    """
    for arch in ("cyclegan", "pix2pix"):
        (_, eager), (_, fused) = (run(arch, iterations=3, dtype=torch.float32, **lv)
                                  for lv in (dict(eager=True), dict(accelerate=True, channels_last=True)))
        assert_losses_close(fused, eager, rel=1e-4)


def test_bf16_autocast_trains_close_to_fp32():
    _, reference = run("cyclegan", dtype=torch.float32, eager=True)
    model, history = run("cyclegan", dtype=torch.float32, amp="bf16")
    assert model.levels.amp == "bf16"
    # bf16 keeps 8 bits of mantissa: the first iteration's losses agree to a few percent,
    # and the cycle losses stay close over the run (tests a real mixed-precision path)
    assert_losses_close(history[:1], reference[:1], rel=3e-2)
    for k in ("cycle_A", "cycle_B"):
        last, ref_last = (sum(h[k] for h in hist[-5:]) / 5 for hist in (history, reference))
        assert last == pytest.approx(ref_last, rel=0.1), k


def test_no_graph_warm_up_without_cuda_graphs():
    """A benchmark times after iterations_before_replay steps: none to wait for on a CPU
    (tests/engine/test_levels_gpu.py checks the captured case)."""
    for level in ({}, {"eager": True}):
        m = fastgan.build_model("cyclegan", ngf=8, ndf=8, netG="resnet_6blocks", device="cpu", **level)
        assert m.iterations_before_replay == 0
