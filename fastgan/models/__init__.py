"""Generators and discriminators with the reference's architectures and
state_dict keys, their initialization, and reference checkpoint files."""

import torch

from fastgan.models.checkpoint import (
    CheckpointError,
    export_state_dict,
    load_reference_checkpoint,
    remove_stale_temporaries,
    save_checkpoint_file,
    write_file_atomically,
)
from fastgan.models.discriminators import NLayerDiscriminator, PixelDiscriminator
from fastgan.models.generators import (
    ResnetBlock,
    ResnetGenerator,
    UnetGenerator,
    UnetSkipConnectionBlock,
)
from fastgan.models.init import INIT_TYPES, init_weights
from fastgan.models.norm import NORM_TYPES, get_norm_layer, use_conv_bias

NETG_TYPES = ("resnet_9blocks", "resnet_6blocks", "unet_256", "unet_128")
NETD_TYPES = ("basic", "n_layers", "pixel")


def define_G(input_nc, output_nc, ngf, netG, norm="batch", use_dropout=False,
             init_type="normal", init_gain=0.02, gpu_ids=(), *, padding_type="reflect"):
    """An initialized generator: the reference's signature. On the CPU, or on the first GPU
    of `gpu_ids` (not wrapped in DataParallel: several GPUs train under torchrun).

    netG: resnet_9blocks, resnet_6blocks, unet_256 (8 levels), unet_128 (7 levels).
    padding_type (fastgan's, keyword only) applies to the ResNet blocks only.
    """
    norm_layer = get_norm_layer(norm)
    if netG in ("resnet_9blocks", "resnet_6blocks"):
        n_blocks = 9 if netG == "resnet_9blocks" else 6
        net = ResnetGenerator(input_nc, output_nc, ngf, norm_layer=norm_layer,
                              use_dropout=use_dropout, n_blocks=n_blocks,
                              padding_type=padding_type)
    elif netG in ("unet_256", "unet_128"):
        num_downs = 8 if netG == "unet_256" else 7
        net = UnetGenerator(input_nc, output_nc, num_downs, ngf, norm_layer=norm_layer,
                            use_dropout=use_dropout)
    else:
        raise ValueError(f"unknown netG {netG!r}; valid: {', '.join(NETG_TYPES)}")
    return _on_first_gpu(init_weights(net, init_type, init_gain), gpu_ids)


def define_D(input_nc, ndf, netD, n_layers_D=3, norm="batch", init_type="normal",
             init_gain=0.02, gpu_ids=()):
    """An initialized discriminator: the reference's signature. On the CPU, or on the first
    GPU of `gpu_ids` (not wrapped in DataParallel).

    netD: basic (70x70 PatchGAN, 3 layers), n_layers (n_layers_D layers), pixel (1x1).
    """
    norm_layer = get_norm_layer(norm)
    if netD == "basic":
        net = NLayerDiscriminator(input_nc, ndf, n_layers=3, norm_layer=norm_layer)
    elif netD == "n_layers":
        net = NLayerDiscriminator(input_nc, ndf, n_layers=n_layers_D, norm_layer=norm_layer)
    elif netD == "pixel":
        net = PixelDiscriminator(input_nc, ndf, norm_layer=norm_layer)
    else:
        raise ValueError(f"unknown netD {netD!r}; valid: {', '.join(NETD_TYPES)}")
    return _on_first_gpu(init_weights(net, init_type, init_gain), gpu_ids)


def _on_first_gpu(net, gpu_ids):
    """The first of gpu_ids, where the reference's init_net puts the net (it initializes there,
    and wraps it in DataParallel; fastgan initializes on the CPU, so the weights are the CPU
    draw, and returns the plain net)."""
    gpu_ids = list(gpu_ids)
    if not gpu_ids:
        return net
    if not torch.cuda.is_available():
        raise ValueError(f"gpu_ids {gpu_ids}: no CUDA device here; pass gpu_ids=[] for the CPU")
    return net.to(f"cuda:{gpu_ids[0]}")


def generator_size_multiple(netG: str) -> int:
    """What an input side must be a multiple of for the generator's output to have its size:
    a ResNet generator halves twice, unet_N halves log2(N) times."""
    return int(netG.split("_")[1]) if netG.startswith("unet_") else 4


def generator_smallest_side(netG: str, padding_type: str = "reflect") -> int:
    """The smallest input side the generator takes. A ResNet generator reflect-pads its input
    by 3 (4 pixels or more), and its blocks, with padding_type reflect, pad by one what its
    two stride-2 convs leave (ceil(side / 4) pixels), which needs 2 of them; unet_N halves a
    side of N down to 1."""
    if netG.startswith("unet_"):
        return int(netG.split("_")[1])
    return 5 if padding_type == "reflect" else 4


def generator_norm_gets_one_value(netG: str, norm: str, h: int, w: int, batch: int = 1,
                                  eval_mode: bool = False) -> bool:
    """Whether a norm layer of the generator would compute its statistics over a single value
    for a batch of `batch` h x w inputs (torch refuses it). A ResNet generator's blocks work on
    ceil(h/4) x ceil(w/4) pixels: one for a 4x4 input, which --padding_type zero or replicate
    lets in. Instance norm counts a plane's pixels, batch norm the batch's too, and none in
    eval mode (running statistics). A U-Net's 1x1 innermost block has no norm."""
    if not netG.startswith("resnet_") or norm not in ("instance", "batch") or (norm == "batch" and eval_mode):
        return False
    values = -(-h // 4) * -(-w // 4) * (batch if norm == "batch" else 1)
    return values < 2


def count_parameters(net):
    """Number of parameters, trainable or not, as the reference prints it."""
    return sum(p.numel() for p in net.parameters())


__all__ = [
    "CheckpointError",
    "INIT_TYPES",
    "NETD_TYPES",
    "NETG_TYPES",
    "NLayerDiscriminator",
    "NORM_TYPES",
    "PixelDiscriminator",
    "ResnetBlock",
    "ResnetGenerator",
    "UnetGenerator",
    "UnetSkipConnectionBlock",
    "count_parameters",
    "define_D",
    "define_G",
    "export_state_dict",
    "generator_norm_gets_one_value",
    "generator_size_multiple",
    "generator_smallest_side",
    "get_norm_layer",
    "init_weights",
    "load_reference_checkpoint",
    "remove_stale_temporaries",
    "save_checkpoint_file",
    "use_conv_bias",
    "write_file_atomically",
]
