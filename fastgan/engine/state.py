"""The training-state file: everything needed to resume a run exactly.

One file, `training_state.pt` in the experiment folder, written atomically:
the nets, optimizers, schedulers and image pools (model.state_dict()), the
RNG states, and where the run stands (epoch, batches done in it, images seen).
The nets are in it too, so a resume never mixes weights and optimizer state
written at different moments.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass

import torch

from fastgan.models import save_checkpoint_file

STATE_FILE = "training_state.pt"


@dataclass
class Progress:
    epoch: int  # the epoch in progress (or the next one when batch == 0)
    batch: int  # batches of `epoch` already trained
    total_iters: int  # images seen since the start of training (the reference's total_iters)
    iteration: int  # training iterations since the start of training


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_training_state(model, progress: Progress, directory: str) -> str:
    path = os.path.join(directory, STATE_FILE)
    save_checkpoint_file(
        {
            "model": model.state_dict(),
            "progress": vars(progress),
            "rng": rng_state(),
            "options": model.opt.as_dict(),
        },
        path,
    )
    return path


def load_training_state(model, directory: str) -> Progress | None:
    """Restore the model, optimizers, pools and RNGs; None when no state file exists."""
    path = os.path.join(directory, STATE_FILE)
    if not os.path.exists(path):
        return None
    # our own file: it holds Python RNG tuples and optimizer dicts, not only tensors
    state = torch.load(path, map_location="cpu", weights_only=False)
    model.load_state_dict(state["model"])
    set_rng_state(state["rng"])
    return Progress(**state["progress"])
