"""Which fastgan._C is used (fastgan/ops/_native.py, fastgan/build_info.py): the one built
from the checkout's csrc/, never one built from other sources, and never a second
registration of fastgan's native ops (which aborts the process)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap

import torch

from fastgan import build_info
from fastgan.engine import choice_cache
from fastgan.ops import _native

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

PROBLEM = """
    import json, warnings
    import torch, fastgan.ops as ops
    from fastgan.ops import _native
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ops.l1_loss(torch.randn(3, 4), torch.randn(3, 4))
    print(json.dumps({"loaded": _native.LOADED, "problem": _native.load_problem(),
                      "warnings": [str(w.message) for w in caught if issubclass(w.category, ops.BackendFallbackWarning)]}))
"""


def run(code: str, cwd: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("FASTGAN_BACKEND", "PYTHONPATH")}
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_the_built_library_carries_the_checkouts_source_hash():
    assert _native.LOADED, f"fastgan._C is not used: {_native.load_problem()}"
    assert _native.source_hash() == build_info.csrc_hash(build_info.checkout_csrc()) != ""


def test_a_library_built_from_other_sources_is_refused_with_what_to_do(tmp_path):
    """A _C built before csrc/ changed (a pull, another branch; the old one computed a wrong
    idt_B term in cycle_losses, or failed every call on a changed schema) loaded silently."""
    copy = tmp_path / "checkout"
    shutil.copytree(os.path.join(ROOT, "fastgan"), copy / "fastgan", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(os.path.join(ROOT, "csrc"), copy / "csrc")
    assert run(PROBLEM, str(copy))["loaded"]
    with open(copy / "csrc" / "cpu" / "l1_loss.cpp", "a") as f:
        f.write("// changed after the build\n")
    out = run(PROBLEM, str(copy))
    assert not out["loaded"]
    assert "was built from other sources than" in out["problem"] and "run `make build`" in out["problem"]
    assert len(out["warnings"]) == 1 and "was built from other sources" in out["warnings"][0]


def test_editor_files_beside_the_sources_change_no_hash(tmp_path):
    """emacs's lock file `.#ops.cpp` (a dangling link while ops.cpp is edited) failed
    `import fastgan.ops` with FileNotFoundError; a hidden swap file made a good build stale."""
    csrc = tmp_path / "csrc"
    shutil.copytree(os.path.join(ROOT, "csrc"), csrc)
    before = build_info.csrc_hash(str(csrc))
    os.symlink("user@host.12345:1700000000", csrc / ".#ops.cpp")
    (csrc / "cpu" / ".l1_loss.cpp.swp").write_text("not a source")
    os.makedirs(csrc / ".scratch")
    (csrc / ".scratch" / "notes.txt").write_text("not a source")
    os.symlink("missing.h", csrc / "cpu" / "gone.h")
    assert build_info.csrc_hash(str(csrc)) == before
    with open(csrc / "cpu" / "l1_loss.cpp", "a") as f:  # while a source's change is one
        f.write("// changed\n")
    assert build_info.csrc_hash(str(csrc)) != before


def test_fastgans_ops_registered_by_another_library_are_said_not_an_abort():
    """torch.ops.load_library of the CMake build's library, then import fastgan.ops: the second
    registration of the namespace aborted Python ("Only a single TORCH_LIBRARY can be used")."""
    out = run(textwrap.dedent("""
        import torch
        other = torch.library.Library("fastgan", "DEF")  # as a loaded libfastgan_ops.so
        other.define("l1_loss(Tensor input, Tensor target, float weight=1.0) -> Tensor")
    """) + textwrap.dedent(PROBLEM), ROOT)
    assert not out["loaded"] and "registered by another library in this process" in out["problem"]


def test_the_kernel_choices_cache_is_per_build(monkeypatch):
    """Timings measured with one build of fastgan._C (a stale one's failed kernels saved as
    infinitely slow) were taken by runs of another."""
    key = choice_cache.machine_key(torch.device("cpu"))
    monkeypatch.setattr(_native, "source_hash", lambda: "another build")
    assert choice_cache.machine_key(torch.device("cpu")) != key
