"""Running test code in a fresh Python, for what is fixed at import (FASTGAN_BACKEND, FASTGAN_CPU_ISA)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run_json(code: str, **env) -> dict:
    """Runs `code` in a fresh interpreter at the repository root, with the environment's
    FASTGAN_BACKEND and FASTGAN_CPU_ISA replaced by `env`; the code prints one JSON line last."""
    full_env = {k: v for k, v in os.environ.items() if k not in ("FASTGAN_BACKEND", "FASTGAN_CPU_ISA")}
    full_env.update(env)
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, env=full_env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def same_code_here(code: str) -> dict:
    """The JSON object `code` would print, computed in this interpreter."""
    result = {}
    exec(textwrap.dedent(code).replace("print(json.dumps(", "result.update(("), {"result": result})
    return result
