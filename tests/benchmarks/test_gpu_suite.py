"""benchmarks/gpu_suite.sh runs only on a lent GPU machine, minutes at a time: what can be
checked without one is checked here, so that a renamed flag or level does not cost a
GPU session. The scripts parse; every benchmark module it runs takes the flags it is
given; the level names exist; each op's kernel benchmarks are selected by its -k."""

from __future__ import annotations

import contextlib
import importlib
import io
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import train_throughput

REPO = Path(__file__).resolve().parents[2]
SUITE = REPO / "benchmarks" / "gpu_suite.sh"


def suite_commands() -> list[list[str]]:
    """The `$PY -m benchmarks.<module> ...` commands of the suite, continuation lines joined."""
    text = SUITE.read_text().replace("\\\n", " ")
    commands = []
    for line in text.splitlines():
        match = re.search(r"\$PY -m (benchmarks\.[\w.]+)(.*)", line)
        if match:
            args = re.sub(r"\$\{[^}]*\}|\$\w+|\"\$[^\"]*\"", "", match.group(2))  # shell variables go
            commands.append([match.group(1)] + shlex.split(args))
    return commands


@pytest.mark.parametrize("script", ["benchmarks/gpu_suite.sh", "tools/device_dali.sh", "tools/gpu_stack_check.sh"])
def test_the_scripts_parse(script):
    subprocess.run(["bash", "-n", str(REPO / script)], check=True)


def test_every_benchmark_module_takes_the_flags_it_is_given():
    commands = suite_commands()
    modules = {c[0] for c in commands}
    assert {"benchmarks.ceilings", "benchmarks.train_throughput", "benchmarks.host_overhead",
            "benchmarks.kernels.report", "benchmarks.loader_throughput", "benchmarks.inference_throughput"} <= modules
    for module, *args in commands:
        help_text = io.StringIO()
        with contextlib.redirect_stdout(help_text), pytest.raises(SystemExit):
            importlib.import_module(module).main(["--help"])
        for flag in (a for a in args if a.startswith("--")):
            assert f"{flag} " in help_text.getvalue() or f"{flag}\n" in help_text.getvalue(), (module, flag)


def test_the_training_levels_it_asks_for_exist():
    asked = [c[c.index("--levels") + 1] for c in suite_commands() if "--levels" in c]
    assert asked
    for levels in asked:
        assert set(levels.split(",")) <= set(train_throughput.GPU_LEVELS), levels


def test_each_ops_kernel_benchmarks_are_selected():
    """The suite's own -k expression, per op: that op's eager and fastgan rows, no compile ones."""
    text = SUITE.read_text()
    ops = re.search(r"for op in ([\w ]+); do", text).group(1).split()
    expression = re.search(r'step "kernels_\$op" \d+ .* -k "([^"]+)"', text).group(1)
    assert ops and "$op" in expression
    # pytest's own -k on its own collection, one session per op, all in one fresh interpreter
    # (torch and the kernels' modules imported once: a process per op took 7 s each here)
    driver = ("import sys, pytest\n"
              "for expression in sys.argv[1:]:\n"
              "    print('@@ -k ' + expression, flush=True)\n"
              "    code = pytest.main(['benchmarks/kernels', '--collect-only', '-q', '-p', 'no:cacheprovider',\n"
              "                        '-k', expression])\n"
              "    assert code == 0, (expression, code)\n")
    out = subprocess.run([sys.executable, "-c", driver] + [expression.replace("$op", op) for op in ops],
                         cwd=REPO, capture_output=True, text=True, check=True).stdout
    sessions = out.split("@@ -k ")[1:]
    assert len(sessions) == len(ops)
    for op, session in zip(ops, sessions):
        assert session.startswith(expression.replace("$op", op) + "\n")
        ids = [line for line in session.splitlines() if "::" in line]
        assert ids and all(f"[{op}-" in i for i in ids), op
        assert any("-eager-" in i for i in ids) and not any("-compile-" in i for i in ids), op


def shell_function(name: str) -> str:
    """The definition of the suite's shell function `name`, from `name() {` to its closing `}`."""
    text = SUITE.read_text()
    return re.search(rf"^{name}\(\) {{.*?^}}$", text, re.S | re.M).group(0)


@pytest.mark.parametrize("command,verdict", [
    ("true", "| t | ok |"),
    ("exit 3", "| t | FAILED (exit 3) |"),
    ("sleep 30", "| t | CUT at its 10 s limit |"),  # ended by timeout's TERM
    ("trap '' TERM; sleep 30", "| t | CUT at its 10 s limit |"),  # ignores TERM: KILLed 5 s later
])
def test_a_step_says_how_it_ended(tmp_path, command, verdict):
    # the real timeout at 0.5 s and its KILL 0.25 s later (the step's least limit is 10 s, and
    # waiting out 10 + 5 s took 25 s of the suite); the arguments the step gave it are checked
    where = shlex.quote(str(tmp_path))  # (a TMPDIR may hold spaces)
    scaled = (f'timeout() {{ echo "$1 $2 $3" >{where}/timeout_args; '
              'command timeout -k 0.25 0.5 "${@:4}"; }')
    script = "\n".join([
        f"SUMMARY={where}/summary.md LOGS={where} BUDGET=1000", scaled,
        shell_function("pack"), shell_function("step"),
        f"step t 10 bash -c {shlex.quote(command)}"])
    subprocess.run(["bash", "-c", script], check=True, capture_output=True, timeout=60)
    assert (tmp_path / "summary.md").read_text().startswith(verdict)
    assert (tmp_path / "timeout_args").read_text() == "-k 5 10\n"
