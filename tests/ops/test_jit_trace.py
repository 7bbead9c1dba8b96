"""torch.jit.trace of fastgan.ops' public functions records the torch composition (as
fastgan.nn's modules do under a tracer): the trace holds no Python op, so torch.jit.save
writes it, and the loaded trace computes what the torch back end does, at other sizes too."""

from __future__ import annotations

import pytest
import torch

import fastgan.ops as ops

CPU_BACKENDS = ops.available_backends("cpu", op="instance_norm_act")
W, B = torch.randn(8, 8, 3, 3), torch.randn(8)
CASES = {
    "reflect_conv2d": lambda x: ops.reflect_conv2d(x, W, B, 1, 1),
    "instance_norm_act": lambda x: ops.instance_norm_act(x, None, B, 1e-5, "leaky_relu", 0.1, residual=x),
    "l1_loss": lambda x: ops.l1_loss(x, x.flip(-1), 2.0),
    "cycle_losses": lambda x: ops.cycle_losses(x, x.flip(-1), x, x.flip(-2), idt_A=x.flip(-2), idt_B=x,
                                               lambda_identity=0.5).values,
}


@pytest.mark.filterwarnings("ignore:`torch.jit.trace")
@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
@pytest.mark.filterwarnings("ignore:`torch.jit.(save|load)` is deprecated")
@pytest.mark.parametrize("op", list(CASES))
@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_a_traced_op_saves_loads_and_computes_the_op(backend, op, tmp_path):
    fn = CASES[op]
    x = torch.randn(2, 8, 12, 10)
    with ops.use_backend(backend):
        traced = torch.jit.trace(fn, (x,), check_trace=False)
        assert not [n for n in traced.graph.nodes() if n.kind() == "prim::PythonOp" or "fastgan" in n.kind()]
        torch.jit.save(traced, str(tmp_path / "traced.pt"))
        loaded = torch.jit.load(str(tmp_path / "traced.pt"))
    for inp in (x, torch.randn(1, 8, 9, 7)):
        with ops.use_backend("torch"):  # what the trace holds: the reference composition
            want = fn(inp)
        torch.testing.assert_close(loaded(inp), want, rtol=1e-6, atol=1e-6)
