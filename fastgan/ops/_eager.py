"""When a fused op may skip the dispatcher.

In eager mode a registered op's Python autograd rule (torch.library.custom_op or
register_autograd) costs tens of microseconds of host time per call, more than a
batch-1 GPU kernel takes, and an iteration outside a CUDA graph waits on exactly
that. The losses and reflect_conv2d then run their same kernels and autograd rules
through a plain torch.autograd.Function instead (same results, bit for bit: tested per
op); instance_norm_act, the op a generator calls most, has its rule in C++ instead
(csrc/instance_norm_act_autograd.cpp), lighter still. Where
reflect_conv2d runs aten in every phase, its eager path is the unfused composition
itself under torch's autograd (fastgan/ops/_reflect_conv2d.py: _ALL_ATEN).
torch.compile's tracing and tensor subclasses need the registered op (its fake rule,
its place in a graph), so they keep it.
"""

from __future__ import annotations

import torch
import torch.autograd.forward_ad as forward_ad


# nn.Parameter is a subclass that changes nothing about how ops run on it
_PLAIN = (torch.Tensor, torch.nn.Parameter)


def takes_eager_path(*tensors: torch.Tensor | None) -> bool:
    """Plain tensors and parameters (or None) in eager mode: not under torch.compile's
    tracing nor another tensor subclass (fake, functional, DTensor ...). (torch.func's
    wrapped tensors are of the plain type: the registry sends those calls to the torch
    composition first, see under_a_transform.)"""
    return not torch.compiler.is_compiling() and all(t is None or type(t) in _PLAIN for t in tensors)


def under_a_transform(*values) -> bool:
    """Whether a torch.func transform (grad, vmap, jacrev ...) wraps any tensor among
    `values`, or one carries a forward-mode tangent (torch.autograd.forward_ad's dual
    tensors): the fused kernels' autograd rules are not functorch's and have no jvp, so
    such a call runs the torch composition (fastgan.ops.registry) or aten (the measured
    convolutions)."""
    # (a plain loop: this runs on every op call, and host time per call is what batch 1 waits on)
    wrapped = torch._C._functorch.is_functorch_wrapped_tensor
    for v in values:
        if isinstance(v, torch.Tensor) and wrapped(v):
            return True
    if forward_ad._current_level < 0:
        return False
    return any(isinstance(v, torch.Tensor) and forward_ad.unpack_dual(v).tangent is not None for v in values)


def saved_tensors_hooked() -> bool:
    """Whether saved-tensor hooks are in force (torch.utils.checkpoint without reentrant
    autograd, activation offloading): a call must then save what it saved the last time
    its forward ran, since checkpointing recomputes that forward in backward and compares
    the tensors saved, so no shortcut learned in between may change its path."""
    return torch._C._autograd._top_saved_tensors_default_hooks(False) is not None


def eager_function(name: str, op, setup_context, backward, outputs: int) -> type[torch.autograd.Function]:
    """An autograd.Function called `name` for a registered op and its autograd rules.

    Its forward runs `op` below the autograd dispatch, hands the op's output to
    `setup_context(ctx, inputs, output)` and returns the output (the first of `outputs`
    when the op returns several: the others are saved, not differentiated). Its backward
    is `backward(ctx, grad, None, ...)`, below the autograd dispatch too unless the
    backward builds a graph (create_graph: double backward), which then goes through the
    differentiable backward op.
    """
    extra = (None,) * (outputs - 1)

    def forward(ctx, *inputs):
        with torch._C._AutoDispatchBelowAutograd():
            output = op(*inputs)
        setup_context(ctx, inputs, output)
        return output[0] if outputs > 1 else output

    def backward_(ctx, grad):
        if torch.is_grad_enabled():
            return backward(ctx, grad, *extra)
        # the saved tensors unpacked above the guard: torch.utils.checkpoint(use_reentrant=False)
        # recomputes the forward in that unpacking, which must record what it saves
        unpacked = _SavedTensorsUnpacked(ctx, ctx.saved_tensors)
        with torch._C._AutoDispatchBelowAutograd():
            return backward(unpacked, grad, *extra)

    doc = f"{op}'s kernels and autograd rules, skipping the dispatcher's autograd (fastgan/ops/_eager.py)."
    return type(name, (torch.autograd.Function,),
                {"__doc__": doc, "forward": staticmethod(forward), "backward": staticmethod(backward_)})


class _SavedTensorsUnpacked:
    """An autograd context whose saved_tensors were read once already (they can be read
    only once under non-reentrant checkpointing); every other attribute is the context's."""

    def __init__(self, ctx, saved_tensors: tuple):
        self._ctx = ctx
        self.saved_tensors = saved_tensors

    def __getattr__(self, name: str):
        return getattr(self._ctx, name)
