"""Builds the native extension fastgan._C: `python setup.py build_ext --inplace` (`make build`).

Sources: csrc/sources.txt (the list CMakeLists.txt reads too). C++ always; the .cu
files when a CUDA toolkit is found (tools/cuda_env.py resolves the real toolkit root
behind an nvcc wrapper). Environment:
  FASTGAN_CUDA=0|1        force a CPU-only build / make a missing toolkit an error
  TORCH_CUDA_ARCH_LIST    GPU architectures (default "8.0;9.0+PTX": sm_80 and sm_90 code, and
                          sm_90 PTX that newer GPUs, Blackwell's, compile at load)
  MAX_JOBS                parallel compile jobs (ninja; torch's default otherwise)
  FASTGAN_DEBUG=1         -O0 -g instead of the release flags
"""

import concurrent.futures
import glob
import importlib.util
import os
import platform
import sys

ROOT = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(ROOT, "tools"))

import cuda_env  # noqa: E402  (tools/cuda_env.py)

# Before torch.utils.cpp_extension is imported: it reads CUDA_HOME at import time and
# otherwise guesses the folder above `which nvcc` (a wrapper here).
CUDA_HOME = cuda_env.cuda_home()
if CUDA_HOME:
    os.environ["CUDA_HOME"] = CUDA_HOME
elif cuda_env.cuda_required():
    sys.exit("setup.py: FASTGAN_CUDA=1 but no CUDA toolkit was found (nvcc on PATH, CUDA_HOME)")
os.environ["TORCH_CUDA_ARCH_LIST"] = cuda_env.arch_list()
# Prefer the venv's ninja when the venv is not activated (`.venv/bin/python setup.py`).
os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")

import logging  # noqa: E402

# torch warns "No CUDA runtime is found" on a machine without a GPU: true, and beside
# the point here (we compile, not run); say what we use instead.
logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)

from setuptools import find_packages, setup  # noqa: E402
from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension  # noqa: E402
import torch  # noqa: E402


def write_source_hash() -> None:
    """csrc/source_hash.h: the hash of csrc/ (fastgan/build_info.py) that ops.cpp gives the
    module as SOURCE_HASH. Rewritten only when it changed: ninja then recompiles ops.cpp
    alone (a -D flag would change every file's flags and rebuild them all)."""
    spec = importlib.util.spec_from_file_location("build_info", os.path.join(ROOT, "fastgan", "build_info.py"))
    build_info = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build_info)
    csrc = os.path.join(ROOT, "csrc")
    path = os.path.join(csrc, build_info.GENERATED_HEADER)
    text = build_info.header_text(build_info.csrc_hash(csrc))
    if os.path.exists(path):
        with open(path) as f:
            if f.read() == text:
                return
    with open(path, "w") as f:
        f.write(text)


def read_sources():
    """csrc/sources.txt: one path per line relative to csrc/, '#' comments."""
    with open(os.path.join(ROOT, "csrc", "sources.txt")) as f:
        names = [line.split("#", 1)[0].strip() for line in f]
    return [os.path.join("csrc", name) for name in names if name]


# The instruction-set copies of the CPU kernels (csrc/cpu/*_avx2.cpp, *_avx512.cpp, chosen at
# run time): each compiled alone with its flags, as ATen compiles its per-capability kernels.
AVX2_FLAGS = ["-mavx2", "-mfma", "-mf16c"]
ISA_COPY_FLAGS = {"avx2": AVX2_FLAGS, "avx512": AVX2_FLAGS + ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq"]}


def isa_copy(source: str) -> str | None:
    """The ISA whose copy of a kernel `source` is (a key of ISA_COPY_FLAGS), or None."""
    stem = os.path.splitext(os.path.basename(source))[0]
    return next((isa for isa in ISA_COPY_FLAGS if stem.endswith("_" + isa)), None)


class BuildExtensionWithISACopies(BuildExtension):
    """torch's BuildExtension (ninja), plus the ISA copies, each ISA's compiled with its flags.

    Each ISA's copies compile in a ninja run of their own (one run has one set of flags), on
    threads beside the other sources' run rather than before it: on a machine with cores to
    spare (the GPU machine's 16) a clean build then takes its slowest file, not the slowest
    copy plus the slowest other file (instance_norm_act's copies are the slowest of all,
    about 45 s each on the 2-core VM). Their objects are linked after the other objects, the
    AVX2 copies' before the AVX-512 ones, so that the linker keeps the generic, then the
    AVX2, copies of the inline functions several kinds of file instantiate (an AVX-512
    instance would break the AVX2 kernels on a CPU without AVX-512)."""

    def build_extension(self, ext):
        by_isa = {isa: [s for s in ext.sources if isa_copy(s) == isa] for isa in ISA_COPY_FLAGS}
        if not any(by_isa.values()) or platform.machine() not in ("x86_64", "AMD64"):
            return super().build_extension(ext)
        ext.sources = [s for s in ext.sources if isa_copy(s) is None]
        args = dict(ext.extra_compile_args)  # by now with BuildExtension's own flags added
        with concurrent.futures.ThreadPoolExecutor(len(by_isa)) as pool:
            # a folder per ISA: each ninja compile call writes build.ninja to its output folder
            copy_objects = [
                pool.submit(self.compiler.compile, copies, output_dir=os.path.join(self.build_temp, isa),
                            macros=ext.define_macros, include_dirs=ext.include_dirs, debug=self.debug,
                            extra_postargs=dict(args, cxx=args["cxx"] + ISA_COPY_FLAGS[isa]), depends=ext.depends)
                for isa, copies in by_isa.items() if copies]
            link = self.compiler.link_shared_object

            def link_with_the_copies(objects, *rest, **kwargs):
                return link([*objects, *(o for done in copy_objects for o in done.result())], *rest, **kwargs)

            self.compiler.link_shared_object = link_with_the_copies
            try:
                super().build_extension(ext)
            finally:
                self.compiler.link_shared_object = link


def extension():
    write_source_hash()
    sources = read_sources()
    with_cuda = CUDA_HOME is not None
    if with_cuda:
        print(f"setup.py: CUDA toolkit {CUDA_HOME}, archs {os.environ['TORCH_CUDA_ARCH_LIST']}", file=sys.stderr)
    else:
        sources = [s for s in sources if not s.endswith(".cu")]
        reason = "FASTGAN_CUDA=0" if cuda_env.cuda_disabled() else "no CUDA toolkit found"
        print(f"setup.py: {reason}, building the CPU kernels only", file=sys.stderr)
    depends = sorted(glob.glob(os.path.join("csrc", "**", "*.h"), recursive=True)
                     + glob.glob(os.path.join("csrc", "**", "*.cuh"), recursive=True)
                     + [os.path.join("csrc", "sources.txt")])

    if os.environ.get("FASTGAN_DEBUG") == "1":
        opt = ["-O0", "-g"]
    else:
        # Release, safe on any x86-64 (no -march=native: CI and the GPU box are other
        # machines). -fno-math-errno / -fno-trapping-math let the compiler vectorize
        # without changing any result (no -ffast-math: reassociation would).
        # -g0 overrides the -g of Python's default flags (faster builds, smaller .so).
        # -ffp-contract=off: no fused multiply-adds, the same bits from any compiler.
        opt = ["-O3", "-DNDEBUG", "-g0", "-fno-math-errno", "-fno-trapping-math", "-ffp-contract=off"]
    # -fopenmp: at::parallel_for is an inline OpenMP loop in torch's headers; without it
    # every CPU kernel runs on one thread.
    cxx = opt + ["-fopenmp", "-DFASTGAN_PYTHON_MODULE", "-Wall", "-Wno-unknown-pragmas"]
    nvcc = ["-O3", "-DNDEBUG", "--expt-relaxed-constexpr", "-lineinfo"]
    torch_lib = os.path.join(os.path.dirname(torch.__file__), "lib")
    # `import fastgan._C` works even before `import torch` (libc10 etc. found via rpath).
    link = [f"-Wl,-rpath,{torch_lib}", "-fopenmp"]

    kind = CUDAExtension if with_cuda else CppExtension
    kwargs = dict(extra_compile_args={"cxx": cxx, "nvcc": nvcc} if with_cuda else {"cxx": cxx},
                  extra_link_args=link, depends=depends)
    return kind("fastgan._C", sources, **kwargs)


setup(
    name="fastgan",
    version="0.1.0",
    description="CycleGAN and Pix2Pix training with the reference's semantics, fast",
    packages=find_packages(include=["fastgan", "fastgan.*"]),
    python_requires=">=3.10",
    ext_modules=[extension()],
    cmdclass={"build_ext": BuildExtensionWithISACopies.with_options(use_ninja=True)},
    zip_safe=False,
)
