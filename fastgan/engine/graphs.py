"""The whole training iteration captured in one CUDA graph and replayed.

Both generators and discriminators, forward and backward, both Adam steps
(capturable, learning rate as a device tensor the schedulers fill in place),
the image pools (device ring buffers drawing from the CUDA RNG, which CUDA
graphs advance on every replay) and the loss values: one graph launch per
iteration instead of thousands of kernel launches from Python.

The first `warmup` iterations of an input shape run eagerly on a side stream
(the pools and the optimizers allocate their state there, cuDNN picks its
algorithms, a compiled net compiles for the shape); the shape's next one is
captured and then replayed, as is every later one of that shape. The count is
per shape, so an epoch's short last batch arriving early is never the one
captured cold (a capture cannot time cuDNN's algorithms or compile). Once a
graph exists, a batch of another shape runs eagerly: the capturable optimizers
and the device pools work outside the graph as well. Inputs are copied into the
graph's static input buffers. Everything runs on the model's device, whichever
device is current. Loading a training state drops the graph (`recapture`): the
loaded optimizers hold new tensors, which the old graph would never read.
"""

from __future__ import annotations

from typing import Callable

import torch


class CapturePlan:
    """What to do with an iteration of input signature `signature` (shapes, dtypes,
    strides): "warm" (eagerly, its first `warmup` times), then "capture"; once one
    signature is captured, "replay" for it and "eager" for any other."""

    def __init__(self, warmup: int):
        if warmup < 1:
            raise ValueError("CUDA graph capture needs at least one warm-up iteration")
        self.warmup = warmup
        self.warmed: dict[tuple, int] = {}
        self.captured: tuple | None = None

    def action(self, signature: tuple) -> str:
        if self.captured is not None:
            return "replay" if signature == self.captured else "eager"
        count = self.warmed.get(signature, 0)
        if count < self.warmup:
            self.warmed[signature] = count + 1
            return "warm"
        return "capture"


def signature(inputs) -> tuple:
    return tuple((tuple(x.shape), x.dtype, x.stride()) for x in inputs)


class GraphedIteration:
    def __init__(self, iteration: Callable[..., dict], model, warmup: int = 3):
        self.iteration = iteration
        self.model = model
        self.plan = CapturePlan(warmup)
        self.device = torch.device(model.device)
        self.graph: torch.cuda.CUDAGraph | None = None
        self.static_inputs: list[torch.Tensor] = []
        self.static_losses: dict[str, torch.Tensor] = {}
        self.static_visuals: dict[str, torch.Tensor] = {}
        self.side_stream = torch.cuda.Stream(device=self.device)

    @property
    def warmup(self) -> int:
        return self.plan.warmup

    def recapture(self) -> None:
        """Forget the graph and its buffers: the next iterations warm up and capture again.
        For a loaded training state, whose optimizers' moments, step counters and learning
        rates are new tensors (Optimizer.load_state_dict builds them) the graph does not read."""
        self.plan = CapturePlan(self.plan.warmup)
        self.graph = None
        self.static_inputs, self.static_losses, self.static_visuals = [], {}, {}

    def __call__(self, *inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        with torch.cuda.device(self.device):  # the streams and the capture of the model's device
            action = self.plan.action(signature(inputs))
            if action == "eager":
                return self.iteration(*inputs)  # another shape than the graph's: same semantics
            if action == "warm":
                return self._on_side_stream(inputs)
            if action == "capture":
                self._capture(inputs)
            for static, x in zip(self.static_inputs, inputs):
                static.copy_(x, non_blocking=True)
            self.graph.replay()
            self.model.visuals = dict(self.static_visuals)
            return dict(self.static_losses)

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
        self.plan.captured = signature(inputs)
