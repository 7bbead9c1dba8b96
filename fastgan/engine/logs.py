"""What a run leaves to read: a JSON-lines loss log and the reference's text one, a loss-curve
PNG, sample grids, the options in the reference's table."""

from __future__ import annotations

import json
import math
import os
import re
import time
from array import array
from collections.abc import Collection

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw
from torchvision.utils import make_grid

from fastgan.errors import naming, replace_file
from fastgan.image_pages import tensor2im
from fastgan.options import ARCH_OPTIONS, REFERENCE_MODEL, resolve

CURVE_SIZE = (960, 540)
CURVE_MARGIN = 60
# the curve is redrawn at most this often (and once more when a run ends): a redraw of 50,000
# records took 0.5-0.9 s on a loaded 2-core CPU (its lines fill the width), which at every
# --print_freq held up the training thread
CURVE_REDRAW_SECONDS = 30.0
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
        self.path = os.path.join(directory, "loss_log.jsonl")
        self.text_path = os.path.join(directory, "loss_log.txt")
        self.curve_path = os.path.join(directory, "loss_curve.png")
        self.loss_names = list(loss_names)
        self._curve: LossCurve | None = None  # read from the file at the first redraw, then kept
        self._drawn_at, self._stale = -math.inf, True  # when the curve was drawn; records since?
        self._records: int | None = None  # records in the file, counted when first asked

    @property
    def records(self) -> int:
        """The records loss_log.jsonl holds: a training state saved now covers that many."""
        if self._records is None:
            self._records = len(read_loss_log(self.path))
        return self._records

    def start(self) -> None:
        """The reference's header line in loss_log.txt, at the start of every run (a resumed one
        included: the text log, as the reference's, keeps what the earlier run wrote)."""
        with naming(self.text_path), open(self.text_path, "a", encoding="utf-8") as f:
            f.write(f"================ Training Loss ({time.strftime('%c')}) ================\n")

    def append(self, record: dict) -> None:
        with naming(self.path), open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        with naming(self.text_path), open(self.text_path, "a", encoding="utf-8") as f:
            f.write(reference_loss_line(record, self.loss_names) + "\n")
        if self._curve is not None:
            self._curve.add(record)
        if self._records is not None:
            self._records += 1
        self._stale = True

    def truncate_after(self, total_iters: int, saved_records: int | None = None) -> None:
        """Drop the records written after a save (a resumed run redoes those iterations): the
        file's first `saved_records`, the count the save recorded, stay. A state saved without
        that count (by an earlier fastgan) keeps the records up to the last at or before its
        `total_iters`: those of runs before a reference-style continue or a fresh start in the
        folder, whose total_iters began again at 0, stay too."""
        records = read_loss_log(self.path)
        if saved_records is not None:
            del records[saved_records:]
        else:
            while records and records[-1]["total_iters"] > total_iters:
                records.pop()
        self._records = len(records)
        with naming(self.path), open(self.path, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(r) + "\n" for r in records)
        self._curve, self._stale = None, True

    def draw_curve(self, at_most_every: float = CURVE_REDRAW_SECONDS) -> None:
        """Redraw loss_curve.png if records came since it was drawn, at most once per
        `at_most_every` seconds (0: now, as a run ends)."""
        now = time.monotonic()
        if not self._stale or now - self._drawn_at < at_most_every:
            return
        if self._curve is None:
            self._curve = LossCurve(self.loss_names, read_loss_log(self.path))
        self._curve.draw(self.curve_path)
        self._drawn_at, self._stale = now, False


class LossCurve:
    """The loss curve's points, kept as the records come (total_iters and each loss, as float
    arrays): re-reading the whole log at every redraw made each one cost more as a run went on
    (4.6 s at 50,000 records), and drawing is of at most two points per pixel column."""

    def __init__(self, names, records=()):
        self.names = list(names)
        self.x = array("d")
        self.values = {name: array("d") for name in self.names}
        for record in records:
            self.add(record)

    def add(self, record: dict) -> None:
        self.x.append(record["total_iters"])
        for name in self.names:
            self.values[name].append(record.get(name, math.nan))  # (a record without it: no point)

    def draw(self, path: str) -> None:
        """Each loss against total_iters, on shared axes, with a legend; written atomically."""
        w, h = CURVE_SIZE
        m = CURVE_MARGIN
        image = Image.new("RGB", CURVE_SIZE, "white")
        draw = ImageDraw.Draw(image)
        draw.rectangle([m, m // 2, w - m // 2, h - m], outline="black")
        x = np.frombuffer(self.x, dtype=np.float64)
        series = {name: np.frombuffer(v, dtype=np.float64) for name, v in self.values.items()}
        finite = np.concatenate([v[np.isfinite(v)] for v in series.values()]) if series else np.empty(0)
        if len(x) and len(finite):
            x0, x1, y0, y1 = x.min(), x.max(), finite.min(), finite.max()
            x_span, y_span = max(x1 - x0, 1), max(y1 - y0, 1e-12)
            columns = int(w - 1.5 * m)
            for i, name in enumerate(self.names):
                colour = PALETTE[i % len(PALETTE)]
                keep = np.isfinite(series[name])
                px = m + (x[keep] - x0) / x_span * columns
                py = h - m - (series[name][keep] - y0) / y_span * (h - 1.5 * m)
                px, py = column_extremes(px, py)
                pts = list(zip(px.tolist(), py.tolist()))
                if len(pts) > 1:
                    draw.line(pts, fill=colour, width=2)
                elif pts:
                    draw.ellipse([pts[0][0] - 2, pts[0][1] - 2, pts[0][0] + 2, pts[0][1] + 2], fill=colour)
                draw.text((m + 10 + 90 * i, 8), name, fill=colour)
            draw.text((4, m // 2), f"{y1:.3g}", fill="black")
            draw.text((4, h - m - 10), f"{y0:.3g}", fill="black")
            draw.text((m, h - m + 8), f"{x0:.0f}", fill="black")
            draw.text((w - m - 40, h - m + 8), f"{x1:.0f} images", fill="black")
        tmp = path + ".tmp.png"
        image.save(tmp)
        replace_file(tmp, path)


def column_extremes(px: np.ndarray, py: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A polyline's points thinned to the lowest and highest of each run of points in one pixel
    column (x rounded), in their order: the line through them covers the pixels the full one
    covers, up to the joins between columns. A line of at most two points a column comes back
    as given."""
    column = np.rint(px).astype(np.int64)
    new_run = np.r_[True, column[1:] != column[:-1]]
    starts = np.flatnonzero(new_run)
    if len(px) <= 2 * len(starts):
        return px, py
    ends = np.r_[starts[1:], len(px)]
    by_value = np.lexsort((py, np.cumsum(new_run)))  # grouped by run, each run by value
    order = np.unique(np.concatenate([by_value[starts], by_value[ends - 1]]))
    return px[order], py[order]


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


def reference_table_entries(arch: str, device, model: str | None = None,
                            default: str = "cycle_gan") -> dict[str, tuple]:
    """--model and --gpu_ids as the reference's options table ({phase}_opt.txt) prints them,
    (value, default), for the scripts that read it: fastgan's --arch and --device say the same.
    `default`: the --model default of the reference's options (its test's: test)."""
    device = str(device)
    gpu_ids = device.split(":")[1] if device.startswith("cuda:") else "0" if device == "cuda" else "-1"
    return {"model": (model or REFERENCE_MODEL[arch], default), "gpu_ids": (gpu_ids, "0")}


def write_options_table(path: str, opt, more: dict[str, tuple] | None = None,
                        listed: Collection[str] | None = None) -> str:
    """The options table at `path`, as the reference writes {phase}_opt.txt (defaults: the
    arch's; the model options of the run's arch alone); `more`: a command's own options, name
    -> (value, default), over the options'; `listed`: the names a test's table shows (the
    reference's models add their options in training only). Returns the table, which the
    reference also prints."""
    text = options_table_of(opt, more, listed)
    with naming(path), open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return text


def options_table_of(opt, more: dict[str, tuple] | None = None, listed: Collection[str] | None = None) -> str:
    """The table write_options_table writes."""
    more = more or {}
    left_out = {name for arch, names in ARCH_OPTIONS.items() if arch != opt.arch for name in names}
    values = {k: v for k, v in opt.as_dict().items() if k not in left_out}
    values.update({k: v for k, (v, _) in more.items()})
    if listed is not None:
        values = {k: v for k, v in values.items() if k in listed}
    if math.isfinite(values.get("max_dataset_size", math.inf)):  # the reference's is an int: 2, not 2.0
        values["max_dataset_size"] = int(values["max_dataset_size"])
    # isTrain is set on the reference's parsed options, not an option of its parser: no default
    defaults = {**resolve(opt.arch, {}).as_dict(), "isTrain": None, **{k: d for k, (_, d) in more.items()}}
    return options_table(values, defaults)


def read_loss_log(path: str) -> list[dict]:
    """The records of loss_log.jsonl, past any line that is not one: a write cut off (a full
    disk, a killed process) leaves half a line, onto which the next record is appended."""
    if not os.path.exists(path):
        return []
    records = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict):
                records.append(record)
    return records


# samples/ keeps this many grids, the newest: a CycleGAN grid of 8 photographs at 256² is
# about 0.45 MB, and a horse2zebra run at the reference's display_freq writes some 700
# (web/, the reference's page, keeps one row per epoch)
SAMPLES_KEPT = 50
SAMPLE_NAME = re.compile(r"epoch\d+_iter\d+\.png")  # the trainer's names for the grids


def save_sample_grid(visuals: dict[str, torch.Tensor], names, path: str) -> None:
    """One row: the first image of each visual (as the reference's tensor2im makes it), in
    `names` order (missing ones skipped), on white; images of other sizes (the domains of
    --preprocess none or scale_width) at their top left, in cells of the largest. Older
    grids of the folder beyond the newest SAMPLES_KEPT are removed."""
    images = [torch.from_numpy(tensor2im(visuals[n][0])).permute(2, 0, 1) for n in names if n in visuals]
    height, width = max(i.shape[1] for i in images), max(i.shape[2] for i in images)
    images = [F.pad(i, (0, width - i.shape[2], 0, height - i.shape[1]), value=255) for i in images]
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
