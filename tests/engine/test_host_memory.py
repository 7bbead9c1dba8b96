"""Host memory on a CPU: with reuse_freed_memory, an iteration's pattern of large blocks
(several alive together, then all freed) comes back without page faults, from glibc's first
threshold held, where every block faults (its own thresholds move with what was freed: its
default faulted 0 to 4,600 times an iteration here, no baseline to test against); the CPU
levels but eager set it."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fastgan.engine.levels import EAGER, Levels, apply_process_levels

# a fresh process each (malloc's state is process-wide): minor faults per iteration
ITERATIONS = """
import ctypes, resource, sys
ctypes.CDLL(None).prctl(41, 1, 0, 0, 0)  # PR_SET_THP_DISABLE: 4 KiB pages, as PAGES counts
import torch
import fastgan
from fastgan.engine import host_memory
# glibc's first threshold, held: every block a fresh mapping (its own thresholds move, and
# may reuse this pattern's blocks by themselves)
assert ctypes.CDLL(None).mallopt(host_memory.M_MMAP_THRESHOLD, 128 << 10)
if sys.argv[1] == "reuse":  # then the setting (through the public name a trainer of one's own calls)
    assert fastgan.reuse_freed_memory()
def iteration():
    blocks = [torch.empty(n << 20, dtype=torch.uint8).fill_(1) for n in (9, 3, 9, 5, 2)]
    del blocks
for _ in range(10):
    iteration()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    iteration()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 20)
"""
PAGES = (9 + 3 + 9 + 5 + 2) << 8  # 4 KiB pages written per iteration
REPO = Path(__file__).resolve().parents[2]


def faults_per_iteration(mode: str) -> float:
    env = {k: v for k, v in os.environ.items()  # (glibc's malloc itself, as it comes)
           if k not in ("LD_PRELOAD", "THP_MEM_ALLOC_ENABLE") and not k.startswith(("MALLOC_", "GLIBC_TUNABLES"))}
    env.update(PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", ITERATIONS, mode], env=env, capture_output=True, text=True,
                         check=True, timeout=120).stdout
    return float(out.split()[-1])


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="a glibc malloc setting")
def test_freed_blocks_come_back_without_page_faults():
    assert faults_per_iteration("mapped") > 0.9 * PAGES  # the measurement sees the faults
    assert faults_per_iteration("reuse") < 0.01 * PAGES


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="a glibc malloc setting")
def test_a_preloaded_allocator_is_not_said_to_be_set(tmp_path):
    """With jemalloc or tcmalloc in malloc's place (LD_PRELOAD, common advice for torch on a
    CPU), glibc's setting tunes nothing: it was reported set."""
    shim = tmp_path / "malloc_shim.c"
    shim.write_text("#include <stddef.h>\nextern void *__libc_malloc(size_t);\n"
                    "void *malloc(size_t n) { return __libc_malloc(n); }\n")
    subprocess.run(["cc", "-shared", "-fPIC", "-o", str(tmp_path / "malloc_shim.so"), str(shim)], check=True)
    code = "from fastgan.engine import host_memory; print(host_memory.reuse_freed_memory())"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for preload, said in (("", "True"), (str(tmp_path / "malloc_shim.so"), "False")):
        out = subprocess.run([sys.executable, "-c", code], env={**env, "LD_PRELOAD": preload}, capture_output=True,
                             text=True, check=True, timeout=120).stdout
        assert out.split() == [said]


def test_cpu_levels_but_eager_set_it(monkeypatch):
    calls = []
    monkeypatch.setattr("fastgan.engine.levels.reuse_freed_memory", lambda: calls.append(1))
    apply_process_levels(EAGER, torch.device("cpu"))
    assert calls == []
    apply_process_levels(Levels(accelerate=True), torch.device("cpu"))
    assert calls == [1]
