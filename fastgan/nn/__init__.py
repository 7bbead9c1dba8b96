"""Modules built on fastgan.ops, with the parameters and state_dict keys of the torch modules they stand for."""

from fastgan.nn.instance_norm_act import FusedInstanceNormAct
from fastgan.nn.reflect_conv2d import ReflectConv2d

__all__ = [
    "FusedInstanceNormAct",
    "ReflectConv2d",
]
