"""A training run's web/: the reference's HTML page of training images (its Visualizer's
HTML display, which --no_html turns off).

At each display_freq event the reference saves the first image of the batch of every
visual as web/images/epoch{E:03d}_{name}.png, when total_iters crosses a multiple of
update_html_freq or when nothing was saved yet in this epoch (a later save in the epoch
overwrites its files), then rewrites web/index.html: the epochs from this one down, each
a heading over its row of images, reloading every second.
"""

from __future__ import annotations

import os

import torch
from PIL import Image

from fastgan.errors import replace_file
from fastgan.image_pages import tensor2im, write_image_page


class TrainingPage:
    def __init__(self, run_dir: str, name: str, width: int):
        self.web_dir = os.path.join(run_dir, "web")
        self.title = f"Experiment name = {name}"
        self.width = width
        self.saved = False  # anything saved in this epoch

    def start_epoch(self) -> None:
        self.saved = False

    def resume_epoch(self, epoch: int) -> None:
        """A run resumed inside `epoch`: what the epoch kept before the stop stays kept, as if
        the run had never stopped (the reference restarts epochs, never resumes inside one)."""
        folder = os.path.join(self.web_dir, "images")
        self.saved = os.path.isdir(folder) and any(f.startswith(epoch_prefix(epoch)) for f in os.listdir(folder))

    def display(self, visuals: dict[str, torch.Tensor], names, epoch: int, save_result: bool) -> None:
        """`names`: the visuals in page order (missing ones skipped); `save_result`: total_iters
        crossed a multiple of update_html_freq."""
        if self.saved and not save_result:
            return
        self.saved = True
        shown = [name for name in names if name in visuals]
        os.makedirs(os.path.join(self.web_dir, "images"), exist_ok=True)
        for name in shown:
            path = os.path.join(self.web_dir, image_file(epoch, name))
            tmp = path + ".tmp.png"
            Image.fromarray(tensor2im(visuals[name][0])).save(tmp)
            replace_file(tmp, path)
        sections = []
        for e in range(epoch, 0, -1):  # an epoch a resumed run never trained has no row
            images = [(name, image_file(e, name)) for name in shown
                      if os.path.exists(os.path.join(self.web_dir, image_file(e, name)))]
            if images:
                sections.append((f"epoch [{e}]", images))
        write_image_page(os.path.join(self.web_dir, "index.html"), self.title, sections, self.width, refresh=1)


def epoch_prefix(epoch: int) -> str:
    return f"epoch{epoch:03d}_"


def image_file(epoch: int, name: str) -> str:
    """An image's path relative to web/ (the reference's names)."""
    return f"images/{epoch_prefix(epoch)}{name}.png"
