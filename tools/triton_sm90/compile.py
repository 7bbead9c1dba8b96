"""Phase 3: compile one variant with triton.compile(ASTSource(...),
target=GPUTarget("cuda", 90, 32)) through TTIR, TTGIR, LLVM IR, PTX and ptxas to a
cubin, and read its stats: registers, spill store/load bytes, stack bytes (from
ptxas -v: CompiledKernel.n_regs / n_spills need a GPU; on a cache hit ptxas is rerun
on the cached PTX), shared memory bytes (metadata.shared; more than the 227 KiB an
sm_90 block may use is a failure: the launch would raise OutOfResources). A failure
carries the compiler's message and diagnostics (MLIR writes them to file descriptor 2).

compile_variant runs in the compile processes (_worker_init their initializer) or in
the main one with -j 1.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from . import KERNEL_MODULES, PACKAGE
from .variants import _kernel_chain

# bytes of shared memory one block may use (opt-in maximum), per compute capability
MAX_SHARED = {80: 166912, 86: 101376, 87: 166912, 89: 101376, 90: 232448, 100: 232448, 103: 232448, 120: 101376}
SM90_MAX_SHARED = MAX_SHARED[90]  # 227 KiB

_PTXAS_RE = {
    "regs": re.compile(r"Used (\d+) registers"),
    "spill_stores": re.compile(r"(\d+) bytes spill stores"),
    "spill_loads": re.compile(r"(\d+) bytes spill loads"),
    "stack": re.compile(r"(\d+) bytes stack frame"),
}


def _ptxas_stats(log: str) -> dict:
    out = {}
    for k, rx in _PTXAS_RE.items():
        m = rx.search(log)
        if m:
            out[k] = int(m.group(1))
    return out


def _rerun_ptxas(ptx: str, arch: int) -> str:
    """ptxas -v on a cached kernel's PTX (Triton's flags), for its register and spill
    counts."""
    from triton.backends.nvidia import compiler as nv

    ptxas = nv.get_ptxas(arch).path if hasattr(nv, "get_ptxas") else nv.knobs.nvidia.ptxas.path
    with tempfile.TemporaryDirectory() as d:
        src = Path(d) / "k.ptx"
        src.write_text(ptx)
        r = subprocess.run([ptxas, "-lineinfo", "-v", "--regAllocOptLevel=2",
                            f"--gpu-name={nv.sm_arch_from_capability(arch)}", str(src), "-o", str(Path(d) / "k.o")],
                           capture_output=True, text=True)
        return r.stdout + r.stderr


class _CaptureStderr:
    """Captures file descriptor 2 (MLIR's diagnostics are written there from C++)."""

    def __enter__(self):
        sys.stderr.flush()
        self._tmp = tempfile.TemporaryFile()
        self._saved = os.dup(2)
        os.dup2(self._tmp.fileno(), 2)
        self.text = ""
        return self

    def __exit__(self, *exc):
        sys.stderr.flush()
        os.dup2(self._saved, 2)
        os.close(self._saved)
        self._tmp.seek(0)
        self.text = self._tmp.read().decode(errors="replace")
        self._tmp.close()
        return False


def _diagnostics(text: str, limit: int = 40) -> str:
    """The compiler's messages without the IR module dump that follows them."""
    lines = []
    for line in text.splitlines():
        if line.startswith(("module {", "#loc", "#blocked", "#shared", "#mma", "// -----")):
            break
        if line.strip():
            lines.append(line)
    return "\n".join(lines[:limit])


def _worker_init():
    os.environ.pop("TRITON_INTERPRET", None)
    import importlib

    for name in KERNEL_MODULES:
        importlib.import_module(f"{PACKAGE}.{name}")


def compile_variant(v: dict, arch: int = 90) -> dict:
    import triton
    import triton.language as tl
    from triton import knobs
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    target = GPUTarget("cuda", arch, 32)
    t0 = time.time()
    result = {"label": v["label"], "status": "ok"}
    try:
        from triton.compiler.compiler import make_backend

        fn, _, _ = _kernel_chain(v["kernel"])
        constexprs = {k: (tl.dtype(val) if kind == "dtype" else val) for k, (kind, val) in v["constexprs"].items()}
        backend = make_backend(target)
        attrs = {(fn.arg_names.index(k),): backend.parse_attr(a) for k, a in v["attrs"].items()}
        src = ASTSource(fn=fn, signature=dict(v["signature"]), constexprs=constexprs, attrs=attrs)
        knobs.nvidia.dump_ptxas_log = True
        buf = io.StringIO()
        failure = None
        with _CaptureStderr() as err, contextlib.redirect_stdout(buf):
            try:
                compiled = triton.compile(src, target=target, options=dict(v["options"]))
            except Exception as e:
                failure = e
        if failure is not None:  # with the compiler's diagnostics (written to fd 2)
            failure.add_note(_diagnostics(err.text))
            raise failure
        log = buf.getvalue()
        if "ptxas info" not in log:  # a cache hit: no ptxas ran
            log = _rerun_ptxas(compiled.asm["ptx"], arch)
        result.update(_ptxas_stats(log))
        result["shared"] = int(compiled.metadata.shared)
        result["num_warps"] = compiled.metadata.num_warps
        limit = MAX_SHARED.get(arch, SM90_MAX_SHARED)
        if result["shared"] > limit:
            result["status"] = "FAILED"
            result["error"] = (f"OutOfResources: shared memory {result['shared']} bytes > {limit} "
                               f"(what one block may use on sm_{arch}): the launch would fail")
    except Exception as e:
        result["status"] = "FAILED"
        notes = [n for n in getattr(e, "__notes__", []) if n.strip()]
        result["error"] = "\n".join([f"{type(e).__name__}: {e}", *notes])
    result["seconds"] = round(time.time() - t0, 2)
    return result

