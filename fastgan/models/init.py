"""Weight initialization as the reference does it."""

import torch
import torch.nn as nn

INIT_TYPES = ("normal", "xavier", "kaiming", "orthogonal")


def _init_weight(weight, init_type, init_gain):
    if init_type == "normal":
        nn.init.normal_(weight, 0.0, init_gain)
    elif init_type == "xavier":
        nn.init.xavier_normal_(weight, gain=init_gain)
    elif init_type == "kaiming":
        # The reference ignores init_gain here: He init for ReLU, fan_in.
        nn.init.kaiming_normal_(weight, a=0, mode="fan_in")
    else:  # orthogonal
        nn.init.orthogonal_(weight, gain=init_gain)


@torch.no_grad()
def init_weights(net, init_type="normal", init_gain=0.02):
    """Initialize `net` in place and return it.

    Conv/ConvTranspose/Linear weights by `init_type` (normal: N(0, gain)), their
    biases 0; BatchNorm2d weights N(1, gain), biases 0. Every other module keeps
    PyTorch's default (affine InstanceNorm: 1 and 0).
    """
    if init_type not in INIT_TYPES:
        raise ValueError(f"unknown init type {init_type!r}; valid: {', '.join(INIT_TYPES)}")

    def init_module(m):
        # The reference matches on class names, so e.g. ConvTranspose2d counts as
        # a conv, and SyncBatchNorm (no "BatchNorm2d" in its name) keeps 1 and 0.
        name = type(m).__name__
        weight = getattr(m, "weight", None)
        if ("Conv" in name or "Linear" in name) and isinstance(weight, torch.Tensor):
            _init_weight(weight, init_type, init_gain)
            bias = getattr(m, "bias", None)
            if isinstance(bias, torch.Tensor):
                nn.init.constant_(bias, 0.0)
        elif "BatchNorm2d" in name and isinstance(weight, torch.Tensor):
            nn.init.normal_(weight, 1.0, init_gain)
            nn.init.constant_(m.bias, 0.0)

    # Module.apply visits modules in the reference's order, so a seeded run
    # draws the same numbers for the same layers.
    return net.apply(init_module)
