"""The whole training iteration captured in one CUDA graph and replayed.

Both generators and discriminators, forward and backward, both Adam steps
(capturable, learning rate as a device tensor the schedulers fill in place),
the image pools (device ring buffers drawing from the CUDA RNG, which CUDA
graphs advance on every replay) and the loss values: one graph launch per
iteration instead of thousands of kernel launches from Python.

The first `warmup` iterations run eagerly on a side stream (the pools and the
optimizers allocate their state there, and cuDNN picks its algorithms); the
next one is captured and then replayed, as is every later one of the same
input shapes. A batch of another shape (an epoch's short last batch) runs
eagerly: the capturable optimizers and the device pools work outside the
graph as well. Inputs are copied into the graph's static input buffers.
"""

from __future__ import annotations

from typing import Callable

import torch


class GraphedIteration:
    def __init__(self, iteration: Callable[..., dict], model, warmup: int = 3):
        if warmup < 1:
            raise ValueError("CUDA graph capture needs at least one warm-up iteration")
        self.iteration = iteration
        self.model = model
        self.warmup = warmup
        self.warmed = 0
        self.graph: torch.cuda.CUDAGraph | None = None
        self.static_inputs: list[torch.Tensor] = []
        self.static_losses: dict[str, torch.Tensor] = {}
        self.static_visuals: dict[str, torch.Tensor] = {}
        self.side_stream = torch.cuda.Stream()

    def _signature(self, inputs) -> list:
        return [(x.shape, x.dtype, x.stride()) for x in inputs]

    def __call__(self, *inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.graph is not None:
            if self._signature(inputs) != self._signature(self.static_inputs):
                return self.iteration(*inputs)  # another shape: eager, same semantics
            for static, x in zip(self.static_inputs, inputs):
                static.copy_(x, non_blocking=True)
            self.graph.replay()
            self.model.visuals = dict(self.static_visuals)
            return dict(self.static_losses)
        if self.warmed < self.warmup:
            self.warmed += 1
            return self._on_side_stream(inputs)
        self._capture(inputs)
        return self(*inputs)

    def _on_side_stream(self, inputs) -> dict[str, torch.Tensor]:
        stream = self.side_stream
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            losses = self.iteration(*inputs)
        torch.cuda.current_stream().wait_stream(stream)
        return losses

    def _capture(self, inputs) -> None:
        self.static_inputs = [x.clone() for x in inputs]
        graph = torch.cuda.CUDAGraph()
        # Captured work does not run: the call that captures replays right after.
        # thread_local: the loader's threads (the DataLoader's pinning thread, DALI's)
        # go on allocating and copying while this thread captures; the default global
        # mode would fail those calls, and with them the run.
        with torch.cuda.graph(graph, capture_error_mode="thread_local"):
            self.static_losses = self.iteration(*self.static_inputs)
        self.static_visuals = dict(self.model.visuals)
        self.graph = graph
