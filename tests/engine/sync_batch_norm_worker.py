"""A torchrun worker: GlooSyncBatchNorm on this rank's slice of a batch against nn.BatchNorm2d on
the whole batch (outputs, input and parameter gradients, running statistics), in float32 and
float64, with uneven slices. Writes rank{r}.json: the largest differences per dtype."""

from __future__ import annotations

import json
import os
import sys

import torch
import torch.distributed as dist

from fastgan.engine.gloo_sync_batch_norm import GlooSyncBatchNorm

SIZES = (3, 1)  # rank 0's and rank 1's images of the batch


def differences(dtype: torch.dtype, rank: int) -> dict[str, float]:
    g = torch.Generator().manual_seed(0)
    x_all = torch.randn(sum(SIZES), 4, 5, 5, generator=g, dtype=dtype) * 2 + 1
    upstream = torch.randn(x_all.shape, generator=g, dtype=dtype)
    whole = torch.nn.BatchNorm2d(4, momentum=0.3).to(dtype)
    with torch.no_grad():
        whole.weight.uniform_(0.5, 1.5, generator=g)
        whole.bias.normal_(generator=g)
    synced = GlooSyncBatchNorm(4, whole.eps, whole.momentum, True, True).to(dtype)
    synced.load_state_dict(whole.state_dict())
    x = x_all.clone().requires_grad_()
    expected = whole(x)
    (expected * upstream).sum().backward()
    lo = sum(SIZES[:rank])
    part = slice(lo, lo + SIZES[rank])
    x_part = x_all[part].clone().requires_grad_()
    got = synced(x_part)
    (got * upstream[part]).sum().backward()
    param_grads = torch.cat([synced.weight.grad, synced.bias.grad])
    dist.all_reduce(param_grads)  # DDP would sum (average) them over the ranks
    return {
        "dtype": str(got.dtype),
        "output": (got - expected[part]).abs().max().item(),
        "input_grad": (x_part.grad - x.grad[part]).abs().max().item(),
        "param_grad": (param_grads - torch.cat([whole.weight.grad, whole.bias.grad])).abs().max().item(),
        "running_mean": (synced.running_mean - whole.running_mean).abs().max().item(),
        "running_var": (synced.running_var - whole.running_var).abs().max().item(),
    }


def main(out: str) -> None:
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    try:
        result = {str(dtype): differences(dtype, rank) for dtype in (torch.float32, torch.float64)}
    finally:
        dist.destroy_process_group()
    with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main(sys.argv[1])
