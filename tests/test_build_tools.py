"""What setup.py and tools/cmake_configure.py build with: the GPU archs (tools/cuda_env.py),
the torch a CMake build folder is configured for."""

from __future__ import annotations

import importlib.util
import os
import sys

import torch.utils

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tool(name: str):
    sys.path.insert(0, os.path.join(ROOT, "tools"))
    try:
        spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "tools", f"{name}.py"))
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(os.path.join(ROOT, "tools"))


def test_an_empty_arch_list_is_the_default(monkeypatch):
    """TORCH_CUDA_ARCH_LIST= failed the extension's build after minutes (IndexError in torch)
    and the CMake configure even with CUDA off."""
    cuda_env = tool("cuda_env")
    for value in ("", "  "):
        monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", value)
        assert cuda_env.arch_list() == cuda_env.DEFAULT_ARCHS == "8.0;9.0+PTX"
    monkeypatch.delenv("TORCH_CUDA_ARCH_LIST")
    assert cuda_env.arch_list() == cuda_env.DEFAULT_ARCHS
    monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", "9.0")
    assert cuda_env.arch_list() == "9.0"

    configure = tool("cmake_configure")
    monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", "")
    cmd, env = configure.configure_command("cmake", "/tmp/build", ["-DX=1"])
    assert "-DTORCH_CUDA_ARCH_LIST=8.0;9.0+PTX" in cmd and env["TORCH_CUDA_ARCH_LIST"] == "8.0;9.0+PTX"
    assert f"-DTorch_DIR={os.path.join(torch.utils.cmake_prefix_path, 'Torch')}" in cmd and cmd[-1] == "-DX=1"


def test_a_cuda_home_without_nvcc_is_said(monkeypatch, tmp_path, capsys):
    """A CUDA_HOME holding no toolkit was passed over without a word."""
    cuda_env = tool("cuda_env")
    monkeypatch.setenv("CUDA_HOME", str(tmp_path))
    monkeypatch.delenv("FASTGAN_CUDA", raising=False)
    cuda_env.cuda_home()
    assert f"CUDA_HOME={tmp_path} holds no bin/nvcc; looking for nvcc on PATH instead" in capsys.readouterr().err


def test_a_build_folder_configured_with_another_torch_is_configured_afresh(tmp_path):
    """Its cache kept the other torch's libraries: it built against them, and the library then
    failed to load (undefined symbol) under this torch."""
    configure = tool("cmake_configure")
    (tmp_path / "CMakeFiles").mkdir()
    cache = tmp_path / "CMakeCache.txt"
    cache.write_text(f"Torch_DIR:UNINITIALIZED={configure.torch_dir()}\nTORCH_LIBRARY:FILEPATH=/x/libtorch.so\n")
    configure.forget_another_torch(str(tmp_path))
    assert cache.exists() and (tmp_path / "CMakeFiles").exists()  # this torch's: kept
    cache.write_text("Torch_DIR:UNINITIALIZED=/another/venv/torch/share/cmake/Torch\n")
    configure.forget_another_torch(str(tmp_path))
    assert not cache.exists() and not (tmp_path / "CMakeFiles").exists()
    configure.forget_another_torch(str(tmp_path / "never configured"))
