"""fastgan.engine.logs: the sample grids' folder stays bounded."""

from __future__ import annotations

import os

import torch

from fastgan.engine import logs


def test_samples_keep_the_newest_grids_by_epoch_and_iteration(tmp_path, monkeypatch):
    monkeypatch.setattr(logs, "SAMPLES_KEPT", 3)
    visuals = {"real_A": torch.zeros(1, 3, 4, 4), "fake_B": torch.ones(1, 3, 4, 4)}
    (tmp_path / "notes.png").write_bytes(b"the user's own file")
    written = [(998, 10), (999, 20), (999, 30), (1000, 40), (1001, 50)]  # epoch 1000 sorts after 999
    for epoch, total in written:
        logs.save_sample_grid(visuals, ["real_A", "fake_B"], str(tmp_path / f"epoch{epoch:03d}_iter{total:08d}.png"))
    assert sorted(os.listdir(tmp_path)) == ["epoch1000_iter00000040.png", "epoch1001_iter00000050.png",
                                            "epoch999_iter00000030.png", "notes.png"]
