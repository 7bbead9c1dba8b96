"""tools/triton_sm90_check.py: the Triton kernels compiled for a real sm_90 GPU, ahead of
time, without one.

The other op tests run the kernels through TRITON_INTERPRET=1, which accepts programs
the real compiler rejects. The tool records the launches the ops make (under the
interpreter, kernels not run), expands autotuned kernels to every GPU config and
compiles each variant through TTIR, TTGIR, LLVM IR, PTX and ptxas for
GPUTarget("cuda", 90, 32). These tests check that every kernel is recorded, that a
broken kernel or one over sm_90's shared memory is reported, and that the small
kernels compile (reflect_conv2d's GEMM tiles take minutes here: run the tool itself,
`.venv/bin/python tools/triton_sm90_check.py`, for every kernel).
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TOOL = REPO / "tools" / "triton_sm90_check.py"
KERNEL_DIR = REPO / "fastgan" / "ops" / "triton"

try:
    import triton  # noqa: F401
except ImportError:  # pragma: no cover
    pytest.skip("triton is not installed", allow_module_level=True)


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "FASTGAN_BACKEND")}
    env.setdefault("OMP_NUM_THREADS", "1")
    # (~/.triton, Triton's default, may not be writable)
    env.setdefault("TRITON_CACHE_DIR", os.path.join(tempfile.gettempdir(), f"fastgan-tests-triton-{os.getuid()}"))
    return env


def _tool(*args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(TOOL), *args], env=_env(), cwd=str(REPO), capture_output=True,
                          text=True, timeout=timeout)


def _launched_kernels() -> set[str]:
    """module:name of every `*_kernel` function of fastgan/ops/triton/*.py (the kernels
    the host code launches; the other jit functions are helpers they call)."""
    out = set()
    for path in sorted(KERNEL_DIR.glob("*.py")):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.FunctionDef) and node.name.endswith("_kernel"):
                out.add(f"fastgan.ops.triton.{path.stem}:{node.name}")
    return out


@pytest.fixture(scope="module")
def recording(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """The launches the tool records (one recording for the module's tests) and its --list run."""
    records = tmp_path_factory.mktemp("sm90") / "launches.json"
    return records, _tool("--list", "--records", str(records), timeout=600)


def test_every_kernel_is_recorded(recording):
    records, proc = recording
    assert proc.returncode == 0, proc.stdout + proc.stderr
    recorded = json.loads(records.read_text())
    assert recorded["errors"] == [], recorded["errors"]
    kernels = {launch["kernel"] for launch in recorded["launches"]}
    expected = _launched_kernels()
    assert len(expected) >= 14
    assert expected <= kernels, f"kernels never launched by the tool's scenarios: {sorted(expected - kernels)}"
    # the interpreter's block sizes are replaced by the GPU's, and every reflect_conv2d
    # GPU tile is in the list (not the interpreter's single config)
    assert any(n.startswith("l1_loss.BLOCK:") and n.endswith("(GPU value)") for n in recorded["notes"])
    listed = [line for line in proc.stdout.splitlines() if line.startswith("list ")]
    for tile in ("BLOCK_M=128 BLOCK_N=128 BLOCK_K=32", "BLOCK_M=128 BLOCK_N=16 BLOCK_K=64",
                 "BLOCK_M=16 BLOCK_N=128 BLOCK_K=64", "BLOCK_M=32 BLOCK_N=64 BLOCK_K=128"):
        assert any(tile in line for line in listed), tile
    assert not any("WIDEN=True" in line for line in listed)  # the interpreter-only bf16 widening


_BAD_MODULE = '''
import triton
import triton.language as tl


@triton.jit
def good_kernel(x_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    tl.store(x_ptr + offs, tl.load(x_ptr + offs, mask=offs < n) * 2, mask=offs < n)


@triton.jit
def bad_kernel(x_ptr, n, BLOCK: tl.constexpr):
    offs = tl.arange(0, BLOCK)  # BLOCK = 3: not a power of 2 (the interpreter runs it)
    tl.store(x_ptr + offs, tl.load(x_ptr + offs, mask=offs < n), mask=offs < n)


@triton.jit
def big_dot_kernel(a_ptr, b_ptr, c_ptr, K, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr):
    rm = tl.arange(0, BM)
    rn = tl.arange(0, BN)
    rk = tl.arange(0, BK)
    acc = tl.zeros((BM, BN), dtype=tl.float32)
    for k in range(0, K, BK):
        a = tl.load(a_ptr + rm[:, None] * K + (k + rk)[None, :])
        b = tl.load(b_ptr + (k + rk)[:, None] * BN + rn[None, :])
        acc = tl.dot(a, b, acc)
    tl.store(c_ptr + rm[:, None] * BN + rn[None, :], acc)
'''


def test_broken_kernels_are_reported(tmp_path):
    (tmp_path / "sm90_probe_kernels.py").write_text(_BAD_MODULE)
    code = textwrap.dedent(f"""
        import importlib.util, json, sys
        sys.path.insert(0, {str(tmp_path)!r})
        spec = importlib.util.spec_from_file_location("triton_sm90_check", {str(TOOL)!r})
        tool = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(tool)

        def variant(name, signature, constexprs, options=None):
            return {{"kernel": "sm90_probe_kernels:" + name, "signature": signature, "attrs": {{}},
                     "constexprs": {{k: ("value", v) for k, v in constexprs.items()}},
                     "options": options or {{}}, "label": name}}

        sig = {{"x_ptr": "*fp32", "n": "i32", "BLOCK": "constexpr"}}
        dot = {{"a_ptr": "*fp32", "b_ptr": "*fp32", "c_ptr": "*fp32", "K": "i32",
                "BM": "constexpr", "BN": "constexpr", "BK": "constexpr"}}
        out = {{
            "good": tool.compile_variant(variant("good_kernel", sig, {{"BLOCK": 1024}})),
            "bad": tool.compile_variant(variant("bad_kernel", sig, {{"BLOCK": 3}})),
            # 2 stages in flight of a 256x64 and a 64x256 fp32 tile: 256 KiB > 227 KiB
            "big": tool.compile_variant(variant("big_dot_kernel", dot, {{"BM": 256, "BN": 256, "BK": 64}},
                                                {{"num_warps": 8, "num_stages": 3}})),
        }}
        print(json.dumps(out))
    """)
    proc = subprocess.run([sys.executable, "-c", code], env=_env(), cwd=str(REPO), capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["good"]["status"] == "ok", out["good"]
    assert out["good"]["regs"] > 0 and out["good"]["spill_stores"] == 0
    assert out["bad"]["status"] == "FAILED"
    assert "power of 2" in out["bad"]["error"], out["bad"]["error"]
    assert out["big"]["status"] == "FAILED", out["big"]
    assert out["big"]["shared"] > 232448 and "shared memory" in out["big"]["error"]


def test_small_kernels_compile_for_sm90(recording):
    """l1_loss, cycle_losses and instance_norm_act: a covering set of their variants (every
    dtype, tile, activation, affine, residual and fused or split pass the ops launched)."""
    records, listed = recording
    assert listed.returncode == 0, listed.stdout + listed.stderr
    proc = _tool("--load-records", str(records), "-k", "(l1_loss|cycle_losses|instance_norm_act):")
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    assert " 0 FAILED" in proc.stdout
