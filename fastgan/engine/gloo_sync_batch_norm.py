"""--norm syncbatch on the CPU: batch statistics over every rank's batch through gloo.

torch's nn.SyncBatchNorm takes CUDA tensors only, and DistributedDataParallel refuses any
SyncBatchNorm on the CPU; fastgan.engine.distributed swaps GlooSyncBatchNorm in for it
there before wrapping the nets.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn


class _SumOverRanks(torch.autograd.Function):
    """all_reduce(SUM) with its gradient: the sum over ranks of the output gradients."""

    @staticmethod
    def forward(ctx, x, group):
        ctx.group = group
        x = x.clone()
        dist.all_reduce(x, group=group)
        return x

    @staticmethod
    def backward(ctx, grad):
        grad = grad.clone()
        dist.all_reduce(grad, group=ctx.group)
        return grad, None


class GlooSyncBatchNorm(nn.BatchNorm2d):
    """nn.SyncBatchNorm for CPU tensors: torch's refuses them (its kernels are CUDA-only, and
    DistributedDataParallel refuses any SyncBatchNorm on the CPU, hence a BatchNorm2d subclass).

    Same parameters, buffers and keys. In training, the mean and then the biased
    variance over every rank's batch come from two all-reduced sums (two passes,
    as F.batch_norm computes them on one process), so the output is the batch
    norm of the global batch; autograd through the all-reduces gives each rank
    its share of that batch norm's exact gradient. The running variance is the
    unbiased one, as torch's. Otherwise (eval, or no process group) torch's.
    """

    def __init__(self, num_features: int, eps: float, momentum: float | None, affine: bool,
                 track_running_stats: bool, process_group=None):
        super().__init__(num_features, eps, momentum, affine, track_running_stats)
        self.process_group = process_group

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_initialized()):
            return super().forward(x)
        self._check_input_dim(x)
        group = self.process_group or dist.group.WORLD
        dims = [0] + list(range(2, x.dim()))
        shape = [1, -1] + [1] * (x.dim() - 2)
        count = torch.tensor(float(x.numel() // x.shape[1]), dtype=torch.float64)
        dist.all_reduce(count, group=group)
        n = float(count)
        # statistics in float32 for half-precision inputs (as torch's batch norm), else in x's dtype
        xf = x if x.dtype == torch.float64 else x.float()
        mean = _SumOverRanks.apply(xf.sum(dims), group) / n
        centered = xf - mean.view(shape)
        var = _SumOverRanks.apply((centered * centered).sum(dims), group) / n
        y = centered * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats:
            self._update_running_stats(mean.detach(), var.detach() * (n / max(n - 1, 1)))
        return y.to(x.dtype)

    @torch.no_grad()
    def _update_running_stats(self, mean: torch.Tensor, unbiased_var: torch.Tensor) -> None:
        self.num_batches_tracked.add_(1)
        factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        self.running_mean.lerp_(mean.to(self.running_mean.dtype), factor)
        self.running_var.lerp_(unbiased_var.to(self.running_var.dtype), factor)


def use_gloo_sync_batch_norm(net: nn.Module) -> None:
    """Replace every nn.SyncBatchNorm of `net` by a GlooSyncBatchNorm sharing its parameters and
    buffers (the optimizers keep the same tensors; the keys stay)."""
    for parent in net.modules():
        for name, child in list(parent.named_children()):
            if type(child) is nn.SyncBatchNorm:
                replacement = GlooSyncBatchNorm(child.num_features, child.eps, child.momentum, child.affine,
                                                child.track_running_stats, child.process_group)
                replacement.weight, replacement.bias = child.weight, child.bias
                replacement.running_mean, replacement.running_var = child.running_mean, child.running_var
                replacement.num_batches_tracked = child.num_batches_tracked
                replacement.train(child.training)
                setattr(parent, name, replacement)
