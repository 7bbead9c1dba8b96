"""Pix2Pix: the reference's conditional GAN objective and update order.

One iteration (REFERENCE.md, "Pix2pix iteration"): fake_B = G(A); D step first
on (cat(A, fake_B) detached → fake, cat(A, B) → real), then with D frozen the
G step on GAN(D(cat(A, fake_B)), real) + lambda_L1 · L1(fake_B, B). With the
merge_passes level (a per-sample D: --norm instance or none; the reference's default
is batch norm) the D step's fake and real pairs pass D as one batch.
"""

from __future__ import annotations

import torch

from fastgan.engine.base import TrainingModel, set_requires_grad
from fastgan.losses import GANLoss, discriminator_loss, l1_loss
from fastgan.models import define_D, define_G


class Pix2Pix(TrainingModel):
    loss_names = ("G_GAN", "G_L1", "D_real", "D_fake")
    visual_names = ("real_A", "fake_B", "real_B")

    def __init__(self, opt, device: torch.device, levels=None):
        super().__init__(opt, device, levels)
        self.nets = {
            "G": define_G(opt.input_nc, opt.output_nc, opt.ngf, opt.netG, norm=opt.norm,
                          use_dropout=not opt.no_dropout, init_type=opt.init_type,
                          init_gain=opt.init_gain, padding_type=opt.padding_type),
            "D": define_D(opt.input_nc + opt.output_nc, opt.ndf, opt.netD, n_layers_D=opt.n_layers_D,
                          norm=opt.norm, init_type=opt.init_type, init_gain=opt.init_gain),
        }
        self._prepare_nets()
        self.criterionGAN = GANLoss(opt.gan_mode).to(device)
        self.optimizers = {"G": self._adam(self.nets["G"]), "D": self._adam(self.nets["D"])}
        self._finish_setup()

    def iteration(self, real_A: torch.Tensor, real_B: torch.Tensor) -> dict[str, torch.Tensor]:
        G, D = self.run_nets["G"], self.run_nets["D"]
        with self.autocast():
            fake_B = G(real_A)

        set_requires_grad([self.nets["D"]], True)
        self.optimizers["D"].zero_grad()
        with self.autocast():
            loss_D, loss_D_real, loss_D_fake = discriminator_loss(
                self.criterionGAN, D, torch.cat((real_A, real_B), 1),
                torch.cat((real_A, fake_B.to(real_A.dtype)), 1), fake_first=True, one_pass=self.merge_passes,
                lambda_gp=self.opt.lambda_gp)
        self.backward(loss_D)
        self.optimizer_step("D")

        set_requires_grad([self.nets["D"]], False)
        self.optimizers["G"].zero_grad()
        with self.autocast():
            loss_G_GAN = self.criterionGAN(D(torch.cat((real_A, fake_B.to(real_A.dtype)), 1)), True,
                                           for_discriminator=False)
        # the L1 term in the images' precision (mixed precision leaves fake_B in bf16/fp16)
        loss_G_L1 = l1_loss(fake_B.to(real_B.dtype), real_B, self.opt.lambda_L1)
        self.backward(loss_G_GAN + loss_G_L1)
        self.optimizer_step("G")

        self.visuals = {"real_A": real_A.detach(), "fake_B": fake_B.detach(), "real_B": real_B.detach()}
        losses = {"G_GAN": loss_G_GAN, "G_L1": loss_G_L1, "D_real": loss_D_real, "D_fake": loss_D_fake}
        return {k: v.detach() for k, v in losses.items()}
