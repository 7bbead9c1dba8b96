"""Forward passes on small networks: shapes and the reference's computations."""

import itertools

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from fastgan.models import (
    ResnetGenerator,
    UnetSkipConnectionBlock,
    define_D,
    define_G,
    get_norm_layer,
)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.mark.parametrize("norm", ["instance", "batch", "none"])
def test_basic_patchgan_maps_256_to_30x30(norm):
    out = define_D(3, 4, "basic", norm=norm)(torch.randn(2, 3, 256, 256))
    assert out.shape == (2, 1, 30, 30)


def test_n_layers_and_pixel_discriminator_shapes():
    assert define_D(6, 4, "n_layers", n_layers_D=5)(torch.randn(1, 6, 256, 256)).shape == (1, 1, 6, 6)
    assert define_D(3, 4, "pixel")(torch.randn(2, 3, 40, 24)).shape == (2, 1, 40, 24)


def test_discriminators_compute_the_references_layers():
    """REFERENCE.md's NLayerDiscriminator (k4 p1: three s2 convs, one s1, the s1 output conv,
    LeakyReLU(0.2) after each but the last) and PixelDiscriminator (1x1 convs, LeakyReLU(0.2)),
    written out with torch.nn.functional on the nets' own weights."""
    def lrelu(t):
        return F.leaky_relu(t, 0.2)

    def norm(t):
        return F.instance_norm(t, eps=1e-5)

    x = torch.randn(2, 3, 70, 70)
    d = define_D(3, 8, "basic", norm="instance", init_gain=0.5).eval()
    c = [m for m in d.modules() if isinstance(m, nn.Conv2d)]
    want = lrelu(F.conv2d(x, c[0].weight, c[0].bias, 2, 1))
    for conv, stride in zip(c[1:4], (2, 2, 1)):
        want = lrelu(norm(F.conv2d(want, conv.weight, conv.bias, stride, 1)))
    want = F.conv2d(want, c[4].weight, c[4].bias, 1, 1)
    torch.testing.assert_close(d(x), want)

    p = define_D(3, 8, "pixel", norm="instance", init_gain=0.5).eval()
    c = [m for m in p.modules() if isinstance(m, nn.Conv2d)]
    want = F.conv2d(lrelu(norm(F.conv2d(lrelu(F.conv2d(x, c[0].weight, c[0].bias)), c[1].weight, c[1].bias))),
                    c[2].weight, c[2].bias)
    torch.testing.assert_close(p(x), want)


def test_discriminator_has_no_sigmoid():
    d = define_D(3, 4, "basic", norm="instance", init_gain=1.0)
    out = d(torch.randn(1, 3, 64, 64))
    assert out.min().item() < 0 or out.max().item() > 1


@pytest.mark.parametrize("netG, size", [("resnet_9blocks", 48), ("resnet_6blocks", 36),
                                        ("unet_128", 128), ("unet_256", 256)])
def test_generators_preserve_size_and_end_in_tanh(netG, size):
    g = define_G(3, 2, 4, netG, norm="batch", init_gain=1.0)
    out = g(torch.randn(1, 3, size, size))
    assert out.shape == (1, 2, size, size)
    assert out.abs().max().item() <= 1.0
    assert out.abs().max().item() > 0.5  # gain 1 saturates: tanh really is applied


def test_resnet_block_is_residual():
    g = define_G(3, 3, 4, "resnet_6blocks", norm="instance")
    block = g.model[10]
    x = torch.randn(1, 16, 8, 8)
    assert torch.allclose(block(x), x + block.conv_block(x))


@pytest.mark.parametrize("padding_type, pad_cls, conv_idx", [
    ("reflect", nn.ReflectionPad2d, (1, 5)),
    ("replicate", nn.ReplicationPad2d, (1, 5)),
    ("zero", None, (0, 3)),
])
def test_resnet_padding_types(padding_type, pad_cls, conv_idx):
    g = define_G(3, 3, 4, "resnet_6blocks", norm="instance", padding_type=padding_type)
    block = g.model[10].conv_block
    convs = [i for i, m in enumerate(block) if isinstance(m, nn.Conv2d)]
    assert tuple(convs) == conv_idx
    pads = [type(m) for m in block if not isinstance(m, (nn.Conv2d, nn.InstanceNorm2d, nn.ReLU))]
    assert pads == ([pad_cls, pad_cls] if pad_cls else [])
    if pad_cls is None:
        assert block[0].padding == (1, 1)
    # The generator's outer 7x7 convs reflect-pad whatever padding_type says.
    assert isinstance(g.model[0], nn.ReflectionPad2d) and isinstance(g.model[-3], nn.ReflectionPad2d)
    assert g(torch.randn(1, 3, 20, 20)).shape == (1, 3, 20, 20)


def test_unknown_padding_type():
    with pytest.raises(ValueError, match="reflect, replicate, zero"):
        ResnetGenerator(3, 3, 4, get_norm_layer("instance"), n_blocks=1, padding_type="circular")


def test_dropout_is_active_in_train_mode_only():
    g = define_G(3, 3, 4, "resnet_6blocks", norm="instance", use_dropout=True)
    assert sum(isinstance(m, nn.Dropout) and m.p == 0.5 for m in g.modules()) == 6
    x = torch.randn(1, 3, 16, 16)
    assert not torch.equal(g(x), g(x))
    g.eval()
    assert torch.equal(g(x), g(x))


def test_unet_dropout_only_in_the_8ngf_middle_blocks():
    g = define_G(3, 3, 4, "unet_256", norm="batch", use_dropout=True)
    dropout_blocks = [m for m in g.modules() if isinstance(m, UnetSkipConnectionBlock)
                      and isinstance(m.model[-1], nn.Dropout)]
    assert len(dropout_blocks) == 8 - 5
    assert all(b.model[1].out_channels == 32 for b in dropout_blocks)


def test_unet_skip_carries_leaky_relu_of_input_like_the_reference():
    # The reference's in-place LeakyReLU rewrites the block's input before the
    # concatenation, so the skip half is LeakyReLU(x), not x.
    g = define_G(3, 3, 4, "unet_128", norm="instance")
    block = g.model.model[1]  # first middle block
    seen = {}
    block.register_forward_pre_hook(lambda m, inp: seen.update(x=inp[0].clone()))
    # clone: the parent's in-place ReLU rewrites this output afterwards
    block.register_forward_hook(lambda m, inp, out: seen.update(out=out.clone()))
    g(torch.randn(1, 3, 128, 128))
    x = seen["x"]
    skip = seen["out"][:, : x.shape[1]]
    assert x.min().item() < 0  # otherwise LeakyReLU would be the identity
    assert torch.allclose(skip, F.leaky_relu(x, 0.2))
    assert not torch.allclose(skip, x)


def test_unknown_net_names():
    with pytest.raises(ValueError, match="resnet_9blocks, resnet_6blocks, unet_256, unet_128"):
        define_G(3, 3, 4, "unet_64")
    with pytest.raises(ValueError, match="basic, n_layers, pixel"):
        define_D(3, 4, "patch")


def test_networks_are_built_on_cpu():
    g, d = define_G(3, 3, 4, "resnet_6blocks"), define_D(3, 4, "basic")
    assert {p.device.type for p in [*g.parameters(), *d.parameters()]} == {"cpu"}
    assert type(g).__module__.startswith("fastgan.models") and not isinstance(g, nn.DataParallel)


def test_the_smallest_sides_are_the_smallest_the_nets_take():
    """generator_smallest_side and patch_discriminator_smallest_side: that side runs (in
    training mode, instance norm), one pixel less fails."""
    from fastgan.engine.models import patch_discriminator_sides, patch_discriminator_smallest_side
    from fastgan.models import generator_smallest_side

    def runs(net, side):
        try:
            net(torch.randn(1, 3, side, side + 3))  # (the other side larger: each side on its own)
            return True
        except (RuntimeError, ValueError):
            return False

    for padding in ("reflect", "zero", "replicate"):
        g = define_G(3, 3, 2, "resnet_6blocks", norm="none", padding_type=padding)
        s = generator_smallest_side("resnet_6blocks", padding)
        assert runs(g, s) and not runs(g, s - 1), padding
    for netD, n_layers in (("basic", 3), ("n_layers", 0), ("n_layers", 1), ("n_layers", 2), ("n_layers", 5)):
        s = patch_discriminator_smallest_side(netD, n_layers)
        sides = [patch_discriminator_sides(netD, n_layers, side)[-1] for side in (s, s - 1)]
        assert sides[0] >= 1 > sides[1]
        d = define_D(3, 2, netD, n_layers_D=n_layers, norm="instance")
        assert runs(d, s) and not runs(d, s - 1), (netD, n_layers)


def test_a_generator_norm_gets_one_value_exactly_where_torch_refuses_it():
    """generator_norm_gets_one_value against the nets themselves: each padding, norm, size from
    the smallest side up, batch of 1 or 2, training or eval mode."""
    from fastgan.models import generator_norm_gets_one_value, generator_smallest_side

    def runs(net, x):
        try:
            net(x)
            return True
        except ValueError:  # torch's "Expected more than 1 spatial element / value per channel"
            return False

    refused = 0
    for netG, padding in (("resnet_6blocks", "reflect"), ("resnet_6blocks", "zero"), ("resnet_6blocks", "replicate"),
                          ("unet_128", "reflect")):
        for norm in ("instance", "batch", "none"):
            g = define_G(3, 3, 2, netG, norm=norm, padding_type=padding)
            s = generator_smallest_side(netG, padding)
            sizes = ((s, s), (s, 2 * s)) if netG.startswith("unet") else ((s, s), (s, s + 1), (s + 4, s))
            for (h, w), batch, eval_mode in itertools.product(sizes, (1, 2), (False, True)):
                g.train(not eval_mode)
                one = generator_norm_gets_one_value(netG, norm, h, w, batch, eval_mode)
                assert runs(g, torch.randn(batch, 3, h, w)) is not one, (netG, padding, norm, h, w, batch, eval_mode)
                refused += one
    # 4x4 with zero or replicate padding: instance norm always (4 cases each), batch norm for a batch of 1 in training
    assert refused == 2 * (4 + 1)


def test_an_image_too_small_for_the_nets_is_named_with_the_options_that_size_it():
    from fastgan.data import DatasetError
    from fastgan.engine.models import check_image_fits
    from fastgan.options import resolve

    image = torch.zeros(3, 20, 48)  # under scale_width: --load_size wide, its height from the file
    opt = resolve("cyclegan", {"preprocess": "scale_width", "load_size": 48, "crop_size": 16})
    with pytest.raises(DatasetError, match=r"^a.png: 48x20 after --preprocess scale_width; --netD basic takes sides "
                                           r"of 24 pixels or more \(the reference fails on it too\): use a larger "
                                           r"--load_size or --crop_size$"):
        check_image_fits(opt, image, "a.png")
    check_image_fits(opt, image, "a.png", discriminator=False)  # the generator alone takes it
    with pytest.raises(DatasetError, match="use larger images or a --preprocess that resizes them$"):
        check_image_fits(opt.replace(preprocess="none"), image, "a.png")
    # a training batch of 4x4 images, one 4x4 pixel through zero-padded ResNet blocks: batch norm takes 2 of them
    opt = opt.replace(preprocess="none", netD="pixel", padding_type="zero", norm="batch")
    check_image_fits(opt, torch.zeros(2, 3, 4, 4), "a.png")
    with pytest.raises(DatasetError, match=r"^a.png: 4x4 after --preprocess none; --netG resnet_9blocks --padding_type "
                                           r"zero shrinks it to 1x1 pixel in its ResNet blocks, and --norm batch "
                                           r"cannot normalize one value per channel of a batch of 1 \(the reference "
                                           r"fails on it too\): use larger images or a --preprocess that resizes them$"):
        check_image_fits(opt, torch.zeros(1, 3, 4, 4), "a.png")
