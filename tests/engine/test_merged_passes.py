"""The merge_passes level: a net's independent passes as one batch give each sample's values
and gradients of the separate passes (per-sample nets), and the training step uses it."""

from __future__ import annotations

import pytest
import torch

import fastgan
from fastgan.losses import GANLoss, discriminator_loss
from fastgan.models import define_D
from tests.engine.cancelled_biases import instance_norm_cancelled_biases

TOL = dict(rtol=1e-10, atol=1e-12)  # float64: only the summation order differs


def _d_and_images(in_nc=3, batch=2, seed=0):
    torch.manual_seed(seed)
    D = define_D(in_nc, 8, "basic", norm="instance").double()
    g = torch.Generator().manual_seed(seed + 1)
    real, fake = (torch.randn(batch, in_nc, 32, 32, generator=g, dtype=torch.float64) for _ in range(2))
    return D, real, fake


@pytest.mark.parametrize("gan_mode,lambda_gp", [("lsgan", 0.0), ("vanilla", 0.0), ("wgangp", 0.0), ("wgangp", 10.0)])
@pytest.mark.parametrize("fake_first", [False, True])
def test_one_pass_discriminator_loss_equals_two_passes(gan_mode, lambda_gp, fake_first):
    D, real, fake = _d_and_images()
    criterion = GANLoss(gan_mode)
    results = []
    for one_pass in (False, True):
        D.zero_grad()
        torch.manual_seed(5)  # the gradient penalty's interpolation weights
        losses = discriminator_loss(criterion, D, real, fake, fake_first=fake_first, one_pass=one_pass,
                                    lambda_gp=lambda_gp)
        losses[0].backward()
        results.append((losses, [p.grad.clone() for p in D.parameters()]))
    (two, grads_two), (one, grads_one) = results
    for a, b in zip(one, two):
        torch.testing.assert_close(a, b, **TOL)
    for a, b in zip(grads_one, grads_two):
        torch.testing.assert_close(a, b, **TOL)


def test_one_pass_tells_real_from_fake():
    """Swapping real and fake must change the merged loss (the halves are not mixed up)."""
    D, real, fake = _d_and_images(seed=3)
    criterion = GANLoss("lsgan")
    loss, loss_real, loss_fake = discriminator_loss(criterion, D, real, fake, one_pass=True)
    swapped = discriminator_loss(criterion, D, fake, real, one_pass=True)
    assert not torch.allclose(loss_real, swapped[1])
    torch.testing.assert_close(loss_real, criterion(D(real), True), **TOL)
    torch.testing.assert_close(loss_fake, criterion(D(fake), False), **TOL)


SQUARE = [((2, 3, 32, 32), (2, 3, 32, 32))] * 3  # (A's shape, B's shape) of each iteration


def _train(merge: bool, iterations=3, shapes=SQUARE, **options):
    model = fastgan.build_model("cyclegan", ngf=4, ndf=4, netG="resnet_6blocks", device="cpu", seed=4,
                                merge_passes=merge, **{"pool_size": 0, **options})
    for net in model.nets.values():
        net.double()
    g = torch.Generator().manual_seed(6)
    history = []
    for shape_A, shape_B in shapes[:iterations]:
        A, B = (torch.rand(shape, generator=g, dtype=torch.float64) * 2 - 1 for shape in (shape_A, shape_B))
        history.append(model.train_step({"A": A, "B": B}))
    return model, history


def _assert_same_training(model_merged, merged, model_separate, separate):
    for a, b in zip(merged, separate):
        assert a == pytest.approx(b, rel=1e-9)
    for name in model_merged.nets:
        cancelled = instance_norm_cancelled_biases(model_merged.nets[name])  # move by rounding noise
        for (k, v), w in zip(model_merged.nets[name].state_dict().items(),
                             model_separate.nets[name].state_dict().values()):
            atol = 1e-7 if k in cancelled else 1e-12
            torch.testing.assert_close(v, w, rtol=1e-9, atol=atol, msg=f"{name}.{k}")


def _generator_batches(model, A, B) -> list[tuple[str, int]]:
    """The generators' calls of one training step, in order: (name, batch size)."""
    calls = []
    handles = [model.nets[name].register_forward_pre_hook(
        lambda module, args, name=name: calls.append((name, args[0].shape[0]))) for name in ("G_A", "G_B")]
    model.train_step({"A": A, "B": B})
    for handle in handles:
        handle.remove()
    return calls


@pytest.mark.parametrize("norm", ["instance", "instance_affine", "none"])
def test_merged_cyclegan_step_equals_the_separate_passes(norm):
    """Batch 2, so that a merged generator pass holds 4 samples: losses and weights after 3
    iterations equal the unmerged run's, and the generators did run merged (with each norm
    that treats samples apart; instance_affine's scale and shift are shared, not statistics)."""
    model_merged, merged = _train(True, norm=norm)
    _assert_same_training(model_merged, merged, *_train(False, norm=norm))
    calls = _generator_batches(model_merged, torch.rand(2, 3, 32, 32, dtype=torch.float64),
                               torch.rand(2, 3, 32, 32, dtype=torch.float64))
    # G_B: B and A (translation and identity), then fake_B; G_A: A, B and fake_A (translation,
    # identity and cycle) in one pass
    assert calls == [("G_B", 4), ("G_A", 6), ("G_B", 2)]


def test_merged_cyclegan_step_without_the_identity_loss_equals_the_separate_passes():
    """--lambda_identity 0: no identity passes, and G_A's cycle pass still joins its translation."""
    model_merged, merged = _train(True, lambda_identity=0.0)
    _assert_same_training(model_merged, merged, *_train(False, lambda_identity=0.0))
    calls = _generator_batches(model_merged, torch.rand(2, 3, 32, 32, dtype=torch.float64),
                               torch.rand(2, 3, 32, 32, dtype=torch.float64))
    assert calls == [("G_B", 2), ("G_A", 4), ("G_B", 2)]


def test_domains_of_other_sizes_train_in_separate_passes():
    """--preprocess none: A and B of other sizes, and sizes changing between iterations, with an
    image pool (the reference's list, which holds fakes of several sizes). The merged level
    runs what cannot be one batch apart and trains as the separate passes do."""
    shapes = [((1, 3, 32, 32), (1, 3, 24, 28)), ((1, 3, 28, 36), (1, 3, 32, 32)), ((1, 3, 32, 32), (1, 3, 32, 32)),
              ((1, 3, 24, 24), (1, 3, 28, 32))]
    options = dict(shapes=shapes, iterations=4, preprocess="none", pool_size=3)
    model_merged, merged = _train(True, **options)
    _assert_same_training(model_merged, merged, *_train(False, **options))
    calls = _generator_batches(model_merged, torch.rand(1, 3, 32, 32, dtype=torch.float64),
                               torch.rand(1, 3, 28, 32, dtype=torch.float64))
    assert calls == [("G_A", 1), ("G_B", 1), ("G_B", 1), ("G_A", 1), ("G_A", 1), ("G_B", 1)]


def test_generators_with_dropout_keep_their_passes_apart():
    model, _ = _train(True, iterations=1, no_dropout=False)
    calls = _generator_batches(model, torch.rand(2, 3, 32, 32, dtype=torch.float64),
                               torch.rand(2, 3, 32, 32, dtype=torch.float64))
    # fake_B, rec_A, fake_A, rec_B, idt_A, idt_B: the reference's order of random draws
    assert calls == [("G_A", 2), ("G_B", 2), ("G_B", 2), ("G_A", 2), ("G_A", 2), ("G_B", 2)]


def test_cancelled_biases_are_the_convs_before_an_instance_norm():
    """The looser bound above covers these keys alone: a conv's bias before an instance norm
    (plain and accelerated nets alike), never the last conv's or a norm's own parameters."""
    plain = fastgan.build_model("cyclegan", ngf=4, ndf=4, netG="resnet_6blocks", device="cpu", eager=True)
    fused = fastgan.build_model("cyclegan", ngf=4, ndf=4, netG="resnet_6blocks", device="cpu")
    for name in ("G_A", "D_A"):
        keys = instance_norm_cancelled_biases(plain.nets[name])
        assert keys and keys == instance_norm_cancelled_biases(fused.nets[name])
        assert keys < set(plain.nets[name].state_dict())
    for name, first in (("G_A", "model.1.bias"), ("D_A", "model.0.bias")):
        keys, last = instance_norm_cancelled_biases(plain.nets[name]), list(plain.nets[name].state_dict())[-1]
        assert last.endswith(".bias") and last not in keys  # the head (tanh; the patch scores) is not cancelled
        assert (first in keys) == (name == "G_A")  # G's 7x7 stem is normed, D's first conv is not
