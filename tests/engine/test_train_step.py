"""train_step against the plain restatement of REFERENCE.md's iterations."""

import pytest
import torch
from torch import nn

import fastgan
from fastgan.engine.models import model_from_options
from tests.engine.reference_iteration import ReferenceCycleGAN, ReferencePix2Pix

GAN_MODES = ["lsgan", "vanilla", "wgangp", "hinge"]
# (gan_mode, lambda_gp): the reference's wgangp has no penalty; --lambda_gp adds it
GAN_OBJECTIVES = [(mode, 0.0) for mode in GAN_MODES] + [("wgangp", 10.0), ("lsgan", 2.0)]


def biases_an_instance_norm_cancels(net) -> set[str]:
    """Keys of conv biases followed by an instance norm: their exact gradient is zero, so Adam
    moves them by the sign of rounding noise (at lr 0.01 and with wgangp's double backward that
    reaches 1e-4 even in float64). They cannot change any output, so the tests skip them."""
    keys = set()
    for prefix, module in net.named_modules():
        if isinstance(module, nn.Sequential):
            children = list(module.named_children())
            for (name, layer), (_, following) in zip(children, children[1:]):
                if isinstance(following, nn.InstanceNorm2d) and getattr(layer, "bias", None) is not None:
                    keys.add(f"{prefix}.{name}.bias".lstrip("."))
    return keys


def assert_same_weights(nets, ref_nets, rtol=1e-5, atol=1e-6):
    for name, net in nets.items():
        ref = ref_nets[name].state_dict()
        cancelled = biases_an_instance_norm_cancels(ref_nets[name])
        for key, value in net.state_dict().items():
            if key not in cancelled:
                torch.testing.assert_close(value, ref[key], rtol=rtol, atol=atol, msg=f"{name}.{key} differs")


def assert_same_losses(losses, ref_losses):
    assert set(losses) == set(ref_losses)
    for k, v in ref_losses.items():
        assert isinstance(losses[k], float)
        assert losses[k] == pytest.approx(float(v.detach()), rel=1e-5, abs=1e-6), k


def plain_nets(model):
    """The model's nets as the reference has them: plain nn modules (the --eager build), same weights.

    Both sides run in float64: the model's default levels (fused modules) round differently from
    plain modules, and Adam turns rounding-level gradients (the biases of convs an instance norm
    follows) into lr-sized steps; float64 keeps those far below the tolerances.
    """
    assert model.levels.accelerate  # the default levels on a CPU: the fused modules are under test
    for net in model.nets.values():
        net.double()
    return {k: net.double() for k, net in model_from_options(model.opt.replace(eager=True)).nets.items()}


def batches(n, shape, seed):
    g = torch.Generator().manual_seed(seed)
    return [(torch.rand(shape, generator=g, dtype=torch.float64) * 2 - 1,
             torch.rand(shape, generator=g, dtype=torch.float64) * 2 - 1) for _ in range(n)]


@pytest.mark.parametrize("gan_mode,lambda_gp", GAN_OBJECTIVES)
@pytest.mark.parametrize("lambda_identity", [0.5, 0.0])
def test_cyclegan_train_step_matches_reference(gan_mode, lambda_gp, lambda_identity):
    model = fastgan.build_model("cyclegan", ngf=4, ndf=4, netG="resnet_6blocks", pool_size=0, device="cpu",
                                gan_mode=gan_mode, lambda_identity=lambda_identity, lambda_A=7.0, lambda_B=3.0,
                                lr=0.01, seed=3, lambda_gp=lambda_gp)
    assert set(model.nets) == {"G_A", "G_B", "D_A", "D_B"}
    ref_nets = plain_nets(model)
    ref = ReferenceCycleGAN(ref_nets["G_A"], ref_nets["G_B"], ref_nets["D_A"], ref_nets["D_B"], lr=0.01,
                            beta1=0.5, mode=gan_mode, lA=7.0, lB=3.0, lidt=lambda_identity,
                            lambda_gp=lambda_gp)
    for i, (A, B) in enumerate(batches(3, (2, 3, 32, 32), seed=11)):
        torch.manual_seed(100 + i)  # the gradient penalty draws its interpolation weights
        losses = model.train_step({"A": A, "B": B})
        torch.manual_seed(100 + i)
        assert_same_losses(losses, ref.iterate(A, B))
    assert_same_weights(model.nets, ref_nets)
    # the test must be able to fail: weights really moved
    moved = model.nets["G_A"].state_dict()["model.1.weight"]
    assert not torch.equal(moved, fastgan.build_model(
        "cyclegan", ngf=4, ndf=4, netG="resnet_6blocks", device="cpu", seed=3).nets["G_A"].state_dict()["model.1.weight"])


def test_the_eager_path_is_the_references_bit_for_bit():
    """--eager in float32 against the plain restatement: the same losses and weights, bit for
    bit, with lambdas whose products round (0.3 * 3 is not 0.9 in floating point: the identity
    terms were weighted by the product, one rounding where the reference has two)."""
    import copy

    model = fastgan.build_model("cyclegan", ngf=4, ndf=4, netG="resnet_6blocks", pool_size=0, device="cpu",
                                eager=True, lambda_identity=0.3, lambda_A=7.0, lambda_B=3.0, seed=3)
    ref_nets = copy.deepcopy(model.nets)
    ref = ReferenceCycleGAN(*(ref_nets[k] for k in ("G_A", "G_B", "D_A", "D_B")), lr=0.0002, beta1=0.5,
                            mode="lsgan", lA=7.0, lB=3.0, lidt=0.3)
    for A, B in batches(3, (1, 3, 32, 32), seed=11):
        losses = model.train_step({"A": A.float(), "B": B.float()})
        assert losses == {k: v.item() for k, v in ref.iterate(A.float(), B.float()).items()}
    for name, net in model.nets.items():
        reference = ref_nets[name].state_dict()
        assert all(torch.equal(v, reference[k]) for k, v in net.state_dict().items()), name


@pytest.mark.parametrize("gan_mode,lambda_gp", GAN_OBJECTIVES)
def test_pix2pix_train_step_matches_reference(gan_mode, lambda_gp):
    model = fastgan.build_model("pix2pix", ngf=4, ndf=4, netG="unet_128", device="cpu", gan_mode=gan_mode,
                                lambda_L1=50.0, lr=0.01, seed=5, no_dropout=True, lambda_gp=lambda_gp)
    assert set(model.nets) == {"G", "D"}
    ref_nets = plain_nets(model)
    ref = ReferencePix2Pix(ref_nets["G"], ref_nets["D"], lr=0.01, beta1=0.5, mode=gan_mode, l1=50.0,
                          lambda_gp=lambda_gp)
    for i, (A, B) in enumerate(batches(3, (2, 3, 128, 128), seed=12)):
        torch.manual_seed(200 + i)
        losses = model.train_step({"A": A, "B": B})
        torch.manual_seed(200 + i)
        assert_same_losses(losses, ref.iterate(A, B))
    # batch-norm running statistics included: D saw fake, real, fake in that order
    assert_same_weights(model.nets, ref_nets)


def test_pix2pix_dropout_follows_the_torch_rng():
    """With dropout (pix2pix default) the same RNG stream gives the same iteration."""
    model = fastgan.build_model("pix2pix", ngf=4, ndf=4, netG="unet_128", device="cpu", seed=5)
    ref_nets = plain_nets(model)
    ref = ReferencePix2Pix(ref_nets["G"], ref_nets["D"], lr=0.0002, beta1=0.5, mode="vanilla", l1=100.0)
    (A, B), = batches(1, (1, 3, 128, 128), seed=13)
    torch.manual_seed(7)
    losses = model.train_step({"A": A, "B": B})
    torch.manual_seed(7)
    assert_same_losses(losses, ref.iterate(A, B))
    assert_same_weights(model.nets, ref_nets)


def test_build_model_rejects_unknown_options():
    with pytest.raises(TypeError, match="ngff"):
        fastgan.build_model("cyclegan", ngff=3)
    with pytest.raises(ValueError, match="arch"):
        fastgan.build_model("stargan")


@pytest.mark.parametrize("options,message", [
    (dict(ngf="8"), "option ngf takes an int, got '8'"),
    (dict(seed=None), "option seed takes an int, got None"),
    (dict(no_dropout=1), "option no_dropout takes a bool, got 1"),
    (dict(ngf=True), "option ngf takes an int, got True"),
    (dict(amp=16), "option amp takes a str or None, got 16"),
])
def test_build_model_names_an_option_of_the_wrong_type(options, message):
    with pytest.raises(TypeError, match=message):
        fastgan.build_model("cyclegan", device="cpu", **options)


def test_options_of_kindred_types_are_taken_as_the_options_type():
    """A path object, an int epoch, numpy numbers and bools: taken, as plain Python values (so
    that train_opt.json writes them as numbers, not strings)."""
    import pathlib

    import numpy as np

    from fastgan.options import resolve

    opt = resolve("cyclegan", dict(dataroot=pathlib.Path("/data/h2z"), epoch=200, no_flip=np.bool_(True),
                                   ngf=np.int64(8), lr=np.float32(0.5), max_dataset_size=float("inf")))
    assert (opt.dataroot, opt.epoch, opt.no_flip, opt.ngf, opt.lr) == ("/data/h2z", "200", True, 8, 0.5)
    assert [type(v) for v in (opt.no_flip, opt.ngf, opt.lr)] == [bool, int, float]


def test_train_step_names_an_image_the_generator_cannot_give_back():
    model = fastgan.build_model("cyclegan", ngf=4, ndf=4, netG="resnet_6blocks", device="cpu")
    with pytest.raises(ValueError, match=r"train_step: B has shape \(1, 3, 30, 30\); --netG resnet_6blocks takes "
                                         r"\(N, C, H, W\) images with H and W multiples of 4"):
        model.train_step({"A": torch.rand(1, 3, 32, 32), "B": torch.rand(1, 3, 30, 30)})
    with pytest.raises(ValueError, match=r"^train_step: the batch has no B; --arch cyclegan trains on \{'A', 'B'\} "
                                         r"image batches$"):  # (a bare KeyError: 'B')
        model.train_step({"A": torch.rand(1, 3, 32, 32)})


@pytest.mark.parametrize("name", ["lambda_A", "lambda_B", "lambda_identity", "lambda_L1"])
def test_negative_loss_weights_are_refused(name):
    with pytest.raises(ValueError, match=f"--{name} -1.0 must not be negative"):
        fastgan.build_model("pix2pix" if name == "lambda_L1" else "cyclegan", device="cpu", **{name: -1.0})


def test_identity_loss_needs_matching_channels():
    with pytest.raises(ValueError, match="lambda_identity"):
        fastgan.build_model("cyclegan", ngf=4, ndf=4, input_nc=1, output_nc=3, device="cpu")


# ---------------------------------------------------------------- what the iteration wires where


def test_a_cyclegan_between_domains_of_other_channel_counts_trains():
    """G_A takes input_nc channels to output_nc, G_B back, each D judges its side's channels
    (--lambda_identity 0: the identity loss needs equal counts)."""
    model = fastgan.build_model("cyclegan", ngf=4, ndf=4, netG="resnet_6blocks", device="cpu", input_nc=1,
                                output_nc=3, lambda_identity=0.0)
    model.train_step({"A": torch.rand(1, 1, 32, 32) * 2 - 1, "B": torch.rand(1, 3, 32, 32) * 2 - 1})
    assert model.visuals["fake_B"].shape[1] == 3 and model.visuals["fake_A"].shape[1] == 1


def test_each_discriminator_draws_from_its_own_domains_pool():
    from fastgan.engine.image_pool import saved_images

    model = fastgan.build_model("cyclegan", ngf=4, ndf=4, netG="resnet_6blocks", device="cpu", pool_size=4)
    model.train_step({"A": torch.rand(1, 3, 32, 32) * 2 - 1, "B": torch.rand(1, 3, 32, 32) * 2 - 1})
    for pool, fake in ((model.fake_B_pool, "fake_B"), (model.fake_A_pool, "fake_A")):
        assert torch.equal(saved_images(pool.state_dict(), 1)[0], model.visuals[fake]), fake


def test_the_visuals_are_the_images_they_name():
    import copy

    A, B = torch.rand(1, 3, 32, 32) * 2 - 1, torch.rand(1, 3, 32, 32) * 2 - 1
    model = fastgan.build_model("cyclegan", ngf=4, ndf=4, netG="resnet_6blocks", device="cpu")
    G_A, G_B = copy.deepcopy(model.nets["G_A"]), copy.deepcopy(model.nets["G_B"])  # before their step
    model.train_step({"A": A, "B": B})
    with torch.no_grad():
        torch.testing.assert_close(model.visuals["idt_B"], G_B(A))
        torch.testing.assert_close(model.visuals["idt_A"], G_A(B))
    pix2pix = fastgan.build_model("pix2pix", ngf=4, ndf=4, netG="unet_128", device="cpu")
    A, B = torch.rand(1, 3, 128, 128), torch.rand(1, 3, 128, 128)
    pix2pix.train_step({"A": A, "B": B})
    assert torch.equal(pix2pix.visuals["real_A"], A) and torch.equal(pix2pix.visuals["real_B"], B)


def test_no_identity_pass_runs_without_the_identity_loss():
    """--lambda_identity 0: a generator never runs on the other domain's batch (merge_passes would
    otherwise add the identity pass to its batch, for nothing): G_A on A and G_B's fake_A (its
    cycle pass, merged), G_B on B, then on G_A's fake_B."""
    model = fastgan.build_model("cyclegan", ngf=4, ndf=4, netG="resnet_6blocks", device="cpu", lambda_identity=0.0)
    batches = {"G_A": [], "G_B": []}
    for name, calls in batches.items():
        model.nets[name].register_forward_pre_hook(lambda module, args, calls=calls: calls.append(args[0].shape[0]))
    model.train_step({"A": torch.rand(2, 3, 32, 32), "B": torch.rand(2, 3, 32, 32)})
    assert batches == {"G_A": [4], "G_B": [2, 2]} and "idt_A" not in model.visuals
