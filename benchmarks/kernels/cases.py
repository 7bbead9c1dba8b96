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
    layout: str = "contiguous"  # or "channels_last": the activations' memory format

    @property
    def name(self) -> str:
        dims = "x".join(map(str, self.shape))
        layout = "" if self.layout == "contiguous" else f"-{self.layout}"
        return f"{self.op}-{dims}-{str(self.dtype).replace('torch.', '')}{layout}"

    def bytes_moved(self, mode: str) -> int:
        return self.bytes_forward + (self.bytes_backward if mode == "forward+backward" else 0)


def _element_size(dtype: torch.dtype) -> int:
    return torch.tensor([], dtype=dtype).element_size()


def _randn(shape, g, dtype, device, grad=True):
    return torch.randn(shape, generator=g, dtype=dtype).to(device).requires_grad_(grad)


def l1_loss_cases(shapes=IMAGE_SHAPES, dtype=torch.float32) -> list[Case]:
    cases = []
    for shape in shapes:
        n, size = torch.Size(shape).numel(), _element_size(dtype)

        def make(device, shape=shape):
            g = torch.Generator().manual_seed(0)
            return _randn(shape, g, dtype, device), _randn(shape, g, dtype, device)

        cases.append(Case(
            op="l1_loss", shape=shape, dtype=dtype, make_inputs=make,
            composition=lambda x, y: F.l1_loss(x, y) * 10.0,
            fused=lambda x, y: ops.l1_loss(x, y, 10.0),
            # forward reads x and y; backward reads them again (the signs) and writes both gradients
            bytes_forward=2 * n * size, bytes_backward=4 * n * size,
        ))
    return cases


def cycle_losses_cases(shapes=IMAGE_SHAPES, dtype=torch.float32) -> list[Case]:
    """The four L1 terms of a CycleGAN iteration (lambda 10, 10, identity 0.5)."""
    cases = []
    for shape in shapes:
        n, size = torch.Size(shape).numel(), _element_size(dtype)

        def make(device, shape=shape):
            g = torch.Generator().manual_seed(0)
            real_A, real_B = (_randn(shape, g, dtype, device, grad=False) for _ in range(2))
            rec_A, rec_B, idt_A, idt_B = (_randn(shape, g, dtype, device) for _ in range(4))
            return real_A, rec_A, real_B, rec_B, idt_A, idt_B

        def composition(real_A, rec_A, real_B, rec_B, idt_A, idt_B):
            return (F.l1_loss(rec_A, real_A) * 10.0 + F.l1_loss(rec_B, real_B) * 10.0
                    + F.l1_loss(idt_A, real_B) * 5.0 + F.l1_loss(idt_B, real_A) * 5.0)

        def fused(real_A, rec_A, real_B, rec_B, idt_A, idt_B):
            return ops.cycle_losses(real_A, rec_A, real_B, rec_B, idt_A, idt_B, 10.0, 10.0, 0.5).values.sum()

        cases.append(Case(
            op="cycle_losses", shape=shape, dtype=dtype, make_inputs=make, composition=composition, fused=fused,
            # forward reads the six images and writes a byte of sign codes per element (the inputs
            # require grad); backward reads the codes and writes the four generated images' gradients
            bytes_forward=6 * n * size + n, bytes_backward=4 * n * size + n,
        ))
    return cases


def instance_norm_act_cases(shapes, dtype=torch.float32, layout="contiguous") -> list[Case]:
    """InstanceNorm2d (no affine, the reference's) then ReLU."""
    cases = []
    memory_format = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    for shape in shapes:
        n, size = torch.Size(shape).numel(), _element_size(dtype)

        def make(device, shape=shape):
            g = torch.Generator().manual_seed(0)
            x = torch.randn(shape, generator=g, dtype=dtype).to(device, memory_format=memory_format)
            return (x.requires_grad_(True),)

        cases.append(Case(
            op="instance_norm_act", shape=shape, dtype=dtype, make_inputs=make,
            composition=lambda x: F.relu(F.instance_norm(x)),
            fused=lambda x: ops.instance_norm_act(x, activation="relu"),
            # forward reads x, writes y; backward reads grad and x, writes dx
            bytes_forward=2 * n * size, bytes_backward=3 * n * size, layout=layout,
        ))
    return cases


# The generator's reflection-padded convolutions: the 7x7 stem and head, a 3x3 residual conv.
CONV_LAYERS = [  # (C_in, C_out, H, kernel, padding)
    (3, 64, 256, 7, 3),
    (64, 3, 256, 7, 3),
    (256, 256, 64, 3, 1),
]


def reflect_conv2d_cases(batches, dtype=torch.float32, layers=CONV_LAYERS) -> list[Case]:
    cases = []
    for batch in batches:
        for c_in, c_out, h, k, p in layers:
            shape = (batch, c_in, h, h)
            size = _element_size(dtype)
            x_bytes, y_bytes, w_bytes = batch * c_in * h * h * size, batch * c_out * h * h * size, c_out * c_in * k * k * size

            def make(device, shape=shape, c_out=c_out, k=k):
                g = torch.Generator().manual_seed(0)
                w = (torch.randn(c_out, shape[1], k, k, generator=g, dtype=dtype) * 0.05).to(device).requires_grad_(True)
                return _randn(shape, g, dtype, device), w, torch.zeros(c_out, dtype=dtype, device=device, requires_grad=True)

            cases.append(Case(
                op="reflect_conv2d", shape=(*shape, c_out, k), dtype=dtype, make_inputs=make,
                composition=lambda x, w, b, p=p: F.conv2d(F.pad(x, (p, p, p, p), mode="reflect"), w, b),
                fused=lambda x, w, b, p=p: ops.reflect_conv2d(x, w, b, 1, p),
                # forward reads x and w, writes y; backward reads grad, x, w, writes dx and dw
                bytes_forward=x_bytes + w_bytes + y_bytes, bytes_backward=y_bytes + 2 * (x_bytes + w_bytes),
            ))
    return cases


def all_cases(device: torch.device) -> list[Case]:
    # On a CPU the batch-16 convolutions take seconds a call: the GPU runs them
    on_gpu = device.type == "cuda"
    cases = (l1_loss_cases() + cycle_losses_cases() + instance_norm_act_cases(ACTIVATION_SHAPES)
             # as --fast runs them: bf16 activations in channels_last
             + instance_norm_act_cases(ACTIVATION_SHAPES[:3], torch.bfloat16, "channels_last")
             + reflect_conv2d_cases((1, 16) if on_gpu else (1,)))
    if on_gpu:  # batch 16 first: a run cut by the GPU suite's cap has the rows whose tensors exceed L2
        cases.sort(key=lambda case: -case.shape[0])
    return cases


def host_cases() -> list[Case]:
    """Each op at a size whose kernels take next to nothing: a call's time is then the
    host's (Python, dispatch, autograd, launches), which is what a batch-1 GPU
    iteration outside a CUDA graph waits on."""
    return (l1_loss_cases([(1, 3, 8, 8)]) + cycle_losses_cases([(1, 3, 8, 8)])
            + instance_norm_act_cases([(1, 8, 8, 8)]) + reflect_conv2d_cases((1,), layers=[(8, 8, 8, 3, 1)]))


def providers(device: torch.device, op: str) -> list[str]:
    """eager, compile, then every fastgan back end that can run `op` on `device`."""
    return ["eager", "compile", *[b for b in ops.available_backends(device, op=op) if b != "torch"]]
