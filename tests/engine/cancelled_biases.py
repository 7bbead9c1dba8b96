"""Which parameters of a net no output depends on: the bias of a convolution that an
instance norm directly follows (the norm subtracts every per-channel constant). Their
gradient is zero in exact arithmetic, so Adam turns rounding noise into their steps:
two equal trainings agree on them only to that noise, not to the other weights' bound."""

from __future__ import annotations

from torch import nn


def instance_norm_cancelled_biases(net: nn.Module) -> set[str]:
    """state_dict keys `<sequential>.<i>.bias` where child i has a bias and child i + 1
    is an instance norm (torch's, or fastgan's fused one: the keys are the same)."""
    keys = set()
    for prefix, module in net.named_modules():
        if not isinstance(module, nn.Sequential):
            continue
        children = list(module.named_children())
        for (name, child), (_, after) in zip(children, children[1:]):
            if getattr(child, "bias", None) is not None and "InstanceNorm" in type(after).__name__:
                keys.add(f"{prefix}.{name}.bias" if prefix else f"{name}.bias")
    return keys
