"""CycleGAN: the reference's objective and update order.

G_A maps A→B, G_B maps B→A; D_A judges B-side images, D_B A-side ones.
One iteration (REFERENCE.md, "CycleGAN iteration"):
  1. fake_B = G_A(A); rec_A = G_B(fake_B); fake_A = G_B(B); rec_B = G_A(fake_A)
  2. with D frozen: identity, GAN and cycle losses of both generators, one
     backward, one Adam step on G_A + G_B
  3. D unfrozen: D_A on (B, pool_B(fake_B)), D_B on (A, pool_A(fake_A)),
     backward both, one Adam step on D_A + D_B
With the merge_passes level (per-sample nets), G_B translates B and A (its identity pass)
as one batch, then G_A translates A, B and fake_A (its identity and cycle passes), then G_B
fake_B; each D sees real and fake as one batch: the same values per sample, in fewer and
larger kernels.
"""

from __future__ import annotations

import torch

from fastgan.engine.base import TrainingModel, as_dtype, set_requires_grad, split_batch
from fastgan.losses import GANLoss, cycle_losses, discriminator_loss
from fastgan.models import define_D, define_G
from fastgan.ops import reuse_weight_transforms


class CycleGAN(TrainingModel):
    loss_names = ("D_A", "G_A", "cycle_A", "idt_A", "D_B", "G_B", "cycle_B", "idt_B")
    visual_names = ("real_A", "fake_B", "rec_A", "idt_B", "real_B", "fake_A", "rec_B", "idt_A")

    def __init__(self, opt, device: torch.device, levels=None):
        super().__init__(opt, device, levels)
        if opt.lambda_identity > 0 and opt.input_nc != opt.output_nc:
            raise ValueError(
                f"identity loss needs input_nc == output_nc (got {opt.input_nc} and {opt.output_nc}); "
                "pass --lambda_identity 0"
            )
        g = dict(norm=opt.norm, use_dropout=not opt.no_dropout, init_type=opt.init_type,
                 init_gain=opt.init_gain, padding_type=opt.padding_type)
        d = dict(n_layers_D=opt.n_layers_D, norm=opt.norm, init_type=opt.init_type, init_gain=opt.init_gain)
        self.nets = {
            "G_A": define_G(opt.input_nc, opt.output_nc, opt.ngf, opt.netG, **g),
            "G_B": define_G(opt.output_nc, opt.input_nc, opt.ngf, opt.netG, **g),
            "D_A": define_D(opt.output_nc, opt.ndf, opt.netD, **d),
            "D_B": define_D(opt.input_nc, opt.ndf, opt.netD, **d),
        }
        self._prepare_nets()
        self.criterionGAN = GANLoss(opt.gan_mode).to(device)
        self.fake_A_pool = self.make_pool(seed=opt.seed * 2 + 1)
        self.fake_B_pool = self.make_pool(seed=opt.seed * 2 + 2)
        G_A, G_B, D_A, D_B = (self.nets[k] for k in ("G_A", "G_B", "D_A", "D_B"))
        self.optimizers = {"G": self._adam(G_A, G_B), "D": self._adam(D_A, D_B)}
        self._finish_setup()

    def pools(self) -> dict:
        return {"fake_A": self.fake_A_pool, "fake_B": self.fake_B_pool}

    def iteration(self, real_A: torch.Tensor, real_B: torch.Tensor) -> dict[str, torch.Tensor]:
        opt = self.opt
        G_A, G_B, D_A, D_B = (self.run_nets[k] for k in ("G_A", "G_B", "D_A", "D_B"))
        lambda_A, lambda_B, lambda_idt = opt.lambda_A, opt.lambda_B, opt.lambda_identity

        # a generator's passes that do not wait on each other as one batch: not with dropout, whose
        # draws from the torch RNG follow the reference's order of generator calls, nor for
        # domains whose images differ in size (--preprocess none or scale_width)
        merge_generators = self.merge_passes and opt.no_dropout and real_A.shape == real_B.shape
        idt_A = idt_B = None
        # G_A and G_B keep their weights until their Adam step: on a CPU each Winograd
        # convolution transforms its weights once for all the forward passes and the backward
        # (the input gradient, the forward's adjoint, uses the same transform), not on every
        # call (fastgan/ops/_weight_transforms.py)
        with reuse_weight_transforms():
            with self.autocast():
                # 1. forward
                if merge_generators:
                    # G_B first, so that G_A's cycle pass joins its translation and identity
                    # passes: three generator passes, where the reference runs four (six with the identity loss)
                    if lambda_idt > 0:
                        fake_A, idt_B = split_batch(G_B(torch.cat([real_B, real_A])), real_B, real_A)
                        passes = (real_A, real_B, fake_A)
                        fake_B, idt_A, rec_B = split_batch(G_A(torch.cat(passes)), *passes)
                    else:
                        fake_A = G_B(real_B)
                        fake_B, rec_B = split_batch(G_A(torch.cat([real_A, fake_A])), real_A, fake_A)
                    rec_A = G_B(fake_B)
                else:
                    fake_B = G_A(real_A)
                    rec_A = G_B(fake_B)
                    fake_A = G_B(real_B)
                    rec_B = G_A(fake_A)

            # 2. generators, discriminators frozen
            set_requires_grad([self.nets["D_A"], self.nets["D_B"]], False)
            self.optimizers["G"].zero_grad()
            with self.autocast():
                if not merge_generators:  # the reference's order of generator calls
                    idt_A = G_A(real_B) if lambda_idt > 0 else None
                    idt_B = G_B(real_A) if lambda_idt > 0 else None
                loss_G_A = self.criterionGAN(D_A(fake_B), True, for_discriminator=False)
                loss_G_B = self.criterionGAN(D_B(fake_A), True, for_discriminator=False)
            # every L1 term (cycle A/B, identity A/B with their lambdas) in one fused op, in
            # the images' precision (mixed precision leaves the generators' outputs in bf16/fp16)
            rec_A, rec_B, idt_A, idt_B = (as_dtype(x, real_A.dtype) for x in (rec_A, rec_B, idt_A, idt_B))
            l1 = cycle_losses(real_A, rec_A, real_B, rec_B, idt_A, idt_B, lambda_A, lambda_B, lambda_idt)
            loss_G = loss_G_A + loss_G_B + l1.values.sum()
            self.backward(loss_G)
        self.optimizer_step("G")

        # 3. discriminators
        set_requires_grad([self.nets["D_A"], self.nets["D_B"]], True)
        self.optimizers["D"].zero_grad()
        with self.autocast():
            loss_D_A, _, _ = discriminator_loss(self.criterionGAN, D_A, real_B, self.fake_B_pool.query(fake_B),
                                                one_pass=self.merge_passes, lambda_gp=self.opt.lambda_gp)
        self.backward(loss_D_A)
        with self.autocast():
            loss_D_B, _, _ = discriminator_loss(self.criterionGAN, D_B, real_A, self.fake_A_pool.query(fake_A),
                                                one_pass=self.merge_passes, lambda_gp=self.opt.lambda_gp)
        self.backward(loss_D_B)
        self.optimizer_step("D")

        visuals = {"real_A": real_A, "fake_B": fake_B, "rec_A": rec_A, "idt_B": idt_B,
                   "real_B": real_B, "fake_A": fake_A, "rec_B": rec_B, "idt_A": idt_A}
        self.visuals = {k: v.detach() for k, v in visuals.items() if v is not None}
        losses = {"D_A": loss_D_A, "G_A": loss_G_A, "cycle_A": l1.cycle_A, "idt_A": l1.idt_A,
                  "D_B": loss_D_B, "G_B": loss_G_B, "cycle_B": l1.cycle_B, "idt_B": l1.idt_B}
        return {k: v.detach() for k, v in losses.items()}
