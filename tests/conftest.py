"""Suite-wide settings: Triton runs through its interpreter on machines without a
GPU, and tests marked `gpu` run only where a CUDA device is."""

import os

# must be set before triton is imported anywhere, so before torch
if not os.path.exists("/dev/nvidiactl"):
    os.environ.setdefault("TRITON_INTERPRET", "1")
# every test measures its kernels itself: no choices carried over from other runs on this
# machine (fastgan/engine/choice_cache.py; its test turns it on in a folder of its own)
os.environ["FASTGAN_CHOICE_CACHE"] = "off"
# the caller's fastgan settings must not shape the tests (each is read at import or per call;
# the tests that want one set it themselves): a back end, a convolution path, an instruction
# set, a kernel path or a timeout chosen for the whole suite failed tests that measure or
# compare them (FASTGAN_DEMO_DIR stays: it only says where the demo's cache is)
for setting in ("FASTGAN_BACKEND", "FASTGAN_REFLECT_CONV2D", "FASTGAN_CONV", "FASTGAN_CPU_ISA", "FASTGAN_IN_CLUSTERS",
                "FASTGAN_DIST_TIMEOUT"):
    os.environ.pop(setting, None)
# OpenMP's threads sleep at a barrier instead of spinning (read when torch loads libgomp, so
# before torch; subprocesses inherit it). Spinning, a run sharing the 2 cores with another
# process (nice'd, or not) waited milliseconds at every op: a test of 3 s took 100 s.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture
def server():
    """A local HTTP server for the download tests (tests/local_http_server.py)."""
    from tests.local_http_server import serving

    with serving() as handler_and_address:
        yield handler_and_address


@pytest.fixture(autouse=True)
def _cudnn_flags_restored():
    """Each test leaves cuDNN's process-wide flags as it found them: a model built on a
    GPU sets torch.backends.cudnn.benchmark to its levels (fastgan/engine/levels.py), and
    a later test in the same process would otherwise run with timed, nondeterministic
    algorithms it did not ask for."""
    saved = (torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic)
    yield
    torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = saved


def breadth_first(items: list) -> list:
    """The items with every test function's cases interleaved: the first case of each
    function, then the second of each, and so on (file order kept within a round). The
    GPU suite runs these under a time cap; cut, it has then run some cases of every
    test instead of all of the first files' and none of the last's."""
    groups: dict = {}
    for item in items:
        groups.setdefault((str(item.path), getattr(item, "originalname", item.name)), []).append(item)
    queues = [list(reversed(cases)) for cases in groups.values()]
    ordered = []
    while queues:
        ordered += [cases.pop() for cases in queues]
        queues = [cases for cases in queues if cases]
    return ordered


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        items[:] = breadth_first(items)
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (benchmarks/gpu_suite.sh runs these)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


# FASTGAN_FAILURE_LOG=path: each failing test's id and traceback appended to that file
# as it fails; FASTGAN_OUTCOME_LOG=path: one line per test as it ends, "outcome nodeid
# phase seconds" (benchmarks/gpu_suite.sh sets both: a run cut at its time limit then
# still says what ran and what failed; pytest's own summary comes only at the end). With
# pytest-xdist this hook runs in each worker and again in the controller for every
# worker's reports: only the controller writes, else every line would come twice.
def pytest_runtest_logreport(report):
    if os.environ.get("PYTEST_XDIST_WORKER"):
        return
    failures = os.environ.get("FASTGAN_FAILURE_LOG")
    if failures and report.failed:
        with open(failures, "a") as f:
            f.write(f"=== {report.nodeid} ({report.when})\n{report.longreprtext}\n\n")
    outcomes = os.environ.get("FASTGAN_OUTCOME_LOG")
    # a test's one line: its call, or the setup or teardown that failed or skipped it
    if outcomes and (report.when == "call" or report.outcome != "passed"):
        with open(outcomes, "a") as f:
            f.write(f"{report.outcome} {report.nodeid} {report.when} {report.duration:.2f}\n")


def pytest_collection_finish(session):
    """With FASTGAN_OUTCOME_LOG set, the number of tests to run (selected, not deselected)
    written to that path + ".collected": the GPU suite's summary says how many a cut run did
    not reach (pytest -q under xdist prints no count). Every xdist worker collects them all;
    the first writes."""
    outcomes = os.environ.get("FASTGAN_OUTCOME_LOG")
    if outcomes and os.environ.get("PYTEST_XDIST_WORKER", "gw0") == "gw0":
        with open(outcomes + ".collected", "w") as f:
            f.write(f"{len(session.items)}\n")
