"""argparse types the benchmarks share: a value a benchmark cannot run is a usage error, not a
traceback (or a division by zero) after minutes of setup."""

from __future__ import annotations

import argparse


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not at least 1")
    return value


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative")
    return value


def non_negative_seconds(text: str) -> float:
    value = float(text)
    if not value >= 0:  # (nan too)
        raise argparse.ArgumentTypeError(f"{text} is not a number of seconds")
    return value
