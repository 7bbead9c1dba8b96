"""The training-state file: everything needed to resume a run exactly.

One file, `training_state.pt` in the experiment folder, written atomically:
the nets, optimizers, schedulers and image pools (model.state_dict()), the
RNG states, reflect_conv2d's measured per-shape kernel choices (a fresh
measurement could pick another kernel and change the rounding), and where the
run stands (epoch, batches done in it, total_iters).
The nets are in it too, so a resume never mixes weights and optimizer state
written at different moments. A data-parallel run's file (written by rank 0)
also holds every rank's own RNG states, image pools and kernel choices under
"ranks", so each rank resumes its own streams.
"""

from __future__ import annotations

import dataclasses
import os
import random
from dataclasses import dataclass

import torch

from fastgan.engine.distributed import seed_rank_streams
from fastgan.errors import first_line
from fastgan.models import CheckpointError, save_checkpoint_file
from fastgan.options import NET_OPTIONS
from fastgan.ops import _reflect_conv2d, _unfolded_conv, registry

STATE_FILE = "training_state.pt"


@dataclass
class Progress:
    epoch: int  # the epoch in progress (or the next one when batch == 0)
    batch: int  # batches of `epoch` already trained
    total_iters: int  # the reference's total_iters: --batch_size (global) per iteration since training began
    iteration: int  # training iterations since the start of training


def rng_state(device: torch.device) -> dict:
    """The RNG states a run on `device` draws from: the CPU's, Python's, and on a GPU that
    GPU's (not every visible GPU's by index: a run resumed on another GPU, or where fewer
    are visible, restores the state its device drew from)."""
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    saved = state.get("cuda")
    if device.type == "cuda" and saved is not None:
        if isinstance(saved, (list, tuple)):  # earlier files: every visible GPU's, by index
            index = device.index or 0
            saved = saved[index] if index < len(saved) else None
        if saved is not None:
            torch.cuda.set_rng_state(saved, device)


def rank_state(model) -> dict:
    """What differs between the ranks of a data-parallel run: RNG states, image pools and
    measured kernel choices."""
    return {"rng": rng_state(model.device), "pools": {k: p.state_dict() for k, p in model.pools().items()},
            **measured_choices()}


def measured_choices() -> dict:
    """The kernels and algorithms this process measured per shape (reflect_conv2d's, the
    convolutions'): a resumed run computes with them, so it continues bit for bit."""
    return {"conv_choices": _reflect_conv2d.selection_cache(),
            "unfolded_conv_choices": _unfolded_conv.selection_cache()}


def load_measured_choices(saved: dict) -> None:
    """Adopt saved choices, all or nothing: a ValueError (an entry that cannot be read) leaves
    this process's choices as they were."""
    conv, unfolded = saved.get("conv_choices", {}), saved.get("unfolded_conv_choices", {})
    _reflect_conv2d.check_selection_cache(conv)  # both, before either is changed
    _unfolded_conv.check_selection_cache(unfolded)
    _reflect_conv2d.load_selection_cache(conv)
    _unfolded_conv.load_selection_cache(unfolded)


def adopt_measured_choices(saved: dict) -> None:
    """Keep readable saved choices (readable_choices' shape) for the shapes this process meets:
    each is taken when its shape first comes, so the process's choices, which its training
    state saves, are those of its own shapes alone (they were every shape the machine's cache
    had seen)."""
    _reflect_conv2d.adopt_selection_cache(saved.get("conv_choices", {}))
    _unfolded_conv.adopt_selection_cache(saved.get("unfolded_conv_choices", {}))


def readable_choices(saved) -> dict:
    """The entries of `saved` (measured_choices()' shape, as a file held it) this fastgan can
    read, each judged alone: one written by another version, or damaged, costs only itself.
    Nothing is adopted."""
    judges = {"conv_choices": _reflect_conv2d.readable_selection,
              "unfolded_conv_choices": _unfolded_conv.readable_selection}
    entries = {kind: saved.get(kind) if isinstance(saved, dict) else None for kind in judges}
    return {kind: judge(entries[kind]) if isinstance(entries[kind], dict) else {} for kind, judge in judges.items()}


def op_backends(model) -> dict[str, str]:
    """The back end each fastgan op computes the model's iterations with (fastgan._C's kernels,
    Triton's or torch's compositions round each their own way): a resume compares them."""
    return {op: "torch" if model.levels.is_eager else registry.backend_for(op, model.device)
            for op in sorted(registry.ops())}


def save_training_state(model, progress: Progress, directory: str, rank_states: list | None = None,
                        loss_log_records: int | None = None, loader: str | None = None) -> str:
    """`rank_states`: every rank's rank_state(), rank 0 first, in a data-parallel run;
    `loss_log_records`: the records loss_log.jsonl holds (a resume drops those after them);
    `loader`: the loader's --loader name (auto resolved), which a resume compares with its own,
    as it does the CPU threads (both change the losses: pixels, reduction orders)."""
    path = os.path.join(directory, STATE_FILE)
    state = {
        "model": model.state_dict(),
        "progress": vars(progress),
        "rng": rng_state(model.device),
        **measured_choices(),
        "options": model.opt.as_dict(),
        "levels": dataclasses.asdict(model.levels),  # as resolved (the options may leave them to the device)
        "loss_log_records": loss_log_records,
        "loader": loader,
        "cpu_threads": torch.get_num_threads(),
        "backends": op_backends(model),
    }
    if rank_states is not None:
        state["ranks"] = rank_states
    save_checkpoint_file(state, path)
    return path


def read_training_state(directory: str) -> dict | None:
    """The training-state file of `directory` as saved, or None when there is none."""
    path = os.path.join(directory, STATE_FILE)
    if not os.path.exists(path):
        return None
    # our own file: it holds Python RNG tuples and optimizer dicts, not only tensors
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # truncated (a full disk at save time), or not ours: pickle, zip, EOF errors
        raise CheckpointError(f"{path} cannot be read ({type(e).__name__}: {first_line(e, 120)}); move it away "
                              "to continue from the latest networks instead") from None
    if not isinstance(state, dict) or not {"model", "progress", "rng"} <= set(state):
        keys = list(map(str, state))[:5] if isinstance(state, dict) else []
        held = f"keys {', '.join(keys)}{' ...' if len(state) > 5 else ''}" if isinstance(state, dict) \
            else type(state).__name__
        raise CheckpointError(f"{path} is not a fastgan training state (it holds {held}); move it away to continue "
                              "from the latest networks instead")
    state["path"] = path
    return state


def check_finite(state: dict) -> None:
    """A state whose networks or optimizer moments hold NaN or inf is refused, naming where:
    damaged bytes load as NaN (torch.load checks no checksum of the file's zip records), and a
    resumed run trained on to all-NaN networks without a word. (Not the pools: an fp16 run's
    fakes may overflow while its scaler skips the step.)"""
    damaged = non_finite_tensors({k: state["model"][k] for k in ("nets", "optimizers")})
    if damaged:
        raise CheckpointError(f"{state['path']} holds non-finite values ({', '.join(damaged[:3])}"
                              f"{' ...' if len(damaged) > 3 else ''}): it was damaged, or the run had diverged; "
                              "move it away to continue from the latest networks, or continue from an earlier "
                              "epoch's (--continue_train --epoch N --epoch_count N+1)")


def non_finite_tensors(tree, where: str = "") -> list[str]:
    """The places in a nest of dicts and lists whose floating tensors hold a NaN or an inf."""
    if isinstance(tree, torch.Tensor):
        return [where] if tree.is_floating_point() and not torch.isfinite(tree).all() else []
    items = tree.items() if isinstance(tree, dict) else enumerate(tree) if isinstance(tree, (list, tuple)) else ()
    return [w for key, value in items for w in non_finite_tensors(value, f"{where}.{key}" if where else str(key))]


def net_options_note(state: dict, opt) -> str:
    """The options shaping the nets that this run sets otherwise than the saved one (its
    options travel in the state), as a line to add to a load error; "" when none differ."""
    saved = state.get("options", {})
    differ = [name for name in NET_OPTIONS if name in saved and saved[name] != getattr(opt, name)]
    if not differ:
        return ""

    def typed(name, value):  # as on a command line: --ngf 8, --no_dropout (a flag)
        return (f"--{name}" if value else f"no --{name}") if isinstance(value, bool) else f"--{name} {value}"

    return ("\n  the run was trained with " + ", ".join(typed(n, saved[n]) for n in differ) + "; this command has "
            + ", ".join(typed(n, getattr(opt, n)) for n in differ) + ": continue with the run's")


def restore_training_state(model, state: dict, rank: int = 0) -> Progress:
    """Restore the model, optimizers, pools and RNGs from a read_training_state() result.

    Rank `rank` restores its own RNG states and pools when the file has them;
    a rank it has none for (the run was saved by fewer ranks) keeps the
    model's state, rank 0's, and starts streams of its own.
    """
    check_finite(state)
    saved_nets = sorted(state["model"]["nets"])
    if saved_nets != sorted(model.nets):
        saved_arch = state.get("options", {}).get("arch", "another")
        raise CheckpointError(f"{state['path']} is a {saved_arch} run's (nets {', '.join(saved_nets)}), not one "
                              f"of this --arch {model.opt.arch} (nets {', '.join(sorted(model.nets))}): "
                              "continue it with its own --arch, or train this one under another --name")
    try:
        try:
            # under another --lr_policy the trainer restarts the schedules from this command's
            # options (Trainer._follow_schedule_options): the saved scheduler's state fits none
            policy = state.get("options", {}).get("lr_policy", model.opt.lr_policy)
            model.load_state_dict(state["model"], schedules=policy == model.opt.lr_policy)
        except CheckpointError as e:  # it names the net, not the file
            raise CheckpointError(f"{state['path']}: {e}{net_options_note(state, model.opt)}") from None
        set_rng_state(state["rng"], model.device)
        load_measured_choices(state)
        progress = Progress(**state["progress"])
        saved = state.get("ranks") or []
        if rank < len(saved):
            set_rng_state(saved[rank]["rng"], model.device)
            load_measured_choices(saved[rank])
            for k, pool in model.pools().items():
                pool.load_state_dict(saved[rank]["pools"][k], model.device)
        elif rank > 0:
            seed_rank_streams(model, rank, progress.iteration)
    except (ValueError, KeyError, TypeError) as e:  # written by another fastgan, or for other options
        raise CheckpointError(f"{state['path']} does not fit this run ({type(e).__name__}: {first_line(e)}); "
                              "continue with the options the run was started with (train_opt.json), or move "
                              "the file away to continue from the latest networks") from None
    return progress
