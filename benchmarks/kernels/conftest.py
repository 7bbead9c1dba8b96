"""Each kernel benchmark's result written the moment it is measured.

pytest-benchmark writes its --benchmark-json when the whole session ends, so a run cut
at a time limit (benchmarks/gpu_suite.sh caps every step) would leave nothing. With
--rows-jsonl PATH every finished benchmark also appends one line to PATH, the entry
its JSON would hold ({"extra_info", "stats"}); benchmarks/kernels/report.py reads
either.
"""

from __future__ import annotations

import json

import pytest


def pytest_addoption(parser):
    parser.addoption("--rows-jsonl", default=None, help="append each benchmark's result to this file as it finishes")


@pytest.fixture(autouse=True)
def _row_written_when_measured(request):
    path = request.config.getoption("--rows-jsonl")
    # taken now: torn down before this fixture's own teardown
    bench = request.getfixturevalue("benchmark") if path and "benchmark" in request.fixturenames else None
    yield
    if bench is None or bench.stats is None:  # not a benchmark, or failed before it was timed
        return
    entry = {"name": request.node.name, "extra_info": dict(bench.extra_info),
             "stats": {k: v for k, v in bench.stats.stats.as_dict().items() if k != "data"}}
    with open(path, "a") as f:
        f.write(json.dumps(entry) + "\n")
