"""Where the CUDA toolkit really is, for setup.py and tools/cmake_configure.py.

`nvcc` on PATH may be a wrapper script (here /usr/local/bin/nvcc execs
/usr/local/cuda-13.0/bin/nvcc), so the folder above `which nvcc` is not the
toolkit root. We ask nvcc itself: `nvcc -v --dryrun` prints the variables it
runs with, among them `TOP=<toolkit root>`.

Order: FASTGAN_CUDA=0 disables CUDA; an explicit CUDA_HOME / CUDA_PATH that
holds bin/nvcc wins; else the nvcc on PATH (or /usr/local/cuda/bin/nvcc) is
asked for its TOP. No toolkit found -> None (CPU-only build).

`python tools/cuda_env.py` prints what was found.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys


def _is_toolkit(root: str | None) -> bool:
    return bool(root) and os.access(os.path.join(root, "bin", "nvcc"), os.X_OK) and (
        os.path.isfile(os.path.join(root, "include", "cuda_runtime.h"))
        or bool(glob.glob(os.path.join(root, "targets", "*", "include", "cuda_runtime.h")))
    )


def _top_from_nvcc(nvcc: str) -> str | None:
    """The toolkit root an nvcc (or a wrapper of one) really runs from."""
    try:
        proc = subprocess.run(
            [nvcc, "-v", "--dryrun", "-x", "cu", "-c", os.devnull, "-o", os.devnull],
            capture_output=True, text=True, timeout=60,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    seen = {}
    for line in (proc.stderr + proc.stdout).splitlines():
        line = line.strip()
        if line.startswith("#$ ") and "=" in line:
            key, _, value = line[3:].partition("=")
            seen.setdefault(key.strip(), value.strip())
    for key in ("TOP", "_HERE_", "_THERE_"):
        value = seen.get(key)
        if not value:
            continue
        root = os.path.realpath(value if key == "TOP" else os.path.join(value, ".."))
        if _is_toolkit(root):
            return root
    return None


# sm_80 and sm_90 code, and sm_90 PTX that newer GPUs (Blackwell's) compile at load
DEFAULT_ARCHS = "8.0;9.0+PTX"


def arch_list() -> str:
    """TORCH_CUDA_ARCH_LIST, or DEFAULT_ARCHS where it is unset or empty (an empty one failed
    torch's build after minutes, with an IndexError)."""
    return os.environ.get("TORCH_CUDA_ARCH_LIST", "").strip() or DEFAULT_ARCHS


def cuda_disabled() -> bool:
    """FASTGAN_CUDA=0: build without the CUDA kernels."""
    return os.environ.get("FASTGAN_CUDA", "").strip().lower() in ("0", "off", "no", "false")


def cuda_home(honor_disable: bool = True) -> str | None:
    """The CUDA toolkit root, or None when there is no usable toolkit (or FASTGAN_CUDA=0,
    unless honor_disable is False: a CUDA build of torch needs the toolkit in CMake
    even when we compile no .cu)."""
    if honor_disable and cuda_disabled():
        return None
    for var in ("CUDA_HOME", "CUDA_PATH"):
        root = os.environ.get(var)
        if root and _is_toolkit(root):
            return os.path.realpath(root)
        if root:
            print(f"cuda_env: {var}={root} holds no bin/nvcc; looking for nvcc on PATH instead", file=sys.stderr)
    candidates = []
    found = shutil.which("nvcc")
    if found:
        candidates.append(found)
    candidates.append("/usr/local/cuda/bin/nvcc")
    for nvcc in candidates:
        if not os.access(nvcc, os.X_OK):
            continue
        root = _top_from_nvcc(nvcc)
        if root:
            return root
        guess = os.path.realpath(os.path.join(os.path.dirname(os.path.realpath(nvcc)), ".."))
        if _is_toolkit(guess):
            return guess
    return None


def cuda_required() -> bool:
    """FASTGAN_CUDA=1 makes a missing toolkit an error instead of a CPU-only build."""
    return os.environ.get("FASTGAN_CUDA", "").strip().lower() in ("1", "on", "yes", "true")


def nvrtc_library(root: str | None = None) -> str | None:
    """libnvrtc for CMake's CUDA_NVRTC_LIB: the toolkit's, else the one torch ships (pip nvidia-*)."""
    patterns = []
    if root:
        patterns += [os.path.join(root, d, "libnvrtc.so*") for d in ("lib64", "lib")]
        patterns += [os.path.join(root, "targets", "*", "lib", "libnvrtc.so*")]
    for site in sys.path:
        if site and os.path.isdir(os.path.join(site, "nvidia")):
            patterns += [os.path.join(site, "nvidia", "*", "lib", "libnvrtc.so*")]
    for pattern in patterns:
        hits = sorted(h for h in glob.glob(pattern) if ".alt." not in h and "builtins" not in h)
        if hits:
            # Prefer the plain soname (libnvrtc.so.13) over the dev symlink.
            hits.sort(key=lambda h: (h.endswith(".so"), len(h)))
            return hits[0]
    return None


def main() -> int:
    root = cuda_home()
    print(json.dumps({"cuda_home": root, "nvrtc": nvrtc_library(root)}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
