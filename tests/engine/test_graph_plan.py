"""fastgan/engine/graphs.py's CapturePlan: which iterations warm up, capture, replay or
run eagerly (the capture itself needs a GPU: tests/engine/test_levels_gpu.py)."""

from __future__ import annotations

import pytest
import torch

from fastgan.engine.graphs import CapturePlan, signature

FULL, SHORT = "full", "short"


def actions(plan: CapturePlan, shapes) -> list[str]:
    out = []
    for shape in shapes:
        action = plan.action(shape)
        if action == "capture":
            plan.captured = shape  # what GraphedIteration records after a capture
        out.append(action)
    return out


def test_one_shape_warms_up_then_is_captured_and_replayed():
    assert actions(CapturePlan(3), [FULL] * 6) == ["warm"] * 3 + ["capture", "replay", "replay"]


def test_a_short_batch_at_the_capture_point_is_not_captured_cold():
    # 7 images at batch 2: full, full, full, short per epoch
    epoch = [FULL, FULL, FULL, SHORT]
    got = actions(CapturePlan(3), epoch * 2)
    assert got == ["warm", "warm", "warm", "warm", "capture", "replay", "replay", "eager"]


def test_shapes_alternating_capture_the_first_to_finish_its_warm_up():
    got = actions(CapturePlan(2), [FULL, SHORT] * 3)
    assert got == ["warm", "warm", "warm", "warm", "capture", "eager"]


def test_at_least_one_warm_up():
    with pytest.raises(ValueError, match="warm-up"):
        CapturePlan(0)


def test_signature_tells_shapes_dtypes_and_layouts_apart():
    x = torch.zeros(2, 3, 4, 4)
    assert signature([x, x]) == signature([x.clone(), x.clone()])
    assert signature([x]) != signature([x[:1]])
    assert signature([x]) != signature([x.double()])
    assert signature([x]) != signature([x.contiguous(memory_format=torch.channels_last)])
    hash(signature([x]))
