"""Normalization layers by option name, and the reference's conv-bias rule."""

import functools

import torch.nn as nn

# name -> (module class, keyword arguments). The reference builds its norm layers
# as functools.partial objects; so do we, because the bias rule below reads the
# partial's `func`, exactly as the reference does.
_NORMS = {
    # The reference's instance norm: no affine parameters, no running stats,
    # so an instance-norm network has no norm keys in its state_dict at all.
    "instance": (nn.InstanceNorm2d, {"affine": False, "track_running_stats": False}),
    # fastgan extension: learnable scale/shift, still no running stats.
    "instance_affine": (nn.InstanceNorm2d, {"affine": True, "track_running_stats": False}),
    "batch": (nn.BatchNorm2d, {"affine": True, "track_running_stats": True}),
    "syncbatch": (nn.SyncBatchNorm, {"affine": True, "track_running_stats": True}),
    # nn.Identity ignores its constructor arguments, so norm_layer(channels) works.
    "none": (nn.Identity, {}),
}

NORM_TYPES = tuple(_NORMS)


def get_norm_layer(norm_type="instance"):
    """A callable `norm_layer(num_channels) -> nn.Module` for `norm_type`.

    norm_type: "instance", "instance_affine", "batch", "syncbatch" or "none".
    """
    try:
        cls, kwargs = _NORMS[norm_type]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown norm type {norm_type!r}; valid: {', '.join(NORM_TYPES)}"
        ) from None
    return functools.partial(cls, **kwargs)


def use_conv_bias(norm_layer):
    """Whether convs followed by `norm_layer` get a bias: the reference's rule.

    The reference gives a conv a bias only when its norm layer *is* InstanceNorm2d.
    Batch norm has its own shift, so no bias; but norm "none" gets no bias either
    (its norm layer is not InstanceNorm2d), although nothing else shifts there.
    The recorded reference state_dicts confirm this quirk.
    """
    func = norm_layer.func if isinstance(norm_layer, functools.partial) else norm_layer
    return func is nn.InstanceNorm2d
