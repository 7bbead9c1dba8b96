"""A pix2pix-style trainer of your own, on fastgan's fused modules and losses."""
import os

import torch

import fastgan
from fastgan.losses import GANLoss, l1_loss
from fastgan.models import define_D, define_G  # or your own networks: any nn.Module works


def train(steps=200, size=64, device="cuda" if torch.cuda.is_available() else "cpu"):
    torch.manual_seed(0)
    G = fastgan.accelerate(define_G(3, 3, 16, "resnet_6blocks", norm="instance").to(device))
    D = fastgan.accelerate(define_D(6, 16, "basic", norm="instance").to(device))
    opt_G = torch.optim.Adam(G.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_D = torch.optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.999))
    gan_loss = GANLoss("lsgan").to(device)
    real_A = torch.rand(1, 3, size, size, device=device) * 2 - 1
    real_B = real_A.flip(-1)  # the task: mirror the image
    l1_history = []
    for _ in range(steps):
        fake_B = G(real_A)
        opt_D.zero_grad()
        loss_D = 0.5 * (gan_loss(D(torch.cat([real_A, real_B], 1)), True)
                        + gan_loss(D(torch.cat([real_A, fake_B.detach()], 1)), False))
        loss_D.backward()
        opt_D.step()
        opt_G.zero_grad()
        loss_L1 = l1_loss(fake_B, real_B, 100.0)  # fused: 100 * mean|fake_B - real_B|
        (gan_loss(D(torch.cat([real_A, fake_B], 1)), True) + loss_L1).backward()
        opt_G.step()
        l1_history.append(loss_L1.item())
    return G, l1_history


if __name__ == "__main__":
    G, l1_history = train()
    print(G.accelerate_report)
    print(f"L1 x 100: {l1_history[0]:.1f} at the first step, {l1_history[-1]:.1f} at the last")
    os.makedirs("checkpoints/own_trainer", exist_ok=True)  # the reference's keys, where its test finds them
    torch.save(G.state_dict(), "checkpoints/own_trainer/latest_net_G.pth")
