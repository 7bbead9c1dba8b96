"""The suite's own hooks (tests/conftest.py): the GPU run's breadth-first order and the
logs it writes while tests run."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from tests.conftest import breadth_first, pytest_collection_finish, pytest_runtest_logreport


def case(path: str, function: str, param: str) -> SimpleNamespace:
    return SimpleNamespace(path=Path(path), originalname=function, name=f"{function}[{param}]")


def test_breadth_first_takes_one_case_of_every_function_per_round():
    items = [case("a.py", "f", "1"), case("a.py", "f", "2"), case("a.py", "f", "3"),
             case("a.py", "g", "1"), case("b.py", "f", "1"), case("b.py", "f", "2")]
    assert [(i.path.name, i.name) for i in breadth_first(items)] == [
        ("a.py", "f[1]"), ("a.py", "g[1]"), ("b.py", "f[1]"),
        ("a.py", "f[2]"), ("b.py", "f[2]"),
        ("a.py", "f[3]")]


def report(nodeid: str, when: str, outcome: str) -> SimpleNamespace:
    return SimpleNamespace(nodeid=nodeid, when=when, outcome=outcome, failed=outcome == "failed",
                           duration=1.234, longreprtext=f"trace of {nodeid}")


def test_each_test_ends_as_one_outcome_line_and_failures_keep_their_trace(tmp_path, monkeypatch):
    outcomes, failures = tmp_path / "outcomes.log", tmp_path / "failures.log"
    monkeypatch.setenv("FASTGAN_OUTCOME_LOG", str(outcomes))
    monkeypatch.setenv("FASTGAN_FAILURE_LOG", str(failures))
    for r in [report("t::ok", "setup", "passed"), report("t::ok", "call", "passed"), report("t::ok", "teardown", "passed"),
              report("t::bad", "setup", "passed"), report("t::bad", "call", "failed"),
              report("t::skip", "setup", "skipped"),
              report("t::broken", "setup", "failed")]:
        pytest_runtest_logreport(r)
    assert outcomes.read_text().splitlines() == [
        "passed t::ok call 1.23", "failed t::bad call 1.23", "skipped t::skip setup 1.23", "failed t::broken setup 1.23"]
    assert failures.read_text().count("=== ") == 2 and "trace of t::broken" in failures.read_text()


def test_under_xdist_only_the_controller_writes(tmp_path, monkeypatch):
    """pytest-xdist calls the hook in the worker that ran a test and again in the
    controller for the same report: the worker's call writes nothing."""
    outcomes, failures = tmp_path / "outcomes.log", tmp_path / "failures.log"
    monkeypatch.setenv("FASTGAN_OUTCOME_LOG", str(outcomes))
    monkeypatch.setenv("FASTGAN_FAILURE_LOG", str(failures))
    bad = report("t::bad", "call", "failed")
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw0")
    pytest_runtest_logreport(bad)
    assert not outcomes.exists() and not failures.exists()
    monkeypatch.delenv("PYTEST_XDIST_WORKER")
    pytest_runtest_logreport(bad)
    assert outcomes.read_text().splitlines() == ["failed t::bad call 1.23"]
    assert failures.read_text().count("=== ") == 1


def test_the_number_of_tests_to_run_is_written_once(tmp_path, monkeypatch):
    """(pytest -q under xdist prints no count; the GPU suite's summary reads this one.)"""
    outcomes = tmp_path / "outcomes.log"
    monkeypatch.setenv("FASTGAN_OUTCOME_LOG", str(outcomes))
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw1")
    pytest_collection_finish(SimpleNamespace(items=[1, 2]))
    assert not Path(f"{outcomes}.collected").exists()
    for worker in ("gw0", None):
        if worker is None:
            monkeypatch.delenv("PYTEST_XDIST_WORKER")
        else:
            monkeypatch.setenv("PYTEST_XDIST_WORKER", worker)
        pytest_collection_finish(SimpleNamespace(items=[1, 2, 3]))
        assert Path(f"{outcomes}.collected").read_text() == "3\n"
