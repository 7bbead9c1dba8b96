"""Learning-rate policies with the reference's epoch semantics.

Each scheduler is stepped once at the end of every epoch (`step_schedulers`).
linear keeps lr for n_epochs then decays it linearly to zero over
n_epochs_decay: factor 1 − max(0, epoch + epoch_count − n_epochs)/(n_epochs_decay + 1),
where `epoch` counts the scheduler's steps; step is StepLR(lr_decay_iters, 0.1);
plateau ReduceLROnPlateau(factor 0.2, threshold 0.01, patience 5) on a metric;
cosine CosineAnnealingLR(T_max = n_epochs).
"""

from __future__ import annotations

import warnings

import torch
from torch.optim import Optimizer, lr_scheduler

LR_POLICIES = ("linear", "step", "plateau", "cosine")
# the options a learning-rate schedule is made of (Adam's beta1 included), besides the run's
# first epoch (epoch_count)
SCHEDULE_OPTIONS = ("lr", "beta1", "lr_policy", "lr_decay_iters", "n_epochs", "n_epochs_decay")


def linear_factor(epoch: int, epoch_count: int, n_epochs: int, n_epochs_decay: int) -> float:
    return 1.0 - max(0, epoch + epoch_count - n_epochs) / float(n_epochs_decay + 1)


def build_scheduler(optimizer: Optimizer, opt):
    policy = opt.lr_policy
    if policy == "linear":
        return lr_scheduler.LambdaLR(
            optimizer, lambda e: linear_factor(e, opt.epoch_count, opt.n_epochs, opt.n_epochs_decay)
        )
    if policy == "step":
        return lr_scheduler.StepLR(optimizer, step_size=opt.lr_decay_iters, gamma=0.1)
    if policy == "plateau":
        return lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=0.2, threshold=0.01, patience=5)
    if policy == "cosine":
        return lr_scheduler.CosineAnnealingLR(optimizer, T_max=opt.n_epochs, eta_min=0)
    raise ValueError(f"lr_policy {policy!r} is not one of {', '.join(LR_POLICIES)}")


def step_schedulers(schedulers, metric: float = 0.0) -> None:
    """End-of-epoch step; plateau reads `metric` (the reference passes 0). Without torch's
    warning of a scheduler stepped before any optimizer step: here that order is meant (a
    resumed epoch with no batch left to train, schedules replayed by restart_schedules)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", r"Detected call of `lr_scheduler.step\(\)` before `optimizer.step\(\)`")
        for scheduler in schedulers:
            if isinstance(scheduler, lr_scheduler.ReduceLROnPlateau):
                scheduler.step(metric)
            else:
                scheduler.step()


def restart_schedules(optimizers: dict, opt, epochs_done: int) -> dict:
    """New schedulers for `optimizers` from `opt`, as if it had driven them from the start:
    lr and beta1 set from `opt`, then `epochs_done` end-of-epoch steps (plateau's on the
    reference's metric, 0). The optimizers' moments are kept. Returns the schedulers."""
    for optimizer in optimizers.values():
        for group in optimizer.param_groups:
            group.pop("initial_lr", None)
            if isinstance(group["lr"], torch.Tensor):  # a CUDA graph reads it in place
                group["lr"].fill_(opt.lr)
            else:
                group["lr"] = opt.lr
            group["betas"] = (opt.beta1, group["betas"][1])
    schedulers = {k: build_scheduler(o, opt) for k, o in optimizers.items()}
    for _ in range(epochs_done):  # (step_schedulers: no warning that no optimizer stepped before)
        step_schedulers(schedulers.values())
    return schedulers
