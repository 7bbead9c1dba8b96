"""The benchmarks' refusals of arguments they cannot run."""

from __future__ import annotations

from pathlib import Path

import pytest


def assert_usage_error(main, argv: list[str], out: Path, message: str, capsys) -> None:
    """main(argv + --out OUT) exits with argparse's usage status 2, says `message`, and made
    nothing: OUT is not even created."""
    with pytest.raises(SystemExit) as e:
        main([*argv, "--out", str(out)])
    assert e.value.code == 2 and message in capsys.readouterr().err
    assert not out.exists()
