"""Whether torch.jit.trace or torch.fx.symbolic_trace is recording the running forward.

jit.trace records the tensor ops of one call and fx.symbolic_trace calls forward with
proxies: fastgan's per-shape measurements and its Python checks on tensors would be
frozen into the first's trace and cannot run under the second. While either records,
fastgan.nn's modules run the plain torch composition each stands for, so an
accelerated model traces (and exports) with the semantics of the modules it replaced.
torch.compile and torch.export see False here (dynamo folds both checks) and keep the
fused ops. torch.jit.script cannot compile them at all (their forward picks kernels in
Python): NoTorchScript says so.
"""

from __future__ import annotations

import torch
import torch.fx


def recording_a_trace() -> bool:
    return torch.jit.is_tracing() or torch.fx._symbolic_trace.is_fx_symbolic_tracing()


class NoTorchScript:
    """A mixin for fastgan.nn's modules: torch.jit.script of a model holding one fails with
    this message (torch calls __prepare_scriptable__ on every submodule first), not with a
    compile error from deep inside the module's Python."""

    def __prepare_scriptable__(self):
        raise TypeError(f"torch.jit.script cannot compile fastgan.nn's {type(self).__name__} (its forward picks "
                        "kernels in Python): torch.compile, torch.export or torch.jit.trace the accelerated model, "
                        "or script the model without fastgan.accelerate")
