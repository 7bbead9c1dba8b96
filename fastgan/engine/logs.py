"""What a run leaves to read: a JSON-lines loss log and the reference's text one, a loss-curve
PNG, sample grids, the options in the reference's table."""

from __future__ import annotations

import json
import os
import re
import time

import torch
from PIL import Image, ImageDraw
from torchvision.utils import make_grid

from fastgan.image_pages import tensor2im
from fastgan.options import REFERENCE_MODEL, resolve

CURVE_SIZE = (960, 540)
CURVE_MARGIN = 60
# one colour per loss, in the order of the model's loss_names
PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]


# what a loss-log record holds besides the losses: where the run stood, and how fast it ran
# (the timings differ between two runs of one command; everything else is reproducible)
PROGRESS_FIELDS = ("epoch", "epoch_iter", "total_iters", "lr")
TIMING_FIELDS = ("images_per_second", "seconds_per_image", "data_seconds")


class LossLog:
    """Appends one JSON object per record to loss_log.jsonl and the reference's line to
    loss_log.txt (for scripts that parse it); redraws loss_curve.png."""

    def __init__(self, directory: str, loss_names):
        os.makedirs(directory, exist_ok=True)
        self.path = os.path.join(directory, "loss_log.jsonl")
        self.text_path = os.path.join(directory, "loss_log.txt")
        self.curve_path = os.path.join(directory, "loss_curve.png")
        self.loss_names = list(loss_names)

    def start(self) -> None:
        """The reference's header line in loss_log.txt, at the start of every run (a resumed one
        included: the text log, as the reference's, keeps what the earlier run wrote)."""
        with open(self.text_path, "a") as f:
            f.write(f"================ Training Loss ({time.strftime('%c')}) ================\n")

    def append(self, record: dict) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        with open(self.text_path, "a") as f:
            f.write(reference_loss_line(record, self.loss_names) + "\n")

    def truncate_after(self, total_iters: int) -> None:
        """Drop records past `total_iters` (a resumed run redoes those iterations)."""
        records = [r for r in read_loss_log(self.path) if r["total_iters"] <= total_iters]
        with open(self.path, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in records)

    def draw_curve(self) -> None:
        draw_loss_curve(read_loss_log(self.path), self.loss_names, self.curve_path)


def reference_loss_line(record: dict, loss_names) -> str:
    """A record as the reference's print_current_losses writes it: epoch, images into the
    epoch, compute seconds per image and the batch's data wait, then each loss."""
    line = (f"(epoch: {record['epoch']}, iters: {record['epoch_iter']}, time: {record['seconds_per_image']:.3f}, "
            f"data: {record['data_seconds']:.3f}) ")
    return line + "".join(f"{name}: {record[name]:.3f} " for name in loss_names if name in record)


def options_table(options: dict, defaults: dict) -> str:
    """The reference's print_options table: every option sorted by name, with its default
    where the value differs."""
    lines = ["----------------- Options ---------------"]
    for name, value in sorted(options.items()):
        default = defaults.get(name, value)
        comment = "" if value == default else f"\t[default: {default}]"
        lines.append(f"{name:>25}: {str(value):<30}{comment}")
    lines.append("----------------- End -------------------")
    return "\n".join(lines) + "\n"


def reference_table_entries(arch: str, device, model: str | None = None) -> dict[str, tuple]:
    """--model and --gpu_ids as the reference's options table ({phase}_opt.txt) prints them,
    (value, default), for the scripts that read it: fastgan's --arch and --device say the same."""
    device = str(device)
    gpu_ids = device.split(":")[1] if device.startswith("cuda:") else "0" if device == "cuda" else "-1"
    return {"model": (model or REFERENCE_MODEL[arch], "cycle_gan"), "gpu_ids": (gpu_ids, "0")}


def write_options_table(path: str, opt, more: dict[str, tuple] | None = None) -> None:
    """The options table at `path`, as the reference writes {phase}_opt.txt (defaults: the
    arch's); `more`: a command's own options, name -> (value, default)."""
    more = more or {}
    values = {**opt.as_dict(), **{k: v for k, (v, _) in more.items()}}
    defaults = {**resolve(opt.arch, {}).as_dict(), **{k: d for k, (_, d) in more.items()}}
    with open(path, "w") as f:
        f.write(options_table(values, defaults))


def read_loss_log(path: str) -> list[dict]:
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def draw_loss_curve(records: list[dict], names: list[str], path: str) -> None:
    """Each loss against total_iters, on shared axes, with a legend; written atomically."""
    w, h = CURVE_SIZE
    m = CURVE_MARGIN
    image = Image.new("RGB", CURVE_SIZE, "white")
    draw = ImageDraw.Draw(image)
    draw.rectangle([m, m // 2, w - m // 2, h - m], outline="black")
    xs = [r["total_iters"] for r in records]
    values = [r[n] for r in records for n in names if n in r]
    if len(records) >= 1 and values:
        x0, x1 = min(xs), max(xs)
        y0, y1 = min(values), max(values)
        x_span, y_span = max(x1 - x0, 1), max(y1 - y0, 1e-12)

        def point(x, y):
            return (m + (x - x0) / x_span * (w - 1.5 * m), h - m - (y - y0) / y_span * (h - 1.5 * m))

        for i, name in enumerate(names):
            colour = PALETTE[i % len(PALETTE)]
            pts = [point(r["total_iters"], r[name]) for r in records if name in r]
            if len(pts) > 1:
                draw.line(pts, fill=colour, width=2)
            elif pts:
                draw.ellipse([pts[0][0] - 2, pts[0][1] - 2, pts[0][0] + 2, pts[0][1] + 2], fill=colour)
            draw.text((m + 10 + 90 * i, 8), name, fill=colour)
        draw.text((4, m // 2), f"{y1:.3g}", fill="black")
        draw.text((4, h - m - 10), f"{y0:.3g}", fill="black")
        draw.text((m, h - m + 8), f"{x0}", fill="black")
        draw.text((w - m - 40, h - m + 8), f"{x1} images", fill="black")
    tmp = path + ".tmp.png"
    image.save(tmp)
    os.replace(tmp, path)


# samples/ keeps this many grids, the newest: a CycleGAN grid of 8 photographs at 256² is
# about 0.45 MB, and a horse2zebra run at the reference's display_freq writes some 700
# (web/, the reference's page, keeps one row per epoch)
SAMPLES_KEPT = 50
SAMPLE_NAME = re.compile(r"epoch\d+_iter\d+\.png")  # the trainer's names for the grids


def save_sample_grid(visuals: dict[str, torch.Tensor], names, path: str) -> None:
    """One row: the first image of each visual (as the reference's tensor2im makes it), in
    `names` order (missing ones skipped), on white. Older grids of the folder beyond the
    newest SAMPLES_KEPT are removed."""
    images = [torch.from_numpy(tensor2im(visuals[n][0])).permute(2, 0, 1) for n in names if n in visuals]
    grid = make_grid(images, nrow=len(images), padding=2, pad_value=255)
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    Image.fromarray(grid.permute(1, 2, 0).numpy()).save(path)
    # newest by time written, not by name: a run reusing a --name starts its count again
    grids = sorted((os.stat(os.path.join(folder, name)).st_mtime_ns, name)
                   for name in os.listdir(folder) if SAMPLE_NAME.fullmatch(name))
    for _, name in grids[:-SAMPLES_KEPT]:
        try:
            os.remove(os.path.join(folder, name))
        except FileNotFoundError:
            pass
