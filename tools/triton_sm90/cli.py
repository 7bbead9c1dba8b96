"""Phase 4: the command line of tools/triton_sm90_check.py (see its docstring): record
the launches in a child process (or load a --records file), expand them, select the
variants, list or compile them in a pool of spawned processes, one line per variant
(ok / FAILED, registers, spill store/load bytes, stack bytes, shared memory bytes,
compile seconds, the variant; a failure's message and diagnostics under its line), and
the summary. Exit status 1 when any variant fails, when a scenario raised while
recording, or when a kernel module had no launch recorded.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from . import __doc__ as _PACKAGE_DOC
from . import KERNEL_MODULES, PACKAGE, RECORD_FLAG, REPO, TOOL
from .compile import _worker_init, compile_variant
from .record import record_main
from .variants import expand, select_covering


def _format(v: dict, r: dict) -> str:
    if r["status"] == "ok" or "regs" in r:
        stats = (f"regs {r.get('regs', '?'):>3} spill {r.get('spill_stores', '?')}/{r.get('spill_loads', '?')} B "
                 f"stack {r.get('stack', '?')} B smem {r.get('shared', '?')} B")
    else:
        stats = "regs - spill - stack - smem -"
    warn = ""
    if r.get("spill_stores"):
        warn = "  [SPILLS]"
    return f"{r['status']:<6} {stats:<44} {r['seconds']:>5.1f}s  {v['label']}{warn}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=_PACKAGE_DOC.split("\n\n")[0])
    ap.add_argument("--scope", choices=["default", "full"], default="default",
                    help="recorded scenarios: default, or full (more shapes, every activation/affine/layout "
                         "combination)")
    ap.add_argument("--select", choices=["cover", "all"], default=None,
                    help="cover: a subset showing every argument type, constexpr value and specialization of "
                         "each (kernel, config) at least once (default with --scope default); all: every "
                         "distinct variant (default with --scope full)")
    ap.add_argument("--modes", default="gpu,plain",
                    help="specializations to compile: gpu (as the JIT on a GPU), plain (none); default both")
    ap.add_argument("-k", dest="pattern", default=None, help="only variants whose label matches this regex")
    ap.add_argument("-j", "--jobs", type=int, default=min(4, os.cpu_count() or 1), help="compile processes")
    ap.add_argument("--arch", type=int, default=90, help="compute capability to compile for (90: sm_90a)")
    ap.add_argument("--fresh-cache", action="store_true", help="compile in an empty temporary Triton cache")
    ap.add_argument("--list", action="store_true", help="list the variants, compile nothing")
    ap.add_argument("--records", default=None, help="write the recorded launches (JSON) to this file")
    ap.add_argument("--load-records", default=None,
                    help="compile the launches of a --records file instead of recording (e.g. with another "
                         "Triton first on PYTHONPATH)")
    ap.add_argument("-v", "--verbose", action="store_true", help="full error messages")
    ap.add_argument(RECORD_FLAG, dest="record_out", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.record_out:
        return record_main(args.record_out, args.scope)

    t_start = time.time()
    if args.fresh_cache:
        import atexit
        import shutil

        fresh = tempfile.mkdtemp(prefix="triton_sm90_check_")
        os.environ["TRITON_CACHE_DIR"] = fresh
        atexit.register(shutil.rmtree, fresh, True)
    # 1. record (child process, interpreter)
    if args.load_records:
        recorded = json.loads(Path(args.load_records).read_text())
    else:
        recorded = _record(args)
        if recorded is None:
            return 1
    launches = recorded["launches"]
    how = (f"loaded from {args.load_records}" if args.load_records else
           f"recorded in {time.time() - t_start:.1f}s (TRITON_INTERPRET=1, kernels not run)")
    print(f"# {len(launches)} launches of {len({x['kernel'] for x in launches})} kernels {how}")
    for note in recorded["notes"]:
        print(f"#   host value: {note}")
    for e in recorded["errors"]:
        print(f"# RECORDING ERROR in scenario {e['scenario']}: {e['error']}")
        if args.verbose:
            print(e["traceback"])
    return _compile_all(args, recorded, t_start)


def _record(args):
    with tempfile.TemporaryDirectory() as d:
        out = args.records or str(Path(d) / "launches.json")
        env = dict(os.environ, TRITON_INTERPRET="1", OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
        cmd = [sys.executable, str(TOOL), RECORD_FLAG, out, "--scope", args.scope]
        proc = subprocess.run(cmd, env=env, cwd=str(REPO), capture_output=True, text=True)
        if proc.returncode != 0 or not Path(out).exists():
            print(proc.stdout + proc.stderr)
            print("FAILED: recording the launches (TRITON_INTERPRET=1) failed")
            return None
        return json.loads(Path(out).read_text())


def _compile_all(args, recorded, t_start) -> int:
    launches = recorded["launches"]
    # 2. expand
    import triton

    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    problems: list[str] = []
    variants = expand(launches, modes, problems)
    problems = sorted(set(problems))
    for p in problems:
        print(f"# FAILED to build a signature: {p}")
    missing = sorted({f"{PACKAGE}.{m}" for m in KERNEL_MODULES} - {x["kernel"].split(":")[0] for x in launches})
    total = len(variants)
    if args.select == "cover" or (args.select is None and args.scope == "default"):
        variants = select_covering(variants)
    if args.pattern:
        rx = re.compile(args.pattern)
        variants = [v for v in variants if rx.search(v["label"]) or rx.search(v["kernel"])]
    # the heaviest first: the pool's tail is then short
    variants.sort(key=lambda v: (0 if "reflect_conv2d" in v["kernel"] else 1, v["kernel"], v["label"]))
    print(f"# {len(variants)} of {total} distinct variants to compile for GPUTarget('cuda', {args.arch}, 32) "
          f"with triton {triton.__version__} ({', '.join(modes)} specialization), {args.jobs} processes, "
          f"cache {os.environ.get('TRITON_CACHE_DIR', '~/.triton/cache')}")
    if args.list:
        for v in variants:
            print(f"list   {v['label']}   x{v['count']}  e.g. {v['scenario']}")
        return 0

    # 3. compile
    results = []
    if args.jobs > 1 and len(variants) > 1:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(args.jobs, mp_context=mp.get_context("spawn"), initializer=_worker_init) as pool:
            futures = [pool.submit(compile_variant, v, args.arch) for v in variants]
            for v, f in zip(variants, futures):
                r = f.result()
                results.append((v, r))
                _report(v, r, args.verbose)
    else:
        _worker_init()
        for v in variants:
            r = compile_variant(v, args.arch)
            results.append((v, r))
            _report(v, r, args.verbose)

    failed = [(v, r) for v, r in results if r["status"] != "ok"]
    spilling = [(v, r) for v, r in results if r.get("spill_stores")]
    print(f"# {len(results) - len(failed)} ok, {len(failed)} FAILED, {len(spilling)} with register spills; "
          f"{time.time() - t_start:.0f}s in all")
    if missing:
        print(f"# FAILED: no launch recorded from {', '.join(missing)}")
    if recorded["errors"]:
        print(f"# FAILED: {len(recorded['errors'])} scenarios raised while recording")
    by_kernel: dict[str, list] = {}
    for v, r in failed:
        by_kernel.setdefault(v["kernel"], []).append(r["error"].split("\n")[0][:200])
    for k, errs in by_kernel.items():
        print(f"#   {k}: {len(errs)} failed, e.g. {errs[0]}")
    return 1 if failed or missing or recorded["errors"] or problems else 0


def _report(v, r, verbose):
    print(_format(v, r), flush=True)
    if r["status"] != "ok":
        err = r["error"]
        if not verbose:
            lines = [ln for ln in err.split("\n") if ln.strip()]
            err = "\n".join(lines[:12]) + ("\n    ..." if len(lines) > 12 else "")
        print("    " + err.replace("\n", "\n    "))
        print(f"    (e.g. scenario: {v['scenario']}; signature {v['signature']}; options {v['options']})")


