"""DenseStepAdam: torch's fused Adam, bit for bit, without copying channels_last weights."""

import argparse
import copy

import pytest
import torch

from fastgan.engine.base import adam
from fastgan.engine.dense_adam import DenseStepAdam
from fastgan.engine.levels import EAGER, Levels


def _params(seed: int) -> list[torch.nn.Parameter]:
    """Weights of every kind the nets have: channels_last 4-d (with a channels_last gradient,
    and one whose gradient is contiguous), contiguous 4-d, a 4-d weight whose two layouts
    coincide (1x1), a (K, 3, 3, 3) weight whose dense view has its own shape, and a bias."""
    g = torch.Generator().manual_seed(seed)
    shapes = [(8, 5, 3, 3), (6, 4, 7, 7), (8, 5, 3, 3), (4, 6, 1, 1), (5, 3, 3, 3), (7,)]
    params = [torch.nn.Parameter(torch.randn(s, generator=g)) for s in shapes]
    for i in (0, 1, 4):
        params[i].data = params[i].data.contiguous(memory_format=torch.channels_last)
    return params


def _set_grads(params, step: int) -> None:
    g = torch.Generator().manual_seed(100 + step)
    for i, p in enumerate(params):
        grad = torch.randn(p.shape, generator=g)
        p.grad = grad if i == 1 else torch.empty_like(p).copy_(grad)  # the second: contiguous, its weight not


@pytest.mark.parametrize("amsgrad", [False, True])
def test_steps_equal_torchs_fused_adam_and_keep_every_tensor_in_its_shape(amsgrad):
    ours, theirs = _params(0), _params(0)
    dense = DenseStepAdam(ours, lr=2e-3, betas=(0.5, 0.999), weight_decay=0.01, amsgrad=amsgrad, fused=True)
    plain = torch.optim.Adam(theirs, lr=2e-3, betas=(0.5, 0.999), weight_decay=0.01, amsgrad=amsgrad, fused=True)
    strides = [p.stride() for p in ours]
    for step in range(4):
        _set_grads(ours, step)
        _set_grads(theirs, step)
        grads = [p.grad for p in ours]
        dense.step()
        plain.step()
        for p, q, stride, grad in zip(ours, theirs, strides, grads):
            assert torch.equal(p, q)
            assert p.stride() == stride and p.grad is grad
            for key, t in plain.state[q].items():
                mine = dense.state[p][key]
                assert mine.shape == t.shape and torch.equal(mine, t), key
                if t.dim() == 4:
                    assert mine.stride() == p.stride(), key
    assert str(dense.state_dict()) == str(plain.state_dict())


def test_a_state_dict_loads_both_ways():
    ours, theirs = _params(1), _params(1)
    dense = DenseStepAdam(ours, lr=1e-3, fused=True)
    plain = torch.optim.Adam(theirs, lr=1e-3, fused=True)
    _set_grads(theirs, 0)
    plain.step()
    dense.load_state_dict(copy.deepcopy(plain.state_dict()))  # (a live state's tensors would be shared)
    for p, q in zip(ours, theirs):
        p.data.copy_(q.data)
    for step in (1, 2):
        _set_grads(ours, step)
        _set_grads(theirs, step)
        dense.step()
        plain.step()
    assert all(torch.equal(p, q) for p, q in zip(ours, theirs))
    again = torch.optim.Adam(_params(1), lr=1e-3, fused=True)
    again.load_state_dict(copy.deepcopy(dense.state_dict()))
    assert str(again.state_dict()) == str(plain.state_dict())


def test_a_closure_steps_the_parameters_in_their_own_shapes():
    params = _params(2)
    shapes = []

    def closure():
        shapes.append([tuple(p.shape) for p in params])
        _set_grads(params, 0)
        return torch.tensor(0.0)

    DenseStepAdam(params, lr=1e-3, fused=True).step(closure)
    assert shapes == [[tuple(p.shape) for p in params]] and shapes[0][0] == (8, 5, 3, 3)


def test_the_training_models_use_it_for_fused_adam_on_a_cpu_only():
    opt = argparse.Namespace(lr=2e-4, beta1=0.5)
    p = [torch.nn.Parameter(torch.zeros(2))]
    assert type(adam(p, opt, Levels(adam="fused"), torch.device("cpu"))) is DenseStepAdam
    assert type(adam(p, opt, Levels(adam="foreach"), torch.device("cpu"))) is torch.optim.Adam
    assert type(adam(p, opt, EAGER)) is torch.optim.Adam


def _copies_made(step) -> int:
    """The aten copies (copy_ and clone, also those inside the fused kernel) step() makes."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        step()
    return sum(e.count for e in prof.key_averages() if e.key in ("aten::copy_", "aten::clone"))


def test_channels_last_weights_step_with_the_copies_of_contiguous_ones():
    weights = [p for p in _params(3) if p.dim() == 4 and not p.is_contiguous()]
    _set_grads(weights, 0)
    for p in weights:
        p.grad = torch.empty_like(p).copy_(p.grad)
    contiguous = [torch.nn.Parameter(p.detach().contiguous()) for p in weights]
    for p, q in zip(contiguous, weights):
        p.grad = q.grad.contiguous()
    counted = {}
    runs = (("channels_last", torch.optim.Adam, weights), ("contiguous", torch.optim.Adam, contiguous),
            ("dense", DenseStepAdam, weights))
    for name, kind, params in runs:
        optimizer = kind(params, lr=1e-3, fused=True)
        optimizer.step()  # the moments made
        counted[name] = _copies_made(optimizer.step)
    assert counted["dense"] == counted["contiguous"] < counted["channels_last"], counted
