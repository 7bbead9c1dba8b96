"""The training step's speed levels: which of fastgan's paths a run takes.

  accelerate     fused modules (fastgan.accelerate: reflect-pad conv, instance
                 norm + activation, the residual add)
  compile        torch.compile of each net ("nets"); the step around them stays Python, which
                 CUDA graphs then capture whole
  cuda_graphs    the whole iteration captured once and replayed (CUDA only)
  amp            autocast to bf16 or fp16 (fp16 with a gradient scaler)
  channels_last  nets and batches in NHWC
  adam           torch.optim.Adam's implementation: "default" (torch's choice, as
                 the reference), "foreach" or "fused"
  merge_passes   a net's independent passes of one iteration run as one batch: a
                 generator's translation, identity and cycle passes (CycleGAN: G_A's
                 cycle pass waits on G_B's translation only, so G_B runs first), a
                 discriminator's real and fake passes. Only for per-sample nets
                 (--norm instance, instance_affine or none: a batch norm's statistics would mix the
                 passes); generators with dropout keep their passes apart (the
                 reference's order of random draws). Same values per sample, fewer
                 and larger kernels.
  cudnn_benchmark  cuDNN times its algorithms for each convolution shape on first use
                 and keeps the fastest (torch.backends.cudnn.benchmark; CUDA only). A
                 process-wide flag: building a model on a GPU sets it to its level. The
                 reference turns it on too (its BaseModel), except under --preprocess
                 scale_width, whose images vary in size: so does --eager. fastgan's
                 defaults leave it off wherever sizes vary (scale_width, none).

Defaults keep fp32 semantics: on a GPU accelerate + compile + CUDA graphs + fused Adam +
merged passes + cuDNN's timed algorithms, on a CPU accelerate + channels_last + fused Adam +
merged passes (compiling would dominate short runs; channels_last measured 1.1x faster than NCHW
for CycleGAN on this project's CPU, with the Winograd convolutions reading NHWC, and slower
for U-Net generators, so on a CPU it is a default, and in --fast, for ResNet ones only; torch's
fused CPU Adam took 19 ms a step for CycleGAN's 28.3M parameters against 59 ms for the
default single-tensor loop). A default that cannot apply is left
out: merged passes for batch-norm nets; channels_last on a CPU without --accelerate
(torch's own instance norm has a channels_last bug) or with dropout in the generator
(dropout draws its mask in memory order, so channels_last would change which units the
reference's random stream drops). Asked for explicitly, the first two are refused; the
third runs, equal to the reference in distribution only, as under --fast.
`--fast` takes the fastest combination measured for the device, mixed precision
included where it pays (bf16 on a GPU, on a CPU only with AMX); `--eager` is the
reference's path with none of fastgan's. Explicit options override the defaults; a level
the device cannot run is refused with a ValueError that says why, never dropped. On a CPU every level but eager also has malloc
keep freed blocks for reuse (fastgan/engine/host_memory.py; apply_process_levels).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields

import torch

from fastgan.engine.host_memory import reuse_freed_memory
from fastgan.options import sizes_vary

COMPILE_MODES = ("none", "nets")
AMP_MODES = ("none", "bf16", "fp16")
ADAM_IMPLS = ("default", "foreach", "fused")
LEVEL_NAMES = ("accelerate", "compile", "cuda_graphs", "amp", "channels_last", "adam", "merge_passes",
               "cudnn_benchmark")
PER_SAMPLE_NORMS = ("instance", "instance_affine", "none")  # the norms under which a net treats each sample alone


@dataclass(frozen=True)
class Levels:
    accelerate: bool = False
    compile: str = "none"
    cuda_graphs: bool = False
    amp: str = "none"
    channels_last: bool = False
    adam: str = "default"
    merge_passes: bool = False
    cudnn_benchmark: bool = False

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        return {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}[self.amp]

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format

    @property
    def is_eager(self) -> bool:
        """None of fastgan's paths: the reference's (whose cuDNN setting eager_levels follows)."""
        return dataclasses.replace(self, cudnn_benchmark=False) == Levels()

    def describe(self) -> str:
        if self.is_eager:
            return "eager (the reference's path)"
        on = [name for name in ("accelerate", "cuda_graphs", "channels_last", "merge_passes", "cudnn_benchmark")
              if getattr(self, name)]
        if self.compile != "none":
            on.append(f"compile={self.compile}")
        if self.amp != "none":
            on.append(f"amp={self.amp}")
        if self.adam != "default":
            on.append(f"adam={self.adam}")
        return ", ".join(on)


EAGER = Levels()


def eager_levels(opt, device: torch.device) -> Levels:
    """--eager: none of fastgan's paths, and cuDNN as the reference sets it (timed algorithms on a
    GPU, unless --preprocess scale_width: torch.backends.cudnn.benchmark in its BaseModel)."""
    return Levels(cudnn_benchmark=device.type == "cuda" and opt.preprocess != "scale_width")


# The oldest GPUs (compute capability) that Triton and inductor (--compile) support, and
# that have bf16 arithmetic (cuDNN's bf16 convolutions, autocast's bf16)
COMPILE_CAPABILITY = (7, 0)
BF16_CAPABILITY = (8, 0)


def gpu_can(device: torch.device, capability: tuple[int, int]) -> bool:
    """Whether the GPU `device` has at least that compute capability."""
    return tuple(torch.cuda.get_device_capability(device)) >= capability


def device_defaults(device: torch.device) -> Levels:
    """The fastest levels that keep fp32 semantics on `device`."""
    if device.type == "cuda":
        return Levels(accelerate=True, compile="nets" if gpu_can(device, COMPILE_CAPABILITY) else "none",
                      cuda_graphs=True, adam="fused", merge_passes=True, cudnn_benchmark=True)
    return Levels(accelerate=True, channels_last=True, adam="fused", merge_passes=True)


def cpu_has_amx() -> bool:
    """Whether this CPU has AMX tiles, which make oneDNN's bf16 convolutions faster than fp32."""
    check = getattr(torch.cpu, "_is_amx_tile_supported", None)
    return bool(check and check())


def fastest(device: torch.device) -> Levels:
    """--fast: the fastest combination for the device, mixed precision included.

    On a CPU bf16 autocast only pays with AMX: with AVX-512 alone oneDNN's bf16
    convolutions measured 1.6-1.7x slower than fp32 on this project's 2-core Xeon
    (3x3, 256 channels, 32x32, forward and backward), so there --fast stays fp32.
    benchmarks/train_throughput.py measures every level against eager.
    """
    if device.type == "cuda":
        return dataclasses.replace(device_defaults(device), channels_last=True,
                                   amp="bf16" if gpu_can(device, BF16_CAPABILITY) else "none")
    return Levels(accelerate=True, channels_last=True, amp="bf16" if cpu_has_amx() else "none", adam="fused",
                  merge_passes=True)


def describe_saved(levels: dict) -> str:
    """Levels saved as a dict (a training state's), described; names this fastgan lacks left out."""
    names = {f.name for f in fields(Levels)}
    return Levels(**{k: v for k, v in levels.items() if k in names}).describe()


def fast_note(device: torch.device, levels: Levels) -> str:
    """What --fast took (the run's `levels`) and why, for the start of a run: the device's
    fastest levels, less those the options typed or the model rule out, which it names."""
    best = fastest(device)
    why = " (no AMX, so bf16 convolutions would be slower than fp32)" if device.type == "cpu" and best.amp == "none" \
        else ""
    taken = f"--fast on {device.type}: {levels.describe()}{why}"
    if levels == best:
        return taken
    return f"{taken}; of the device's fastest ({best.describe()}) the options or the model leave out the rest"


def explicit_levels(opt) -> dict:
    """The level options the user set (None means: not set)."""
    return {name: getattr(opt, name) for name in LEVEL_NAMES if getattr(opt, name) is not None}


def resolve_levels(opt, device: torch.device) -> Levels:
    """The levels of a run: eager, --fast or the device's defaults, then what was set explicitly."""
    chosen = explicit_levels(opt)
    if opt.eager and opt.fast:
        raise ValueError("--eager and --fast contradict each other; pass one of them")
    if opt.eager:
        eager = eager_levels(opt, device)
        # --accelerate false agrees; --cudnn_benchmark is cuDNN's setting, which the reference
        # makes too (eager_levels): typed, it stands, where the device has cuDNN
        other = [name for name, value in chosen.items() if name != "cudnn_benchmark" and getattr(eager, name) != value]
        if other:
            flags = ", ".join(f"--{name} {str(chosen[name]).lower()}" for name in other)  # true, bf16
            raise ValueError(f"--eager runs the reference's plain path; it cannot be combined with {flags}")
        eager = dataclasses.replace(eager, cudnn_benchmark=chosen.get("cudnn_benchmark", eager.cudnn_benchmark))
        check_levels(eager, device)
        return eager
    base = fastest(device) if opt.fast else device_defaults(device)
    levels = Levels(**{**{f.name: getattr(base, f.name) for f in fields(Levels)}, **chosen})
    if levels.merge_passes and opt.norm not in PER_SAMPLE_NORMS:
        if chosen.get("merge_passes"):
            raise ValueError(f"--merge_passes needs nets that treat each sample alone (--norm instance, "
                             f"instance_affine or none); with --norm {opt.norm} the batch statistics would mix "
                             "the merged passes")
        levels = dataclasses.replace(levels, merge_passes=False)  # a default that cannot apply here
    if levels.compile != "none" and opt.lambda_gp > 0:
        # the gradient penalty differentiates the discriminator's input gradient (a double
        # backward), which torch.compile's AOT autograd does not support
        if "compile" in chosen:
            raise ValueError(f"--compile {levels.compile} with --lambda_gp: the gradient penalty differentiates "
                             "the discriminators twice, which torch.compile does not support; leave --compile out")
        levels = dataclasses.replace(levels, compile="none")  # a default that cannot apply here
    if levels.cuda_graphs and levels.amp == "fp16" and "cuda_graphs" not in chosen:
        # fp16's gradient scaler syncs with the host every step: a default that cannot apply
        levels = dataclasses.replace(levels, cuda_graphs=False)
    if levels.cuda_graphs and opt.arch == "cyclegan" and opt.pool_size > 0 and sizes_vary(opt.preprocess):
        # a pool of fakes of several sizes is the reference's list, drawn on the host: no capture
        if chosen.get("cuda_graphs"):
            raise ValueError(f"--cuda_graphs with --preprocess {opt.preprocess}: the images keep sizes of their "
                             "own, which the image pool then holds; use a --preprocess that crops, or "
                             "--pool_size 0")
        levels = dataclasses.replace(levels, cuda_graphs=False)  # a default that cannot apply here
    if levels.cudnn_benchmark and "cudnn_benchmark" not in chosen and sizes_vary(opt.preprocess):
        levels = dataclasses.replace(levels, cudnn_benchmark=False)  # each new size would be timed anew
    check_levels(levels, device)
    if levels.channels_last and not levels.accelerate and device.type == "cpu" and "instance" in opt.norm:
        # torch's CPU instance_norm backward returns wrong gradients for a batch of one in
        # channels_last when the incoming gradient is channels_last too (seen in torch 2.14;
        # refused at every batch size: an epoch's short last batch may hold one image);
        # fastgan's fused op, which --accelerate swaps in, does not have that bug
        if chosen.get("channels_last"):
            raise ValueError("--channels_last on a CPU with instance norm needs --accelerate: torch's own "
                             "CPU instance norm computes wrong gradients in channels_last for a batch of one "
                             "image (as an epoch's short last batch may be)")
        levels = dataclasses.replace(levels, channels_last=False)  # a default that cannot apply here
    if levels.channels_last and "channels_last" not in chosen and not opt.no_dropout and not opt.fast:
        levels = dataclasses.replace(levels, channels_last=False)  # keeps the reference's dropout draws
    if levels.channels_last and "channels_last" not in chosen and device.type == "cpu" \
            and not opt.netG.startswith("resnet"):
        # on a CPU NHWC pays through the Winograd kernels of ResNet blocks; pix2pix's U-Net
        # (4x4 strided convolutions, batch norm) measured slower in it: 3.82 against 4.70
        # images/s at 128² (benchmarks/train_throughput.py, 2-core Xeon)
        levels = dataclasses.replace(levels, channels_last=False)
    return levels


def check_levels(levels: Levels, device: torch.device) -> None:
    """Refuse what `device` cannot run, with the reason."""
    if levels.compile not in COMPILE_MODES:
        raise ValueError(f"--compile {levels.compile!r} is not one of {', '.join(COMPILE_MODES)}")
    if levels.amp not in AMP_MODES:
        raise ValueError(f"--amp {levels.amp!r} is not one of {', '.join(AMP_MODES)}")
    if levels.adam not in ADAM_IMPLS:
        raise ValueError(f"--adam {levels.adam!r} is not one of {', '.join(ADAM_IMPLS)}")
    if device.type != "cuda":
        if levels.cuda_graphs:
            raise ValueError(f"--cuda_graphs needs a CUDA device; this run is on {device.type}")
        if levels.cudnn_benchmark:
            raise ValueError(f"--cudnn_benchmark needs a CUDA device (cuDNN); this run is on {device.type}")
        if levels.amp == "fp16":
            raise ValueError(f"--amp fp16 needs a CUDA device (no fp16 autocast on {device.type}); "
                             "use --amp bf16")
    if levels.cuda_graphs and levels.amp == "fp16":
        raise ValueError("--cuda_graphs with --amp fp16: the gradient scaler syncs with the host every "
                         "step, which a CUDA graph cannot capture; use --amp bf16")
    if device.type == "cuda":
        name = "this GPU (compute capability %d.%d)" % tuple(torch.cuda.get_device_capability(device))
        if levels.compile != "none" and not gpu_can(device, COMPILE_CAPABILITY):
            raise ValueError(f"--compile needs Triton, which needs compute capability 7.0 or newer; {name} "
                             "is older: leave --compile out")
        if levels.amp == "bf16" and not gpu_can(device, BF16_CAPABILITY):
            raise ValueError(f"--amp bf16 needs compute capability 8.0 or newer (bf16 arithmetic); {name} "
                             "is older: use --amp fp16")


def apply_process_levels(levels: Levels, device: torch.device) -> None:
    """The process-wide settings of a model's levels. On a GPU, cuDNN's timed algorithms
    are set to this model's levels, so that each model built there (the eager baseline of
    a benchmark included) runs cuDNN as its levels say. On a CPU, every level but eager
    has glibc's malloc keep freed blocks for reuse (fastgan/engine/host_memory.py says
    why); that cannot be undone (benchmarks/train_throughput.py says what it does to eager)."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = levels.cudnn_benchmark
    elif device.type == "cpu" and not levels.is_eager:
        reuse_freed_memory()
