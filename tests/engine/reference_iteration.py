"""REFERENCE.md's training iterations restated plainly, independent of fastgan.engine.

Plain torch only: nn.functional losses, torch.optim.Adam, the update order as
REFERENCE.md writes it. The tests run this next to fastgan's train_step from
the same weights and batches.
"""

import itertools

import torch
import torch.nn.functional as F


def gan_loss(mode, pred, real, for_d=True):
    if mode == "lsgan":
        return F.mse_loss(pred, torch.full_like(pred, 1.0 if real else 0.0))
    if mode == "vanilla":
        return F.binary_cross_entropy_with_logits(pred, torch.full_like(pred, 1.0 if real else 0.0))
    if mode == "wgangp":
        return -pred.mean() if real else pred.mean()
    if mode == "hinge":
        if not for_d:
            return -pred.mean()
        return torch.clamp(1 - pred, min=0).mean() if real else torch.clamp(1 + pred, min=0).mean()
    raise ValueError(mode)


def penalty(D, real, fake, weight):
    """WGAN-GP's penalty: defined by the reference, never called by it (fastgan's --lambda_gp)."""
    alpha = torch.rand(real.shape[0], 1, 1, 1)
    x = (alpha * real + (1 - alpha) * fake).detach().requires_grad_(True)
    out = D(x)
    (g,) = torch.autograd.grad(out, x, torch.ones_like(out), create_graph=True)
    return ((g.reshape(real.shape[0], -1) + 1e-16).norm(2, dim=1) - 1).pow(2).mean() * weight


def d_loss(mode, D, real, fake, fake_first=False, lambda_gp=0.0):
    fake = fake.detach()
    if fake_first:
        lf = gan_loss(mode, D(fake), False)
        lr = gan_loss(mode, D(real), True)
    else:
        lr = gan_loss(mode, D(real), True)
        lf = gan_loss(mode, D(fake), False)
    loss = 0.5 * (lr + lf)
    if lambda_gp > 0:
        loss = loss + penalty(D, real, fake, lambda_gp)
    return loss, lr, lf


def freeze(nets, flag):
    for n in nets:
        for p in n.parameters():
            p.requires_grad = flag


class ReferenceCycleGAN:
    """pool_size 0 (the pool is tested on its own)."""

    def __init__(self, G_A, G_B, D_A, D_B, lr, beta1, mode, lA, lB, lidt, lambda_gp=0.0):
        self.G_A, self.G_B, self.D_A, self.D_B = G_A, G_B, D_A, D_B
        self.opt_G = torch.optim.Adam(itertools.chain(G_A.parameters(), G_B.parameters()), lr=lr, betas=(beta1, 0.999))
        self.opt_D = torch.optim.Adam(itertools.chain(D_A.parameters(), D_B.parameters()), lr=lr, betas=(beta1, 0.999))
        self.mode, self.lA, self.lB, self.lidt, self.lambda_gp = mode, lA, lB, lidt, lambda_gp

    def iterate(self, A, B):
        fake_B = self.G_A(A)
        rec_A = self.G_B(fake_B)
        fake_A = self.G_B(B)
        rec_B = self.G_A(fake_A)
        freeze([self.D_A, self.D_B], False)
        self.opt_G.zero_grad()
        if self.lidt > 0:
            idt_A = F.l1_loss(self.G_A(B), B) * self.lB * self.lidt
            idt_B = F.l1_loss(self.G_B(A), A) * self.lA * self.lidt
        else:
            idt_A = idt_B = torch.tensor(0.0)
        g_A = gan_loss(self.mode, self.D_A(fake_B), True, for_d=False)
        g_B = gan_loss(self.mode, self.D_B(fake_A), True, for_d=False)
        cyc_A = F.l1_loss(rec_A, A) * self.lA
        cyc_B = F.l1_loss(rec_B, B) * self.lB
        (g_A + g_B + cyc_A + cyc_B + idt_A + idt_B).backward()
        self.opt_G.step()
        freeze([self.D_A, self.D_B], True)
        self.opt_D.zero_grad()
        d_A, _, _ = d_loss(self.mode, self.D_A, B, fake_B, lambda_gp=self.lambda_gp)
        d_A.backward()
        d_B, _, _ = d_loss(self.mode, self.D_B, A, fake_A, lambda_gp=self.lambda_gp)
        d_B.backward()
        self.opt_D.step()
        return {"D_A": d_A, "G_A": g_A, "cycle_A": cyc_A, "idt_A": idt_A,
                "D_B": d_B, "G_B": g_B, "cycle_B": cyc_B, "idt_B": idt_B}


class ReferencePix2Pix:
    def __init__(self, G, D, lr, beta1, mode, l1, lambda_gp=0.0):
        self.G, self.D = G, D
        self.opt_G = torch.optim.Adam(G.parameters(), lr=lr, betas=(beta1, 0.999))
        self.opt_D = torch.optim.Adam(D.parameters(), lr=lr, betas=(beta1, 0.999))
        self.mode, self.l1, self.lambda_gp = mode, l1, lambda_gp

    def iterate(self, A, B):
        fake_B = self.G(A)
        freeze([self.D], True)
        self.opt_D.zero_grad()
        loss_D, d_real, d_fake = d_loss(self.mode, self.D, torch.cat((A, B), 1), torch.cat((A, fake_B), 1),
                                        fake_first=True, lambda_gp=self.lambda_gp)
        loss_D.backward()
        self.opt_D.step()
        freeze([self.D], False)
        self.opt_G.zero_grad()
        g_gan = gan_loss(self.mode, self.D(torch.cat((A, fake_B), 1)), True, for_d=False)
        g_l1 = F.l1_loss(fake_B, B) * self.l1
        (g_gan + g_l1).backward()
        self.opt_G.step()
        return {"G_GAN": g_gan, "G_L1": g_l1, "D_real": d_real, "D_fake": d_fake}
