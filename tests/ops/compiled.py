"""The op tests' check of torch.compile(fullgraph=True) against eager mode."""

from __future__ import annotations

import torch
from torch._dynamo.utils import counters


def compiled_matches_eager(fn, run, compile_backend: str, rtol: float, atol: float) -> list:
    """run(f) -> tensors (outputs, gradients) for `fn` and for fn compiled with `compile_backend`:
    the compiled one is one graph with no breaks and gives the same tensors within rtol/atol.
    Returns eager's. The back end in use is the caller's (ops.use_backend around this)."""
    torch._dynamo.reset()
    counters.clear()
    eager = run(fn)
    compiled = run(torch.compile(fn, fullgraph=True, backend=compile_backend))
    assert not counters["graph_break"], dict(counters["graph_break"])
    assert counters["stats"]["unique_graphs"] == 1
    assert len(eager) == len(compiled)
    for e, c in zip(eager, compiled):
        torch.testing.assert_close(c, e, rtol=rtol, atol=atol)
    return eager
