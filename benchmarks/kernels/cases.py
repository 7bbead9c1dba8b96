"""What the kernel benchmarks time: each fused op at the shapes CycleGAN runs.

A case names an op, a shape and a dtype, builds fresh inputs, and offers
providers: `eager` (the unfused torch composition, the baseline), `compile`
(torch.compile of that composition), and each fastgan back end available for
the device. `bytes_moved(mode)` is the op's memory-traffic floor (each input
read once, each output written once), from which the report derives GB/s.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

import fastgan.ops as ops

# (N, C, H, W) of the activations CycleGAN's generator normalizes, at batch 1 and 16
ACTIVATION_SHAPES = [(1, 64, 256, 256), (1, 128, 128, 128), (1, 256, 64, 64),
                     (16, 64, 256, 256), (16, 128, 128, 128), (16, 256, 64, 64)]
# CycleGAN images: the L1 terms compare 3-channel images
IMAGE_SHAPES = [(1, 3, 256, 256), (16, 3, 256, 256)]


@dataclass
class Case:
    op: str
    shape: tuple
    dtype: torch.dtype
    make_inputs: Callable[[torch.device], tuple]  # fresh tensors (leaves requiring grad)
    composition: Callable  # the unfused torch expression: the baseline
    fused: Callable  # the fastgan op (back end chosen by use_backend)
    bytes_forward: int
    bytes_backward: int

    @property
    def name(self) -> str:
        dims = "x".join(map(str, self.shape))
        return f"{self.op}-{dims}-{str(self.dtype).replace('torch.', '')}"

    def bytes_moved(self, mode: str) -> int:
        return self.bytes_forward + (self.bytes_backward if mode == "forward+backward" else 0)


def l1_loss_cases(dtype=torch.float32) -> list[Case]:
    cases = []
    for shape in IMAGE_SHAPES:
        numel = torch.Size(shape).numel()
        size = torch.tensor([], dtype=dtype).element_size()

        def make(device, shape=shape):
            g = torch.Generator(device="cpu").manual_seed(0)
            x = torch.randn(shape, generator=g, dtype=dtype).to(device).requires_grad_(True)
            y = torch.randn(shape, generator=g, dtype=dtype).to(device).requires_grad_(True)
            return x, y

        cases.append(Case(
            op="l1_loss", shape=shape, dtype=dtype, make_inputs=make,
            composition=lambda x, y: F.l1_loss(x, y) * 10.0,
            fused=lambda x, y: ops.l1_loss(x, y, 10.0),
            # forward reads x and y; backward reads them again and writes both gradients
            bytes_forward=2 * numel * size, bytes_backward=4 * numel * size,
        ))
    return cases


def all_cases() -> list[Case]:
    return l1_loss_cases()


def providers(device: torch.device, op: str) -> list[str]:
    """eager, compile, then every fastgan back end that can run `op` on `device`."""
    return ["eager", "compile", *[b for b in ops.available_backends(device, op=op) if b != "torch"]]
