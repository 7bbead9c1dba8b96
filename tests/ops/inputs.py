"""Shared pieces of the op tests' random inputs."""

from __future__ import annotations

import zlib

import pytest
import torch

# the smallest magnitude a drawn input keeps: float16 rounds values under 2**-25 to
# (negative) zero, which would break the tests' "never zero" inputs at GPU sizes
MIN_MAGNITUDE = 1e-3


def away_from_zero(t: torch.Tensor) -> torch.Tensor:
    """float64 draws with every |value| of at least MIN_MAGNITUDE, signs kept."""
    return torch.where(t.abs() < MIN_MAGNITUDE, torch.copysign(torch.full_like(t, MIN_MAGNITUDE), t), t)


def subnormal_atol(dtype: torch.dtype) -> float:
    """An absolute tolerance of half float16's subnormal step: a gradient like weight / numel
    at 1.6 million elements (4e-7) is a float16 subnormal, where even exact rounding is
    off by up to 6% of the value; no other dtype here has subnormals in these tests' range."""
    return 2.0 ** -25 if dtype == torch.float16 else 0.0


def case_id(v) -> str:
    """A parametrized case's id: float32 for a dtype, 2x3x5 for a shape."""
    if isinstance(v, torch.dtype):
        return str(v).replace("torch.", "")
    if isinstance(v, (tuple, list)):
        return "x".join(map(str, v))
    return str(v)


def seed_of(*parts) -> int:
    """A fixed seed per test case (str hashes change between processes)."""
    return zlib.crc32(repr(parts).encode())


def judged_in_float64(backends, dtypes) -> list:
    """(backend, dtype) cases for tests against the torch back end in float64: all but the torch
    back end's own float64 case, which is the reference itself and could not fail."""
    return [pytest.param(b, d, id=f"{b}-{case_id(d)}") for b in backends for d in dtypes
            if not (b == "torch" and d == torch.float64)]
