"""examples/own_trainer.py is the README's "Use fastgan in your own trainer" example,
word for word, and it works: it trains, keeps the reference's keys, and with
fastgan.accelerate follows the plain model's training to float32 rounding. The README's
"Python API" block runs as written."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest
import torch

import fastgan
from fastgan.models import define_G

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "own_trainer.py"
SECTION = "## Use fastgan in your own trainer"


def _python_block_under(heading: str, markdown: str) -> str:
    """The first ```python block between `heading` and the next heading of its level."""
    start = markdown.index(heading + "\n")
    section = markdown[start + len(heading):]
    level = heading.split(" ")[0]
    following = re.search(rf"^{level} ", section, flags=re.MULTILINE)
    if following:
        section = section[:following.start()]
    block = re.search(r"^```python\n(.*?)^```$", section, flags=re.MULTILINE | re.DOTALL)
    assert block, f"no ```python block under {heading!r}"
    return block.group(1)


def _load_example():
    spec = importlib.util.spec_from_file_location("own_trainer", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_readme_example_is_examples_own_trainer():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert SECTION + "\n" in readme, f"README.md has no section {SECTION!r}"
    assert _python_block_under(SECTION, readme) == EXAMPLE.read_text(encoding="utf-8")


def test_the_readme_python_api_block_runs_as_written():
    scope = {}
    exec(_python_block_under("## Python API", (ROOT / "README.md").read_text(encoding="utf-8")), scope)
    assert set(scope["model"].nets) == {"G_A", "G_B", "D_A", "D_B"}
    assert {"D_A", "G_A", "cycle_A", "idt_A"} <= set(scope["losses"])


def test_own_trainer_trains_and_equals_the_plain_models_training(monkeypatch):
    example = _load_example()
    G, history = example.train(steps=6, size=32, device="cpu")
    assert G.accelerate_report.counts() == {"reflect_conv": 14, "norm_act": 11, "residual": 6, "norm": 0,
                                              "conv": 4}
    assert list(G.state_dict()) == list(define_G(3, 3, 16, "resnet_6blocks", norm="instance").state_dict())
    assert history[-1] < 0.9 * history[0]  # it learns the mirroring

    # Equal to float32 rounding with direct convolutions. Where the timing picks Winograd
    # for the 3x3 convolutions (README: its larger float32 error), Adam's first, nearly
    # sign-sized steps carry that error into a trajectory 0.4% apart by step 5 (measured).
    with fastgan.ops.reflect_conv2d_choice("aten"):
        G, history = example.train(steps=6, size=32, device="cpu")
    monkeypatch.setattr(fastgan, "accelerate", lambda module, backend="auto": module)
    plain_G, plain_history = example.train(steps=6, size=32, device="cpu")
    assert not hasattr(plain_G, "accelerate_report")
    assert history == pytest.approx(plain_history, rel=1e-4)
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    torch.testing.assert_close(G(x), plain_G(x), rtol=1e-4, atol=1e-4)
