import math

import pytest
import torch
import torch.nn as nn

from fastgan.models import define_D, define_G, init_weights


def convs(net):
    return [m for m in net.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]


def test_normal_init_statistics():
    torch.manual_seed(0)
    net = define_G(3, 3, 16, "resnet_6blocks", norm="batch", init_gain=0.02)
    weights = torch.cat([m.weight.flatten() for m in convs(net)])
    assert weights.numel() > 400_000
    assert abs(weights.mean().item()) < 1e-3
    assert weights.std().item() == pytest.approx(0.02, rel=0.01)
    assert beyond_uniforms_bound(weights) == pytest.approx(0.083, abs=0.003)  # a normal draw
    # The last conv always has a bias: it must be zeroed.
    assert torch.equal(net.model[-2].bias, torch.zeros(3))
    bn = torch.cat([m.weight for m in net.modules() if isinstance(m, nn.BatchNorm2d)])
    assert bn.mean().item() == pytest.approx(1.0, abs=3e-3)
    assert bn.std().item() == pytest.approx(0.02, rel=0.15)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert torch.equal(m.bias, torch.zeros_like(m.bias))


def test_biases_zero_with_instance_norm():
    net = define_D(3, 16, "basic", norm="instance")
    biases = [m.bias for m in convs(net)]
    assert len(biases) == 5 and all(b is not None and torch.equal(b, torch.zeros_like(b)) for b in biases)


def test_gain_scales_normal_init():
    torch.manual_seed(0)
    net = define_D(3, 64, "basic", norm="instance", init_gain=0.1)
    assert net.model[8].weight.std().item() == pytest.approx(0.1, rel=0.01)
    # BatchNorm weights: N(1, gain)
    net = define_G(3, 3, 64, "resnet_9blocks", norm="batch", init_gain=0.3)
    bn = torch.cat([m.weight for m in net.modules() if isinstance(m, nn.BatchNorm2d)])
    assert bn.numel() > 5000 and bn.std().item() == pytest.approx(0.3, rel=0.05)


def beyond_uniforms_bound(w: torch.Tensor) -> float:
    """The share of values past sqrt(3) standard deviations: none from a uniform draw of that
    spread, 8.3% from a normal one."""
    return (w.abs() > math.sqrt(3) * w.std()).float().mean().item()


def test_xavier():
    torch.manual_seed(0)
    w = define_D(3, 64, "basic", norm="batch", init_type="xavier", init_gain=0.5).model[8].weight
    fan_in, fan_out = 256 * 16, 512 * 16
    assert w.std().item() == pytest.approx(0.5 * math.sqrt(2 / (fan_in + fan_out)), rel=0.01)
    assert beyond_uniforms_bound(w) == pytest.approx(0.083, abs=0.005)  # xavier_normal_, not _uniform_


def test_kaiming_ignores_gain_like_the_reference():
    torch.manual_seed(0)
    w = define_D(3, 64, "basic", norm="batch", init_type="kaiming", init_gain=0.5).model[8].weight
    assert w.std().item() == pytest.approx(math.sqrt(2 / (256 * 16)), rel=0.01)
    assert beyond_uniforms_bound(w) == pytest.approx(0.083, abs=0.005)


def test_orthogonal():
    torch.manual_seed(0)
    w = define_D(3, 16, "basic", norm="batch", init_type="orthogonal", init_gain=0.3).model[8].weight
    rows = w.flatten(1)  # 128 x 1024: orthonormal rows, times the gain
    assert torch.allclose(rows @ rows.T, 0.09 * torch.eye(128), atol=1e-5)


def test_seeded_init_is_reproducible_and_overrides_defaults():
    torch.manual_seed(1)
    a = define_D(3, 8, "basic", norm="batch")
    torch.manual_seed(1)
    b = define_D(3, 8, "basic", norm="batch")
    for (k, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(x, y), k
    # PyTorch's default conv init is uniform with a much larger spread than 0.02.
    assert a.model[0].weight.abs().max().item() < 0.2


def test_affine_instance_norm_and_syncbatch_keep_defaults_like_the_reference():
    # The reference matches class names containing "BatchNorm2d": SyncBatchNorm and
    # InstanceNorm2d are not drawn from N(1, gain).
    for norm in ("syncbatch", "instance_affine"):
        net = define_D(3, 8, "basic", norm=norm, init_gain=0.5)
        norms = [m for m in net.modules() if m.__class__.__name__ in ("SyncBatchNorm", "InstanceNorm2d")]
        assert len(norms) == 3
        for m in norms:
            assert torch.equal(m.weight, torch.ones_like(m.weight))
            assert torch.equal(m.bias, torch.zeros_like(m.bias))


def test_linear_layers_are_initialized():
    torch.manual_seed(0)
    net = init_weights(nn.Sequential(nn.Linear(500, 400)), "normal", 0.05)
    assert net[0].weight.std().item() == pytest.approx(0.05, rel=0.02)
    assert torch.equal(net[0].bias, torch.zeros(400))


def test_unknown_init_type():
    with pytest.raises(ValueError, match="normal, xavier, kaiming, orthogonal"):
        init_weights(nn.Conv2d(1, 1, 1), "uniform")
