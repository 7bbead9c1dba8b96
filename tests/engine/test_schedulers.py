"""Learning-rate policies with the reference's epoch semantics."""

import pytest

import fastgan


def lrs(epochs, **options):
    model = fastgan.build_model("cyclegan", ngf=2, ndf=2, netG="resnet_6blocks", device="cpu", **options)
    seen = [model.learning_rate]
    for _ in range(epochs):
        seen.append(model.update_learning_rate())
    return seen


def test_linear_keeps_then_decays_to_zero():
    # lr for epochs 1..n_epochs, then linear decay over n_epochs_decay
    seen = lrs(7, lr=0.1, n_epochs=3, n_epochs_decay=4, epoch_count=1)
    factor = [1 - max(0, e + 1 - 3) / 5 for e in range(8)]
    assert seen == pytest.approx([0.1 * f for f in factor])
    assert seen[:3] == pytest.approx([0.1, 0.1, 0.1])
    assert seen[3] == pytest.approx(0.08)


def test_linear_honours_epoch_count():
    seen = lrs(2, lr=1.0, n_epochs=3, n_epochs_decay=3, epoch_count=3)
    assert seen == pytest.approx([1.0, 0.75, 0.5])


def test_step_policy():
    seen = lrs(6, lr=1.0, lr_policy="step", lr_decay_iters=2)
    assert seen == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01, 0.001])


def test_cosine_policy():
    seen = lrs(4, lr=1.0, lr_policy="cosine", n_epochs=4)
    assert seen == pytest.approx([1.0, 0.8535534, 0.5, 0.1464466, 0.0], abs=1e-6)


def test_plateau_reduces_after_patience():
    model = fastgan.build_model("cyclegan", ngf=2, ndf=2, netG="resnet_6blocks", device="cpu", lr=1.0,
                                lr_policy="plateau")
    seen = [model.update_learning_rate(metric=1.0) for _ in range(8)]
    # first step sets the best; 5 epochs of patience without improvement, then x0.2
    assert seen == pytest.approx([1, 1, 1, 1, 1, 1, 0.2, 0.2])


def test_both_optimizers_follow_the_schedule():
    model = fastgan.build_model("cyclegan", ngf=2, ndf=2, netG="resnet_6blocks", device="cpu", lr=0.5,
                                n_epochs=0, n_epochs_decay=3)
    model.update_learning_rate()
    assert [o.param_groups[0]["lr"] for o in model.optimizers.values()] == pytest.approx([0.25, 0.25])


def test_unknown_policy_is_refused():
    with pytest.raises(ValueError, match="lr_policy"):
        fastgan.build_model("cyclegan", ngf=2, ndf=2, device="cpu", lr_policy="exp")
