"""Winograd weight transforms reused while the weights stay as they are.

Each CPU Winograd convolution (csrc/cpu/conv3x3_winograd.cpp) and its input gradient
transform the 3x3 weights first: for a 256 -> 256 ResNet-block convolution 0.7 ms of a
2.7 ms call at 1x256x32x32 on a 2-core Xeon. A CycleGAN iteration calls each
generator's convolutions twice forward and twice backward with the same weights, so
inside `reuse_weight_transforms()` each weight is transformed once, and the transform
is kept until the scope ends.

The promise the scope asks of its caller: the weights are not written in it except by
in-place ops on the weight tensors themselves (they bump the tensor's version, which the
kept transform is checked against) or by a torch.optim step (its fused kernels write
without bumping the version, so every step of a torch.optim optimizer drops all the
transforms). A write through `.data`, through another tensor that shares the storage, or
by an optimizer outside torch.optim's classes bumps nothing, and a transform kept from
before would then be stale. The CycleGAN trainer opens it from its generators' forward
passes through their backward, where nothing writes their weights.

A scope holds for the thread that opened it (the CPU backward of a forward run there runs
there too); other threads transform their weights themselves, and an optimizer step in any
thread drops every scope's transforms.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Iterator

import torch
from torch.optim.optimizer import register_optimizer_step_post_hook

# .kept: this thread's scope's transforms, absent or None outside every scope:
# (data_ptr, shape, strides, dtype) -> (weight, its version, its transform). One entry per
# weight: a new version replaces the old one's. The weight is kept with its transform so
# that its memory cannot be freed and reused by another tensor while the key stands for it.
_thread = threading.local()
# every open outermost scope's transforms, by id, which one optimizer-step hook clears: a hook
# per scope, added and removed as scopes open and close, changed torch's hook dict while
# another thread's step iterated it ("OrderedDict mutated during iteration")
_scopes: dict[int, dict] = {}
_scopes_lock = threading.Lock()


def _drop_every_scopes_transforms(optimizer, args, kwargs) -> None:
    with _scopes_lock:
        scopes = list(_scopes.values())
    for kept in scopes:
        kept.clear()


register_optimizer_step_post_hook(_drop_every_scopes_transforms)  # once, for the process


@contextlib.contextmanager
def reuse_weight_transforms() -> Iterator[None]:
    """Within, in this thread: the Winograd convolutions and their input gradients transform
    each weight once, and reuse the transform while the weight's version is unchanged and no
    torch.optim step has run. Nested scopes share the outermost's transforms; it drops them."""
    if getattr(_thread, "kept", None) is not None:
        yield
        return
    kept: dict[tuple, tuple[torch.Tensor, int, torch.Tensor]] = {}
    _thread.kept = kept
    with _scopes_lock:
        _scopes[id(kept)] = kept
    try:
        yield
    finally:
        with _scopes_lock:
            del _scopes[id(kept)]
        _thread.kept = None


def kept_transform(weight: torch.Tensor) -> torch.Tensor | None:
    """The weight's transform inside a scope of this thread (made on first use, or again once
    the weight changed), else None (the kernel transforms it itself)."""
    transforms = getattr(_thread, "kept", None)
    if transforms is None or weight.is_inference():  # inference tensors have no version
        return None
    key = (weight.data_ptr(), tuple(weight.shape), weight.stride(), weight.dtype)
    kept = transforms.get(key)
    if kept is None or kept[1] != weight._version:
        kept = transforms[key] = (weight, weight._version,
                                  torch.ops.fastgan.conv3x3_winograd_weight(weight.detach()))
    return kept[2]
