"""fastgan.losses.GANLoss as a drop-in for the reference's: the same state_dict."""

from __future__ import annotations

import torch

from fastgan.losses import GANLoss


def test_gan_loss_state_dict_is_the_references():
    """The reference registers its labels as (persistent) buffers: a module holding its GANLoss
    saves them, and that state_dict loads strictly into fastgan's, and the reverse."""
    loss = GANLoss("lsgan", target_real_label=0.9)
    state = loss.state_dict()
    assert list(state) == ["real_label", "fake_label"] and state["real_label"].item() == torch.tensor(0.9).item()
    other = GANLoss("lsgan")
    other.load_state_dict({"real_label": torch.tensor(0.8), "fake_label": torch.tensor(0.1)}, strict=True)
    prediction = torch.full((1, 1, 4, 4), 0.5)
    torch.testing.assert_close(other(prediction, True), torch.tensor((0.5 - 0.8) ** 2))


def test_vanilla_takes_the_logits_as_the_references_bce_with_logits():
    """The reference's vanilla loss is BCEWithLogitsLoss: exact where a discriminator is sure and
    wrong (a sigmoid then BCE saturates: its log(0) is clamped at -100, and its gradient is 0)."""
    loss = GANLoss("vanilla")
    sure_fake = torch.full((1, 1, 4, 4), -200.0, requires_grad=True)
    value = loss(sure_fake, True)
    value.backward()
    assert value.item() == 200.0
    torch.testing.assert_close(sure_fake.grad, torch.full_like(sure_fake, -1 / 16))
    torch.testing.assert_close(loss(torch.full((2, 1, 3, 3), 200.0), False), torch.tensor(200.0))
    prediction = torch.randn(2, 1, 5, 5)
    torch.testing.assert_close(loss(prediction, True), torch.nn.BCEWithLogitsLoss()(prediction, torch.ones(2, 1, 5, 5)))
