"""fastgan.engine.logs: the sample grids' folder stays bounded; the loss curve is drawn from
points kept as they come, thinned to what its pixels can show."""

from __future__ import annotations

import io
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from fastgan.engine import logs
from fastgan.errors import os_error_line, replace_file


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


def test_a_sample_grid_holds_images_of_other_sizes_at_their_top_left_on_white(tmp_path):
    """--preprocess none or scale_width give the domains sizes of their own: the grid failed
    (torch.stack in make_grid) and, not an OSError, ended the run unsaved."""
    visuals = {"real_A": -torch.ones(1, 3, 4, 6), "fake_B": torch.zeros(1, 3, 4, 6), "real_B": -torch.ones(1, 3, 6, 3)}
    path = tmp_path / "epoch001_iter00000001.png"
    logs.save_sample_grid(visuals, ["real_A", "fake_B", "real_B"], str(path))
    grid = np.asarray(Image.open(path))
    assert grid.shape == (2 + 6 + 2, 2 + 3 * (6 + 2), 3)
    cells = [grid[2:8, 2 + 8 * k:8 + 8 * k] for k in range(3)]
    assert (cells[0][:4] == 0).all() and (cells[0][4:] == 255).all()  # black 4x6, white below
    assert (cells[1][:4] == 127).all() and (cells[1][4:] == 255).all()  # tensor2im: (0 + 1) / 2 * 255
    assert (cells[2][:, :3] == 0).all() and (cells[2][:, 3:] == 255).all()  # 6x3, white to its right


def record(i: int, names, rng) -> dict:
    return {"epoch": 1, "epoch_iter": i, "total_iters": i, "lr": 2e-4, "seconds_per_image": 0.1, "data_seconds": 0.0,
            **{n: float(rng.random()) for n in names}}


def test_column_extremes_keep_each_columns_lowest_and_highest_in_order():
    rng = np.random.default_rng(0)
    px = np.sort(rng.random(5000) * 50)
    py = rng.standard_normal(5000)
    tx, ty = logs.column_extremes(px, py)
    kept = np.flatnonzero(np.isin(px, tx))
    assert np.all(np.diff(kept) > 0) and len(tx) <= 2 * 51
    for c in range(51):
        inside = np.rint(px) == c
        if inside.any():
            assert ty[np.rint(tx) == c].min() == py[inside].min()
            assert ty[np.rint(tx) == c].max() == py[inside].max()
    few = np.arange(10.0), np.arange(10.0)  # one point a column: as given
    assert all(np.array_equal(a, b) for a, b in zip(logs.column_extremes(*few), few))


def test_the_thinned_curve_covers_the_pixels_of_the_full_one(tmp_path, monkeypatch):
    """20,000 noisy records: in every pixel column the thinned line's drawn extent lies within
    the full polyline's over that column and its neighbours (the joins between columns
    differ), and the reverse (one loss: another's line drawn over it would hide pixels)."""
    names = ["D_A"]
    rng = np.random.default_rng(1)
    curve = logs.LossCurve(names, [record(i, names, rng) for i in range(1, 20001)])
    curve.draw(str(tmp_path / "thin.png"))
    monkeypatch.setattr(logs, "column_extremes", lambda px, py: (px, py))
    curve.draw(str(tmp_path / "full.png"))
    colour = np.array([int(logs.PALETTE[0][k:k + 2], 16) for k in (1, 3, 5)])
    m, (w, h) = logs.CURVE_MARGIN, logs.CURVE_SIZE
    drawn = [(np.abs(np.asarray(Image.open(tmp_path / f"{n}.png").convert("RGB")).astype(int)[m:h - m, m + 2:w - m]
                     - colour).sum(-1) == 0) for n in ("thin", "full")]
    extents = [[(rows.min(), rows.max()) if len(rows) else None
                for rows in (np.flatnonzero(d[:, c]) for c in range(d.shape[1]))] for d in drawn]
    assert sum(e is not None for e in extents[1]) > 0.9 * len(extents[1])
    for one, other in (extents, extents[::-1]):
        for c, extent in enumerate(one):
            near = [e for e in other[max(c - 1, 0):c + 2] if e is not None]
            if extent is not None:
                assert near and min(e[0] for e in near) - 2 <= extent[0] and extent[1] <= max(e[1] for e in near) + 2, c


def test_the_log_is_read_once_for_all_redraws(tmp_path, monkeypatch):
    """A redraw at every print re-read and re-parsed the whole log: its cost grew with the run.
    The file is read at the first redraw (a resumed run's earlier records) and after a
    truncation; records appended later join the kept points."""
    names = ["D_A", "G_A"]
    rng = np.random.default_rng(2)
    log = logs.LossLog(str(tmp_path), names)
    log.append(record(1, names, rng))
    reads = []
    real_read = logs.read_loss_log
    monkeypatch.setattr(logs, "read_loss_log", lambda path: reads.append(path) or real_read(path))
    for i in range(2, 12):
        log.append(record(i, names, rng))
        log.draw_curve(at_most_every=0)
    assert len(reads) == 1 and list(log._curve.x) == list(range(1, 12))
    log.truncate_after(5)
    log.append({**record(6, names, rng), "G_A": math.nan})  # a loss not finite: no point, no crash
    log.draw_curve(at_most_every=0)
    assert len(reads) == 3 and list(log._curve.x) == list(range(1, 7))
    assert (tmp_path / "loss_curve.png").exists()


def test_a_resume_drops_only_the_records_written_after_its_save(tmp_path):
    """Records of earlier runs in the folder (a reference-style continue, or a fresh start,
    began total_iters again at 0) stay; the last run's records past the save go."""
    names = ["G_A"]
    rng = np.random.default_rng(5)
    log = logs.LossLog(str(tmp_path), names)
    for i in [*range(1, 7), *range(1, 4), *range(1, 6)]:  # three runs; the last saved at total_iters 2
        log.append(record(i, names, rng))
    log.truncate_after(2)  # a state without the count (an earlier fastgan's)
    kept = [r["total_iters"] for r in logs.read_loss_log(log.path)]
    assert kept == [*range(1, 7), *range(1, 4), 1, 2]
    assert log.records == 11
    log.truncate_after(2, saved_records=7)  # the count a save recorded
    assert [r["total_iters"] for r in logs.read_loss_log(log.path)] == [*range(1, 7), 1]
    log.append(record(2, names, rng))
    assert log.records == 8 == len(logs.read_loss_log(log.path))


def test_the_curve_is_redrawn_at_most_once_a_period_and_only_with_new_records(tmp_path, monkeypatch):
    names = ["G_A"]
    rng = np.random.default_rng(4)
    now = [1000.0]
    monkeypatch.setattr(logs.time, "monotonic", lambda: now[0])
    drawn = []
    monkeypatch.setattr(logs.LossCurve, "draw", lambda self, path: drawn.append(len(self.x)))
    log = logs.LossLog(str(tmp_path), names)
    log.append(record(1, names, rng))
    log.draw_curve()
    log.append(record(2, names, rng))
    now[0] += logs.CURVE_REDRAW_SECONDS - 1
    log.draw_curve()  # too soon
    now[0] += 1
    log.draw_curve()
    log.draw_curve(at_most_every=0)  # nothing new since
    log.append(record(3, names, rng))
    log.draw_curve(at_most_every=0)  # a run's end
    assert drawn == [1, 2, 3]


@pytest.mark.parametrize("count", [0, 1])
def test_a_curve_of_no_or_one_record_is_drawn(tmp_path, count):
    rng = np.random.default_rng(3)
    logs.LossCurve(["G_A"], [record(1, ["G_A"], rng)][:count]).draw(str(tmp_path / "c.png"))
    assert Image.open(tmp_path / "c.png").size == logs.CURVE_SIZE


def test_a_record_cut_off_midway_is_passed_over_and_the_log_goes_on(tmp_path):
    """A write cut off (full disk, killed process) leaves half a line, and the next record is
    appended onto it: the log, its record count, the curve and a resume read past it."""
    names = ["G_A"]
    rng = np.random.default_rng(6)
    log = logs.LossLog(str(tmp_path), names)
    for i in (1, 2):
        log.append(record(i, names, rng))
    with open(log.path, "a") as f:
        f.write('{"epoch": 1, "tot')
    for i in (3, 4):
        log.append(record(i, names, rng))  # 3 is glued onto the half line: lost
    assert [r["total_iters"] for r in logs.read_loss_log(log.path)] == [1, 2, 4]
    log.draw_curve(0)
    assert os.path.exists(log.curve_path)
    log.truncate_after(4, saved_records=2)  # a resume heals the file
    assert open(log.path).read().count("\n") == 2 and log.records == 2


def test_a_full_disk_names_the_file_it_could_not_write(tmp_path, monkeypatch):
    log = logs.LossLog(str(tmp_path), ["G_A"])

    class Full(io.StringIO):
        def write(self, text):
            raise OSError(28, "No space left on device")  # as a write to a full disk: no file name

    # the logs module's open alone (pytest and the suite's hooks write files too)
    monkeypatch.setattr(logs, "open", lambda path, mode="r", *a, **k: Full(), raising=False)
    with pytest.raises(OSError) as e:
        log.append(record(1, ["G_A"], np.random.default_rng(0)))
    assert os_error_line(e.value) == f"{log.path}: No space left on device"


def test_a_failed_rename_names_the_destination_not_the_file_written_beside(tmp_path):
    (tmp_path / "training_state.pt").mkdir()  # a folder where the file goes
    (tmp_path / ".training_state.pt.tmp").write_text("state")
    with pytest.raises(OSError) as e:
        replace_file(str(tmp_path / ".training_state.pt.tmp"), str(tmp_path / "training_state.pt"))
    assert os_error_line(e.value) == f"{tmp_path / 'training_state.pt'}: Is a directory"


@pytest.mark.parametrize("cap,shown", [(2.0, "2"), (math.inf, "inf")])
def test_the_options_table_prints_the_dataset_cap_as_an_int_as_the_reference_does(tmp_path, cap, shown):
    from fastgan.options import resolve
    path = tmp_path / "train_opt.txt"
    logs.write_options_table(str(path), resolve("cyclegan", {"max_dataset_size": cap}))
    default = "" if cap == math.inf else "\t[default: inf]"
    assert f"{'max_dataset_size':>25}: {shown:<30}{default}" in path.read_text().splitlines()


def test_the_text_files_are_utf8_whatever_the_locale(tmp_path):
    """A run named "zèbre" failed to write its options table under an ASCII locale with
    Python's UTF-8 mode off (the files took the locale's encoding)."""
    code = ("import sys; from fastgan.engine import logs; from fastgan.options import resolve; "
            "logs.write_options_table(sys.argv[1], resolve('cyclegan', {'name': 'z\\u00e8bre'}))")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONIOENCODING", "PYTHONUTF8")}
    env.update(LANG="C", LC_ALL="C", PYTHONUTF8="0", PYTHONPATH=root)
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "train_opt.txt")], env=env, check=True,
                   capture_output=True, timeout=120)
    assert f"{'name':>25}: {'zèbre':<30}" in (tmp_path / "train_opt.txt").read_text(encoding="utf-8")


def test_the_reference_table_names_the_gpu_as_gpu_ids():
    """train_opt.txt's --gpu_ids, which scripts read: the device's index, -1 for the CPU."""
    assert logs.reference_table_entries("cyclegan", "cuda")["gpu_ids"] == ("0", "0")
    assert logs.reference_table_entries("cyclegan", "cuda:1")["gpu_ids"] == ("1", "0")
    assert logs.reference_table_entries("pix2pix", "cpu") == {"model": ("pix2pix", "cycle_gan"), "gpu_ids": ("-1", "0")}
