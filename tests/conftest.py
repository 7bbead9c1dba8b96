"""Suite-wide settings: Triton runs through its interpreter on machines without a
GPU, and tests marked `gpu` run only where a CUDA device is."""

import os

# must be set before triton is imported anywhere, so before torch
if not os.path.exists("/dev/nvidiactl"):
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import torch  # noqa: E402


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (benchmarks/gpu_suite.sh runs these)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
