"""What every training model shares: nets, optimizers, schedulers, checkpoints.

A model owns plain nn.Modules with the reference's state_dict keys
(`self.nets`), one Adam optimizer per side as the reference, and one
scheduler per optimizer. `train_step(batch)` runs one reference iteration
and returns the losses as floats; `step(real_A, real_B)` is the same
iteration as a tensor function (losses returned as detached tensors, no host
sync), the unit a compiled or graph-captured path replaces.
"""

from __future__ import annotations

import os

import torch
from torch import nn

from fastgan.engine.schedulers import build_scheduler, step_schedulers
from fastgan.models import export_state_dict, load_reference_checkpoint, save_checkpoint_file


def set_requires_grad(nets, requires_grad: bool) -> None:
    for net in nets:
        for p in net.parameters():
            p.requires_grad_(requires_grad)


def adam(params, opt) -> torch.optim.Adam:
    return torch.optim.Adam(params, lr=opt.lr, betas=(opt.beta1, 0.999))


class TrainingModel:
    loss_names: tuple[str, ...] = ()
    # which batch entries are inputs of step()
    input_names: tuple[str, ...] = ("A", "B")

    def __init__(self, opt, device: torch.device):
        self.opt = opt
        self.device = device
        self.nets: dict[str, nn.Module] = {}
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.schedulers: dict[str, object] = {}
        self.visuals: dict[str, torch.Tensor] = {}

    # -- construction helpers -------------------------------------------------
    def _finish_setup(self) -> None:
        for net in self.nets.values():
            net.to(self.device)
            net.train()
        self.schedulers = {k: build_scheduler(o, self.opt) for k, o in self.optimizers.items()}

    # -- the iteration -------------------------------------------------------
    def step(self, *inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def train_step(self, batch: dict) -> dict[str, float]:
        inputs = [batch[name].to(self.device, non_blocking=True) for name in self.input_names]
        losses = self.step(*inputs)
        return {name: float(value) for name, value in losses.items()}

    # -- learning rate -------------------------------------------------------
    def update_learning_rate(self, metric: float = 0.0) -> float:
        step_schedulers(self.schedulers.values(), metric)
        return self.learning_rate

    @property
    def learning_rate(self) -> float:
        return next(iter(self.optimizers.values())).param_groups[0]["lr"]

    # -- modes ---------------------------------------------------------------
    def eval(self) -> None:
        for net in self.nets.values():
            net.eval()

    def train(self) -> None:
        for net in self.nets.values():
            net.train()

    # -- network files (the reference's names) -------------------------------
    def save_networks(self, label: str | int, directory: str) -> list[str]:
        """Write {label}_net_{name}.pth for each net, atomically; returns the paths."""
        os.makedirs(directory, exist_ok=True)
        paths = []
        for name, net in self.nets.items():
            path = os.path.join(directory, f"{label}_net_{name}.pth")
            save_checkpoint_file(export_state_dict(net), path)
            paths.append(path)
        return paths

    def load_networks(self, label: str | int, directory: str) -> None:
        for name, net in self.nets.items():
            load_reference_checkpoint(net, os.path.join(directory, f"{label}_net_{name}.pth"))

    # -- the whole training state (nets, optimizers, schedulers, pools) ------
    def state_dict(self) -> dict:
        return {
            "nets": {k: export_state_dict(n) for k, n in self.nets.items()},
            "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
            "schedulers": {k: s.state_dict() for k, s in self.schedulers.items()},
            "pools": {k: p.state_dict() for k, p in self.pools().items()},
        }

    def load_state_dict(self, state: dict) -> None:
        for k, net in self.nets.items():
            load_reference_checkpoint(net, state["nets"][k])
        for k, o in self.optimizers.items():
            o.load_state_dict(state["optimizers"][k])
        for k, s in self.schedulers.items():
            s.load_state_dict(state["schedulers"][k])
        for k, p in self.pools().items():
            p.load_state_dict(state["pools"][k], self.device)

    def pools(self) -> dict:
        return {}
