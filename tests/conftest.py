"""Suite-wide settings: Triton runs through its interpreter on machines without a
GPU, and tests marked `gpu` run only where a CUDA device is."""

import os

# must be set before triton is imported anywhere, so before torch
if not os.path.exists("/dev/nvidiactl"):
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(autouse=True)
def _cudnn_flags_restored():
    """Each test leaves cuDNN's process-wide flags as it found them: a model built on a
    GPU sets torch.backends.cudnn.benchmark to its levels (fastgan/engine/levels.py), and
    a later test in the same process would otherwise run with timed, nondeterministic
    algorithms it did not ask for."""
    saved = (torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic)
    yield
    torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = saved


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (benchmarks/gpu_suite.sh runs these)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


# FASTGAN_FAILURE_LOG=path: each failing test's id and traceback appended to that file
# as it fails (benchmarks/gpu_suite.sh sets it: a run cut at its time limit then still
# says what failed; pytest's own summary comes only at the end). With pytest-xdist this
# hook runs in the controller, for every worker's reports.
def pytest_runtest_logreport(report):
    path = os.environ.get("FASTGAN_FAILURE_LOG")
    if path and report.failed:
        with open(path, "a") as f:
            f.write(f"=== {report.nodeid} ({report.when})\n{report.longreprtext}\n\n")
