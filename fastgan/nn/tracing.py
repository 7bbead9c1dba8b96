"""Whether torch.jit.trace or torch.fx.symbolic_trace is recording the running forward.

jit.trace records the tensor ops of one call and fx.symbolic_trace calls forward with
proxies: fastgan's per-shape measurements and its Python checks on tensors would be
frozen into the first's trace and cannot run under the second. While either records,
fastgan.nn's modules run the plain torch composition each stands for, so an
accelerated model traces (and exports) with the semantics of the modules it replaced.
torch.compile and torch.export see False here (dynamo folds both checks) and keep the
fused ops.
"""

from __future__ import annotations

import torch
import torch.fx


def recording_a_trace() -> bool:
    return torch.jit.is_tracing() or torch.fx._symbolic_trace.is_fx_symbolic_tracing()
