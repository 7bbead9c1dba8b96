"""fastgan.nn.ReflectConv2d: nn.Conv2d's parameters, keys and initialisation; equal to
ReflectionPad2d + Conv2d forward and backward; from_modules shares the parameters and
refuses what it cannot represent."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

import fastgan.ops as ops
from fastgan.nn import ReflectConv2d
from fastgan.ops import _reflect_conv2d as rc

CPU_BACKENDS = ops.available_backends("cpu", op="reflect_conv2d")


def _pair(c_in=3, c_out=5, k=3, stride=1, padding=1, bias=True, seed=0):
    """A ReflectConv2d and the plain modules it replaces, with the same parameters."""
    torch.manual_seed(seed)
    plain = nn.Sequential(nn.ReflectionPad2d(padding), nn.Conv2d(c_in, c_out, k, stride, 0, bias=bias))
    fused = ReflectConv2d(c_in, c_out, k, stride, padding, bias=bias)
    fused.load_state_dict(plain[1].state_dict())
    return fused, plain


@pytest.mark.parametrize("bias", [True, False])
def test_parameters_and_keys_are_conv2ds(bias):
    conv = nn.Conv2d(4, 6, 7, bias=bias)
    m = ReflectConv2d(4, 6, 7, padding=3, bias=bias)
    assert list(m.state_dict()) == list(conv.state_dict()) == (["weight", "bias"] if bias else ["weight"])
    assert [n for n, _ in m.named_parameters()] == [n for n, _ in conv.named_parameters()]
    for (_, a), (_, b) in zip(m.named_parameters(), conv.named_parameters()):
        assert a.shape == b.shape and a.dtype == b.dtype
    assert m.bias is None if not bias else isinstance(m.bias, nn.Parameter)


def test_initialised_like_conv2d():
    torch.manual_seed(123)
    conv = nn.Conv2d(8, 16, 3)
    torch.manual_seed(123)
    m = ReflectConv2d(8, 16, 3)
    assert torch.equal(m.weight, conv.weight) and torch.equal(m.bias, conv.bias)
    bound = 1 / (8 * 9) ** 0.5
    assert m.bias.abs().max() <= bound and m.weight.abs().max() <= bound  # kaiming_uniform(a=sqrt(5))
    m.reset_parameters()
    assert not torch.equal(m.weight, conv.weight)


def test_state_dict_round_trip_with_conv2d():
    fused, plain = _pair(seed=1)
    back = nn.Conv2d(3, 5, 3)
    back.load_state_dict(fused.state_dict())
    assert torch.equal(back.weight, plain[1].weight) and torch.equal(back.bias, plain[1].bias)


@pytest.mark.parametrize("k,stride,padding", [(3, 1, 1), (7, 1, 3), (3, 2, 1)])
@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_forward_backward_match_pad_and_conv(backend, k, stride, padding):
    fused, plain = _pair(3, 4, k, stride, padding, seed=2)
    x = torch.randn(1, 3, 7, 9, dtype=torch.float64)
    fused, plain = fused.double(), plain.double()
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    with ops.use_backend(backend), rc.force_choice("triton" if backend == "triton" else "auto"):
        ya = fused(xa)
    yb = plain(xb)
    g = torch.randn_like(yb)
    ya.backward(g)
    yb.backward(g)
    tol = dict(rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(ya, yb, **tol)
    torch.testing.assert_close(xa.grad, xb.grad, **tol)
    torch.testing.assert_close(fused.weight.grad, plain[1].weight.grad, **tol)
    torch.testing.assert_close(fused.bias.grad, plain[1].bias.grad, **tol)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_unbatched_input_as_the_plain_modules_take_it(backend):
    fused, plain = _pair(3, 4, 3, 1, 1, seed=5)
    fused, plain = fused.double(), plain.double()
    x = torch.randn(3, 6, 5, dtype=torch.float64)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    with ops.use_backend(backend), rc.force_choice("triton" if backend == "triton" else "auto"):
        ya = fused(xa)
    yb = plain(xb)
    assert ya.shape == yb.shape == (4, 6, 5)
    g = torch.randn_like(yb)
    ya.backward(g)
    yb.backward(g)
    torch.testing.assert_close(ya, yb, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(xa.grad, xb.grad, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(fused.weight.grad, plain[1].weight.grad, rtol=1e-9, atol=1e-9)


def test_from_modules_shares_the_parameters():
    torch.manual_seed(3)
    pad, conv = nn.ReflectionPad2d(3), nn.Conv2d(3, 4, 7, bias=True)
    m = ReflectConv2d.from_modules(pad, conv)
    assert m.weight is conv.weight and m.bias is conv.bias
    assert (m.kernel_size, m.stride, m.padding, m.in_channels, m.out_channels) == ((7, 7), 1, 3, 3, 4)
    assert list(m.state_dict()) == ["weight", "bias"]
    x = torch.randn(1, 3, 8, 10)
    torch.testing.assert_close(m(x), conv(pad(x)), rtol=1e-5, atol=1e-5)
    opt = torch.optim.SGD(conv.parameters(), lr=0.1)  # an optimizer over the conv still updates m
    m(x).sum().backward()
    opt.step()
    assert m.weight is conv.weight
    assert conv.weight.grad is not None

    no_bias = ReflectConv2d.from_modules(nn.ReflectionPad2d(1), nn.Conv2d(4, 4, 3, stride=2, bias=False))
    assert no_bias.bias is None and list(no_bias.state_dict()) == ["weight"] and no_bias.stride == 2


@pytest.mark.parametrize("pad,conv,why", [
    (nn.ReflectionPad2d(1), nn.Conv2d(3, 4, 3, padding=1), "must not pad itself"),
    (nn.ReflectionPad2d((1, 1, 2, 2)), nn.Conv2d(3, 4, 3), "symmetric"),
    (nn.ReflectionPad2d(1), nn.Conv2d(4, 4, 3, groups=2), "groups=1"),
    (nn.ReflectionPad2d(1), nn.Conv2d(3, 4, 3, dilation=2), "dilation 1"),
    (nn.ReflectionPad2d(1), nn.Conv2d(3, 4, 3, stride=(1, 2)), "same in both directions"),
    (nn.ReplicationPad2d(1), nn.Conv2d(3, 4, 3), "nn.ReflectionPad2d"),
    (nn.ReflectionPad2d(1), nn.ConvTranspose2d(3, 4, 3), "nn.Conv2d"),
])
def test_from_modules_refuses_what_it_cannot_represent(pad, conv, why):
    with pytest.raises(ValueError, match=why):
        ReflectConv2d.from_modules(pad, conv)


def test_kernel_sizes_conv2d_takes_are_taken_and_others_refused():
    import numpy as np

    assert ReflectConv2d(3, 4, np.int64(3)).kernel_size == (3, 3)
    assert ReflectConv2d(3, 4, (3, 5), padding=2).weight.shape == (4, 3, 3, 5)
    for bad in ((3, 3, 3), 0, (3, 2.5), "3", True):
        with pytest.raises(ValueError, match="kernel_size must be an int >= 1 or a pair of them"):
            ReflectConv2d(3, 4, bad)


def test_an_unknown_back_end_is_refused_at_construction():
    with pytest.raises(ValueError, match="unknown back end 'bogus'"):
        ReflectConv2d(3, 4, 3, backend="bogus")
    with pytest.raises(ValueError, match="unknown back end 'bogus'"):
        ReflectConv2d.from_modules(nn.ReflectionPad2d(1), nn.Conv2d(3, 4, 3), backend="bogus")


def test_arguments():
    m = ReflectConv2d(2, 3, (3, 3), stride=(2, 2), padding=(1, 1), bias=False)
    assert m.stride == 2 and m.padding == 1 and m.bias is None
    assert "padding_mode=reflect" in repr(m) and "bias=False" in repr(m)
    with pytest.raises(ValueError, match="pair of equal ints"):
        ReflectConv2d(2, 3, 3, padding=(1, 2))
    m = ReflectConv2d(2, 3, 3, dtype=torch.float64)
    assert m.weight.dtype == torch.float64
