"""FusedInstanceNormAct: nn.InstanceNorm2d (no running stats) followed by an activation
(and optionally a residual add), as one module running fastgan.ops.instance_norm_act."""

from __future__ import annotations

import warnings

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn import init

from fastgan.nn.tracing import NoTorchScript, recording_a_trace
from fastgan.ops import check_backend, instance_norm_act, use_backend
from fastgan.ops.reference import INSTANCE_NORM_ACTIVATIONS, activate

__all__ = ["FusedInstanceNormAct"]


class FusedInstanceNormAct(NoTorchScript, nn.Module):
    """[residual +] act(InstanceNorm2d(x)), fused.

    Equals nn.Sequential(nn.InstanceNorm2d(num_features, eps, affine=affine), act) with
    act nn.ReLU() ("relu"), nn.LeakyReLU(negative_slope) ("leaky_relu") or nothing
    ("none"); `forward(x, residual)` adds `residual` after the activation (the end of
    a ResNet block: activation "none"). Its parameters and state_dict keys are exactly
    nn.InstanceNorm2d's (track_running_stats=False): `weight` (ones) and `bias` (zeros)
    of shape (num_features,) when affine, nothing otherwise; state dicts load both
    ways. Running statistics are not supported (the reference never tracks them for
    instance norm); like nn.InstanceNorm2d, a pre-0.4 checkpoint's running_mean /
    running_var are reported as unexpected.

    `backend` ("auto" or a fastgan.ops back end name) is the back end its op runs on:
    "auto" leaves the choice to fastgan.ops (use_backend / FASTGAN_BACKEND / auto), a
    name overrides it for this module, so one model can pin its modules (e.g. what
    fastgan.accelerate(model, backend=...) built) whatever the caller's setting.
    """

    _version = 2  # nn.InstanceNorm2d's (torch.nn.modules.batchnorm._NormBase)

    def __init__(self, num_features: int, eps: float = 1e-5, affine: bool = False, activation: str = "relu",
                 negative_slope: float = 0.2, backend: str = "auto", device=None, dtype=None):
        super().__init__()
        if activation not in INSTANCE_NORM_ACTIVATIONS:
            raise ValueError(f"FusedInstanceNormAct: activation must be one of {INSTANCE_NORM_ACTIVATIONS}, "
                             f"got {activation!r}")
        self.num_features = num_features
        self.eps = eps
        self.affine = affine
        self.activation = activation
        self.negative_slope = negative_slope
        self.backend = check_backend(backend)
        if affine:
            factory = {"device": device, "dtype": dtype}
            self.weight = nn.Parameter(torch.empty(num_features, **factory))
            self.bias = nn.Parameter(torch.empty(num_features, **factory))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """nn.InstanceNorm2d's initialisation: weight 1, bias 0."""
        if self.affine:
            init.ones_(self.weight)
            init.zeros_(self.bias)

    @classmethod
    def from_modules(cls, norm: nn.InstanceNorm2d, act: nn.Module | None = None,
                     backend: str = "auto") -> "FusedInstanceNormAct":
        """The module equal to `act(norm(x))` (`norm(x)` when act is None), holding norm's
        own Parameter objects (shared, not copied: an optimizer over norm keeps working).

        Valid only when norm is an nn.InstanceNorm2d without running statistics (with
        them its eval-mode output uses the running averages, which this module does not
        keep) and act is None, nn.ReLU or nn.LeakyReLU; else ValueError says why.
        """
        if type(norm) is not nn.InstanceNorm2d:
            raise ValueError(f"FusedInstanceNormAct.from_modules: norm must be nn.InstanceNorm2d, "
                             f"got {type(norm).__name__}")
        if norm.track_running_stats:
            raise ValueError("FusedInstanceNormAct.from_modules: the InstanceNorm2d tracks running stats "
                             "(in eval mode it normalizes with them), which this module does not keep")
        if act is None:
            activation, negative_slope = "none", 0.2
        elif type(act) is nn.ReLU:
            activation, negative_slope = "relu", 0.2
        elif type(act) is nn.LeakyReLU:
            activation, negative_slope = "leaky_relu", float(act.negative_slope)
        else:
            raise ValueError(f"FusedInstanceNormAct.from_modules: act must be None, nn.ReLU or nn.LeakyReLU, "
                             f"got {type(act).__name__}")
        module = cls.__new__(cls)
        nn.Module.__init__(module)
        module.num_features = norm.num_features
        module.eps = norm.eps
        module.affine = norm.affine
        module.activation = activation
        module.negative_slope = negative_slope
        module.backend = check_backend(backend)
        if norm.affine:
            module.weight = norm.weight
            module.bias = norm.bias
        else:
            module.register_parameter("weight", None)
            module.register_parameter("bias", None)
        module.train(norm.training)
        return module

    def forward(self, input: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        x = input  # (torch's modules' argument name: input= works)
        if recording_a_trace():
            return self._plain_forward(x, residual)
        self._check_input(x)
        if x.dim() == 3:  # unbatched (C, H, W), as nn.InstanceNorm2d takes it
            return self._fused(x.unsqueeze(0), None if residual is None else residual.unsqueeze(0)).squeeze(0)
        return self._fused(x, residual)

    def _fused(self, x: torch.Tensor, residual: torch.Tensor | None) -> torch.Tensor:
        if self.backend == "auto":
            return instance_norm_act(x, self.weight, self.bias, self.eps, self.activation, self.negative_slope,
                                     residual)
        with use_backend(self.backend):
            return instance_norm_act(x, self.weight, self.bias, self.eps, self.activation, self.negative_slope,
                                     residual)

    def _check_input(self, x: torch.Tensor) -> None:
        """nn.InstanceNorm2d's checks, in its words."""
        if x.dim() not in (3, 4):
            raise ValueError(f"expected 3D or 4D input (got {x.dim()}D input)")
        channels = x.shape[-3]
        if channels != self.num_features:
            if self.affine:
                raise ValueError(f"expected input's size at dim={x.dim() - 3} to match num_features "
                                 f"({self.num_features}), but got: {channels}.")
            warnings.warn(f"input's size at dim={x.dim() - 3} does not match num_features. You can silence this "
                          "warning by not passing in num_features, which is not used because affine=False")
        if x.shape[-1] * x.shape[-2] == 1:
            raise ValueError(f"Expected more than 1 spatial element when training, got input size {list(x.shape)}")

    def _plain_forward(self, x: torch.Tensor, residual: torch.Tensor | None) -> torch.Tensor:
        """The torch composition this module stands for (what a tracer records)."""
        y = activate(F.instance_norm(x, None, None, self.weight, self.bias, True, 0.1, self.eps), self.activation,
                     self.negative_slope)
        return y if residual is None else residual + y

    def extra_repr(self) -> str:
        s = f"{self.num_features}, eps={self.eps}, affine={self.affine}, activation={self.activation!r}"
        if self.activation == "leaky_relu":
            s += f", negative_slope={self.negative_slope}"
        if self.backend != "auto":
            s += f", backend={self.backend!r}"
        return s

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs) -> None:
        # nn.InstanceNorm2d's rule: running stats of a pre-0.4 checkpoint (no version)
        # are an error, and are dropped.
        if local_metadata.get("version", None) is None:
            stale = [prefix + name for name in ("running_mean", "running_var") if prefix + name in state_dict]
            if stale:
                error_msgs.append(
                    f"Unexpected running stats buffer(s) {' and '.join(repr(k) for k in stale)} for "
                    f"{self.__class__.__name__}, which does not track running stats (as nn.InstanceNorm2d with "
                    f"track_running_stats=False). Remove these keys from the state_dict.")
                for key in stale:
                    state_dict.pop(key)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)
