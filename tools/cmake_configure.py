"""Configures the CMake build of csrc/ against the installed torch (`make cmake-test`).

    python tools/cmake_configure.py <builddir> [extra cmake arguments...]

Passes what find_package(Torch) needs here: torch's cmake prefix path, C++20, a
Release build, and for CUDA the real toolkit root (not the folder of an nvcc
wrapper), its nvcc, and libnvrtc (taken from the pip nvidia packages when the
toolkit has none). TORCH_CUDA_ARCH_LIST (unset or empty: "8.0;9.0+PTX") picks the GPU archs;
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
    cmake = shutil.which("cmake")
    if cmake is None:
        print("cmake_configure: cmake not found on PATH", file=sys.stderr)
        return 1
    build_dir = os.path.abspath(argv[0])
    forget_another_torch(build_dir)
    cmd, env = configure_command(cmake, build_dir, argv[1:])
    print("+ " + " ".join(cmd), flush=True)
    return subprocess.call(cmd, env=env)


def torch_dir() -> str:
    import torch.utils  # noqa: E402  (after sys.path is set; cmake_prefix_path needs no CUDA)

    return os.path.join(torch.utils.cmake_prefix_path, "Torch")


def configured_torch_dir(build_dir: str) -> str | None:
    """The Torch_DIR the build folder's cache holds, or None."""
    try:
        with open(os.path.join(build_dir, "CMakeCache.txt")) as f:
            for line in f:
                if line.startswith("Torch_DIR:"):
                    return line.split("=", 1)[1].strip()
    except OSError:
        pass
    return None


def forget_another_torch(build_dir: str) -> None:
    """A build folder configured with another torch (another Python) starts afresh: its cache
    keeps that torch's libraries and CMake files, which a new Torch_DIR does not replace (it
    built against the other torch, and the library then failed to load here)."""
    configured = configured_torch_dir(build_dir)
    if configured is not None and os.path.realpath(configured) != os.path.realpath(torch_dir()):
        print(f"cmake_configure: {build_dir} was configured with the torch at {configured}; configuring it "
              "afresh for this one", flush=True)
        os.remove(os.path.join(build_dir, "CMakeCache.txt"))
        shutil.rmtree(os.path.join(build_dir, "CMakeFiles"), ignore_errors=True)


def configure_command(cmake: str, build_dir: str, extra: list[str]) -> tuple[list[str], dict]:
    """The cmake command line and its environment (torch's CMake files read the arch list
    from the environment too)."""
    import torch.utils  # noqa: E402

    search = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])
    ninja = shutil.which("ninja", path=search)
    archs = cuda_env.arch_list()
    cmd = [cmake, "-S", ROOT, "-B", build_dir,
           f"-DCMAKE_PREFIX_PATH={torch.utils.cmake_prefix_path}",
           f"-DTorch_DIR={torch_dir()}",
           "-DCMAKE_BUILD_TYPE=Release",
           "-DCMAKE_CXX_STANDARD=20",
           f"-DFASTGAN_PYTHON={sys.executable}",
           f"-DTORCH_CUDA_ARCH_LIST={archs}"]
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
    return cmd + extra, {**os.environ, "TORCH_CUDA_ARCH_LIST": archs}


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
