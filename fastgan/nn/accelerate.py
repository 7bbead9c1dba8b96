"""fastgan.accelerate(module): rewrite any model's patterns into fastgan's fused modules.

It matches module *patterns*, not model classes, so it works on the reference's own
networks.py as users have them, on fastgan.models, and on models fastgan never saw:

    nn.Sequential [.., ReflectionPad2d(p), Conv2d(padding 0), ..]
        -> [.., Identity, ReflectConv2d, ..]          (the conv's slot keeps its keys)
    nn.Sequential [.., InstanceNorm2d, ReLU | LeakyReLU, ..]
        -> [.., FusedInstanceNormAct, Identity, ..]   (the norm's slot keeps its keys)
    a block whose forward is exactly `x + body(x)` (either order), body its only child,
    an nn.Sequential ending in an InstanceNorm2d (the reference's ResnetBlock)
        -> FusedResidualBlock: the add fused into that last norm (body.N keys kept)
    any other InstanceNorm2d (e.g. the U-Net's, whose activation opens the next block)
        -> FusedInstanceNormAct without activation (a one-for-one swap: fastgan's norm
           kernels, and on a CPU no torch channels_last instance-norm backward, which
           torch 2.14 gets wrong at batch size 1)
    any other Conv2d / ConvTranspose2d (zero padding, groups 1, dilation 1)
        -> fastgan.nn.Conv2d / ConvTranspose2d (one for one: on a CPU the faster of the
           vendor convolution and one matrix product, measured per shape; the U-Net's
           innermost levels and pix2pix's discriminator gain most)

Each slot keeps its index, so parameter names, state_dict keys (and their metadata
versions) and the Sequential's indexing are unchanged, and the new modules hold the
old Parameter objects: a checkpoint saved before loads after and back, and an
optimizer built before keeps training the model. Anything that does not match
exactly is left alone: modules with hooks, modules holding something a fresh one of
their class does not (a parameter, buffer, child module or attribute set on them, a forward set on
the instance: the replacement would not keep it), subclasses (their forward may differ),
Sequential subclasses with their own forward, InstanceNorm2d with running stats (its
eval output uses them), convs that pad themselves, dilate or group, asymmetric pads,
blocks whose forward does anything besides the one add (an in-place `x += body(x)`,
which writes into the caller's x, included) or whose class defines again a method of
nn.Module's (its own __call__, train, _apply ...: the stand-in would not run it).
Every rewritten piece keeps the semantics of what it replaces in train and eval mode,
in forward and backward.
Under torch.jit.trace and torch.fx.symbolic_trace the new modules run the torch
composition they stand for (fastgan/nn/tracing.py), so the model still traces.

Two things do change, by construction: a fused pair's second slot is an Identity, so
code that slices a rewritten Sequential (`seq[:2]`) or runs its slots one by one to
keep intermediate values sees the norm's output only after its activation; and the
new modules are not instances of the classes they replace (isinstance(m, nn.Conv2d)
is False for a ReflectConv2d; a FusedResidualBlock keeps the block's attributes and
answers for its class's methods, but is no instance of it): initialise or group
parameters before accelerating, or by the class names (the reference's init_weights
matches 'Conv' in ReflectConv2d).
"""

from __future__ import annotations

import dis
import functools
import inspect
import logging
import operator
from dataclasses import dataclass, field

import torch
import torch.fx as fx
import torch.nn as nn
from torch.nn.utils import parametrize

from fastgan.nn.conv import Conv2d, ConvTranspose2d, why_not_swappable
from fastgan.nn.instance_norm_act import FusedInstanceNormAct
from fastgan.nn.reflect_conv2d import ReflectConv2d
from fastgan.nn.tracing import NoTorchScript, recording_a_trace
from fastgan.ops import check_backend
from fastgan.ops.registry import ops

__all__ = ["AccelerateReport", "FusedResidualBlock", "accelerate"]

logger = logging.getLogger(__name__)

_ACTIVATIONS = (nn.ReLU, nn.LeakyReLU)
_CONVS = {nn.Conv2d: Conv2d, nn.ConvTranspose2d: ConvTranspose2d}
_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)  # never a residual block
_HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks",
               "_state_dict_hooks", "_state_dict_pre_hooks", "_load_state_dict_pre_hooks",
               "_load_state_dict_post_hooks")
_GLOBAL_HOOK_DICTS = ("_global_forward_hooks", "_global_forward_pre_hooks", "_global_backward_hooks",
                      "_global_backward_pre_hooks", "_global_forward_hooks_always_called")


@dataclass
class AccelerateReport:
    """What accelerate() did to a model: the qualified names (from the model passed in)
    of the modules it replaced, and the near misses it left alone, with why. A later
    call on the same model adds what it did to the report it finds there."""

    reflect_conv: list[str] = field(default_factory=list)  # Conv2d slots now ReflectConv2d
    norm_act: list[str] = field(default_factory=list)  # InstanceNorm2d slots now FusedInstanceNormAct
    residual: list[str] = field(default_factory=list)  # blocks now FusedResidualBlock
    norm: list[str] = field(default_factory=list)  # other InstanceNorm2d now FusedInstanceNormAct("none")
    conv: list[str] = field(default_factory=list)  # other Conv2d / ConvTranspose2d now fastgan.nn's
    left_alone: list[str] = field(default_factory=list)  # "name: why"

    def counts(self) -> dict[str, int]:
        return {"reflect_conv": len(self.reflect_conv), "norm_act": len(self.norm_act),
                "residual": len(self.residual), "norm": len(self.norm), "conv": len(self.conv)}

    def merged(self, later: "AccelerateReport") -> "AccelerateReport":
        """This report followed by what `later` adds to it."""
        return AccelerateReport(**{name: getattr(self, name) + [e for e in getattr(later, name)
                                                                if e not in getattr(self, name)]
                                   for name in self.__dataclass_fields__})

    def note_left_alone(self, where: str, why: str) -> None:
        """Notes `where: why`, once per module (the first reason found stands)."""
        if not any(entry.startswith(where + ": ") for entry in self.left_alone):
            self.left_alone.append(f"{where}: {why}")

    def __str__(self) -> str:
        lines = [f"fastgan.accelerate: {len(self.reflect_conv)} ReflectionPad2d+Conv2d -> ReflectConv2d, "
                 f"{len(self.norm_act)} InstanceNorm2d+activation -> FusedInstanceNormAct, "
                 f"{len(self.residual)} residual adds fused, {len(self.norm)} other InstanceNorm2d -> "
                 f"FusedInstanceNormAct, {len(self.conv)} other Conv2d/ConvTranspose2d -> fastgan.nn's "
                 f"(measured per shape on a CPU)"]
        lines += [f"  left alone: {why}" for why in self.left_alone]
        return "\n".join(lines)


class FusedResidualBlock(NoTorchScript, nn.Module):
    """`x + body(x)` with the add fused into body's final instance norm.

    Stands in for a block (e.g. the reference's ResnetBlock) whose forward is exactly
    that add and whose only child is `body`: body is registered under the block's
    attribute name, so the keys (`conv_block.5.weight`, ...) stay the same. body is an
    nn.Sequential ending in a FusedInstanceNormAct without activation; the forward runs
    body's other layers, then that norm with the residual x (one pass instead of a norm
    and an add). When the add would broadcast or promote dtypes (shapes or dtypes of x
    and the norm's input differ), it adds the plain way, as the original block did.

    stands_in_for(block) carries over what else the block held: its own attributes
    (`block.dim`), its class's methods and properties, found when nn.Module has no
    attribute of that name and bound to the stand-in (`block.build_conv_block(...)`),
    and the name of its forward's input (`block(input=x)`). The stand-in is no instance
    of that class: a method calling super() fails on it, and assigning to a property
    stores a plain attribute.
    """

    def __init__(self, body_name: str, body: nn.Sequential, replaces: str = ""):
        super().__init__()
        last = body[-1] if len(body) else None
        if not isinstance(last, FusedInstanceNormAct) or last.activation != "none":
            raise ValueError("FusedResidualBlock: body must end in a FusedInstanceNormAct with activation 'none'")
        self.body_name = body_name
        self.replaces = replaces
        self.add_module(body_name, body)
        self._replaced_type: type | None = None
        self._input_name = "x"  # what the input may be passed as by keyword

    def stands_in_for(self, block: nn.Module) -> "FusedResidualBlock":
        """Takes over block's own attributes (those a fresh module does not have) and
        class, for the attribute lookups nn.Module cannot answer; returns self."""
        for name, value in block.__dict__.items():
            self.__dict__.setdefault(name, value)
        self._replaced_type = type(block)
        self._version = block._version  # the state_dict metadata stays the block's
        (_, given), = list(inspect.signature(type(block).forward).parameters.items())[1:]
        self._input_name = given.name if given.kind == given.POSITIONAL_OR_KEYWORD else None
        self.train(block.training)
        return self

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            replaced = self.__dict__.get("_replaced_type")
            if replaced is None or name.startswith("__"):
                raise
            try:
                attr = inspect.getattr_static(replaced, name)
            except AttributeError:
                raise AttributeError(f"'{type(self).__name__}' object (standing in for {replaced.__name__}) "
                                     f"has no attribute '{name}'") from None
            # a method bound to the stand-in, a property's value, a classmethod bound to its class
            return attr.__get__(self, replaced) if hasattr(attr, "__get__") else attr

    def forward(self, x: torch.Tensor | None = None, /, **by_name) -> torch.Tensor:
        if x is None or (type(by_name) is dict and by_name):  # (torch.fx traces **by_name as a proxy)
            x = self._input_by_name(x, by_name)
        body = self._modules[self.body_name]
        *layers, norm = body
        if recording_a_trace() or _has_hooks(body) or _has_hooks(norm) or _global_module_hooks():
            # hooks registered since on the body (its call runs them) or on its norm (which
            # would see the sum with x): the plain way
            return x + body(x)
        h = x
        for layer in layers:
            h = layer(h)
        if h.shape == x.shape and h.dtype == x.dtype:
            return norm(h, x)
        return x + norm(h)

    def _input_by_name(self, x: torch.Tensor | None, by_name: dict) -> torch.Tensor:
        """The input passed by the replaced forward's own parameter name; what that forward
        would refuse, refused with Python's words."""
        forward = f"{self.replaces or type(self).__name__}.forward()"
        unexpected = [name for name in by_name if name != self._input_name]
        if unexpected:
            raise TypeError(f"{forward} got an unexpected keyword argument {unexpected[0]!r}")
        if x is not None and by_name:
            raise TypeError(f"{forward} got multiple values for argument {self._input_name!r}")
        if x is None and not by_name:
            raise TypeError(f"{forward} missing 1 required positional argument: {self._input_name or 'x'!r}")
        return by_name[self._input_name] if by_name else x

    def extra_repr(self) -> str:
        replaces = f", replaces {self.replaces}" if self.replaces else ""
        return f"x + {self.body_name}(x), the add fused into {self.body_name}[-1]{replaces}"


def accelerate(module: nn.Module, backend: str = "auto") -> nn.Module:
    """Rewrites `module` in place into fastgan's fused modules and returns it.

    backend: "auto" (the fused modules follow fastgan.ops' choice: use_backend,
    FASTGAN_BACKEND, else the fastest available) or a back end name of fastgan.ops
    ("torch", "cpu", "cuda", "triton") that every fused module then runs on (where its
    op has it: reflect_conv2d has no "cuda" back end, its modules then choose by auto);
    an unknown or unusable name raises at once (ValueError, BackendUnavailableError).

    The patterns, and what is left alone, are in the docstring of the file
    fastgan/nn/accelerate.py. Submodules shared between several places are rewritten
    once and stay shared; the module passed in is never itself replaced. Idempotent:
    a second call with the same backend changes nothing. What the call did is logged (logger
    "fastgan.nn.accelerate", INFO) and kept as `module.accelerate_report` (an
    AccelerateReport). A named backend holds for every fused module in `module`
    afterwards, those an earlier call or the user made included (a second call with
    another back end moves them to it; "auto" leaves theirs as it is). Call it before
    torch.compile (a compiled module would keep
    running its old code); an optimizer built before keeps working, as the parameters
    stay the same objects.
    """
    if isinstance(module, torch.jit.ScriptModule):
        raise TypeError("fastgan.accelerate rewrites Python modules, not TorchScript ones (and its modules do "
                        "not script): accelerate the Python model; torch.jit.trace or torch.export of it works")
    if not isinstance(module, nn.Module):
        raise TypeError(f"fastgan.accelerate takes an nn.Module, got {type(module).__name__}")
    check_backend(backend)  # now rather than at the first forward
    report = AccelerateReport()
    _rewrite(module, "", backend, report, {}, {})
    _swap_lone_modules(module, "", backend, report, {})
    logger.info("%s", report)
    if backend != "auto":
        _set_backend(module, backend)
    earlier = getattr(module, "accelerate_report", None)
    module.accelerate_report = earlier.merged(report) if isinstance(earlier, AccelerateReport) else report
    return module


def _set_backend(module: nn.Module, backend: str) -> None:
    """Every fused module in `module` on `backend` (those made before this call too), but
    for those whose op has no such back end (reflect_conv2d has no cuda one): they choose
    by auto (on a GPU, its Triton kernels), which the log says."""
    registered = ops()
    lacking = {op for op in OP_OF.values() if backend not in registered[op].backends()}
    seen = set()
    for m in module.modules():
        op = next((name for kind, name in OP_OF.items() if isinstance(m, kind)), None)
        if op is not None:
            m.backend = "auto" if op in lacking else backend
            seen.add(op)
    for op in sorted(lacking & seen):
        logger.info("fastgan.accelerate: %s has no %r back end: its modules choose theirs by auto", op, backend)


OP_OF = {ReflectConv2d: "reflect_conv2d", FusedInstanceNormAct: "instance_norm_act"}  # a fused module's op


def _rewrite(module: nn.Module, prefix: str, backend: str, report: AccelerateReport,
             done: dict[int, nn.Module], pairs: dict[tuple, tuple]) -> None:
    """Rewrites module's subtree, children first, then module's own Sequential slots.

    `done` maps id(original child) -> what stands in its slots now, so a shared child is
    rewritten once and every parent gets the same replacement; `pairs` does the same for the
    fused pairs of Sequential slots (_fuse_sequence).
    """
    for name, child in list(module._modules.items()):
        if child is None or isinstance(child, torch.jit.ScriptModule):
            continue  # a TorchScript submodule's compiled code does not go through _modules
        if id(child) not in done:
            child_name = prefix + name
            _rewrite(child, child_name + ".", backend, report, done, pairs)
            done[id(child)] = _fuse_residual(child, child_name, backend, report) or child
        if done[id(child)] is not child:
            module._modules[name] = done[id(child)]
    if _is_plain_sequential(module):
        _fuse_sequence(module, prefix, backend, report, pairs)


def _swap_lone_modules(module: nn.Module, prefix: str, backend: str, report: AccelerateReport,
                       done: dict[int, nn.Module]) -> None:
    """Every InstanceNorm2d the patterns above left (no activation follows it in a
    Sequential) becomes a FusedInstanceNormAct without activation, and every Conv2d or
    ConvTranspose2d fastgan.nn's: a module for a module, so it holds wherever the module
    is used. `done` maps id(original) to its stand-in (itself for modules already
    walked): shared modules are handled once."""
    for name, child in list(module._modules.items()):
        if child is None or isinstance(child, torch.jit.ScriptModule):
            continue
        if id(child) not in done:
            where = prefix + name
            done[id(child)] = child
            if type(child) is nn.InstanceNorm2d or type(child) in _CONVS:
                why = _why_left_alone(child)
                if why:
                    report.note_left_alone(where, why)
                elif type(child) is nn.InstanceNorm2d:
                    done[id(child)] = FusedInstanceNormAct.from_modules(child, None, backend=backend)
                    report.norm.append(where)
                else:
                    done[id(child)] = _CONVS[type(child)].from_module(child)
                    report.conv.append(where)
            else:
                subclass = _subclass_reason(child)
                if subclass:
                    report.note_left_alone(where, subclass)
                _swap_lone_modules(child, where + ".", backend, report, done)
        module._modules[name] = done[id(child)]


def _fuse_sequence(seq: nn.Sequential, prefix: str, backend: str, report: AccelerateReport,
                   pairs: dict[tuple, tuple]) -> None:
    """Replaces each matching adjacent pair of seq's slots by (fused, Identity) or
    (Identity, fused), the fused module in the slot whose keys it carries. A module in several
    pairs that compute alike (a conv after two pads of one size, a norm before two ReLUs) gets
    one fused module for all: `pairs` maps such a pair's key to (that module, its fused one)."""

    def fused_once(key: tuple, module: nn.Module, build):
        if key not in pairs:
            pairs[key] = (module, build())  # (the module: its id stays its own while the key lives)
        return pairs[key][1]

    keys = list(seq._modules)
    i = 0
    while i + 1 < len(keys):
        first, second = seq._modules[keys[i]], seq._modules[keys[i + 1]]
        if type(first) is nn.ReflectionPad2d and type(second) is nn.Conv2d:
            where = prefix + keys[i + 1]
            fused = _fused_or_why(where, report, (first, second), lambda: fused_once(
                ("reflect_conv", tuple(first.padding), id(second)), second,
                lambda: ReflectConv2d.from_modules(first, second, backend=backend)))
            if fused is not None:
                seq._modules[keys[i]] = _identity_like(first)
                seq._modules[keys[i + 1]] = fused
                report.reflect_conv.append(where)
                i += 2
                continue
        elif type(first) is nn.InstanceNorm2d and type(second) in _ACTIVATIONS:
            where = prefix + keys[i]
            fused = _fused_or_why(where, report, (first, second), lambda: fused_once(
                ("norm_act", id(first), type(second), getattr(second, "negative_slope", None)), first,
                lambda: FusedInstanceNormAct.from_modules(first, second, backend=backend)))
            if fused is not None:
                seq._modules[keys[i]] = fused
                seq._modules[keys[i + 1]] = _identity_like(second)
                report.norm_act.append(where)
                i += 2
                continue
        i += 1


def _why_left_alone(module: nn.Module) -> str | None:
    """Why a lone InstanceNorm2d, Conv2d or ConvTranspose2d keeps torch's module, or None."""
    intercepted = _kept_by_reason([(type(module).__name__, module)])
    if intercepted:
        return intercepted
    if type(module) is nn.InstanceNorm2d:
        return "InstanceNorm2d tracks running stats (its eval output uses them)" if module.track_running_stats else None
    why = why_not_swappable(module, type(module))
    return f"{type(module).__name__} {why}" if why else None


def _subclass_reason(module: nn.Module) -> str | None:
    """Why a module of a subclass of InstanceNorm2d, Conv2d or ConvTranspose2d (fastgan's own
    aside) keeps its module, alone or after a pad, or None: its forward may differ (a
    parametrized conv's class is one: torch.nn.utils.parametrize makes it)."""
    if isinstance(module, NoTorchScript):
        return None
    kind = next((k for k in (nn.InstanceNorm2d, *_CONVS) if isinstance(module, k) and type(module) is not k), None)
    if kind is None:
        return None
    if parametrize.is_parametrized(module):
        return (f"{kind.__name__} parametrized ({', '.join(module.parametrizations)} computed at each call by "
                "torch.nn.utils.parametrize)")
    return f"a {type(module).__name__}, a subclass of nn.{kind.__name__} (its forward may differ)"


def _fused_or_why(where: str, report: AccelerateReport, modules, build) -> nn.Module | None:
    """build() when none of `modules` has hooks or additions of its own and build
    accepts them, else None with the reason noted in the report."""
    intercepted = _kept_by_reason([(type(m).__name__, m) for m in modules])
    if intercepted:
        report.note_left_alone(where, intercepted)
        return None
    try:
        return build()
    except ValueError as why:
        report.note_left_alone(where, str(why))
        return None


def _fuse_residual(block: nn.Module, name: str, backend: str, report: AccelerateReport) -> nn.Module | None:
    """A FusedResidualBlock standing in for `block` when its forward is exactly
    x + body(x), else None (block untouched)."""
    body_name = _residual_body_name(block, name, report)
    if body_name is None:
        return None
    body = block._modules[body_name]
    last_key = list(body._modules)[-1]
    body._modules[last_key] = FusedInstanceNormAct.from_modules(body._modules[last_key], None, backend=backend)
    fused = FusedResidualBlock(body_name, body, replaces=type(block).__name__).stands_in_for(block)
    report.residual.append(name)
    return fused


def _residual_body_name(block: nn.Module, name: str, report: AccelerateReport) -> str | None:
    """The name of block's only child `body` when replacing block by a
    FusedResidualBlock keeps its semantics and state_dict: block has no parameters,
    buffers, hooks, state_dict overrides or __call__ of its own; body is a plain
    nn.Sequential without hooks ending in an InstanceNorm2d that can be fused; and block's forward is
    straight-line code that, traced with its children as opaque calls, is exactly
    `x + body(x)` or `body(x) + x`. A block of that shape whose forward or hooks rule
    the fusion out is noted in the report."""
    if len(block._modules) != 1 or not _has_plain_state(block) or isinstance(block, _CONTAINERS):
        return None
    if any(p is not None for p in block._parameters.values()) or any(b is not None for b in block._buffers.values()):
        return None
    (body_name, body), = block._modules.items()
    if not (_is_plain_sequential(body) and len(body) and _fusable_norm(body[-1])):
        return None
    hooks = _hooks_reason([("the block", block), (body_name, body)])
    if hooks:
        report.note_left_alone(name, hooks)
        return None
    overridden = _module_methods_defined_again(block)
    if overridden:
        report.note_left_alone(name, f"its class defines nn.Module's {', '.join(overridden)} again, which the fused "
                                     "block would not run")
        return None
    if "forward" in block.__dict__:
        report.note_left_alone(name, "it has a forward set on the module, which would no longer run")
        return None
    if not (_straight_line_forward(block, body_name) and _forward_is_residual_add(block, body_name)):
        report.note_left_alone(name, f"its forward is not exactly x + {body_name}(x)")
        return None
    return body_name


def _straight_line_forward(block: nn.Module, body_name: str) -> bool:
    """Whether block's forward is undecorated code without branches, loops, with-blocks,
    try or in-place operators, naming nothing but body (and torch.add): what a trace
    records of it is then all it does. A tracer takes one side of an `if self.training`,
    records neither a torch.no_grad() decorator nor an autocast block, and records
    `x += body(x)` as an add, where the block writes into its caller's x."""
    forward = type(block).forward
    code = getattr(forward, "__code__", None)
    if code is None or hasattr(forward, "__wrapped__") or code.co_freevars:
        return False
    if set(code.co_names) - {body_name, "torch", "add"}:
        return False
    jumps = set(dis.hasjrel) | set(dis.hasjabs)
    return not any(i.opcode in jumps or "WITH" in i.opname or _in_place(i) for i in dis.get_instructions(code))


def _in_place(instruction: dis.Instruction) -> bool:
    """`a += b` and the like: INPLACE_ADD ... up to Python 3.10, BINARY_OP "+=" since 3.11."""
    return instruction.opname.startswith("INPLACE_") or (instruction.opname == "BINARY_OP"
                                                          and instruction.argrepr.endswith("="))


class _ChildrenAsLeaves(fx.Tracer):
    """Traces only the root's own forward: every submodule call is one opaque node."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return True


def _forward_is_residual_add(block: nn.Module, body_name: str) -> bool:
    """Whether block.forward(x) is exactly add(x, body(x)) in either order: one input
    (no defaults), one call of body on it, one add of the two, returned."""
    try:
        graph = _ChildrenAsLeaves().trace(block)
    except Exception:  # any forward fx cannot trace (data-dependent code, ...): not provably the pattern
        return False
    nodes = list(graph.nodes)
    if [n.op for n in nodes] != ["placeholder", "call_module", "call_function", "output"]:
        return False
    x, call, add, out = nodes
    return (not x.args
            and call.target == body_name and call.args == (x,) and not call.kwargs
            and add.target in (operator.add, torch.add) and not add.kwargs
            and len(add.args) == 2 and set(add.args) == {x, call}
            and out.args == (add,))


# the methods a residual block's class may define that nn.Module has too: its forward
# (proven to be the add), its constructor and how it prints (values, not methods, such as
# _version or Python's class metadata, are never counted)
_BLOCK_CLASS_MAY_DEFINE = {"forward", "__init__", "extra_repr", "__repr__", "__dict__", "__weakref__"}


def _module_methods_defined_again(module: nn.Module) -> list[str]:
    """The attributes of nn.Module (its __call__, train, _apply, zero_grad ...) that
    module's class, or a base class of it below nn.Module, defines again: a stand-in for
    module, which is no instance of that class, would run nn.Module's instead."""
    names = set()
    for cls in type(module).__mro__:
        if cls is nn.Module:
            break
        names.update(name for name, value in vars(cls).items()
                     if hasattr(nn.Module, name) and hasattr(value, "__get__") and name not in _BLOCK_CLASS_MAY_DEFINE)
    return sorted(names)


def _fusable_norm(module: nn.Module) -> bool:
    return type(module) is nn.InstanceNorm2d and _why_left_alone(module) is None


def _is_plain_sequential(module: nn.Module) -> bool:
    """An nn.Sequential whose forward is nn.Sequential's: slots run one after another."""
    return (isinstance(module, nn.Sequential) and type(module).forward is nn.Sequential.forward
            and "forward" not in module.__dict__)


def _hooks_reason(named: list[tuple[str, nn.Module]]) -> str | None:
    """What the report says of (name, module) pairs some of which have hooks, or None."""
    hooked = [name for name, module in named if _has_hooks(module)]
    return f"{' and '.join(hooked)} has hooks, which would no longer run" if hooked else None


def _has_hooks(module: nn.Module) -> bool:
    return any(getattr(module, hooks, None) for hooks in _HOOK_DICTS)


def _global_module_hooks() -> bool:
    """Whether hooks registered for every module (nn.modules.module.register_module_forward_hook
    and the like) are set: they would run for each module called."""
    return any(getattr(nn.modules.module, hooks, None) for hooks in _GLOBAL_HOOK_DICTS)


def _kept_by_reason(named: list[tuple[str, nn.Module]]) -> str | None:
    """Why (name, module) pairs must keep their modules: hooks, or what a replacement
    would not keep; None when nothing stops their replacement."""
    hooks = _hooks_reason(named)
    if hooks:
        return hooks
    for name, module in named:
        added = _own_additions(module)
        if added:
            return (f"{name} has {', '.join(added)} set on the module, which its replacement would not keep")
    return None


def _own_additions(module: nn.Module) -> list[str]:
    """What `module` (of a type accelerate replaces) holds beyond what a fresh module of
    its class holds: parameters, buffers and attributes set on it, a forward included."""
    fresh = _fresh_module(type(module))
    if fresh is None:
        return []
    added = [f"parameter {n!r}" for n in module._parameters if n not in fresh._parameters]
    added += [f"buffer {n!r}" for n in module._buffers if n not in fresh._buffers]
    added += [f"module {n!r}" for n in module._modules if n not in fresh._modules]
    added += ["its own forward" if n == "forward" else f"attribute {n!r}"
              for n in module.__dict__ if n not in fresh.__dict__]
    return added


@functools.cache
def _fresh_module(kind: type) -> nn.Module | None:
    """A module of the class `kind` as its constructor leaves it (None: not a class
    accelerate replaces). Built on the meta device with the RNG state put back: a
    constructor's initialisation must not draw from the caller's random stream (a training
    run would then draw differently from one resumed in a process that had built it)."""
    makers = {nn.Conv2d: lambda: nn.Conv2d(1, 1, 1, device="meta"),
              nn.ConvTranspose2d: lambda: nn.ConvTranspose2d(1, 1, 1, device="meta"),
              nn.InstanceNorm2d: lambda: nn.InstanceNorm2d(1, device="meta"),
              nn.ReflectionPad2d: lambda: nn.ReflectionPad2d(1), nn.ReLU: nn.ReLU, nn.LeakyReLU: nn.LeakyReLU}
    maker = makers.get(kind)
    if maker is None:
        return None
    with torch.random.fork_rng(devices=[]):
        return maker()


def _has_plain_state(module: nn.Module) -> bool:
    """Whether module's state_dict is nn.Module's own: no extra state, no key remapping
    on save or load, which a replacement would not carry over."""
    cls = type(module)
    return all(getattr(cls, name) is getattr(nn.Module, name)
               for name in ("_save_to_state_dict", "_load_from_state_dict", "get_extra_state", "state_dict",
                            "load_state_dict"))


def _identity_like(module: nn.Module) -> nn.Identity:
    """The Identity taking a fused-away module's slot (same train/eval flag)."""
    return nn.Identity().train(module.training)
