"""benchmarks/scaling.py's efficiency: what a rank's iteration would take without communication."""

from __future__ import annotations

import pytest

from benchmarks.scaling import add_efficiency, main
from tests.benchmarks.usage import assert_usage_error


def rows():
    return [{"ranks": 1, "seconds_per_iteration": 1.0, "all_reduce_seconds_per_iteration": 0.0},
            {"ranks": 2, "seconds_per_iteration": 2.5, "all_reduce_seconds_per_iteration": 0.25}]


def test_ranks_sharing_a_cpus_cores_compute_for_as_many_times_longer():
    """2 ranks on the cores 1 rank had: each iteration's compute takes twice as long."""
    shared = rows()
    add_efficiency(shared, shared_cores=True)
    assert shared[1]["efficiency"] == pytest.approx(0.8) and shared[1]["beyond_compute_seconds"] == pytest.approx(0.5)
    assert shared[1]["all_reduce_vs_compute"] == pytest.approx(0.125) and shared[0]["efficiency"] == 1.0


def test_a_gpu_per_rank_computes_as_fast_as_one():
    own = rows()
    add_efficiency(own, shared_cores=False)
    assert own[1]["efficiency"] == pytest.approx(0.4) and own[1]["beyond_compute_seconds"] == pytest.approx(1.5)


@pytest.mark.parametrize("args,message", [
    (["--ranks", "1", "0"], "argument --ranks: 0 is not at least 1"),
    (["--iters", "0"], "argument --iters: 0 is not at least 1"),
    (["--reps", "0"], "argument --reps: 0 is not at least 1"),
    (["--warmup", "-1"], "argument --warmup: -1 is negative"),
    (["--size", "30"], "needs --size a multiple of 4 (got 30)"),
    (["--size", "12"], "too deep for --size 12"),
])
def test_arguments_it_cannot_run_are_usage_errors_before_any_rank_starts(args, message, tmp_path, capsys):
    assert_usage_error(main, args, tmp_path / "out", message, capsys)
