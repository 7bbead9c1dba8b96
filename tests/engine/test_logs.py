"""fastgan.engine.logs: the sample grids' folder stays bounded."""

from __future__ import annotations

import os

import torch

from fastgan.engine import logs


def test_samples_keep_the_newest_grids_written(tmp_path, monkeypatch):
    """The newest by time written, whatever the names say: a run reusing a --name counts from
    epoch 1 again, and its grids must not be the ones removed."""
    monkeypatch.setattr(logs, "SAMPLES_KEPT", 3)
    (tmp_path / "notes.png").write_bytes(b"the user's own file")
    earlier_run = ["epoch999_iter00000030.png", "epoch1000_iter00000040.png", "epoch998_iter00000010.png"]
    for age, name in enumerate(earlier_run):  # written in this order, an hour apart
        (tmp_path / name).write_bytes(b"grid")
        seconds = 1_700_000_000 + 3600 * age
        os.utime(tmp_path / name, (seconds, seconds))
    visuals = {"real_A": torch.zeros(1, 3, 4, 4), "fake_B": torch.ones(1, 3, 4, 4)}
    logs.save_sample_grid(visuals, ["real_A", "fake_B"], str(tmp_path / "epoch001_iter00000001.png"))
    assert sorted(os.listdir(tmp_path)) == sorted(["epoch001_iter00000001.png", "epoch1000_iter00000040.png",
                                                   "epoch998_iter00000010.png", "notes.png"])
