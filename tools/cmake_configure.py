"""Configures the CMake build of csrc/ against the installed torch (`make cmake-test`).

    python tools/cmake_configure.py <builddir> [extra cmake arguments...]

Passes what find_package(Torch) needs here: torch's cmake prefix path, C++20, a
Release build, and for CUDA the real toolkit root (not the folder of an nvcc
wrapper), its nvcc, and libnvrtc (taken from the pip nvidia packages when the
toolkit has none). TORCH_CUDA_ARCH_LIST (default "8.0;9.0+PTX") picks the GPU archs;
FASTGAN_CUDA=0 builds without the CUDA kernels.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))

import cuda_env  # noqa: E402


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    build_dir, extra = os.path.abspath(argv[0]), argv[1:]

    import torch.utils  # noqa: E402  (after sys.path is set; cmake_prefix_path needs no CUDA)

    cmake = shutil.which("cmake")
    if cmake is None:
        print("cmake_configure: cmake not found on PATH", file=sys.stderr)
        return 1
    search = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])
    ninja = shutil.which("ninja", path=search)

    cmd = [cmake, "-S", ROOT, "-B", build_dir,
           f"-DCMAKE_PREFIX_PATH={torch.utils.cmake_prefix_path}",
           "-DCMAKE_BUILD_TYPE=Release",
           "-DCMAKE_CXX_STANDARD=20",
           f"-DFASTGAN_PYTHON={sys.executable}",
           "-DTORCH_CUDA_ARCH_LIST=" + os.environ.get("TORCH_CUDA_ARCH_LIST", "8.0;9.0+PTX")]
    cache = os.path.join(build_dir, "CMakeCache.txt")
    if ninja and not os.path.exists(cache):  # the generator of an existing build dir stays
        cmd += ["-G", "Ninja", f"-DCMAKE_MAKE_PROGRAM={ninja}"]

    root = cuda_env.cuda_home(honor_disable=False)
    if root:
        nvcc = os.path.join(root, "bin", "nvcc")
        cmd += [f"-DCUDA_TOOLKIT_ROOT_DIR={root}", f"-DCUDAToolkit_ROOT={root}",
                f"-DCMAKE_CUDA_COMPILER={nvcc}", f"-DCUDA_NVCC_EXECUTABLE={nvcc}"]
        nvrtc = cuda_env.nvrtc_library(root)
        if nvrtc:
            cmd += [f"-DCUDA_NVRTC_LIB={nvrtc}"]
        mode = "OFF" if cuda_env.cuda_disabled() else "ON" if cuda_env.cuda_required() else "AUTO"
        cmd += [f"-DFASTGAN_CUDA={mode}"]
    else:
        cmd += ["-DFASTGAN_CUDA=OFF"]
    cmd += extra
    print("+ " + " ".join(cmd), flush=True)
    return subprocess.call(cmd)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
