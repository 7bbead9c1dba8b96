"""The training run's web/ page: when the reference's Visualizer keeps images, and the page."""

import os

import numpy as np
import torch
from PIL import Image

from fastgan.engine.web_page import TrainingPage
from fastgan.image_pages import tensor2im

NAMES = ("real_A", "fake_B", "rec_A")


def batch_of(value: float) -> dict:
    """Visuals whose first image is `value` everywhere and whose second image differs."""
    return {name: torch.stack([torch.full((3, 4, 6), value), torch.full((3, 4, 6), -value)]) for name in NAMES[:2]}


def written(tmp_path, epoch, name) -> np.ndarray:
    return np.asarray(Image.open(tmp_path / "web" / "images" / f"epoch{epoch:03d}_{name}.png"))


def test_the_epochs_first_display_and_update_html_freq_crossings_are_kept(tmp_path):
    page = TrainingPage(str(tmp_path), "run<1>", width=64)
    page.display(batch_of(0.5), NAMES, epoch=1, save_result=False)  # the epoch's first: kept
    assert (written(tmp_path, 1, "real_A") == tensor2im(torch.full((3, 4, 6), 0.5))).all()
    page.display(batch_of(-0.5), NAMES, epoch=1, save_result=False)  # not kept
    assert (written(tmp_path, 1, "fake_B") == tensor2im(torch.full((3, 4, 6), 0.5))).all()
    page.display(batch_of(0.25), NAMES, epoch=1, save_result=True)  # crossed update_html_freq: overwrites
    assert (written(tmp_path, 1, "fake_B") == tensor2im(torch.full((3, 4, 6), 0.25))).all()
    page.start_epoch()
    page.display(batch_of(-0.25), NAMES, epoch=2, save_result=False)
    assert (written(tmp_path, 2, "real_A") == tensor2im(torch.full((3, 4, 6), -0.25))).all()
    # rec_A is not among the visuals: neither saved nor shown
    assert sorted(os.listdir(tmp_path / "web" / "images")) == [
        "epoch001_fake_B.png", "epoch001_real_A.png", "epoch002_fake_B.png", "epoch002_real_A.png"]
    page_text = (tmp_path / "web" / "index.html").read_text()
    assert "Experiment name = run&lt;1&gt;" in page_text and "<meta http-equiv='refresh' content='1'>" in page_text
    assert page_text.index("<h3>epoch [2]</h3>") < page_text.index("<h3>epoch [1]</h3>")
    assert page_text.count("style='width:64px'") == 4 and "rec_A" not in page_text
    first = page_text.index("images/epoch002_real_A.png")
    assert first < page_text.index("images/epoch002_fake_B.png") < page_text.index("images/epoch001_real_A.png")


def test_epochs_a_resumed_run_never_trained_have_no_row(tmp_path):
    """A run resumed at epoch 3 (--epoch_count 3 into a fresh folder) lists epoch 3 alone,
    where the reference lists epochs 2 and 1 with missing images."""
    page = TrainingPage(str(tmp_path), "run", width=256)
    page.display(batch_of(0.0), NAMES, epoch=3, save_result=False)
    page_text = (tmp_path / "web" / "index.html").read_text()
    assert "<h3>epoch [3]</h3>" in page_text and "epoch [2]" not in page_text and "epoch [1]" not in page_text
    assert not [f for f in os.listdir(tmp_path / "web") if f.endswith(".tmp")]


def test_a_one_channel_visual_is_tiled_to_rgb(tmp_path):
    page = TrainingPage(str(tmp_path), "gray", width=256)
    x = torch.rand(1, 1, 5, 7) * 2 - 1
    page.display({"real_A": x}, NAMES, epoch=1, save_result=False)
    image = written(tmp_path, 1, "real_A")
    assert image.shape == (5, 7, 3) and (image == tensor2im(x[0])).all()
