"""What every training model shares: nets, optimizers, schedulers, checkpoints.

A model owns nn.Modules with the reference's state_dict keys (`self.nets`,
rewritten in place by fastgan.accelerate when that level is on), one Adam
optimizer per side as the reference, and one scheduler per optimizer.
`self.run_nets` are what the iteration calls: the nets themselves, or their
compiled or distributed wrappers. `train_step(batch)` runs one reference
iteration and returns the losses as floats; `step(real_A, real_B)` is the
same iteration as a tensor function (losses returned as detached tensors, no
host sync), the unit a compiled or graph-captured path replaces. The speed
levels (fastgan.engine.levels) decide how `step` runs.
"""

from __future__ import annotations

import contextlib
import os

import torch
from torch import nn

from fastgan.engine.dense_adam import DenseStepAdam
from fastgan.engine.device_pool import DeviceImagePool
from fastgan.engine.distributed import distribute, is_data_parallel
from fastgan.engine.image_pool import ImagePool
from fastgan.engine.levels import EAGER, PER_SAMPLE_NORMS, Levels, apply_process_levels, resolve_levels
from fastgan.engine.schedulers import build_scheduler, step_schedulers
from fastgan.models import export_state_dict, generator_size_multiple, load_reference_checkpoint, save_checkpoint_file
from fastgan.ops import use_backend
from fastgan.options import sizes_vary


def set_requires_grad(nets, requires_grad: bool) -> None:
    for net in nets:
        for p in net.parameters():
            p.requires_grad_(requires_grad)


def as_dtype(x: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    return x if x is None else x.to(dtype)


def split_batch(merged: torch.Tensor, *parts: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """A merged pass's output back into its passes, one for each input in `parts`, in order."""
    return merged.split([part.shape[0] for part in parts])


def adam(params, opt, levels: Levels = EAGER, device: torch.device | None = None) -> torch.optim.Adam:
    """The reference's Adam (betas (beta1, 0.999)) in the implementation the levels ask for.

    Under CUDA graphs the optimizer must be capturable, and its learning rate a
    device tensor that the schedulers fill in place, so a replayed graph reads
    the current value instead of the one baked in at capture. Fused on a CPU it is
    DenseStepAdam, which spares torch's kernel copying channels_last weights.
    """
    kwargs = {}
    if levels.adam == "foreach":
        kwargs["foreach"] = True
    elif levels.adam == "fused":
        kwargs["fused"] = True
    lr = opt.lr
    if levels.cuda_graphs:
        kwargs["capturable"] = True
        lr = torch.tensor(float(opt.lr), device=device)
    on_cpu = device is not None and torch.device(device).type == "cpu"
    kind = DenseStepAdam if levels.adam == "fused" and on_cpu else torch.optim.Adam
    return kind(params, lr=lr, betas=(opt.beta1, 0.999), **kwargs)


def _own_moments(optimizer: torch.optim.Optimizer, saved: dict) -> None:
    """Optimizer.load_state_dict keeps a saved tensor that already has the parameter's device
    and dtype: a state taken from a live model (`load_state_dict(other.state_dict())`) would
    leave both models stepping one set of Adam moments. Such tensors are copied. And each
    moment takes its parameter's layout: a state saved with NCHW weights, resumed
    channels_last (or the reverse), kept the saved strides, which torch's fused CPU Adam does
    not follow: it updated each weight with another element's moments."""
    shared = {t.data_ptr() for s in saved["state"].values() for t in s.values() if torch.is_tensor(t)}
    for group in optimizer.param_groups:
        for p in group["params"]:
            s = optimizer.state.get(p, {})
            for key, t in s.items():
                if not torch.is_tensor(t):
                    continue
                if t.shape == p.shape and t.stride() != p.stride():
                    s[key] = torch.empty_like(p, dtype=t.dtype).copy_(t)
                elif t.data_ptr() in shared:
                    s[key] = t.clone()


def _plain_schedule_values(scheduler) -> None:
    """The learning rates a scheduler computes from, as floats: a CUDA-graphs run saves them as
    tensors (its schedulers were built over tensor learning rates), from which a resumed run
    without graphs would compute a tensor learning rate at its first epoch end (which a
    non-capturable foreach Adam refuses). A graphs run fills its device tensor in place from
    floats as well."""
    for name in ("base_lrs", "_last_lr"):
        values = getattr(scheduler, name, None)
        if isinstance(values, list):
            setattr(scheduler, name, [float(v) for v in values])
    for group in scheduler.optimizer.param_groups:
        if torch.is_tensor(group.get("initial_lr")):
            group["initial_lr"] = float(group["initial_lr"])


class TrainingModel:
    loss_names: tuple[str, ...] = ()
    # which batch entries are inputs of step()
    input_names: tuple[str, ...] = ("A", "B")

    def __init__(self, opt, device: torch.device, levels: Levels | None = None):
        self.opt = opt
        self.device = device
        self.levels = levels if levels is not None else resolve_levels(opt, device)
        if self.levels.merge_passes and opt.norm not in PER_SAMPLE_NORMS:  # levels given, not resolved
            raise ValueError(f"merge_passes needs nets that treat each sample alone (norm instance or none), "
                             f"not norm {opt.norm!r}")
        self.merge_passes = self.levels.merge_passes
        apply_process_levels(self.levels, device)
        self.nets: dict[str, nn.Module] = {}
        self.run_nets: dict[str, nn.Module] = {}
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.schedulers: dict[str, object] = {}
        self.visuals: dict[str, torch.Tensor] = {}
        # fp16 gradients underflow without loss scaling; bf16 has fp32's range
        self.scaler = torch.amp.GradScaler(device.type) if self.levels.amp == "fp16" else None
        # a data-parallel run's weight of this rank's losses (fastgan.engine.distributed)
        self.gradient_shares = None
        self._iterate = self.iteration

    # -- construction helpers -------------------------------------------------
    def _prepare_nets(self) -> None:
        """Device, fused modules, memory format: before the optimizers see the parameters."""
        for net in self.nets.values():
            net.to(self.device)
            net.train()
            if self.levels.accelerate:
                from fastgan.nn import accelerate

                accelerate(net)
            if self.levels.channels_last:
                net.to(memory_format=torch.channels_last)

    def _adam(self, *nets: nn.Module) -> torch.optim.Adam:
        params = [p for net in nets for p in net.parameters()]
        return adam(params, self.opt, self.levels, self.device)

    def make_pool(self, seed: int):
        """The reference's pool on the eager path and for images of several sizes (a ring
        buffer holds one), the capturable device ring buffer otherwise."""
        if self.levels.is_eager or sizes_vary(self.opt.preprocess):
            return ImagePool(self.opt.pool_size, seed=seed)
        return DeviceImagePool(self.opt.pool_size)

    def _finish_setup(self) -> None:
        self.schedulers = {k: build_scheduler(o, self.opt) for k, o in self.optimizers.items()}
        # several ranks: each net in DistributedDataParallel (fastgan.engine.distributed); --compile nets
        # then compiles the wrapper, the order torch's DDP-aware compilation expects
        self.run_nets = distribute(self) if is_data_parallel() else dict(self.nets)
        if self.levels.compile == "nets":
            self.run_nets = {k: torch.compile(n) for k, n in self.run_nets.items()}
        if self.levels.cuda_graphs:
            from fastgan.engine.graphs import GraphedIteration

            self._iterate = GraphedIteration(self._iterate, self)

    @property
    def iterations_before_replay(self) -> int:
        """Steps before the iteration replays a CUDA graph: the graph's side-stream warm-up
        and the step that captures it (0 without --cuda_graphs). A benchmark times after them."""
        return self._iterate.warmup + 1 if self.levels.cuda_graphs else 0

    # -- the iteration -------------------------------------------------------
    def iteration(self, *inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        """One reference iteration on inputs already on the device, in the nets' memory format."""
        raise NotImplementedError

    def step(self, *inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        """One iteration; the losses as device tensors. Under --cuda_graphs they (and
        `visuals`) are the graph's own tensors, which the next replay overwrites: read or
        clone them before the next step (train_step returns floats)."""
        inputs = [x.to(self.device, non_blocking=True).contiguous(memory_format=self.levels.memory_format)
                  for x in inputs]
        # the eager level is the reference's path: plain aten for the L1 terms too
        with use_backend("torch") if self.levels.is_eager else contextlib.nullcontext():
            losses = self._iterate(*inputs)
        if self.scaler is not None:
            self.scaler.update()
        return losses

    def autocast(self):
        """Mixed precision for the forward passes and losses (backward runs outside it)."""
        dtype = self.levels.autocast_dtype
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=dtype)

    def backward(self, loss: torch.Tensor) -> None:
        shares = self.gradient_shares
        if shares is not None and shares.weight != 1.0:  # an uneven batch (distributed.GradientShares)
            loss = loss * shares.weight
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def optimizer_step(self, name: str) -> None:
        optimizer = self.optimizers[name]
        if self.scaler is not None:
            self.scaler.step(optimizer)
        else:
            optimizer.step()

    def train_step(self, batch: dict) -> dict[str, float]:
        """One iteration on a batch of (N, C, H, W) images in [-1, 1]; the losses as floats.
        batch["A"] is the side G_A (pix2pix: G) takes, whatever `direction` says: fastgan's
        datasets swap the domains under BtoA themselves, where the reference's set_input swaps."""
        multiple = generator_size_multiple(self.opt.netG)
        missing = [name for name in self.input_names if name not in batch]
        if missing:
            raise ValueError(f"train_step: the batch has no {' and no '.join(missing)}; --arch {self.opt.arch} "
                             f"trains on {{{', '.join(repr(n) for n in self.input_names)}}} image batches")
        for name in self.input_names:
            x = batch[name]
            if x.dim() != 4 or x.shape[-1] % multiple or x.shape[-2] % multiple:
                raise ValueError(f"train_step: {name} has shape {tuple(x.shape)}; --netG {self.opt.netG} takes "
                                 f"(N, C, H, W) images with H and W multiples of {multiple}")
        losses = self.step(*(batch[name] for name in self.input_names))
        return {name: float(value) for name, value in losses.items()}

    # -- learning rate -------------------------------------------------------
    def update_learning_rate(self, metric: float = 0.0) -> float:
        step_schedulers(self.schedulers.values(), metric)
        return self.learning_rate

    @property
    def learning_rate(self) -> float:
        return float(next(iter(self.optimizers.values())).param_groups[0]["lr"])

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
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
        }

    def load_state_dict(self, state: dict, schedules: bool = True) -> None:
        """The state() of a model with these nets; without `schedules` the schedulers stay as
        built (a state saved under another --lr_policy holds another scheduler's state)."""
        for k, net in self.nets.items():
            load_reference_checkpoint(net, state["nets"][k], name=f"net {k}")
        for k, o in self.optimizers.items():
            o.load_state_dict(state["optimizers"][k])
            _own_moments(o, state["optimizers"][k])
            self._keep_adam_implementation(o)
        for k, s in self.schedulers.items() if schedules else ():
            s.load_state_dict(state["schedulers"][k])
            _plain_schedule_values(s)
        for k, p in self.pools().items():
            p.load_state_dict(state["pools"][k], self.device)
        if self.scaler is not None and state.get("scaler") is not None:
            self.scaler.load_state_dict(state["scaler"])
        if self.levels.cuda_graphs:
            self._iterate.recapture()

    def _keep_adam_implementation(self, optimizer: torch.optim.Adam) -> None:
        """After load_state_dict, which takes the saved groups whole: this run's Adam (its
        capturable, fused and foreach flags; a device tensor learning rate under CUDA graphs,
        else a float), whatever the saved run's levels were, and each step counter where that
        implementation keeps it (a capturable or fused Adam on the parameter's device, else on
        the CPU). A state saved without CUDA graphs otherwise failed a graphs run's first step
        or its capture, and the reverse."""
        for group in optimizer.param_groups:
            for flag in ("capturable", "fused", "foreach"):
                group[flag] = optimizer.defaults[flag]
            lr = float(group["lr"])
            group["lr"] = torch.tensor(lr, dtype=torch.float32, device=self.device) if self.levels.cuda_graphs else lr
            on_device = group["capturable"] or group["fused"]
            for p in group["params"]:
                step = optimizer.state.get(p, {}).get("step")
                if torch.is_tensor(step):
                    optimizer.state[p]["step"] = step.to(p.device if on_device else "cpu")

    def pools(self) -> dict:
        return {}
