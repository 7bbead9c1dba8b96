"""Modules built on fastgan.ops, with the parameters and state_dict keys of the torch modules they stand for,
and accelerate(), which rewrites any model's matching patterns into them in place."""

from fastgan.nn.accelerate import AccelerateReport, FusedResidualBlock, accelerate
from fastgan.nn.conv import Conv2d, ConvTranspose2d
from fastgan.nn.instance_norm_act import FusedInstanceNormAct
from fastgan.nn.reflect_conv2d import ReflectConv2d

__all__ = [
    "AccelerateReport",
    "Conv2d",
    "ConvTranspose2d",
    "FusedInstanceNormAct",
    "FusedResidualBlock",
    "ReflectConv2d",
    "accelerate",
]
