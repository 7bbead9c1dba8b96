"""FusedInstanceNormAct against nn.InstanceNorm2d (+ activation): the same parameters and
state_dict keys, state dicts loading both ways, the same outputs and gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

import fastgan.ops as ops
from fastgan.nn import FusedInstanceNormAct

BACKENDS = ops.available_backends("cpu", op="instance_norm_act")


def _input(shape=(2, 6, 9, 11), seed=0, channels_last=False):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g) * 2.0 + 1.5
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def _randomize(module, seed=1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5 + 1.0)


@pytest.mark.parametrize("affine", [False, True])
def test_state_dict_keys_and_parameters_match_instance_norm(affine):
    fused = FusedInstanceNormAct(6, affine=affine)
    plain = nn.InstanceNorm2d(6, affine=affine)
    assert list(fused.state_dict().keys()) == list(plain.state_dict().keys())
    assert [n for n, _ in fused.named_parameters()] == [n for n, _ in plain.named_parameters()]
    assert [n for n, _ in fused.named_buffers()] == [n for n, _ in plain.named_buffers()] == []
    for (_, a), (_, b) in zip(fused.state_dict().items(), plain.state_dict().items()):
        assert torch.equal(a, b)  # same initial values: weight 1, bias 0
    assert fused.state_dict()._metadata[""]["version"] == plain.state_dict()._metadata[""]["version"]


def test_state_dicts_load_both_ways():
    plain = nn.InstanceNorm2d(6, affine=True)
    _randomize(plain, seed=2)
    fused = FusedInstanceNormAct(6, affine=True)
    fused.load_state_dict(plain.state_dict())  # strict
    assert torch.equal(fused.weight, plain.weight) and torch.equal(fused.bias, plain.bias)
    _randomize(fused, seed=3)
    back = nn.InstanceNorm2d(6, affine=True)
    back.load_state_dict(fused.state_dict())
    assert torch.equal(back.weight, fused.weight) and torch.equal(back.bias, fused.bias)
    # inside a model, under its name, as a checkpoint would hold it
    model_plain = nn.Sequential(nn.Conv2d(3, 6, 3), nn.InstanceNorm2d(6, affine=True), nn.ReLU())
    model_fused = nn.Sequential(nn.Conv2d(3, 6, 3), FusedInstanceNormAct(6, affine=True))
    model_fused.load_state_dict(model_plain.state_dict())
    with pytest.raises(RuntimeError, match="size mismatch"):
        FusedInstanceNormAct(5, affine=True).load_state_dict(plain.state_dict())


def test_stale_running_stats_are_reported_like_instance_norm():
    sd = {"running_mean": torch.zeros(6), "running_var": torch.ones(6)}
    with pytest.raises(RuntimeError, match="running stats"):
        nn.InstanceNorm2d(6).load_state_dict(dict(sd))
    with pytest.raises(RuntimeError, match="running stats"):
        FusedInstanceNormAct(6).load_state_dict(dict(sd))


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
@pytest.mark.parametrize("affine", [False, True])
@pytest.mark.parametrize("activation", ["relu", "leaky_relu", "none"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_matches_instance_norm_plus_activation(backend, activation, affine, channels_last):
    plain = nn.InstanceNorm2d(6, affine=affine)
    if affine:
        _randomize(plain, seed=4)
    act = {"relu": nn.ReLU(), "leaky_relu": nn.LeakyReLU(0.2), "none": nn.Identity()}[activation]
    fused = FusedInstanceNormAct(6, affine=affine, activation=activation, negative_slope=0.2)
    fused.load_state_dict(plain.state_dict())
    x = _input(channels_last=channels_last)
    go = torch.randn(x.shape, generator=torch.Generator().manual_seed(5))

    xa = x.clone().requires_grad_()
    want = act(plain(xa))
    want.backward(go)
    xb = x.clone().requires_grad_()
    with ops.use_backend(backend):
        got = fused(xb)
    got.backward(go)
    # fp32 rounding: both are float32 computations of the same formula
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(xb.grad, xa.grad, rtol=1e-5, atol=1e-5)
    if affine:
        torch.testing.assert_close(fused.weight.grad, plain.weight.grad, rtol=1e-5, atol=1e-4)
        torch.testing.assert_close(fused.bias.grad, plain.bias.grad, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("backend", BACKENDS)
def test_residual_is_added_after_the_norm(backend):
    plain = nn.InstanceNorm2d(6, affine=True)
    _randomize(plain, seed=6)
    fused = FusedInstanceNormAct(6, affine=True, activation="none")
    fused.load_state_dict(plain.state_dict())
    x, r = _input(seed=7), _input(seed=8)
    with ops.use_backend(backend):
        got = fused(x, r)
    torch.testing.assert_close(got, r + plain(x), rtol=1e-5, atol=1e-5)


def test_repr_and_errors():
    assert "activation='leaky_relu', negative_slope=0.1" in repr(FusedInstanceNormAct(4, activation="leaky_relu",
                                                                                      negative_slope=0.1))
    with pytest.raises(ValueError, match="activation"):
        FusedInstanceNormAct(4, activation="gelu")
    with pytest.raises(ValueError, match="expected 3D or 4D input"):
        FusedInstanceNormAct(4)(torch.randn(4, 5))
    with pytest.raises(ValueError, match="unknown back end 'bogus'"):  # at construction, not first forward
        FusedInstanceNormAct(4, backend="bogus")
    with pytest.raises(ValueError, match="unknown back end 'bogus'"):
        FusedInstanceNormAct.from_modules(nn.InstanceNorm2d(4), backend="bogus")


@pytest.mark.parametrize("affine", [False, True])
def test_takes_what_instance_norm_takes_and_refuses_what_it_refuses(affine):
    """Unbatched (C, H, W) input; a channel count other than num_features (a warning
    without affine parameters, which never read it; an error with them); one pixel per
    plane (an error: nothing to normalize over) — each as nn.InstanceNorm2d does."""
    plain = nn.Sequential(nn.InstanceNorm2d(6, affine=affine), nn.LeakyReLU(0.1))
    _randomize(plain)
    fused = FusedInstanceNormAct.from_modules(plain[0], plain[1])
    x = _input((6, 9, 11))
    torch.testing.assert_close(fused(x), plain(x), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fused(x, x), x + plain(x), rtol=1e-5, atol=1e-5)
    other = _input((2, 3, 9, 11))
    if affine:
        with pytest.raises(ValueError, match=r"to match num_features \(6\), but got: 3"):
            plain(other)
        with pytest.raises(ValueError, match=r"to match num_features \(6\), but got: 3"):
            fused(other)
    else:
        with pytest.warns(UserWarning, match="does not match num_features"):
            expected = plain(other)
        with pytest.warns(UserWarning, match="does not match num_features"):
            torch.testing.assert_close(fused(other), expected, rtol=1e-5, atol=1e-5)
    one_pixel = _input((2, 6, 1, 1))
    for module in (plain, fused):
        with pytest.raises(ValueError, match="Expected more than 1 spatial element"):
            module(one_pixel)
