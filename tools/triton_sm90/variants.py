"""Phase 2: expand each recorded launch to what a GPU would compile, and pick the
subset the default scope compiles.

expand: for @triton.autotune kernels every GPU config of the list (not the single
interpreter config), the @triton.heuristics recomputed per config; each in two
specializations:
   gpu    the one the JIT makes on a GPU from those arguments (ints equal to 1
          become constexprs, ints and pointers divisible by 16 get
          tt.divisibility=16);
   plain  no value specialization (every int an i32/i64, no divisibility).
Identical variants are counted once.

select_covering: a covering subset of the distinct variants (every autotune config of
every kernel, each with every pointer dtype / precision, every constexpr value and both
specializations at least once, plus every config of the "core" scenarios: CycleGAN's
3x3 residual convolution in bf16 and tf32, channels_last).
"""

from __future__ import annotations

import json

OPTION_KEYS = ("num_warps", "num_stages", "num_ctas", "maxnreg")


def _kernel_chain(qualname: str):
    """(JITFunction, autotune configs or None, heuristics {name: fn}) of module:name."""
    import importlib

    from triton.runtime.autotuner import Autotuner, Heuristics
    from triton.runtime.jit import JITFunction

    module, name = qualname.split(":")
    obj = getattr(importlib.import_module(module), name)
    configs, heuristics = None, {}
    while not isinstance(obj, JITFunction):
        if isinstance(obj, Autotuner):
            configs = list(obj.configs)
        elif isinstance(obj, Heuristics):
            heuristics.update(obj.values)
        else:
            raise TypeError(f"{qualname}: unexpected wrapper {type(obj).__name__}")
        obj = obj.fn
    return obj, configs, heuristics


def _decode(desc):
    import triton.language as tl

    kind = desc["kind"]
    if kind == "dtype":
        return tl.dtype(desc["value"])
    if kind in ("int", "bool", "float", "str"):
        return desc["value"]
    if kind == "none":
        return None
    if kind == "tensor":
        return _TensorStandIn(desc)
    raise ValueError(f"cannot use argument {desc}")


class _TensorStandIn:
    """What a heuristic sees of a recorded tensor argument."""

    def __init__(self, desc):
        self.desc = desc
        self.dtype = desc["dtype"]


def _plain_type(desc):
    kind = desc["kind"]
    if kind == "tensor":
        return desc["spec"][0]
    if kind == "int":
        v = desc["value"]
        return "i32" if -2**31 <= v < 2**31 else ("i64" if -2**63 <= v < 2**63 else "u64")
    if kind == "float":
        return "fp32"
    if kind == "bool":
        return "u1"
    return None


def _fmt_value(v):
    import triton.language as tl

    if isinstance(v, tl.dtype):
        return v.name
    return repr(v) if isinstance(v, str) else str(v)


def expand(launches: list[dict], modes: list[str], problems: list[str]) -> list[dict]:
    """The distinct compile variants of the recorded launches (see the module docstring);
    launches that cannot be turned into a signature are described in `problems`."""
    variants: dict[str, dict] = {}
    chains = {}
    for launch in launches:
        qual = launch["kernel"]
        if qual not in chains:
            chains[qual] = _kernel_chain(qual)
        fn, configs, heuristics = chains[qual]
        args = dict(launch["args"])
        tuned_keys = set()
        for c in configs or []:
            tuned_keys |= set(c.kwargs)
        # the interpreter's tile config and the heuristics' values are recomputed below
        user = {k: v for k, v in args.items() if k not in tuned_keys and k not in heuristics}
        if configs:
            runs = [(dict(c.kwargs), {k: v for k, v in c.all_kwargs().items() if k in OPTION_KEYS and v is not None})
                    for c in configs]
        else:
            runs = [({}, {k: v for k, v in launch["options"].items() if k in OPTION_KEYS and v is not None})]
        for tile, options in runs:
            values = {k: _decode(v) for k, v in user.items() if v["kind"] != "unknown"}
            values.update(tile)
            for hname, hfn in heuristics.items():
                values[hname] = hfn(dict(values))
            for mode in modes:
                signature, constexprs, attrs, shown = {}, {}, {}, []
                ok = True
                for i, p in enumerate(fn.params):
                    name = p.name
                    if p.is_constexpr:
                        if name in values:
                            val = values[name]
                        elif p.has_default:
                            val = p.default
                        else:
                            ok = False
                            problems.append(f"{qual}: constexpr {name} not given ({launch['scenario']})")
                            break
                        signature[name] = "constexpr"
                        constexprs[name] = val
                        continue
                    desc = user.get(name)
                    if desc is None or desc["kind"] == "unknown":
                        ok = False
                        problems.append(f"{qual}: argument {name} missing or of an unknown type "
                                        f"{desc} ({launch['scenario']})")
                        break
                    if desc["kind"] == "none":
                        signature[name] = "constexpr"
                        constexprs[name] = None
                        shown.append("None")
                        continue
                    if mode == "gpu" and desc.get("spec") and not p.do_not_specialize:
                        ty, attr = desc["spec"]
                        if ty == "constexpr":
                            signature[name] = "constexpr"
                            constexprs[name] = attr
                            shown.append(f"={attr}")
                            continue
                        signature[name] = ty
                        if attr == "D" and not (p.do_not_specialize_on_alignment):
                            attrs[name] = "D"
                            shown.append(f"{ty}/16")
                        else:
                            shown.append(ty)
                    else:
                        signature[name] = _plain_type(desc)
                        shown.append(signature[name])
                if not ok:
                    continue
                key = json.dumps([qual, mode, sorted(signature.items()), sorted(attrs),
                                  sorted((k, _fmt_value(v)) for k, v in constexprs.items()), sorted(options.items())])
                core = str(launch["scenario"]).startswith("core ")
                if key in variants:
                    variants[key]["count"] += 1
                    variants[key]["core"] |= core
                    continue
                cx_shown = " ".join(f"{k}={_fmt_value(v)}" for k, v in constexprs.items()
                                    if signature.get(k) == "constexpr"
                                    and fn.params[fn.arg_names.index(k)].is_constexpr)
                variants[key] = {
                    "kernel": qual, "mode": mode, "signature": signature, "attrs": attrs,
                    "constexprs": {k: (("dtype", v.name) if hasattr(v, "primitive_bitwidth") else ("value", v))
                                   for k, v in constexprs.items()},
                    "options": options, "tile": tile, "count": 1, "core": core, "scenario": launch["scenario"],
                    "label": f"{qual.split('.')[-1]} [{mode}] "
                             f"w{options.get('num_warps', 4)}s{options.get('num_stages', 3)} "
                             f"{cx_shown} ({','.join(shown)})",
                }
    return list(variants.values())


def _features(v: dict) -> set:
    """What a covering selection must see at least once per (kernel, config):
    the numeric types (pointer element types with the str/dtype constexprs, e.g.
    PRECISION and ACC_DTYPE: fp32 with tf32 is not fp32 with ieee), every other
    constexpr value, the specialization mode and every argument's specialization."""
    sig, cx = v["signature"], v["constexprs"]
    numeric = tuple(t for t in sig.values() if t.startswith("*")) + tuple(
        f"{k}={val}" for k, (kind, val) in sorted(cx.items()) if kind == "dtype" or isinstance(val, str))
    out = {("numeric", numeric), ("mode", v["mode"])}
    for k, (kind, val) in cx.items():
        if kind == "value" and not isinstance(val, str):
            out.add(("constexpr", k, repr(val)))
    for k, t in sig.items():
        if t != "constexpr":
            out.add(("arg", k, "ptr" if t.startswith("*") else t, v["attrs"].get(k, "")))
    return out


def select_covering(variants: list[dict]) -> list[dict]:
    """A subset of the variants that shows every feature (_features) of each (kernel,
    autotune config or launch options) group at least once: the core scenarios' gpu
    variants, then greedily the variant adding the most unseen features (ties: gpu
    specialization first, then the earlier recorded)."""
    groups: dict[str, list[dict]] = {}
    for v in variants:
        groups.setdefault(json.dumps([v["kernel"], sorted(v["options"].items()), sorted(v["tile"].items())]),
                          []).append(v)
    chosen = []
    for members in groups.values():
        members = sorted(members, key=lambda v: v["mode"] != "gpu")
        feats = [_features(v) for v in members]
        seen: set = set()
        for v, f in zip(members, feats):
            if v["core"] and v["mode"] == "gpu":
                chosen.append(v)
                seen |= f
        todo = set().union(*feats)
        while todo - seen:
            best = max(range(len(members)), key=lambda i: (len(feats[i] - seen), -i))
            chosen.append(members[best])
            seen |= feats[best]
    return chosen

