"""fastgan.accelerate on the reference's own model definitions (tests/nn/reference_networks.py,
not fastgan's), on fastgan.models and on a model fastgan never saw: the patterns it
replaces, the keys and state dicts it keeps, outputs and gradients equal to the plain
model's to float32 rounding in train and eval mode, idempotence, the back end it pins,
and the look-alikes it must leave alone."""

from __future__ import annotations

import copy
import io
import logging
import re
import sys
import types

import pytest
import torch
import torch.nn as nn

import fastgan
import fastgan.ops as ops
from fastgan.models import define_D, define_G
from fastgan.nn import FusedInstanceNormAct, FusedResidualBlock, ReflectConv2d
from fastgan.ops import registry
from tests.nn import reference_networks as ref

# ----------------------------------------------------------------------------- models


class Residual(nn.Module):
    """A user's residual wrapper, adding in the other order than the reference."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, inp):
        return self.fn(inp) + inp


class UnseenNet(nn.Module):
    """A model fastgan never saw: pieces nested in a ModuleDict / ModuleList / Sequential,
    LeakyReLU(0.1) in place, affine norms, a strided reflect conv, a shared block."""

    def __init__(self):
        super().__init__()
        shared = Residual(nn.Sequential(nn.ReflectionPad2d(1), nn.Conv2d(8, 8, 3), nn.InstanceNorm2d(8, affine=True),
                                        nn.ReLU(), nn.ReflectionPad2d(1), nn.Conv2d(8, 8, 3, bias=False),
                                        nn.InstanceNorm2d(8)))
        self.stages = nn.ModuleDict({
            "stem": nn.Sequential(nn.ReflectionPad2d(2), nn.Conv2d(3, 8, 5), nn.InstanceNorm2d(8, affine=True),
                                  nn.LeakyReLU(0.1, inplace=True)),
            "body": nn.ModuleList([shared, Residual(copy.deepcopy(shared.fn)), shared]),
            "head": nn.Sequential(nn.Sequential(nn.ReflectionPad2d(1), nn.Conv2d(8, 4, 3, stride=2)),
                                  nn.InstanceNorm2d(4), nn.ReLU(), nn.Conv2d(4, 1, 1)),
        })

    def forward(self, x):
        x = self.stages["stem"](x)
        for block in self.stages["body"]:
            x = block(x)
        return self.stages["head"](x)


def _norm(name):
    return ref.get_norm_layer(name)


# name -> (builder, input shape, expected (reflect_conv, norm_act, residual, lone norm, lone conv)
# replacements)
MODELS = {
    "ref_resnet_instance": (lambda: ref.ResnetGenerator(3, 3, 4, _norm("instance"), n_blocks=2),
                            (2, 3, 20, 20), (6, 7, 2, 0, 4)),
    "ref_resnet_affine_dropout": (lambda: ref.ResnetGenerator(3, 3, 4, _norm("instance_affine"), use_dropout=True,
                                                              n_blocks=2), (2, 3, 20, 20), (6, 7, 2, 0, 4)),
    "ref_resnet_zero_padding": (lambda: ref.ResnetGenerator(3, 3, 4, _norm("instance"), n_blocks=2,
                                                            padding_type="zero"), (2, 3, 20, 20), (2, 7, 2, 0, 8)),
    "ref_resnet_batch": (lambda: ref.ResnetGenerator(3, 3, 4, _norm("batch"), n_blocks=2),
                         (2, 3, 20, 20), (6, 0, 0, 0, 4)),
    "ref_resnet_running_stats": (lambda: ref.ResnetGenerator(3, 3, 4, _norm("instance_running"), n_blocks=2),
                                 (2, 3, 20, 20), (6, 0, 0, 0, 4)),
    "ref_unet_instance": (lambda: ref.UnetGenerator(3, 3, 5, 4, _norm("instance"), use_dropout=True),
                          (2, 3, 32, 32), (0, 0, 0, 7, 10)),
    "ref_nlayer_instance": (lambda: ref.NLayerDiscriminator(6, 4, 3, _norm("instance")), (2, 6, 32, 32), (0, 3, 0, 0, 5)),
    "ref_pixel_affine": (lambda: ref.PixelDiscriminator(3, 4, _norm("instance_affine")), (2, 3, 9, 7), (0, 1, 0, 0, 3)),
    "fastgan_resnet_6blocks": (lambda: define_G(3, 3, 4, "resnet_6blocks", norm="instance", use_dropout=True),
                               (1, 3, 16, 16), (14, 11, 6, 0, 4)),
    "fastgan_unet_128_affine": (lambda: define_G(3, 3, 2, "unet_128", norm="instance_affine"),
                                (1, 3, 128, 128), (0, 0, 0, 11, 14)),
    "fastgan_basic_d": (lambda: define_D(6, 4, "basic", norm="instance"), (2, 6, 32, 32), (0, 3, 0, 0, 5)),
    "fastgan_n_layers_d_affine": (lambda: define_D(3, 4, "n_layers", n_layers_D=2, norm="instance_affine"),
                                  (2, 3, 24, 24), (0, 2, 0, 0, 4)),
    "fastgan_pixel_d": (lambda: define_D(3, 4, "pixel", norm="instance"), (2, 3, 8, 8), (0, 1, 0, 0, 3)),
    # stem 1+1; two distinct residual blocks 2+1+1 each (the third is shared); head 1+1; one lone conv
    "unseen": (UnseenNet, (2, 3, 18, 18), (6, 4, 2, 0, 1)),
}


def _build(name, seed=0):
    """The plain model, every parameter and running statistic random (so that affine
    norms are not 1/0 and a checkpoint's running stats are told apart from fresh ones)."""
    torch.manual_seed(seed)
    model = MODELS[name][0]()
    g = torch.Generator().manual_seed(seed + 100)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
        for key, b in model.named_buffers():
            if key.endswith("running_mean"):
                b.copy_(torch.randn(b.shape, generator=g) * 0.3)
            elif key.endswith("running_var"):
                b.copy_(torch.rand(b.shape, generator=g) + 0.5)
    return model


def _pair(name, seed=0):
    plain = _build(name, seed)
    return plain, fastgan.accelerate(copy.deepcopy(plain))


def _input(name, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(MODELS[name][1], generator=g) * 1.5 + 0.5


def _run(model, x, seed=2):
    """Output and gradients (input, then parameters by name) of a fixed random projection."""
    x = x.clone().requires_grad_(True)
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)  # dropout masks: drawn in the same order in both models
    out = model(x)
    weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed))
    (out * weights).sum().backward()
    grads = {"input": x.grad}
    grads.update((n, p.grad) for n, p in model.named_parameters())
    return out.detach(), grads


def _close(actual, expected, what, scale=None):
    """Equal to float32 rounding: within 2e-5 of `scale` (default: expected's largest
    magnitude) plus 1e-4 relative. A gradient that is zero but for rounding (the bias of
    a conv that an instance norm follows) is measured against the model's largest
    gradient, which sets the size of the rounding errors summed into it."""
    scale = scale or expected.abs().max().item() or 1.0
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=2e-5 * scale, msg=lambda m: f"{what}: {m}")


def _count_modules(model):
    modules = list({id(m): m for m in model.modules()}.values())
    return (sum(type(m) is ReflectConv2d for m in modules),
            sum(type(m) is FusedInstanceNormAct and m.activation != "none" for m in modules),
            sum(type(m) is FusedResidualBlock for m in modules),
            sum(type(m) is FusedInstanceNormAct and m.activation == "none" for m in modules)
            - sum(type(m) is FusedResidualBlock for m in modules),
            sum(type(m) in (fastgan.nn.Conv2d, fastgan.nn.ConvTranspose2d) for m in modules))


# ------------------------------------------------------------------ every model


@pytest.mark.parametrize("name", MODELS)
def test_replaces_the_expected_patterns(name):
    plain, accel = _pair(name)
    report = accel.accelerate_report
    expected = MODELS[name][2]
    assert tuple(report.counts().values()) == expected
    assert _count_modules(accel) == expected  # what is really in the model, counted apart from the report
    assert _count_modules(plain) == (0, 0, 0, 0, 0)


@pytest.mark.parametrize("name", MODELS)
def test_keys_parameters_and_metadata_unchanged(name):
    plain = _build(name)
    before_params = list(plain.named_parameters())
    before = plain.state_dict()
    fastgan.accelerate(plain)
    after = plain.state_dict()
    assert list(after) == list(before)
    assert all(torch.equal(after[k], before[k]) for k in before)
    assert after._metadata == before._metadata  # module versions too (InstanceNorm2d's 2, ...)
    after_params = list(plain.named_parameters())
    assert [n for n, _ in after_params] == [n for n, _ in before_params]
    assert all(a is b for (_, a), (_, b) in zip(after_params, before_params))  # the same Parameter objects


# float32 with the fused modules' vendor convolutions (choice "aten", for reflect_conv2d
# and the other convolutions): equal to float32 rounding. float64 with whatever the
# per-shape measurements pick, Winograd and the matrix-product convolutions included on
# CPU: Winograd's float32 error is up to ~50x a direct convolution's, which these random
# models (whose eval-mode running statistics amplify rounding ~1e4x) would turn into
# noise; in float64 it is ~1e-14 relative, so a wrong rewrite still fails.
@pytest.mark.parametrize("dtype,choice", [(torch.float32, "aten"), (torch.float64, "auto")], ids=str)
@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("name", MODELS)
def test_outputs_and_gradients_equal_the_plain_model(name, mode, dtype, choice):
    plain, accel = (m.to(dtype) for m in _pair(name))
    plain.train(mode == "train")
    accel.train(mode == "train")
    x = _input(name).to(dtype)
    out_plain, grads_plain = _run(plain, x)
    with ops.reflect_conv2d_choice(choice), ops.conv_choice(choice):
        out_accel, grads_accel = _run(accel, x)
    _close(out_accel, out_plain, "output")
    assert list(grads_accel) == list(grads_plain)
    largest = max(g.abs().max().item() for g in grads_plain.values())
    for key in grads_plain:
        _close(grads_accel[key], grads_plain[key], f"gradient of {key}", scale=largest)


@pytest.mark.parametrize("name", ["ref_resnet_affine_dropout", "ref_resnet_running_stats", "ref_pixel_affine",
                                  "unseen"])
def test_state_dicts_round_trip_both_ways(name):
    x = _input(name)
    # a checkpoint of the plain model loads into the accelerated one
    source = _build(name, seed=5).eval()
    accel = fastgan.accelerate(_build(name, seed=6)).eval()
    buffer = io.BytesIO()
    torch.save(source.state_dict(), buffer)
    buffer.seek(0)
    accel.load_state_dict(torch.load(buffer))  # strict
    _close(accel(x).detach(), source(x).detach(), "plain checkpoint in the accelerated model")
    # and a checkpoint of the accelerated model (after training changed it) loads into a plain one
    with torch.no_grad():
        for p in accel.parameters():
            p.mul_(-1.5)
    target = _build(name, seed=7).eval()
    target.load_state_dict(accel.state_dict())  # strict
    _close(target(x).detach(), accel(x).detach(), "accelerated checkpoint in a plain model")


@pytest.mark.parametrize("name", ["ref_resnet_instance", "ref_nlayer_instance", "unseen"])
def test_idempotent(name):
    _, accel = _pair(name)
    structure = repr(accel)
    modules = [id(m) for m in accel.modules()]
    keys = list(accel.state_dict())
    first = copy.deepcopy(accel.accelerate_report)
    assert fastgan.accelerate(accel) is accel
    assert accel.accelerate_report == first  # the second call replaced nothing, and kept the first's report
    assert repr(accel) == structure
    assert [id(m) for m in accel.modules()] == modules
    assert list(accel.state_dict()) == keys


# ----------------------------------------------------------------- specific behaviour


def test_reference_resnet_report_names_and_structure(caplog):
    model = ref.ResnetGenerator(3, 3, 4, _norm("instance"), n_blocks=1)
    with caplog.at_level(logging.INFO, logger="fastgan.nn.accelerate"):
        assert fastgan.accelerate(model) is model
    report = model.accelerate_report
    assert report.reflect_conv == ["model.10.conv_block.1", "model.10.conv_block.5", "model.1", "model.18"]
    assert report.norm_act == ["model.10.conv_block.2", "model.2", "model.5", "model.8", "model.12", "model.15"]
    assert report.residual == ["model.10"]
    assert report.left_alone == []
    assert "4 ReflectionPad2d+Conv2d -> ReflectConv2d" in caplog.text
    # the slots keep their indices: the fused module sits where its keys are, Identity elsewhere
    assert [type(m).__name__ for m in model.model[:4]] == ["Identity", "ReflectConv2d", "FusedInstanceNormAct",
                                                          "Identity"]
    block = model.model[10]
    assert isinstance(block, FusedResidualBlock) and block.body_name == "conv_block"
    assert block.conv_block[6].activation == "none"
    assert len(model.model) == 20


def test_an_optimizer_built_before_trains_the_accelerated_model_like_the_plain_one():
    plain = _build("ref_resnet_affine_dropout")
    accel = copy.deepcopy(plain)
    # SGD, so that gradients that are zero but for rounding (biases an instance norm
    # cancels) stay rounding-sized instead of being normalized into lr-sized steps
    opt_plain = torch.optim.SGD(plain.parameters(), lr=1e-2, momentum=0.9)
    opt_accel = torch.optim.SGD(accel.parameters(), lr=1e-2, momentum=0.9)
    fastgan.accelerate(accel)
    x = _input("ref_resnet_affine_dropout")
    for step in range(3):
        for model, opt in ((plain, opt_plain), (accel, opt_accel)):
            opt.zero_grad()
            torch.manual_seed(step)
            model(x).square().mean().backward()
            opt.step()
    for (name, a), (_, b) in zip(accel.named_parameters(), plain.named_parameters()):
        _close(a.detach(), b.detach(), name)
    assert not torch.equal(plain.model[1].weight, _build("ref_resnet_affine_dropout").model[1].weight)


def test_running_stats_norms_are_left_alone_and_said_so():
    model = fastgan.accelerate(ref.NLayerDiscriminator(3, 4, 2, _norm("instance_running")))
    report = model.accelerate_report
    assert report.norm_act == []
    assert len(report.left_alone) == 2 and all("running stats" in why for why in report.left_alone)
    assert report.left_alone[0].startswith("model.3: ")
    assert all(type(m) is nn.InstanceNorm2d for m in (model.model[3], model.model[6]))
    assert report.norm == []  # not swapped one for one either: eval mode would read the running stats


def _left_alone_cases():
    """Models in which no pattern may be fused, each with what the report should say. A plain
    InstanceNorm2d in them is still swapped one for one (FusedInstanceNormAct, no activation)."""
    hooked = nn.InstanceNorm2d(4)
    hooked.register_forward_hook(lambda m, i, o: o.mul_(2))

    class OwnSequential(nn.Sequential):
        def forward(self, x):  # not nn.Sequential's forward: slots may not run in order
            return super().forward(x) * 2

    class SubNorm(nn.InstanceNorm2d):
        pass

    return {
        "norm then conv": (nn.Sequential(nn.Conv2d(3, 4, 3), nn.InstanceNorm2d(4), nn.Conv2d(4, 4, 1)), None),
        "norm last": (nn.Sequential(nn.Conv2d(3, 4, 3), nn.InstanceNorm2d(4)), None),
        "norm then tanh": (nn.Sequential(nn.Conv2d(3, 4, 3), nn.InstanceNorm2d(4), nn.Tanh()), None),
        "pad then conv padding 1": (nn.Sequential(nn.ReflectionPad2d(1), nn.Conv2d(3, 4, 3, padding=1)),
                                    "must not pad itself"),
        "asymmetric pad": (nn.Sequential(nn.ReflectionPad2d((1, 1, 2, 2)), nn.Conv2d(3, 4, 3)), "symmetric"),
        "dilated conv": (nn.Sequential(nn.ReflectionPad2d(2), nn.Conv2d(3, 4, 3, dilation=2)), "dilation"),
        "grouped conv": (nn.Sequential(nn.ReflectionPad2d(1), nn.Conv2d(3, 6, 3, groups=3)), "groups"),
        "replication pad": (nn.Sequential(nn.ReplicationPad2d(1), nn.Conv2d(3, 4, 3)), None),
        "pad then relu": (nn.Sequential(nn.ReflectionPad2d(1), nn.ReLU()), None),
        "running stats": (nn.Sequential(nn.Conv2d(3, 4, 3), nn.InstanceNorm2d(4, track_running_stats=True),
                                        nn.ReLU()), "running stats"),
        "hooked norm": (nn.Sequential(nn.Conv2d(3, 4, 3), hooked, nn.ReLU()), "has hooks"),
        "own sequential": (OwnSequential(nn.ReflectionPad2d(1), nn.Conv2d(3, 4, 3), nn.InstanceNorm2d(4),
                                         nn.ReLU()), None),
        "norm subclass": (nn.Sequential(nn.Conv2d(3, 4, 3), SubNorm(4), nn.ReLU()), "a subclass of nn.InstanceNorm2d"),
        "norm and act in different sequentials": (nn.Sequential(nn.Sequential(nn.Conv2d(3, 4, 3),
                                                                              nn.InstanceNorm2d(4)), nn.ReLU()),
                                                  None),
        "sequential wrapping one that ends in a norm": (
            nn.Sequential(nn.Sequential(nn.Sequential(nn.Conv2d(3, 4, 3), nn.InstanceNorm2d(4))), nn.ReLU()), None),
    }


@pytest.mark.parametrize("case", list(_left_alone_cases()))
def test_look_alikes_are_left_alone(case):
    model, why = _left_alone_cases()[case]
    x = torch.randn(2, 3, 9, 7)
    expected = model(x)
    plain_norms = sum(type(m) is nn.InstanceNorm2d and not m.track_running_stats and not m._forward_hooks
                      for m in model.modules())
    plain_convs = sum(type(m) is nn.Conv2d and m.groups == 1 and m.dilation == (1, 1) for m in model.modules())
    structure = [FusedInstanceNormAct if type(m) is nn.InstanceNorm2d and not m.track_running_stats
                 and not m._forward_hooks else
                 fastgan.nn.Conv2d if type(m) is nn.Conv2d and m.groups == 1 and m.dilation == (1, 1) else
                 type(m) for m in model.modules()]
    fastgan.accelerate(model)
    report = model.accelerate_report
    assert report.counts() == {"reflect_conv": 0, "norm_act": 0, "residual": 0, "norm": plain_norms,
                               "conv": plain_convs}
    assert [type(m) for m in model.modules()] == structure
    if why is None:
        assert report.left_alone == []
    else:
        assert len(report.left_alone) == 1 and why in report.left_alone[0]
    if plain_norms:  # fastgan's norm kernel: equal to float32 rounding
        torch.testing.assert_close(model(x), expected, rtol=1e-5, atol=1e-5)
    else:  # the convolutions' measured choice forced to aten: the very same computation
        with fastgan.ops.conv_choice("aten"):
            torch.testing.assert_close(model(x), expected, rtol=0, atol=0)


class _Scaled(nn.Module):
    def __init__(self, body):
        super().__init__()
        self.body = body

    def forward(self, x):
        return x + 0.5 * self.body(x)


class _Difference(_Scaled):
    def forward(self, x):
        return self.body(x) - x


class _PreActivated(_Scaled):
    def forward(self, x):
        return x + self.body(torch.relu(x))


class _Doubled(_Scaled):
    def forward(self, x):
        y = self.body(x)  # one call and one add, of the body's output with itself
        return y + y


class _DataDependent(_Scaled):
    def forward(self, x):
        if x.mean() > 100:  # fx cannot trace this: not provably the pattern
            return x
        return x + self.body(x)


class _WithParameter(_Scaled):
    def __init__(self, body):
        super().__init__(body)
        self.gate = nn.Parameter(torch.ones(()))

    def forward(self, x):
        return x + self.body(x)


class _WithExtraState(_Scaled):
    def forward(self, x):
        return x + self.body(x)

    def get_extra_state(self):
        return {"note": 1}

    def set_extra_state(self, state):
        pass


class _Plain(_Scaled):
    def forward(self, x):
        return x + self.body(x)


def _body(last_relu=False):
    layers = [nn.ReflectionPad2d(1), nn.Conv2d(4, 4, 3), nn.InstanceNorm2d(4, affine=True)]
    return nn.Sequential(*layers, *([nn.ReLU()] if last_relu else []))


@pytest.mark.parametrize("make", [lambda: _Scaled(_body()), lambda: _Difference(_body()),
                                  lambda: _PreActivated(_body()), lambda: _Doubled(_body()),
                                  lambda: _DataDependent(_body()), lambda: _WithParameter(_body()),
                                  lambda: _WithExtraState(_body()), lambda: _Plain(_body(last_relu=True))],
                         ids=["scaled", "difference", "pre-activated", "doubled", "data-dependent", "own parameter",
                              "extra state", "body ends in relu"])
def test_residual_look_alikes_keep_their_add(make):
    block = make()  # (built per run: accelerate rewrites it in place)
    model = nn.Sequential(block)
    x = torch.randn(2, 4, 6, 6)
    expected = model(x)
    keys = list(model.state_dict())
    fastgan.accelerate(model)
    assert model[0] is block and model.accelerate_report.residual == []
    assert model.accelerate_report.reflect_conv == ["0.body.1"]
    assert list(model.state_dict()) == keys
    _close(model(x).detach(), expected.detach(), "output")


class _ResidualWhileTraining(_Scaled):
    def forward(self, x):
        return x + self.body(x) if self.training else self.body(x)


class _Switchable(_Scaled):
    use_skip = True

    def forward(self, x):
        if self.use_skip:
            return x + self.body(x)
        return self.body(x)


class _Frozen(_Scaled):
    @torch.no_grad()
    def forward(self, x):
        return x + self.body(x)


class _Float32Inside(_Scaled):
    def forward(self, x):
        with torch.autocast("cpu", enabled=False):
            return x + self.body(x)


def _accelerated_leaving_alone(block, why):
    """(accelerated, plain copy) of nn.Sequential(block), asserting the block kept its class
    and the report gives `why`."""
    model = nn.Sequential(block)
    plain = copy.deepcopy(model)
    fastgan.accelerate(model)
    assert type(model[0]) is type(block) and model.accelerate_report.residual == []
    assert model.accelerate_report.left_alone == [f"0: {why}"]
    return model, plain


@pytest.mark.parametrize("block_type", [_ResidualWhileTraining, _Switchable, _Frozen, _Float32Inside],
                         ids=["branch on training", "branch on a flag", "no_grad decorator", "autocast block"])
def test_residual_blocks_whose_forward_does_more_than_a_trace_records_are_left_alone(block_type):
    """A trace takes one side of a branch and records neither torch.no_grad() nor an
    autocast block: such a block keeps its forward, and the report says why."""
    model, plain = _accelerated_leaving_alone(block_type(_body()), "its forward is not exactly x + body(x)")
    x = torch.randn(2, 4, 6, 6, requires_grad=True)
    for train in (True, False):
        model.train(train), plain.train(train)
        for m in (model, plain):
            m[0].use_skip = not train
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got, expected = model(x), plain(x)
        assert got.requires_grad == expected.requires_grad and got.dtype == expected.dtype
        _close(got.detach(), expected.detach(), f"train={train}")


def test_a_residual_body_with_hooks_is_left_alone():
    model = nn.Sequential(_Plain(_body()))
    calls = []
    model[0].body.register_forward_hook(lambda m, i, o: calls.append(1) or o * 0.5)
    expected = model(torch.ones(1, 4, 6, 6))
    fastgan.accelerate(model)
    assert model.accelerate_report.residual == []
    assert model.accelerate_report.left_alone == ["0: body has hooks, which would no longer run"]
    calls.clear()
    _close(model(torch.ones(1, 4, 6, 6)).detach(), expected.detach(), "hooked body")
    assert calls == [1]


def test_hooks_registered_on_a_fused_blocks_body_after_accelerate_run():
    """The fused block runs its body's layers itself; a hook put on the body afterwards
    (feature extraction, an output replaced) makes it call the body, as the plain block."""
    x = torch.randn(1, 4, 6, 6)
    model = nn.Sequential(_Plain(_body()))
    plain = copy.deepcopy(model)
    fastgan.accelerate(model)
    assert model.accelerate_report.residual == ["0"]
    for m in (model, plain):
        m.calls = []
        m[0].body.register_forward_pre_hook(lambda mod, args, m=m: m.calls.append("pre"))
        m[0].body.register_forward_hook(lambda mod, args, out, m=m: m.calls.append("post") or out * 0.5)
    _close(model(x).detach(), plain(x).detach(), "hooked body")
    assert model.calls == plain.calls == ["pre", "post"]


def test_a_hook_registered_on_a_fused_blocks_norm_after_accelerate_sees_the_norms_output():
    """The fused norm adds x itself: a hook put on it afterwards makes the block run the plain
    way, so the hook gets (and may replace) the norm's output, not the sum."""
    x = torch.randn(1, 4, 6, 6)
    model = nn.Sequential(_Plain(_body()))
    plain = copy.deepcopy(model)
    fastgan.accelerate(model)
    seen = {}
    for name, m in (("accelerated", model), ("plain", plain)):
        m[0].body[-1].register_forward_hook(lambda mod, args, out, name=name: seen.setdefault(name, out) * 0.5)
    _close(model(x).detach(), plain(x).detach(), "hooked norm")
    _close(seen["accelerated"].detach(), seen["plain"].detach(), "what the hook saw")


def test_global_module_hooks_see_a_fused_blocks_body():
    x = torch.randn(1, 4, 6, 6)
    model = fastgan.accelerate(nn.Sequential(_Plain(_body())))
    body = model[0].body
    seen = []
    handle = nn.modules.module.register_module_forward_hook(lambda mod, args, out: seen.append(mod))
    try:
        model(x)
    finally:
        handle.remove()
    assert any(m is body for m in seen)


def _with_forward(module, forward):
    module.forward = forward
    return module


def _additions_cases():
    """Models whose modules hold something set on them that a replacement would lose, each
    with the slot of that module and the words the report should give."""
    with_buffer = nn.Conv2d(3, 4, 3)
    with_buffer.register_buffer("scale", torch.full((1,), 2.0))
    with_parameter = nn.InstanceNorm2d(4, affine=True)
    with_parameter.register_parameter("gamma", nn.Parameter(torch.ones(1)))
    tagged = nn.Conv2d(3, 4, 3)
    tagged.tag = "stem"
    gated = nn.Conv2d(3, 4, 3)
    gated.gate = nn.Linear(1, 1)
    return {
        "forward on the activation": (
            nn.Sequential(nn.Conv2d(3, 4, 3), nn.InstanceNorm2d(4), _with_forward(nn.ReLU(), torch.tanh)),
            2, "1: ReLU has its own forward"),
        "forward on a lone norm": (
            nn.Sequential(nn.Conv2d(3, 4, 3), _with_forward(nn.InstanceNorm2d(4), lambda x: x * 3)),
            1, "1: InstanceNorm2d has its own forward"),
        "forward on the pad": (
            nn.Sequential(_with_forward(nn.ReflectionPad2d(1), lambda x: nn.functional.pad(x, (1,) * 4)),
                          nn.Conv2d(3, 4, 3)),
            0, "1: ReflectionPad2d has its own forward"),
        "buffer on the conv": (nn.Sequential(nn.ReflectionPad2d(1), with_buffer), 1, "1: Conv2d has buffer 'scale'"),
        "parameter on the norm": (nn.Sequential(nn.Conv2d(3, 4, 3), with_parameter, nn.ReLU()),
                                  1, "1: InstanceNorm2d has parameter 'gamma'"),
        "attribute on a lone conv": (nn.Sequential(tagged), 0, "0: Conv2d has attribute 'tag'"),
        "module on the conv": (nn.Sequential(nn.ReflectionPad2d(1), gated, nn.InstanceNorm2d(4), nn.ReLU()), 1,
                               "1: Conv2d has module 'gate'"),
    }


@pytest.mark.parametrize("case", list(_additions_cases()))
def test_modules_holding_something_of_their_own_are_left_alone(case):
    model, slot, why = _additions_cases()[case]
    x = torch.randn(2, 3, 9, 7)
    expected = model(x)
    keys = list(model.state_dict())
    holder = model[slot]
    fastgan.accelerate(model)
    report = model.accelerate_report
    assert any(entry.startswith(why) for entry in report.left_alone), report.left_alone
    assert list(model.state_dict()) == keys
    assert model[slot] is holder
    torch.testing.assert_close(model(x), expected, rtol=1e-5, atol=1e-5)


def test_a_sequential_or_block_with_a_forward_of_its_own_is_left_alone():
    x = torch.randn(1, 4, 6, 6)
    seq = nn.Sequential(nn.ReflectionPad2d(1), nn.Conv2d(4, 4, 3), nn.InstanceNorm2d(4), nn.ReLU())
    seq.forward = lambda x: x * 2
    model = nn.Sequential(seq)
    fastgan.accelerate(model)
    assert model.accelerate_report.reflect_conv == [] and model.accelerate_report.norm_act == []
    _close(model(x), x * 2, "own forward")
    block = _Plain(_body())
    block.forward = lambda x: block.body(x) * 3
    model, plain = _accelerated_leaving_alone(block, "it has a forward set on the module, which would no "
                                                     "longer run")
    _close(model(x).detach(), plain(x).detach(), "block's own forward")


@pytest.mark.parametrize("module", [FusedInstanceNormAct(4), ReflectConv2d(4, 4, 3),
                                    fastgan.nn.Conv2d(4, 4, 3), fastgan.nn.ConvTranspose2d(4, 4, 3)],
                         ids=lambda m: type(m).__name__)
def test_modules_take_their_input_by_torchs_keyword(module):
    x = torch.randn(1, 4, 6, 6)
    torch.testing.assert_close(module(input=x), module(x))


class _InPlace(_Scaled):
    def forward(self, x):
        x += self.body(x)
        return x


def test_an_in_place_residual_add_is_left_alone():
    """`x += body(x)` writes into the caller's x, which the fused block would not (a
    trace records it as a plain add)."""
    model, plain = _accelerated_leaving_alone(_InPlace(_body()), "its forward is not exactly x + body(x)")
    x = torch.randn(2, 4, 6, 6)
    mine, theirs = x.clone(), x.clone()
    with torch.no_grad():
        _close(model(mine), plain(theirs), "output")
    _close(mine, theirs, "the caller's x, added to in place")
    assert not torch.equal(mine, x)


def test_in_place_operators_are_seen_in_the_bytecode_of_python_3_10_and_3_11():
    from types import SimpleNamespace as Instruction

    from fastgan.nn.accelerate import _in_place

    assert _in_place(Instruction(opname="INPLACE_ADD", argrepr=""))  # up to Python 3.10
    assert _in_place(Instruction(opname="BINARY_OP", argrepr="+="))  # since 3.11
    assert not _in_place(Instruction(opname="BINARY_OP", argrepr="+"))
    assert not _in_place(Instruction(opname="BINARY_ADD", argrepr=""))


class _HalvedCall(_Plain):
    def __call__(self, x):
        return super().__call__(x) * 0.5


def _dropout_body():
    return nn.Sequential(nn.ReflectionPad2d(1), nn.Dropout(0.5), nn.Conv2d(4, 4, 3), nn.InstanceNorm2d(4))


class _DropoutKeptOff(_Plain):
    """A block whose train() keeps its dropout in eval mode."""

    def train(self, mode=True):
        super().train(mode)
        self.body[1].eval()
        return self


class _MovedInFloat64(_Plain):
    def _apply(self, fn, recurse=True):
        return super()._apply(lambda t: fn(t).double(), recurse)


@pytest.mark.parametrize("block,what", [(_HalvedCall(_body()), "__call__"),
                                        (_DropoutKeptOff(_dropout_body()), "train"),
                                        (_MovedInFloat64(_body()), "_apply")],
                         ids=["__call__", "train", "_apply"])
def test_a_residual_block_whose_class_defines_module_methods_again_is_left_alone(block, what):
    """The stand-in would run nn.Module's method where the block's class has its own."""
    model, plain = _accelerated_leaving_alone(
        block, f"its class defines nn.Module's {what} again, which the fused block would not run")
    model.train(), plain.train()
    x = torch.randn(2, 4, 6, 6)
    torch.manual_seed(0)
    expected = plain(x).detach()
    torch.manual_seed(0)
    _close(model(x).detach(), expected, "output")


class _TakesInput(_Scaled):
    def forward(self, input):
        return input + self.body(input)


class _TakesInputByPosition(_Scaled):
    def forward(self, x, /):
        return x + self.body(x)


class _PrintsItself(_Plain):
    def extra_repr(self):
        return "a block that prints itself"


def test_a_residual_block_that_only_says_how_it_prints_is_fused():
    model = fastgan.accelerate(nn.Sequential(_PrintsItself(_body())))
    assert model.accelerate_report.residual == ["0"] and model.accelerate_report.left_alone == []


class _VersionTwo(_Plain):
    _version = 2  # a block whose state_dict layout changed once: its loader reads this back


def test_a_fused_residual_block_keeps_the_blocks_state_dict_version():
    model = nn.Sequential(_VersionTwo(_body()))
    before = model.state_dict()._metadata
    fastgan.accelerate(model)
    assert model.accelerate_report.residual == ["0"]
    assert before["0"]["version"] == 2 and model.state_dict()._metadata == before


def test_a_fused_block_traces_with_fx_on_its_own():
    block = fastgan.accelerate(nn.Sequential(_TakesInput(_body())))[0]
    x = torch.randn(2, 4, 6, 6)
    _close(torch.fx.symbolic_trace(block)(x).detach(), block(x).detach(), "traced block")


def test_a_fused_block_takes_its_input_by_the_blocks_own_keyword():
    plain = _TakesInput(_body())
    model = fastgan.accelerate(nn.Sequential(copy.deepcopy(plain)))
    assert model.accelerate_report.residual == ["0"]
    x = torch.randn(2, 4, 6, 6)
    expected = plain(input=x).detach()
    _close(model[0](input=x).detach(), expected, "by keyword")
    _close(model[0](x).detach(), expected, "by position")
    calls = [(lambda block: block(x=x), "_TakesInput.forward() got an unexpected keyword argument 'x'"),
             (lambda block: block(x, input=x), "got multiple values for argument 'input'"),
             (lambda block: block(), "missing 1 required positional argument: 'input'")]
    for call, message in calls:  # refused as the block itself refuses them
        with pytest.raises(TypeError, match=re.escape(message)):
            call(plain)
        with pytest.raises(TypeError, match=re.escape(message)):
            call(model[0])
    positional = fastgan.accelerate(nn.Sequential(_TakesInputByPosition(_body())))
    assert positional.accelerate_report.residual == ["0"]
    with pytest.raises(TypeError, match="unexpected keyword argument 'x'"):
        positional[0](x=x)


class _Described(_Plain):
    kind = "residual"

    def __init__(self, body, dim):
        super().__init__(body)
        self.dim = dim

    def describe(self, prefix):
        return f"{prefix} {self.kind} block of {self.dim}"

    @property
    def width(self):
        return self.dim * 2

    @classmethod
    def made_by(cls):
        return cls.__name__


def test_a_fused_block_keeps_the_blocks_attributes_and_methods():
    model = nn.Sequential(_Described(_body(), dim=4))
    fastgan.accelerate(model)
    block = model[0]
    assert isinstance(block, FusedResidualBlock) and model.accelerate_report.residual == ["0"]
    assert block.dim == 4 and block.kind == "residual" and block.width == 8
    assert block.describe("a") == "a residual block of 4"
    assert block.made_by() == "_Described"
    with pytest.raises(AttributeError, match=r"standing in for _Described\) has no attribute 'depth'"):
        block.depth
    loaded = torch.load(_saved(model), weights_only=False)  # the stand-in pickles, the class by name
    assert loaded[0].describe("b") == "b residual block of 4"


def _saved(model):
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    return buffer


def test_lone_modules_left_alone_are_reported():
    model = nn.Sequential(nn.Conv2d(3, 6, 3, groups=3), nn.InstanceNorm2d(6, track_running_stats=True),
                          nn.Conv2d(6, 4, 3, dilation=2), nn.Conv2d(4, 4, 1))
    fastgan.accelerate(model)
    report = model.accelerate_report
    assert report.conv == ["3"] and report.norm == []
    assert report.left_alone == ["0: Conv2d grouped or dilated",
                                 "1: InstanceNorm2d tracks running stats (its eval output uses them)",
                                 "2: Conv2d grouped or dilated"]


@pytest.mark.filterwarnings("ignore:`torch.jit.trace")
@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")  # torch's own instance norm check
@pytest.mark.parametrize("tracer", ["jit.trace", "fx.symbolic_trace"])
def test_an_accelerated_model_traces_as_the_plain_model(tracer):
    """Tracers record torch's compositions for fastgan's modules: the trace computes what
    the plain model does, for inputs of other sizes too (nothing measured was frozen in)."""
    plain, accel = _pair("ref_resnet_instance")
    accel.eval(), plain.eval()
    x = _input("ref_resnet_instance")
    if tracer == "jit.trace":
        traced = torch.jit.trace(accel, x, check_trace=False)  # its check reruns the fused path
    else:
        traced = torch.fx.symbolic_trace(accel)
        assert not [n for n in traced.graph.nodes if "fastgan" in str(n.target)]
    other = torch.randn(1, 3, 24, 28)
    for inp in (x, other):
        _close(traced(inp).detach(), plain(inp).detach(), tracer)


def test_residual_add_that_broadcasts_adds_the_plain_way():
    # x has 1 channel, the body 4: the add broadcasts x, which the fused op cannot do
    body = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.InstanceNorm2d(4, affine=True))
    model = nn.Sequential(_Plain(body))
    with torch.no_grad():
        body[1].weight.uniform_(0.5, 1.5)
    x = torch.randn(2, 1, 5, 5)
    expected = model(x).detach()
    fastgan.accelerate(model)
    assert isinstance(model[0], FusedResidualBlock)
    _close(model(x).detach(), expected, "broadcast residual")


def test_a_shared_block_stays_shared():
    model = _build("unseen")
    fastgan.accelerate(model)
    body = model.stages["body"]
    assert body[0] is body[2] and isinstance(body[0], FusedResidualBlock)
    assert body[0].fn is not body[1].fn


def test_a_module_shared_by_two_pairs_that_compute_alike_is_one_fused_module():
    """A conv after two pads of one size, a norm before two ReLUs: each fused once, both
    slots holding that one module (a hook set on it runs at both places, as on the plain
    model's); after pads of two sizes, two fused modules on the one set of parameters."""
    conv, norm = nn.Conv2d(3, 3, 3), nn.InstanceNorm2d(3, affine=True)
    model = nn.Sequential(nn.ReflectionPad2d(1), conv, norm, nn.ReLU(), nn.ReflectionPad2d(1), conv, norm, nn.ReLU(),
                          nn.ReflectionPad2d(2), conv)
    x = torch.randn(1, 3, 8, 8)
    expected = model(x).detach()
    fastgan.accelerate(model)
    assert isinstance(model[1], ReflectConv2d) and model[1] is model[5]
    assert isinstance(model[2], FusedInstanceNormAct) and model[2] is model[6]
    assert model[9] is not model[1] and model[9].weight is model[1].weight is conv.weight
    calls = []
    model[1].register_forward_hook(lambda *args: calls.append(1))
    _close(model(x).detach(), expected, "shared pairs")
    assert calls == [1, 1]


def test_subclasses_and_parametrized_modules_are_reported_left_alone():
    from torch.nn.utils import parametrizations

    class MyConv(nn.Conv2d):
        pass

    model = nn.Sequential(nn.ReflectionPad2d(1), parametrizations.weight_norm(nn.Conv2d(3, 4, 3)),
                          nn.InstanceNorm2d(4), nn.ReLU(), nn.ReflectionPad2d(1), MyConv(4, 4, 3), nn.Conv2d(4, 4, 1))
    fastgan.accelerate(model)
    assert model.accelerate_report.left_alone == [
        "1: Conv2d parametrized (weight computed at each call by torch.nn.utils.parametrize)",
        "5: a MyConv, a subclass of nn.Conv2d (its forward may differ)"]
    assert model.accelerate_report.norm_act == ["2"] and model.accelerate_report.conv == ["6"]
    fastgan.accelerate(model)  # fastgan's own modules are no such subclasses
    assert len(model.accelerate_report.left_alone) == 2


def test_the_accelerated_model_pickles_whole():
    plain, accel = _pair("unseen")
    loaded = torch.load(_saved(accel), weights_only=False)
    x = _input("unseen")
    assert list(loaded.state_dict()) == list(plain.state_dict())
    torch.testing.assert_close(loaded(x), accel(x), rtol=0, atol=0)


# --------------------------------------------------------------------- back ends


@pytest.fixture
def chosen_backends(monkeypatch):
    """The back end each fastgan op call ran on, in call order: (op, back end)."""
    calls = []
    select = registry.Op.select

    def spy(self, device_type, warn=True):
        chosen = select(self, device_type, warn)
        calls.append((self.name, chosen[0]))
        return chosen

    monkeypatch.setattr(registry.Op, "select", spy)
    return calls


def test_a_named_backend_is_pinned_whatever_the_callers_choice(chosen_backends):
    plain, accel = _build("ref_resnet_instance"), fastgan.accelerate(_build("ref_resnet_instance"), backend="torch")
    x = _input("ref_resnet_instance")
    with ops.use_backend("cpu"):
        out = accel(x)
    assert {op for op, _ in chosen_backends} == {"reflect_conv2d", "instance_norm_act"}
    assert {backend for _, backend in chosen_backends} == {"torch"}
    assert len(chosen_backends) == 6 + 7 + 2
    _close(out.detach(), plain(x).detach(), "torch back end")
    assert "backend='torch'" in repr(accel.model[1])


def test_a_second_call_with_another_backend_moves_the_fused_modules_to_it(chosen_backends):
    accel = fastgan.accelerate(_build("ref_resnet_instance"), backend="cpu")
    accel.model.append(FusedInstanceNormAct(3, backend="cpu"))  # one the user made
    report = copy.deepcopy(accel.accelerate_report)
    assert fastgan.accelerate(accel, backend="torch") is accel
    accel(_input("ref_resnet_instance"))
    assert {backend for _, backend in chosen_backends} == {"torch"} and len(chosen_backends) == 6 + 7 + 2 + 1
    assert accel.accelerate_report == report
    fastgan.accelerate(accel)  # "auto" leaves them where they are
    assert {m.backend for m in accel.modules() if isinstance(m, (ReflectConv2d, FusedInstanceNormAct))} == {"torch"}


def test_a_named_backend_an_op_lacks_leaves_its_modules_on_auto(chosen_backends, monkeypatch, caplog):
    """reflect_conv2d has no cuda back end: accelerate(model, backend="cuda") pinned the
    ReflectConv2d modules to it, and their first forward raised. Here the same with a
    reflect_conv2d that lacks "cpu"."""
    accelerate_module = sys.modules["fastgan.nn.accelerate"]  # (fastgan.nn.accelerate is the function)
    real = registry.ops()
    lacking = types.SimpleNamespace(backends=lambda: [b for b in real["reflect_conv2d"].backends() if b != "cpu"])
    monkeypatch.setattr(accelerate_module, "ops", lambda: {**real, "reflect_conv2d": lacking})
    with caplog.at_level(logging.INFO, logger="fastgan.nn.accelerate"):
        accel = fastgan.accelerate(_build("ref_resnet_instance"), backend="cpu")
    assert {m.backend for m in accel.modules() if isinstance(m, ReflectConv2d)} == {"auto"}
    assert {m.backend for m in accel.modules() if isinstance(m, FusedInstanceNormAct)} == {"cpu"}
    assert "reflect_conv2d has no 'cpu' back end: its modules choose theirs by auto" in caplog.text


def test_auto_follows_the_callers_choice(chosen_backends):
    accel = fastgan.accelerate(_build("ref_nlayer_instance"))
    x = _input("ref_nlayer_instance")
    with ops.use_backend("torch"):
        accel(x)
    assert [backend for _, backend in chosen_backends] == ["torch"] * 3
    chosen_backends.clear()
    accel(x)
    assert [backend for _, backend in chosen_backends] == [ops.backend_for("instance_norm_act", "cpu")] * 3


def test_bad_backends_are_refused_at_once():
    model = _build("ref_pixel_affine")
    with pytest.raises(ValueError, match="unknown back end"):
        fastgan.accelerate(model, backend="fastest")
    if not torch.cuda.is_available():
        with pytest.raises(ops.BackendUnavailableError):
            fastgan.accelerate(model, backend="cuda")
    assert _count_modules(model) == (0, 0, 0, 0, 0)


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")
def test_script_modules_are_refused():
    with pytest.raises(TypeError, match="not TorchScript ones"):
        fastgan.accelerate(torch.jit.script(nn.Sequential(nn.ReflectionPad2d(1), nn.Conv2d(3, 4, 3))))
    with pytest.raises(TypeError, match="takes an nn.Module, got function"):
        fastgan.accelerate(lambda x: x)


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")
def test_scripting_an_accelerated_model_is_one_clear_error():
    """Each of fastgan.nn's modules, inside a model or alone: torch.jit.script names it
    (it failed with a TorchScript compile error from inside fastgan's tracing check)."""
    model = nn.Sequential(nn.ReflectionPad2d(1), nn.Conv2d(3, 4, 3), nn.InstanceNorm2d(4), nn.ReLU(),
                          _Plain(nn.Sequential(nn.Conv2d(4, 4, 1), nn.InstanceNorm2d(4))),
                          nn.InstanceNorm2d(4), nn.Conv2d(4, 4, 1), nn.ConvTranspose2d(4, 3, 2))
    fastgan.accelerate(model)
    fused = {type(m).__name__ for m in model.modules() if type(m).__module__.startswith("fastgan.nn")}
    assert fused == {"ReflectConv2d", "FusedInstanceNormAct", "FusedResidualBlock", "Conv2d", "ConvTranspose2d"}
    for m in [model, *model]:
        if type(m).__module__.startswith("fastgan.nn"):
            with pytest.raises(TypeError, match=rf"^torch.jit.script cannot compile fastgan.nn's {type(m).__name__} "
                                                r"\(its forward picks kernels in Python\): torch.compile"):
                torch.jit.script(m)
    with pytest.raises(TypeError, match="cannot compile fastgan.nn's"):
        torch.jit.script(model)


def test_an_accelerated_model_runs_on_the_meta_device():
    """Shape inference and deferred initialisation: the accelerated model on meta tensors gives
    what the plain one gives (reflect_conv2d asked meta for its autocast state and failed)."""
    plain = _build("ref_resnet_instance")
    accel = fastgan.accelerate(_build("ref_resnet_instance")).to("meta")
    x = _input("ref_resnet_instance")
    y = accel(x.to("meta"))
    assert y.device.type == "meta" and y.shape == plain(x).shape


@pytest.mark.parametrize("backend", ["auto", "torch"])
def test_torch_func_transforms_run_the_compositions(backend):
    """README: torch.func (grad of the input, of the parameters through functional_call, vmap
    over a batch) runs an accelerated model on any back end, through the ops' torch
    compositions (the fused kernels' autograd rules are not functorch's), equal to the plain
    model's."""
    plain, accel = _build("ref_resnet_instance"), fastgan.accelerate(_build("ref_resnet_instance"), backend=backend)
    x = _input("ref_resnet_instance")

    def input_grad(model):
        return torch.func.grad(lambda y: model(y).square().mean())(x)

    def weight_grads(model):
        params = dict(model.named_parameters())
        return torch.func.grad(lambda p: torch.func.functional_call(model, p, (x,)).square().mean())(params)

    _close(input_grad(accel), input_grad(plain), "torch.func.grad of the input")
    expected = weight_grads(plain)
    largest = max(g.abs().max().item() for g in expected.values())  # as in the plain-backward comparison
    for name, grad in weight_grads(accel).items():
        _close(grad, expected[name], f"torch.func.grad of {name}", scale=largest)
    batched = torch.func.vmap(lambda y: accel(y.unsqueeze(0)).squeeze(0))(x)
    _close(batched, plain(x).detach(), "torch.func.vmap")


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")  # torch's jvp decompositions
@pytest.mark.parametrize("backend", ["auto", "torch"])
def test_forward_mode_ad_runs_the_compositions(backend):
    """Dual tensors (torch.autograd.forward_ad) through an accelerated model: its tangent is
    the plain model's (the fused kernels' autograd rules have no jvp)."""
    import torch.autograd.forward_ad as forward_ad

    plain, accel = _build("ref_resnet_instance"), fastgan.accelerate(_build("ref_resnet_instance"), backend=backend)
    x = _input("ref_resnet_instance")
    tangent = torch.randn_like(x)
    with forward_ad.dual_level():
        expected = forward_ad.unpack_dual(plain(forward_ad.make_dual(x, tangent)))
        actual = forward_ad.unpack_dual(accel(forward_ad.make_dual(x, tangent)))
    _close(actual.primal, expected.primal, "primal")
    _close(actual.tangent, expected.tangent, "tangent")


class _CheckpointedStages(nn.Module):
    """A model that recomputes its stages in backward (torch.utils.checkpoint, non-reentrant,
    as torch recommends): a stem of shapes new to the measured convolution choices (measured
    inside the checkpointed forward), then residual blocks."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 7, 3, padding=1), nn.InstanceNorm2d(7), nn.ReLU(True),
                                  nn.ReflectionPad2d(1), nn.Conv2d(7, 5, 3), nn.InstanceNorm2d(5), nn.ReLU(True))
        self.blocks = nn.ModuleList([_Plain(_body_of(5)), _Plain(_body_of(5))])

    def forward(self, x):
        from torch.utils.checkpoint import checkpoint

        x = checkpoint(self.stem, x, use_reentrant=False)
        for block in self.blocks:
            x = checkpoint(block, x, use_reentrant=False)
        return x


def _body_of(channels):
    return nn.Sequential(nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3), nn.InstanceNorm2d(channels),
                         nn.ReLU(), nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3),
                         nn.InstanceNorm2d(channels))


def test_non_reentrant_checkpointing_trains_the_accelerated_model_as_the_plain_one():
    """The recomputation must save what the forward saved: the fused ops' backward reads
    their saved tensors (which recomputes the forward) with autograd recording, and a shape
    measured inside the checkpointed forward keeps its candidates' saved tensors out of it."""
    torch.manual_seed(0)
    plain = _CheckpointedStages()
    accel = fastgan.accelerate(copy.deepcopy(plain))
    assert accel.accelerate_report.residual == ["blocks.0", "blocks.1"]
    from fastgan.ops import _reflect_conv2d, _unfolded_conv

    _unfolded_conv.clear_selection_cache()  # shapes measured inside the checkpointed forward
    _reflect_conv2d.clear_selection_cache()
    x = torch.randn(1, 3, 13, 11)
    for step in range(2):
        for model in (plain, accel):
            model.zero_grad()
            model(x).square().mean().backward()
        largest = max(p.grad.abs().max().item() for p in plain.parameters())
        for (name, mine), theirs in zip(accel.named_parameters(), plain.parameters()):
            _close(mine.grad, theirs.grad, f"step {step}: {name}.grad", scale=largest)


def test_compiles_without_graph_breaks():
    plain, accel = _build("ref_resnet_instance"), fastgan.accelerate(_build("ref_resnet_instance"), backend="cpu")
    x = _input("ref_resnet_instance")
    compiled = torch.compile(accel, backend="eager", fullgraph=True)
    _close(compiled(x).detach(), plain(x).detach(), "compiled")


def _backward_node_names(output: torch.Tensor) -> set[str]:
    seen, names, stack = set(), set(), [output.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        names.add(node.name())
        stack.extend(next_node for next_node, _ in node.next_functions)
    return names


def test_an_accelerated_generator_takes_the_light_autograd_paths_in_eager_mode():
    """Its parameters (nn.Parameter) and activations take reflect_conv2d's autograd.Function
    path (fastgan/ops/_eager.py) and instance_norm_act's C++ rule, not the registered ops'
    heavier Python host path."""
    net = fastgan.accelerate(define_G(3, 3, 8, "resnet_6blocks", norm="instance", init_gain=0.02))
    with ops.use_backend("auto"):
        names = _backward_node_names(net(torch.randn(1, 3, 32, 32)))
    assert "_EagerReflectConv2dBackward" in names
    assert any(name.startswith("torch::autograd::CppNode<") and "InstanceNormAct" in name for name in names), names
    assert not any(name.startswith("GeneratedBackwardFor_fastgan") for name in names), names


def test_accelerate_draws_nothing_from_the_random_stream():
    """A training run accelerates its nets between seeding and drawing: accelerate must leave
    the stream where it was (a resumed run, whose process had accelerated before, drew
    differently from the run that was never stopped)."""
    import importlib

    importlib.import_module("fastgan.nn.accelerate")._fresh_module.cache_clear()  # its first use builds modules
    model = nn.Sequential(nn.ReflectionPad2d(1), nn.Conv2d(3, 4, 3), nn.InstanceNorm2d(4), nn.ReLU(),
                          nn.ConvTranspose2d(4, 4, 3), nn.LeakyReLU(0.2))
    torch.manual_seed(3)
    expected = torch.rand(4)
    torch.manual_seed(3)
    fastgan.accelerate(model)
    assert torch.equal(torch.rand(4), expected)


def test_an_accelerated_model_exported_under_autocast_holds_no_casts_of_that_moment():
    """torch.export records aten ops without autocast's casts (they apply where the program
    runs): the fused ops must not bake the autocast in force while exporting into the program
    either. Run outside autocast, it computes in float32, as the plain model's program does."""
    torch.manual_seed(0)
    plain = nn.Sequential(nn.ReflectionPad2d(1), nn.Conv2d(3, 4, 3), nn.InstanceNorm2d(4), nn.ReLU(),
                          nn.Conv2d(4, 4, 3, padding=1))
    accel = fastgan.accelerate(copy.deepcopy(plain), backend="cpu")
    x = torch.randn(1, 3, 16, 16)
    with torch.autocast("cpu", torch.bfloat16):
        exported = torch.export.export(accel, (x,))
    assert not [n for n in exported.graph.nodes if "to.dtype" in str(n.target)]
    out = exported.module()(x)
    assert out.dtype == torch.float32
    _close(out.detach(), plain(x).detach(), "exported under autocast")


# ------------------------------------------------- what a fused module must carry over


def _accelerated_equals_plain(model, x):
    plain = copy.deepcopy(model)
    fastgan.accelerate(model)
    torch.testing.assert_close(model(x), plain(x))
    return model


class _SharedNorm(nn.Module):
    """One norm before two activations of other slopes."""

    def __init__(self):
        super().__init__()
        norm = nn.InstanceNorm2d(3)
        self.gentle, self.steep = nn.Sequential(norm, nn.LeakyReLU(0.2)), nn.Sequential(norm, nn.LeakyReLU(0.5))

    def forward(self, x):
        return self.gentle(x) + self.steep(x)


@pytest.mark.parametrize("make", [
    lambda: nn.Sequential(nn.ReflectionPad2d(1), nn.Conv2d(3, 3, 3, stride=(1, 2))),
    lambda: nn.Sequential(nn.Conv2d(3, 3, 3), nn.InstanceNorm2d(3, eps=0.5), nn.ReLU()),
    lambda: nn.Sequential(nn.Conv2d(3, 3, 3, padding=1, padding_mode="circular")),
    lambda: nn.Sequential(nn.Conv2d(3, 3, 3, padding=1, padding_mode="reflect")),
    _SharedNorm,
], ids=["unequal strides", "norm eps", "circular conv", "reflect conv", "one norm two slopes"])
def test_settings_of_the_replaced_modules_are_kept(make):
    _accelerated_equals_plain(make(), torch.randn(1, 3, 16, 16))


class _Counting(_Plain):
    """A residual block whose forward does more than the add: counts its calls."""

    def __init__(self, body):
        super().__init__(body)
        self.calls = 0

    def forward(self, x):
        self.calls = self.calls + 1
        return x + self.body(x)


class _DoublingSequential(nn.Sequential):
    def forward(self, x):
        return super().forward(x) * 2


def test_a_residual_block_with_side_effects_or_a_body_of_its_own_forward_is_not_fused():
    model = fastgan.accelerate(nn.Sequential(_Counting(_body())))
    assert model.accelerate_report.residual == [] and model[0].calls == 0  # (nor called while accelerating)
    model = _accelerated_equals_plain(nn.Sequential(_Plain(_DoublingSequential(*_body()))), torch.randn(1, 4, 8, 8))
    assert model.accelerate_report.residual == []


def test_a_fused_residual_block_under_autocast_adds_as_the_plain_block():
    plain = nn.Sequential(_Plain(_body()))
    accelerated = fastgan.accelerate(copy.deepcopy(plain))
    assert accelerated.accelerate_report.residual == ["0"]
    x = torch.randn(1, 4, 8, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        torch.testing.assert_close(accelerated(x), plain(x))


def test_a_model_in_eval_mode_stays_in_eval_mode():
    model = nn.Sequential(nn.ReflectionPad2d(1), nn.Conv2d(4, 4, 3), nn.InstanceNorm2d(4), nn.ReLU(),
                          _Plain(_body())).eval()
    fastgan.accelerate(model)
    assert model.accelerate_report.residual and not [m for m in model.modules() if m.training]
