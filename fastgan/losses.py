"""GAN objectives, the gradient penalty, and the L1 terms of the training step.

`GANLoss` follows the reference: lsgan is the MSE of D's raw output against a
tensor of 1.0 (real) or 0.0 (fake), vanilla the BCE-with-logits against the
same, wgangp −mean(pred) for real and +mean(pred) for fake. hinge is fastgan's
addition: for D, mean(relu(1 − pred)) on real and mean(relu(1 + pred)) on fake;
for G, −mean(pred).

The L1 terms are fastgan's fused ops (fastgan.ops), here for any trainer:

    l1_loss(input, target, weight=1.0)
        weight * mean|input - target|, one pass (pix2pix's lambda_L1 term)
    cycle_losses(real_A, rec_A, real_B, rec_B, idt_A=None, idt_B=None,
                 lambda_A=10.0, lambda_B=10.0, lambda_identity=0.5) -> CycleLosses
        the four L1 terms of a CycleGAN iteration (cycle_A, cycle_B, idt_A, idt_B,
        weighted as the reference weighs them) in one pass; backward `values.sum()`

Both are differentiable, run on fastgan.ops' back ends (native kernels when built)
and equal the plain torch expressions to float32 rounding. Used with
fastgan.accelerate(model) they put another trainer's step on fastgan's kernels.

The reference defines a gradient penalty but never calls it, so its wgangp
trains without one, and so does fastgan's by default; `lambda_gp > 0` (the CLI's
--lambda_gp, fastgan's addition) adds it to every discriminator loss (see
`discriminator_loss`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fastgan.ops import CycleLosses, cycle_losses, l1_loss

GAN_MODES = ("lsgan", "vanilla", "wgangp", "hinge")


class GANLoss(nn.Module):
    def __init__(self, gan_mode: str, target_real_label: float = 1.0, target_fake_label: float = 0.0):
        super().__init__()
        if gan_mode not in GAN_MODES:
            raise ValueError(f"gan_mode {gan_mode!r} is not one of {', '.join(GAN_MODES)}")
        self.gan_mode = gan_mode
        # persistent, as the reference's: its GANLoss state_dict loads into this one and back
        self.register_buffer("real_label", torch.tensor(target_real_label))
        self.register_buffer("fake_label", torch.tensor(target_fake_label))

    def forward(self, prediction: torch.Tensor, target_is_real: bool, for_discriminator: bool = True) -> torch.Tensor:
        mode = self.gan_mode
        if mode in ("lsgan", "vanilla"):
            label = self.real_label if target_is_real else self.fake_label
            target = label.to(prediction.dtype).expand_as(prediction)
            if mode == "lsgan":
                return F.mse_loss(prediction, target)
            return F.binary_cross_entropy_with_logits(prediction, target)
        if mode == "wgangp":
            return -prediction.mean() if target_is_real else prediction.mean()
        # hinge
        if not for_discriminator:
            return -prediction.mean()
        if target_is_real:
            return F.relu(1.0 - prediction).mean()
        return F.relu(1.0 + prediction).mean()


def gradient_penalty(
    netD: nn.Module,
    real: torch.Tensor,
    fake: torch.Tensor,
    kind: str = "mixed",
    constant: float = 1.0,
    lambda_gp: float = 10.0,
) -> torch.Tensor:
    """WGAN-GP penalty: lambda_gp * mean((||dD(x)/dx||_2 - constant)^2).

    kind "mixed" evaluates at x = alpha*real + (1-alpha)*fake with alpha ~ U(0, 1)
    per sample (the reference's default), "real" and "fake" at those images.
    """
    if kind == "real":
        points = real
    elif kind == "fake":
        points = fake
    elif kind == "mixed":
        # drawn in float32 whatever the images' dtype, as the reference: the same RNG stream
        alpha = torch.rand(real.shape[0], 1, 1, 1, device=real.device).to(real.dtype)
        points = alpha * real + (1 - alpha) * fake
    else:
        raise ValueError(f"gradient penalty kind {kind!r} is not one of real, fake, mixed")
    points = points.detach().requires_grad_(True)
    out = netD(points)
    (grads,) = torch.autograd.grad(
        outputs=out, inputs=points, grad_outputs=torch.ones_like(out), create_graph=True, retain_graph=True
    )
    grads = grads.reshape(real.shape[0], -1)
    return (((grads + 1e-16).norm(2, dim=1) - constant) ** 2).mean() * lambda_gp


def discriminator_loss(
    criterion: GANLoss, netD: nn.Module, real: torch.Tensor, fake: torch.Tensor, fake_first: bool = False,
    one_pass: bool = False, lambda_gp: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The reference's D objective: 0.5 * (GAN(D(real), real) + GAN(D(fake), fake)).

    Returns (loss, loss_real, loss_fake). With lambda_gp > 0 the gradient penalty
    between real and fake, weighted by it, is added to loss (after the 0.5); the
    reference never adds it (0, the default). CycleGAN's D sees
    the real image first, pix2pix's the fake first (fake_first); the order
    matters for batch-norm running statistics. one_pass: D sees real and fake
    as one batch (the same values for a D that treats each sample alone:
    instance norm or none, never batch norm), where real and fake images have one size.
    """
    fake = fake.detach()
    if one_pass and real.shape[1:] == fake.shape[1:]:  # images of one size only make one batch
        first, second = (fake, real) if fake_first else (real, fake)
        # torch.cat promotes mixed precisions (a bf16 fake beside a float32 real) to the wider
        out_first, out_second = netD(torch.cat([first, second])).split([first.shape[0], second.shape[0]])
        pred_real, pred_fake = (out_second, out_first) if fake_first else (out_first, out_second)
        loss_real, loss_fake = criterion(pred_real, True), criterion(pred_fake, False)
    elif fake_first:
        loss_fake = criterion(netD(fake), False)
        loss_real = criterion(netD(real), True)
    else:
        loss_real = criterion(netD(real), True)
        loss_fake = criterion(netD(fake), False)
    loss = (loss_real + loss_fake) * 0.5
    if lambda_gp > 0:
        loss = loss + gradient_penalty(netD, real, fake, lambda_gp=lambda_gp)
    return loss, loss_real, loss_fake


__all__ = ["GAN_MODES", "GANLoss", "CycleLosses", "cycle_losses", "gradient_penalty", "discriminator_loss", "l1_loss"]
