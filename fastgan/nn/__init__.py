"""Modules built on fastgan.ops (FusedInstanceNormAct, ReflectConv2d) and accelerate()."""

from fastgan.nn.instance_norm_act import FusedInstanceNormAct
from fastgan.nn.reflect_conv2d import ReflectConv2d

__all__ = [
    "FusedInstanceNormAct",
    "ReflectConv2d",
]
