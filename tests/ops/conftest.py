"""Fixtures shared by the op tests."""

import pytest
import torch


@pytest.fixture
def poison():
    """Every fresh allocation (at::empty, empty_like) is filled with NaN meanwhile."""
    saved_fill = torch.utils.deterministic.fill_uninitialized_memory
    saved_det = torch.are_deterministic_algorithms_enabled()
    torch.utils.deterministic.fill_uninitialized_memory = True
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(saved_det)
        torch.utils.deterministic.fill_uninitialized_memory = saved_fill
