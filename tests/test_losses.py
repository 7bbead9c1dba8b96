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
