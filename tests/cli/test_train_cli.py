"""`python -m fastgan.train` end to end, with tiny models."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from fastgan import test as test_cli
from fastgan import train as train_cli
from fastgan.data import select as loader_select
from fastgan.engine import stop_request
from fastgan.engine.cyclegan import CycleGAN
from fastgan.engine.logs import PROGRESS_FIELDS, TIMING_FIELDS, read_loss_log
from tests.cli.runs import load, tiny_args, write_images, write_images_of_sizes

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# the images each model shows, in the reference's order (cyclegan: identity loss on)
VISUAL_NAMES = {"cyclegan": ("real_A", "fake_B", "rec_A", "idt_B", "real_B", "fake_A", "rec_B", "idt_A"),
                "pix2pix": ("real_A", "fake_B", "real_B")}


def assert_same_nets(dir_a, dir_b, names):
    for name in names:
        a, b = load(os.path.join(dir_a, f"latest_net_{name}.pth")), load(os.path.join(dir_b, f"latest_net_{name}.pth"))
        assert a.keys() == b.keys()
        for k in a:
            torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=f"{name}.{k}")


@pytest.mark.parametrize("arch,nets", [("cyclegan", ["G_A", "G_B", "D_A", "D_B"]), ("pix2pix", ["G", "D"])])
def test_stopped_and_resumed_run_matches_uninterrupted(arch, nets, unaligned_root, aligned_root, tmp_path):
    root = unaligned_root if arch == "cyclegan" else aligned_root
    extra = ["--pool_size", "3"] if arch == "cyclegan" else ["--norm", "batch"]
    full = train_cli.main(tiny_args(root, tmp_path, "full", arch) + extra)
    per_epoch = 6 if arch == "cyclegan" else 5
    assert full["iteration"] == 2 * per_epoch and full["stopped"] is None

    part = train_cli.main(tiny_args(root, tmp_path, "part", arch) + extra + ["--max_iters", str(per_epoch + 2)])
    assert part["stopped"] and part["iteration"] == per_epoch + 2
    resumed = train_cli.main(tiny_args(root, tmp_path, "part", arch) + extra + ["--continue_train"])
    assert resumed["iteration"] == 2 * per_epoch and resumed["images"] == per_epoch - 2

    log_full = read_loss_log(str(tmp_path / "full" / "loss_log.jsonl"))
    log_part = read_loss_log(str(tmp_path / "part" / "loss_log.jsonl"))
    assert [r["total_iters"] for r in log_part] == [r["total_iters"] for r in log_full] == list(range(1, 2 * per_epoch + 1))
    loss_names = set(log_full[0]) - {*PROGRESS_FIELDS, *TIMING_FIELDS}
    assert len(loss_names) == (8 if arch == "cyclegan" else 4)
    for a, b in zip(log_full, log_part):
        for name in loss_names | {"epoch", "lr"}:
            assert a[name] == b[name], (a["total_iters"], name)
    assert_same_nets(str(tmp_path / "full"), str(tmp_path / "part"), nets)
    # web/ too: what an epoch kept before the stop stays kept after the resume
    for image in os.listdir(tmp_path / "full" / "web" / "images"):
        full_image, part_image = (np.asarray(Image.open(tmp_path / run / "web" / "images" / image))
                                  for run in ("full", "part"))
        assert (full_image == part_image).all(), image

    # the reference's file names, plus fastgan's logs
    out = tmp_path / "full"
    for name in nets:
        for label in ("latest", "1", "2"):
            assert (out / f"{label}_net_{name}.pth").exists()
    assert (out / "training_state.pt").exists()
    with Image.open(out / "loss_curve.png") as curve:
        assert curve.size == (960, 540)
    samples = sorted(os.listdir(out / "samples"))
    assert len(samples) == (2 * per_epoch) // 4
    # the reference's web/: each epoch's first display (images 4 and 8; update_html_freq 1000
    # keeps no later one) as epoch{E}_{visual}.png, the sample grid's cells, newest epoch first
    visuals = VISUAL_NAMES[arch]
    assert sorted(os.listdir(out / "web" / "images")) == sorted(f"epoch{e:03d}_{v}.png" for e in (1, 2) for v in visuals)
    for epoch, total in ((1, 4), (2, 8)):
        grid = np.asarray(Image.open(out / "samples" / f"epoch{epoch:03d}_iter{total:08d}.png"))
        for k, v in enumerate(visuals):
            cell = grid[2:34, 2 + 34 * k:34 + 34 * k]
            assert (np.asarray(Image.open(out / "web" / "images" / f"epoch{epoch:03d}_{v}.png")) == cell).all(), v
    page = (out / "web" / "index.html").read_text()
    assert "<meta http-equiv='refresh' content='1'>" in page and "Experiment name = full" in page
    assert page.index("epoch [2]") < page.index("epoch [1]")
    assert page.count("style='width:256px'") == 2 * len(visuals) and page.count("<h3>") == 2
    # the reference's text files, for scripts that read them
    text = (out / "loss_log.txt").read_text().splitlines()
    assert text[0].startswith("================ Training Loss (") and len(text) == 1 + 2 * per_epoch
    names = [k for k in log_full[0] if k in loss_names]  # the losses, in the model's order
    for line, record in zip(text[1:], log_full):
        assert re.fullmatch(rf"\(epoch: {record['epoch']}, iters: {record['epoch_iter']}, time: \d+\.\d{{3}}, "
                            r"data: \d+\.\d{3}\) " + "".join(rf"{n}: -?\d+\.\d{{3}} " for n in names), line), line
        assert line.endswith(f"{names[-1]}: {record[names[-1]]:.3f} ")
    table = (out / "train_opt.txt").read_text().splitlines()
    assert table[0] == "----------------- Options ---------------"
    assert table[-1] == "----------------- End -------------------"
    assert f"{'ngf':>25}: {'4':<30}\t[default: 64]" in table and f"{'phase':>25}: {'train':<30}" in table
    model = {"cyclegan": f"{'cycle_gan':<30}", "pix2pix": f"{'pix2pix':<30}\t[default: cycle_gan]"}[arch]
    assert f"{'model':>25}: {model}" in table and f"{'gpu_ids':>25}: {'-1':<30}\t[default: 0]" in table
    assert f"{'isTrain':>25}: {'True':<30}\t[default: None]" in table  # set on the parsed options, not an option
    # the model's own options only, as the reference's table (its options come from the model's class)
    named = {line.split(":")[0].strip() for line in table}
    assert {"cyclegan": {"lambda_A", "lambda_identity"}, "pix2pix": {"lambda_L1"}}[arch] <= named
    assert not {"cyclegan": {"lambda_L1"}, "pix2pix": {"lambda_A", "lambda_B", "lambda_identity"}}[arch] & named
    # a resumed run's text log, as the reference's, keeps the earlier lines under a new header
    part_text = (tmp_path / "part" / "loss_log.txt").read_text().splitlines()
    assert sum(line.startswith("================ Training Loss") for line in part_text) == 2
    assert len(part_text) == 2 + 2 * per_epoch


def continue_finished_run(root, tmp_path, capsys, extra):
    """A tiny cyclegan run to its end (n_epochs 1, n_epochs_decay 1: 2 epochs of 6 images), then
    --continue_train with `extra`: (the continued run's summary, what it printed)."""
    args = tiny_args(root, tmp_path, "run")
    train_cli.main(args)
    capsys.readouterr()
    result = train_cli.main(args + ["--continue_train", *extra])
    return result, capsys.readouterr().out


def test_continue_naming_an_epoch_is_the_references_continue(unaligned_root, tmp_path, capsys):
    """--continue_train --epoch 1 --epoch_count 2: epoch 1's networks, fresh optimizers and the
    schedule from epoch 2, as the reference; the training state (after epoch 2) is not used."""
    result, out = continue_finished_run(unaligned_root, tmp_path, capsys, ["--epoch", "1", "--epoch_count", "2"])
    assert "continuing from epoch 1's networks" in out and "training_state.pt unused" in out
    assert result["images"] == 6 and result["epoch"] == 3
    records = read_loss_log(str(tmp_path / "run" / "loss_log.jsonl"))[-6:]
    # linear: factor 1 - max(0, 0 + 2 - 1) / 2 in the first epoch of the continued run
    assert [r["epoch"] for r in records] == [2] * 6 and all(r["lr"] == pytest.approx(1e-4) for r in records)


def test_exact_resume_follows_the_schedule_options_typed(unaligned_root, tmp_path, capsys):
    """A finished run continued with more epochs: the state is restored, and the learning rate is
    what the longer schedule gives in the next epoch (not the finished run's 0)."""
    result, out = continue_finished_run(unaligned_root, tmp_path, capsys, ["--n_epochs", "3", "--n_epochs_decay", "0"])
    assert "resumed from" in out and "n_epochs 1 -> 3, n_epochs_decay 1 -> 0" in out
    assert result["images"] == 6 and result["epoch"] == 4
    records = read_loss_log(str(tmp_path / "run" / "loss_log.jsonl"))
    assert [r["total_iters"] for r in records] == list(range(1, 19))
    assert all(r["epoch"] == 3 and r["lr"] == pytest.approx(2e-4) for r in records[-6:])


@pytest.mark.parametrize("policy", ["step", "plateau", "cosine"])
def test_exact_resume_under_another_lr_policy_follows_it(policy, unaligned_root, tmp_path, capsys):
    """A finished run continued under --lr_policy linear (whose LambdaLR state the others' saved
    states lack: the resume failed with KeyError 'lr_lambdas'): the schedule restarts from this
    command's options, and the next epoch has linear's rate."""
    args = tiny_args(unaligned_root, tmp_path, "run")
    train_cli.main(args + ["--lr_policy", policy, "--lr_decay_iters", "1"])
    capsys.readouterr()
    result = train_cli.main(args + ["--continue_train", "--n_epochs", "3", "--n_epochs_decay", "0"])
    assert f"lr_policy {policy} -> linear" in capsys.readouterr().out
    assert result["images"] == 6 and result["epoch"] == 4
    records = read_loss_log(str(tmp_path / "run" / "loss_log.jsonl"))
    assert all(r["epoch"] == 3 and r["lr"] == pytest.approx(2e-4) for r in records[-6:])


def test_continuing_a_run_started_at_another_epoch_resumes_it(unaligned_root, tmp_path, capsys):
    """A run whose first epoch is 2, stopped, then continued with the same --epoch_count: the
    exact training state, not the reference's restart (the command names the run's own first
    epoch); an --epoch_count past the schedule trains nothing and says so."""
    without_first = tiny_args(unaligned_root, tmp_path, "run") + ["--n_epochs", "2"]
    args = without_first + ["--epoch_count", "2"]  # epochs 2..3
    assert train_cli.main(args + ["--max_iters", "3"])["iteration"] == 3
    capsys.readouterr()
    result = train_cli.main(args + ["--continue_train", "--max_iters", "6"])
    assert "resumed from" in capsys.readouterr().out and result["iteration"] == 6
    # the command need not name the run's first epoch again: the state knows it
    result = train_cli.main(without_first + ["--continue_train"])
    assert "resumed from" in capsys.readouterr().out
    assert result["iteration"] == 12 and result["images"] == 6 and result["epoch"] == 4
    result = train_cli.main(args + ["--continue_train", "--epoch", "3", "--epoch_count", "5"])
    assert result["images"] == 0
    out = capsys.readouterr().out
    assert "nothing to train: epoch 5 is past the schedule's last, 3" in out
    assert "per epoch, no epoch left (the schedule ends with epoch 3)" in out and "epochs 5..3" not in out


def test_frequencies_count_the_batch_size_per_iteration_as_the_reference(aligned_root, tmp_path):
    """5 aligned images at batch 2: batches of 2, 2 and 1 per epoch. The reference's
    total_iters adds --batch_size for the short batch too, so every frequency and the
    --save_by_iter names step by 2 (the image count stays the real one)."""
    args = tiny_args(aligned_root, tmp_path, "run", "pix2pix") + [
        "--batch_size", "2", "--save_latest_freq", "4", "--save_by_iter"]
    result = train_cli.main(args)
    assert result["images"] == 10 and result["iteration"] == 6
    records = read_loss_log(str(tmp_path / "run" / "loss_log.jsonl"))
    assert [r["total_iters"] for r in records] == [2, 4, 6, 8, 10, 12]
    assert [r["epoch_iter"] for r in records] == [2, 4, 6, 2, 4, 6]
    saved = sorted(name for name in os.listdir(tmp_path / "run") if name.startswith("iter_"))
    assert saved == [f"iter_{i}_net_{net}.pth" for i in (12, 4, 8) for net in ("D", "G")]


def test_frequencies_fire_where_total_iters_crosses_a_multiple(aligned_root, tmp_path):
    """At batch 3 total_iters runs 3, 6, 9, 12: frequencies of 4 fire at 6, 9 and 12, where it
    passes 4, 8 and 12 (README: the reference's `%` would fire at 12 alone)."""
    args = tiny_args(aligned_root, tmp_path, "run", "pix2pix") + [
        "--batch_size", "3", "--print_freq", "4", "--save_latest_freq", "4", "--save_by_iter"]
    assert train_cli.main(args)["iteration"] == 4
    records = read_loss_log(str(tmp_path / "run" / "loss_log.jsonl"))
    assert [r["total_iters"] for r in records] == [6, 9, 12]
    saved = sorted(name for name in os.listdir(tmp_path / "run") if name.startswith("iter_") and "_G" in name)
    assert saved == ["iter_12_net_G.pth", "iter_6_net_G.pth", "iter_9_net_G.pth"]


def test_max_iters_ending_an_epoch_finishes_it(unaligned_root, tmp_path):
    """--max_iters falling on an epoch's last batch: the epoch ends as usual (its networks saved,
    the schedule stepped), so the run stands at the next epoch."""
    result = train_cli.main(tiny_args(unaligned_root, tmp_path, "run") + ["--max_iters", "12"])
    assert result["epoch"] == 3 and result["iteration"] == 12
    assert (tmp_path / "run" / "2_net_G_A.pth").exists()
    state = torch.load(tmp_path / "run" / "training_state.pt", map_location="cpu", weights_only=False)
    assert state["progress"] == {"epoch": 3, "batch": 0, "total_iters": 12, "iteration": 12}


def test_a_signal_during_the_last_save_waits_for_it(unaligned_root, tmp_path, monkeypatch, capsys):
    """The save after the last iteration still runs under the stop request: a signal then is
    noted, the save completes, and the run ends with the signal's exit status."""
    import os

    from fastgan.engine import trainer

    real_save = trainer.save_training_state

    def signalled_save(model, progress, *args, **kwargs):
        if progress.iteration == 2:  # the save after the loop
            os.kill(os.getpid(), signal.SIGINT)
        return real_save(model, progress, *args, **kwargs)

    monkeypatch.setattr(trainer, "save_training_state", signalled_save)
    summary = train_cli.main(tiny_args(unaligned_root, tmp_path, "run") + ["--max_iters", "2"])
    assert summary["signal"] == signal.SIGINT and summary["iteration"] == 2
    assert "SIGINT: stopping after this iteration" in capsys.readouterr().err
    state = torch.load(tmp_path / "run" / "training_state.pt", map_location="cpu", weights_only=False)
    assert state["progress"]["iteration"] == 2
    assert not [f for f in os.listdir(tmp_path / "run") if f.endswith(".tmp")]


@pytest.mark.parametrize("extra,at,saves", [([], 6, [6]), (["--save_latest_freq", "2"], 4, [2, 4]),
                                             (["--save_latest_freq", "2", "--save_by_iter"], 4, [2, 4, 4])])
def test_a_signal_during_a_save_stops_the_run_at_what_it_saved(extra, at, saves, unaligned_root, tmp_path,
                                                                monkeypatch, capsys):
    """A signal while an epoch's end (after 6 images) or a --save_latest_freq save (at 4) writes:
    the run stops there, without training one more iteration and saving again (under
    --save_by_iter the iter_4 save is followed by the stop's latest_net_* one)."""
    import os

    from fastgan.engine import trainer

    real_save = trainer.save_training_state
    saved = []

    def signalled_save(model, progress, *args, **kwargs):
        saved.append(progress.iteration)
        if saved.count(at) == 1 and progress.iteration == at:  # (the first save at `at` only)
            os.kill(os.getpid(), signal.SIGINT)
        return real_save(model, progress, *args, **kwargs)

    monkeypatch.setattr(trainer, "save_training_state", signalled_save)
    summary = train_cli.main(tiny_args(unaligned_root, tmp_path, "run") + extra)
    assert summary["signal"] == signal.SIGINT and summary["iteration"] == at
    assert saved == saves
    assert "SIGINT: stopping after this iteration" in capsys.readouterr().err
    G_A = load(tmp_path / "run" / "latest_net_G_A.pth")
    state = torch.load(tmp_path / "run" / "training_state.pt", map_location="cpu", weights_only=False)
    assert state["progress"]["iteration"] == at
    assert all(torch.equal(G_A[k], v) for k, v in state["model"]["nets"]["G_A"].items())
    resumed = train_cli.main(tiny_args(unaligned_root, tmp_path, "run") + ["--continue_train", "--max_iters",
                                                                           str(at + 1)])
    assert resumed["images"] == 1


def test_a_signal_during_the_last_epochs_save_ends_the_run_finished(unaligned_root, tmp_path, monkeypatch):
    """The run's last save (2 epochs of 6): nothing is left to train, so the run is finished,
    not "stopped" (a resume would find nothing to do), and exits with the signal's status."""
    import os

    from fastgan.engine import trainer

    real_save = trainer.save_training_state

    def signalled_save(model, progress, *args, **kwargs):
        if progress.iteration == 12:
            os.kill(os.getpid(), signal.SIGINT)
        return real_save(model, progress, *args, **kwargs)

    monkeypatch.setattr(trainer, "save_training_state", signalled_save)
    summary = train_cli.main(tiny_args(unaligned_root, tmp_path, "run"))
    assert summary["stopped"] is None and summary["signal"] == signal.SIGINT and summary["iteration"] == 12


def test_a_resume_drops_the_log_records_written_after_its_save(unaligned_root, tmp_path):
    """Records a run appended after the save it is resumed from (here: a later fresh run in the
    folder, killed before its first save, whose total_iters began again at 1) go; the state
    says how many records it covers."""
    args = tiny_args(unaligned_root, tmp_path, "run")
    train_cli.main(args + ["--max_iters", "3"])
    log = tmp_path / "run" / "loss_log.jsonl"
    state = torch.load(tmp_path / "run" / "training_state.pt", map_location="cpu", weights_only=False)
    assert state["loss_log_records"] == 3
    lines = log.read_text().splitlines()
    log.write_text("\n".join(lines + lines[:2]) + "\n")  # the killed run's iterations 1 and 2
    train_cli.main(args + ["--continue_train", "--max_iters", "4"])
    assert [r["total_iters"] for r in read_loss_log(str(log))] == [1, 2, 3, 4]


def test_a_fast_run_resumed_eager_takes_its_pooled_fakes_in_fp32(unaligned_root, tmp_path, capsys):
    """--fast trains in bf16: its saved pools hold bf16 fakes, which an --eager resume's D (fp32)
    refused ("Input type (c10::BFloat16) and bias type (float)") once a stored fake came back."""
    args = tiny_args(unaligned_root, tmp_path, "run") + ["--pool_size", "2"]
    train_cli.main(args + ["--fast", "--max_iters", "4"])
    capsys.readouterr()
    assert train_cli.main(args + ["--eager", "--continue_train", "--max_iters", "10"])["iteration"] == 10
    assert ("speed levels eager (the reference's path), the run's accelerate, channels_last, merge_passes, "
            in capsys.readouterr().out)  # (then amp=bf16 where the CPU has AMX)
    train_cli.main(args + ["--eager", "--continue_train", "--max_iters", "11"])
    assert "speed levels" not in capsys.readouterr().out.replace("speed levels: ", "")  # the same levels: no note


def test_a_second_signal_during_a_save_stops_once_it_is_written(unaligned_root, tmp_path, monkeypatch, capsys):
    """Two signals while the periodic save at iteration 4 writes its networks: the run stops
    at once, but after the save, so the networks and the training state are of one iteration
    (they were of iterations 4 and 2)."""
    import os

    from fastgan.engine import trainer

    real_save = trainer.save_training_state

    def signalled_save(model, progress, *args, **kwargs):
        if progress.iteration == 4:
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)
        return real_save(model, progress, *args, **kwargs)

    monkeypatch.setattr(trainer, "save_training_state", signalled_save)
    args = tiny_args(unaligned_root, tmp_path, "run") + ["--save_latest_freq", "2"]
    with pytest.raises(SystemExit) as e:
        train_cli.main(args)
    assert e.value.code == 128 + signal.SIGINT
    err = capsys.readouterr().err
    assert "SIGINT: stopping once this save is written" in err
    assert "stopped once the save in progress was written" in err and "not saved" not in err
    state = torch.load(tmp_path / "run" / "training_state.pt", map_location="cpu", weights_only=False)
    assert state["progress"]["iteration"] == 4
    G_A = load(tmp_path / "run" / "latest_net_G_A.pth")
    assert all(torch.equal(G_A[k], v) for k, v in state["model"]["nets"]["G_A"].items())


def test_two_signals_during_an_epochs_state_only_save_leave_latest_networks_of_that_state(unaligned_root, tmp_path,
                                                                                            monkeypatch, capsys):
    """With --save_epoch_freq 5 the end of epoch 1 saves the state alone; two signals while it
    is written stop the run after it, and the latest networks are written with it (they were
    the iteration-4 ones beside a state of iteration 6)."""
    import os

    from fastgan.engine import trainer

    real_save = trainer.save_training_state

    def signalled_save(model, progress, *args, **kwargs):
        if progress.iteration == 6 and progress.epoch == 2:  # end_epoch's save (the epoch counted on)
            os.kill(os.getpid(), signal.SIGTERM)
            os.kill(os.getpid(), signal.SIGTERM)
        return real_save(model, progress, *args, **kwargs)

    monkeypatch.setattr(trainer, "save_training_state", signalled_save)
    args = tiny_args(unaligned_root, tmp_path, "run") + ["--save_latest_freq", "4", "--save_epoch_freq", "5"]
    with pytest.raises(SystemExit) as e:
        train_cli.main(args)
    assert e.value.code == 128 + signal.SIGTERM
    assert "stopped once the save in progress was written" in capsys.readouterr().err
    state = torch.load(tmp_path / "run" / "training_state.pt", map_location="cpu", weights_only=False)
    assert state["progress"]["iteration"] == 6
    G_A = load(tmp_path / "run" / "latest_net_G_A.pth")
    assert all(torch.equal(G_A[k], v) for k, v in state["model"]["nets"]["G_A"].items())


def test_the_loss_lines_are_printed_as_the_reference_prints_them(unaligned_root, tmp_path, capsys):
    train_cli.main(tiny_args(unaligned_root, tmp_path, "run") + ["--max_iters", "3"])
    printed = [line for line in capsys.readouterr().out.splitlines() if line.startswith("(epoch: ")]
    with open(tmp_path / "run" / "loss_log.txt") as f:
        logged = [line.rstrip("\n") for line in f if line.startswith("(epoch: ")]
    assert len(printed) == 3 and printed == logged
    assert printed[0].startswith("(epoch: 1, iters: 1, time: ") and " D_A: " in printed[0]


def test_a_second_signal_stops_at_once_with_its_exit_status(unaligned_root, tmp_path, monkeypatch, capsys):
    from fastgan.engine import trainer

    stop = stop_request.StopRequest()
    stop._handle(signal.SIGTERM, None)
    assert stop.requested and stop.signal == signal.SIGTERM
    assert "SIGTERM: stopping after this iteration" in capsys.readouterr().err
    with pytest.raises(stop_request.StopNow) as second:
        stop._handle(signal.SIGTERM, None)
    monkeypatch.setattr(trainer.Trainer, "run", lambda self: (_ for _ in ()).throw(second.value))
    with pytest.raises(SystemExit) as e:
        train_cli.main(tiny_args(unaligned_root, tmp_path, "run"))
    assert e.value.code == 128 + signal.SIGTERM
    assert "stopped at once" in capsys.readouterr().err


def test_under_torchrun_one_repeat_of_the_signal_is_torchruns_copy(monkeypatch, capsys):
    """Under torchrun one repeat of the first signal is the agent passing on the signal it got
    too (Slurm's scancel, systemd's stop reach every process), however late the rank's handler
    runs; the next, or another signal, or a repeat without torchrun, stops at once. A copy
    still due when the run ends is swallowed once."""
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "job")
    stop = stop_request.StopRequest()
    stop._handle(signal.SIGTERM, None)
    assert "twice more to stop at once" in capsys.readouterr().err
    stop._handle(signal.SIGTERM, None)  # the agent's copy
    assert stop.requested and "SIGTERM again (torchrun passes on" in capsys.readouterr().err
    with pytest.raises(stop_request.StopNow):
        stop._handle(signal.SIGTERM, None)
    stop = stop_request.StopRequest()
    stop._handle(signal.SIGTERM, None)
    with pytest.raises(stop_request.StopNow):
        stop._handle(signal.SIGINT, None)
    monkeypatch.delenv("TORCHELASTIC_RUN_ID")
    stop = stop_request.StopRequest()
    stop._handle(signal.SIGTERM, None)
    with pytest.raises(stop_request.StopNow):
        stop._handle(signal.SIGTERM, None)


def test_torchruns_copy_arriving_after_the_run_is_swallowed(monkeypatch):
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "job")
    seen = []
    before = signal.signal(signal.SIGTERM, lambda sig, frame: seen.append(sig))
    try:
        with stop_request.StopRequest() as stop:
            stop._handle(signal.SIGTERM, None)
        signal.raise_signal(signal.SIGTERM)  # the late copy: swallowed, the handler put back
        assert seen == []
        signal.raise_signal(signal.SIGTERM)
        assert seen == [signal.SIGTERM]
    finally:
        signal.signal(signal.SIGTERM, before)


def test_a_stop_deferred_until_a_save_was_written_says_so(unaligned_root, tmp_path, monkeypatch, capsys):
    from fastgan.engine import trainer

    stop = stop_request.StopRequest()
    stop._handle(signal.SIGTERM, None)
    with pytest.raises(stop_request.StopNow) as deferred:
        with stop.saving():
            stop._handle(signal.SIGINT, None)
    assert deferred.value.after_save and deferred.value.signum == signal.SIGINT
    monkeypatch.setattr(trainer.Trainer, "run", lambda self: (_ for _ in ()).throw(deferred.value))
    with pytest.raises(SystemExit) as e:
        train_cli.main(tiny_args(unaligned_root, tmp_path, "run"))
    assert e.value.code == 128 + signal.SIGINT
    err = capsys.readouterr().err
    assert "stopped once the save in progress was written" in err and "not saved" not in err


def test_a_run_removes_the_unfinished_saves_a_killed_run_left(unaligned_root, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = f".training_state.pt.{socket.gethostname()}.{int(dead.stdout)}.ab_c.tmp"
    (run / stale).write_bytes(b"PK half a state")
    train_cli.main(tiny_args(unaligned_root, tmp_path, "run") + ["--max_iters", "1"])
    assert not (run / stale).exists()
    assert f"removed 1 unfinished checkpoint file(s) a killed run left in {run}: {stale}" in capsys.readouterr().out


def test_the_command_lines_choices_are_the_modules():
    """cli.CHOICES repeats each option's values (importing their modules would cost seconds at
    every command line): each must be the list the code that takes the option keeps."""
    from fastgan import cli, losses, options
    from fastgan.data import datasets, select, transforms
    from fastgan.engine import levels, schedulers
    from fastgan.models import NETD_TYPES, NETG_TYPES, generators, init, norm

    kept = {"arch": options.ARCHS, "netG": NETG_TYPES, "netD": NETD_TYPES, "norm": norm.NORM_TYPES,
            "init_type": init.INIT_TYPES, "padding_type": generators.PADDING_TYPES,
            "dataset_mode": tuple(datasets.DATASET_MODES), "direction": datasets.DIRECTIONS,
            "preprocess": transforms.PREPROCESS, "gan_mode": losses.GAN_MODES, "lr_policy": schedulers.LR_POLICIES,
            "loader": select.LOADERS, "compile": levels.COMPILE_MODES, "amp": levels.AMP_MODES,
            "adam": levels.ADAM_IMPLS}
    assert cli.CHOICES == kept


def run_module(args, **kwargs):
    return subprocess.run([sys.executable, "-m", *args], cwd=REPO, capture_output=True, text=True, **kwargs)


def test_bad_dataroot_is_one_clear_line(tmp_path):
    result = run_module(["fastgan.train", "--dataroot", str(tmp_path / "missing"), "--checkpoints_dir",
                         str(tmp_path), "--device", "cpu"], timeout=120)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert str(tmp_path / "missing") in result.stderr


def test_a_fastgan_backend_that_cannot_run_says_why(monkeypatch):
    """The refusal named the back ends that can run, not why the one asked for cannot (not
    built, no device), which use_backend's error says."""
    from fastgan import cli, ops

    monkeypatch.setattr(ops.registry, "_state", {**ops.registry._state, "default": "cuda"})
    with pytest.raises(ValueError) as e:
        cli.check_backend_variable(torch.device("cpu"))
    why = "it runs on other devices" if torch.cuda.is_available() else \
        "back end 'cuda' is unavailable: no CUDA device is available"
    assert str(e.value).startswith(f"FASTGAN_BACKEND='cuda' cannot run on cpu ({why}); back ends that can: ")


@pytest.mark.parametrize("variable,value,words", [
    ("FASTGAN_REFLECT_CONV2D", "bogus", "FASTGAN_REFLECT_CONV2D='bogus': expected 'auto' or 'aten'"),
    ("FASTGAN_CONV", "bogus", "FASTGAN_CONV='bogus': expected one of auto, aten, gemm"),
    ("FASTGAN_BACKEND", "bogus", "FASTGAN_BACKEND='bogus' cannot run on cpu (unknown back end 'bogus' (known: "),
])
@pytest.mark.parametrize("command", ["fastgan.train", "fastgan.test"])
def test_a_bad_fastgan_variable_is_one_line_before_anything_runs(command, variable, value, words, unaligned_root,
                                                                 tmp_path):
    """They were a traceback: at import (the first two), or at the first op of the first
    iteration, with the dataset and the nets built (FASTGAN_BACKEND)."""
    args = ([*tiny_args(unaligned_root, tmp_path, "run"), "--max_iters", "1"] if command == "fastgan.train" else
            ["--name", "run", "--checkpoints_dir", str(tmp_path), "--dataroot", unaligned_root, "--device", "cpu"])
    result = run_module([command, *args], timeout=120, env={**os.environ, variable: value})
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.startswith(f"error: {words}"), result.stderr
    assert not (tmp_path / "run").exists()  # refused before the run began
    if variable == "FASTGAN_BACKEND" and command == "fastgan.train":  # --eager runs the torch back end
        eager = run_module([command, *args, "--eager"], timeout=120, env={**os.environ, variable: value})
        assert eager.returncode == 0, eager.stderr


def test_ctrl_c_while_torch_loads_is_one_line(unaligned_root, tmp_path):
    """SIGINT while torch loads (seconds; the signal sent once its library is mapped: a fixed
    delay landed in Python's own start on a loaded machine): exit 130 and one line, not a
    KeyboardInterrupt traceback."""
    process = subprocess.Popen([sys.executable, "-m", "fastgan.train", *tiny_args(unaligned_root, tmp_path, "run")],
                               cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while time.time() < deadline and process.poll() is None:
        with open(f"/proc/{process.pid}/maps") as f:
            if "libtorch" in f.read():
                break
        time.sleep(0.005)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 128 + signal.SIGINT and "Traceback" not in err, err
    assert "stopped before the run began" in err


def test_the_command_line_parses_before_the_heavy_imports():
    """`python -m fastgan.train` reaches its own Ctrl-C handler before numpy or torch load (seconds
    on a loaded machine: an early Ctrl-C there was a KeyboardInterrupt traceback)."""
    code = "import sys, fastgan.train; print(sorted(m for m in ('numpy', 'torch') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_a_resume_says_when_latest_networks_differ_from_the_state(unaligned_root, tmp_path, capsys):
    """latest_net_G_A.pth replaced (by hand, or by the reference trained in the same folder): the
    run resumes from training_state.pt, which holds the networks too, and says so."""
    args = tiny_args(unaligned_root, tmp_path, "run")
    train_cli.main(args + ["--max_iters", "2"])
    train_cli.main(args + ["--continue_train", "--max_iters", "3"])
    assert "from the networks in" not in capsys.readouterr().out  # the run's own files
    path = tmp_path / "run" / "latest_net_G_A.pth"
    replaced = {k: v + 1 if v.is_floating_point() else v for k, v in load(path).items()}
    torch.save(replaced, path)
    train_cli.main(args + ["--continue_train", "--max_iters", "4"])
    out = capsys.readouterr().out
    assert "note: latest_net_G_A.pth differs from the networks in training_state.pt, which this run resumes from" in out
    assert ("to continue from the files instead (the newer where a save wrote them but failed to write the state, "
            "or another trainer's), move training_state.pt away and run again") in out
    path.write_bytes(path.read_bytes()[:100])  # a damaged file: said too, and written again by the next save
    train_cli.main(args + ["--continue_train", "--max_iters", "5"])
    out = capsys.readouterr().out
    assert re.search(r"note: latest_net_G_A\.pth \(.+\) cannot be read: this run resumes from the networks in "
                     r"training_state\.pt, and its next save writes the file again", out)
    assert load(path).keys() == replaced.keys()


def test_sigterm_saves_state_and_resume_continues(unaligned_root, tmp_path):
    args = tiny_args(unaligned_root, tmp_path, "killed") + ["--n_epochs", "1000"]
    process = subprocess.Popen([sys.executable, "-m", "fastgan.train", *args], cwd=REPO,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log = tmp_path / "killed" / "loss_log.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not (log.exists() and len(read_loss_log(str(log))) >= 3):
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 128 + signal.SIGTERM, err  # saved, and says it was stopped
    assert "stopped by signal" in out and "--continue_train" in out
    assert "SIGTERM: stopping after this iteration and saving" in err
    state = torch.load(tmp_path / "killed" / "training_state.pt", map_location="cpu", weights_only=False)
    done = state["progress"]["iteration"]
    assert done >= 3
    resumed = train_cli.main(args + ["--continue_train", "--max_iters", str(done + 2)])
    assert resumed["iteration"] == done + 2 and resumed["images"] == 2


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_to_the_process_group_with_dataloader_workers_saves_once(unaligned_root, tmp_path, sig):
    """Slurm's scancel, systemd's stop and Ctrl-C in a terminal signal every process of the
    group: the DataLoader workers too, whose death made torch raise in the training process
    wherever it was (no save, exit 1), and whose copy of the handler printed its line again."""
    args = tiny_args(unaligned_root, tmp_path, "killed") + ["--n_epochs", "1000", "--loader", "torch",
                                                            "--num_threads", "2"]
    process = subprocess.Popen([sys.executable, "-m", "fastgan.train", *args], cwd=REPO, start_new_session=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log = tmp_path / "killed" / "loss_log.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not (log.exists() and len(read_loss_log(str(log))) >= 3):
        time.sleep(0.2)
    os.killpg(process.pid, sig)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 128 + sig and "Traceback" not in err, err
    assert err.count(f"{signal.Signals(sig).name}: stopping after this iteration and saving") == 1, err
    assert "stopped by signal" in out and (tmp_path / "killed" / "latest_net_G_A.pth").exists()
    state = torch.load(tmp_path / "killed" / "training_state.pt", map_location="cpu", weights_only=False)
    assert state["progress"]["iteration"] >= 3


@pytest.mark.parametrize("batch_size,after,again", [(3, 3, 0), (2, 2, 1), (4, 0, 3)])
def test_a_resume_with_another_batch_continues_after_the_images_trained(batch_size, after, again, unaligned_root,
                                                                         tmp_path, capsys):
    """The saved run trained 3 batches of 1 (the state counts batches); resumed at batch 3 it
    skips 1 batch of 3, at batch 2 one batch of 2 (its third image trains again), at batch 4
    none (it said "after its first 0 images"). The
    same holds for another number of ranks: the global batch is what counts."""
    args = tiny_args(unaligned_root, tmp_path, "run")  # 6 items per epoch
    assert train_cli.main(args + ["--max_iters", "3"])["iteration"] == 3
    capsys.readouterr()
    resumed = train_cli.main(args + ["--continue_train", "--batch_size", str(batch_size), "--n_epochs_decay", "0"])
    out = capsys.readouterr().out
    where = f"continues after its first {after} images" if after else "starts again from its first image"
    assert f"this one {batch_size}: epoch 1 {where}" in out
    assert (f"{again} of the 3 it trained train again" in out) == bool(again)
    assert resumed["images"] == 6 - after  # the rest of epoch 1 and nothing more
    records = read_loss_log(str(tmp_path / "run" / "loss_log.jsonl"))
    # epoch_iter counts --batch_size per iteration, a short last batch too (the reference's)
    assert [r["epoch_iter"] for r in records] == [1, 2, 3] + list(range(after + batch_size, 6 + batch_size, batch_size))


def test_a_resume_past_the_end_of_a_smaller_dataset_says_so_and_trains_the_next_epoch(unaligned_root, tmp_path,
                                                                                      capsys):
    """Saved at batch 5 of 6; resumed with --max_dataset_size 3 and another batch (2 batches an
    epoch): epoch 1 ends at once with a note, epoch 2 trains its 3 images, and torch's warning
    about a scheduler stepped before any optimizer step (true here, and meant) is not shown."""
    args = tiny_args(unaligned_root, tmp_path, "run")
    assert train_cli.main(args + ["--max_iters", "5"])["iteration"] == 5
    capsys.readouterr()
    with warnings.catch_warnings():  # (pytest.ini ignores that warning: here it would fail the run)
        warnings.filterwarnings("error", "Detected call of `lr_scheduler.step")
        resumed = train_cli.main(args + ["--continue_train", "--max_dataset_size", "3", "--batch_size", "2"])
    out = capsys.readouterr().out
    assert ("note: the saved run had trained 5 batches of 1 of epoch 1, more than the 3 images this dataset holds (it "
            "changed, or --max_dataset_size did): epoch 1 ends now, and epoch 2 trains on it") in out
    assert "continues after" not in out  # (another batch: no count of the images trained in its terms)
    assert resumed["images"] == 3
    assert [(r["epoch"], r["epoch_iter"]) for r in read_loss_log(str(tmp_path / "run" / "loss_log.jsonl"))][-2:] \
        == [(2, 2), (2, 4)]  # (the reference's epoch_iter: batch_size a step)


@pytest.mark.parametrize("images", [3, 4])
def test_a_resume_with_another_batch_whose_saved_images_cover_a_smaller_dataset_ends_the_epoch(unaligned_root,
                                                                                              tmp_path, capsys,
                                                                                              images):
    """Saved after 2 batches of 2 (4 images); resumed at batch 1 on 3 (or exactly 4) images: those 4
    cover the epoch, which ends (not "continues after its first 4 images"), and epoch 2 trains."""
    args = tiny_args(unaligned_root, tmp_path, "run")
    assert train_cli.main(args + ["--batch_size", "2", "--max_iters", "2"])["iteration"] == 2
    capsys.readouterr()
    resumed = train_cli.main(args + ["--continue_train", "--max_dataset_size", str(images), "--max_iters", "5"])
    out = capsys.readouterr().out
    assert (f"the saved run trained 2 images per iteration, this one 1: its 4 images of epoch 1 cover the {images} "
            "this dataset holds: epoch 1 ends now, and epoch 2 trains on it") in out
    assert "continues after" not in out
    assert resumed["images"] == 3
    assert [(r["epoch"], r["epoch_iter"]) for r in read_loss_log(str(tmp_path / "run" / "loss_log.jsonl"))][-3:] \
        == [(2, 1), (2, 2), (2, 3)]


def test_a_batch_larger_than_the_dataset_is_said_as_one_batch_of_all(unaligned_root, tmp_path, capsys):
    train_cli.main(tiny_args(unaligned_root, tmp_path, "run") + ["--batch_size", "8", "--max_iters", "1"])
    assert "fastgan cyclegan on cpu: 6 images, 1 batch of all 6 (a batch holds up to 8) per epoch" in \
        capsys.readouterr().out


def test_a_bad_file_mid_run_keeps_what_trained_before_it(tmp_path, capsys):
    root = tmp_path / "data"
    write_images(root / "trainA", 4, 40, seed=1)
    write_images(root / "trainB", 4, 40, seed=2)
    (root / "trainA" / "img003.png").write_bytes(b"not a png")  # the epoch's last item (--serial_batches)
    args = tiny_args(str(root), tmp_path, "run") + ["--serial_batches", "--loader", "torch"]  # cache: decodes first
    with pytest.raises(SystemExit) as e:
        train_cli.main(args)
    assert e.value.code == 2
    captured = capsys.readouterr()
    assert "img003.png" in captured.err
    assert "saved the 3 images trained before the file below" in captured.out
    state = torch.load(tmp_path / "run" / "training_state.pt", map_location="cpu", weights_only=False)
    assert state["progress"]["iteration"] == 3 and state["progress"]["batch"] == 3
    write_images(root / "trainA", 4, 40, seed=1)  # replaced: the run resumes after the 3 images
    resumed = train_cli.main(args + ["--continue_train", "--n_epochs_decay", "0"])
    assert resumed["images"] == 1 and resumed["iteration"] == 4


def folder_files(folder) -> dict:
    """Every file under `folder` (hidden ones included) and its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_max_iters_already_reached_trains_nothing(unaligned_root, tmp_path, capsys):
    """A run with nothing to train checks its options, data and networks and writes nothing:
    a new run's folder is not made, an earlier run's stays as it was (its options, log and
    lock file included), also for a resumed run already at --max_iters."""
    args = tiny_args(unaligned_root, tmp_path, "run")
    assert train_cli.main(args + ["--max_iters", "0"])["images"] == 0
    out = capsys.readouterr().out
    assert re.search(r"\n--max_iters 0: nothing to train: 0 images in [0-9.]+ s \(0.00 images/s\); nothing saved\n",
                     out), out
    assert not (tmp_path / "run").exists()
    assert train_cli.main(args + ["--max_iters", "3"])["iteration"] == 3
    before = folder_files(tmp_path / "run")
    assert "train_opt.json" in before and "loss_log.txt" in before and ".fastgan_train.lock" in before
    capsys.readouterr()
    for more in (["--continue_train", "--max_iters", "2", "--lr", "0.001"], ["--max_iters", "0", "--ngf", "4"],
                 ["--epoch_count", "9"], ["--max_iters", "0", "--eager"]):
        again = train_cli.main(args + more)
        assert again["images"] == 0 and folder_files(tmp_path / "run") == before, more
    assert again["iteration"] == 0
    out = capsys.readouterr().out
    assert "already at --max_iters 2 (iteration 3)" in out and f"images/s); checkpoints in {tmp_path / 'run'}" in out
    assert "this run starts afresh" not in out  # (it would: nothing is replaced)
    assert "speed levels: eager (the reference's path) (--fast: fastest)\n" in out
    state = torch.load(tmp_path / "run" / "training_state.pt", map_location="cpu", weights_only=False)
    assert state["progress"]["iteration"] == 3


def test_web_page_keeps_update_html_freq_crossings_at_display_winsize(unaligned_root, tmp_path):
    """display_freq 2 over two epochs of 6 images: displays at 2, 4, 6 and 8, 10, 12; with
    update_html_freq 4 web/ keeps each epoch's first (2, 8) and the crossings (4, 8, 12), so
    epoch 1 shows image 4's visuals and epoch 2 image 12's."""
    train_cli.main(tiny_args(unaligned_root, tmp_path, "run") + ["--display_freq", "2", "--update_html_freq", "4",
                                                                "--display_winsize", "64"])
    out = tmp_path / "run"
    for epoch, total in ((1, 4), (2, 12)):
        grid = np.asarray(Image.open(out / "samples" / f"epoch{epoch:03d}_iter{total:08d}.png"))
        for k, v in enumerate(VISUAL_NAMES["cyclegan"]):
            web = np.asarray(Image.open(out / "web" / "images" / f"epoch{epoch:03d}_{v}.png"))
            assert (web == grid[2:34, 2 + 34 * k:34 + 34 * k]).all(), (epoch, v)
    page = (out / "web" / "index.html").read_text()
    assert page.count("style='width:64px'") == 2 * len(VISUAL_NAMES["cyclegan"]) and "width:256px" not in page


def test_pictures_that_cannot_be_written_leave_the_run_training(unaligned_root, tmp_path, capsys):
    """web/ a file and samples/ a file: each is said once and left off; the run trains to its
    end and saves its networks, and the other pictures are written."""
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "web").write_text("not a folder")
    (tmp_path / "run" / "samples").write_text("not a folder")
    result = train_cli.main(tiny_args(unaligned_root, tmp_path, "run"))
    assert result["iteration"] == 12 and result["stopped"] is None
    out = capsys.readouterr().out
    assert out.count("web/ not written from now on (") == 1 and out.count("samples/ not written from now on (") == 1
    assert "training goes on" in out
    assert (tmp_path / "run" / "latest_net_G_A.pth").exists() and (tmp_path / "run" / "loss_curve.png").exists()


@pytest.mark.parametrize("extra,message", [
    (["--max_iters", "-5"], "--max_iters -5 must not be negative"),
    (["--update_html_freq", "-1"], "--update_html_freq -1 must not be negative"),
    (["--display_winsize", "0"], "--display_winsize 0 must be positive (pixels)"),
    (["--batch_size", "0"], "--batch_size 0 must be at least 1"),
    (["--save_epoch_freq", "0"], "--save_epoch_freq 0 must be at least 1 (epochs)"),
    (["--lr_policy", "step", "--lr_decay_iters", "0"], "--lr_decay_iters 0 must be at least 1 (epochs) with "
                                                       "--lr_policy step"),
    (["--lr_policy", "cosine", "--n_epochs", "0", "--n_epochs_decay", "3"],
     "--n_epochs 0 must be at least 1 with --lr_policy cosine (the cosine's period, in epochs)"),
    (["--lr", "-0.1"], "--lr -0.1 must not be negative"),
    (["--lambda_L1", "50"], "--lambda_L1 is a pix2pix option: --arch cyclegan has no use for it"),
    (["--ngf", "0"], "--ngf 0 must be at least 1 (filters)"),
    (["--ndf", "-3"], "--ndf -3 must be at least 1 (filters)"),
    (["--netD", "n_layers", "--n_layers_D", "-2"], "--n_layers_D -2 must not be negative"),
    (["--init_gain", "-1"], "--init_gain -1.0 must not be negative with --init_type normal"),
    (["--init_gain", "-1", "--init_type", "kaiming", "--norm", "batch"],
     "--init_gain -1.0 must not be negative with --norm batch (its weights are drawn around 1 with it)"),
    (["--print_freq", "-1"], "--print_freq -1 must not be negative"),
    (["--display_freq", "-2"], "--display_freq -2 must not be negative"),
    (["--save_latest_freq", "-3"], "--save_latest_freq -3 must not be negative"),
    (["--netD", "n_layers", "--n_layers_D", "6"], "--netD n_layers --n_layers_D 6 is too deep for --crop_size 32: "
                                                  "its 4x4 convs shrink the crop to 16 -> 8 -> 4 -> 2 -> 1, too "
                                                  "small for the next; use a larger --crop_size"),
    (["--crop_size", "20", "--load_size", "20"], "--netD basic (3 layers) is too deep for --crop_size 20: its 4x4 "
                                                 "convs shrink the crop to 10 -> 5 -> 2 -> 1, too small"),
    (["--beta1", "1.5"], "--beta1 1.5 must be in [0, 1) (Adam's first-moment decay)"),
    (["--seed", "-1"], "--seed -1 must be from 0 to 2**64 - 1"),
    (["--seed", str(2 ** 64)], f"--seed {2 ** 64} must be from 0 to 2**64 - 1"),
    (["--device", "tpu"], "--device 'tpu' is not a device; use auto, cpu, cuda or cuda:N"),
    (["--device", "meta"], "--device meta: fastgan trains on cpu or cuda devices"),
    (["--device", "cuda:abc"], "--device 'cuda:abc' is not a device"),
    (["--crop_size", "30", "--load_size", "30"], "--netG resnet_6blocks needs --crop_size a multiple of 4 "
                                                 "(got 30): use --crop_size 28"),
    (["--netG", "unet_128"], "--netG unet_128 needs --crop_size a multiple of 128 (got 32)"),
    (["--dataset_mode", "single"], "--dataset_mode single reads A images only, and training takes A and B"),
    (["--preprocess", "scale_width", "--load_size", "34"], "--preprocess scale_width makes every width --load_size "
                                                           "34: use --load_size 32"),
    (["--preprocess", "resize", "--load_size", "34"], "--preprocess resize makes every image's sides --load_size "
                                                      "34: use --load_size 32"),
    (["--preprocess", "resize", "--load_size", "16"], "--netD basic (3 layers) is too deep for --load_size 16"),
    (["--preprocess", "resize", "--padding_type", "zero", "--netD", "pixel", "--load_size", "4"],
     "--padding_type zero shrinks --load_size 4 to 1x1 pixel in its ResNet blocks"),
    (["--preprocess", "none", "--netG", "unet_128"], "x40 after --preprocess none; --netG unet_128 takes sides that "
                                                     "are multiples of 128"),
    (["--preprocess", "none", "--netD", "n_layers", "--n_layers_D", "4"], "x40 after --preprocess none; --netD "
                                                                         "n_layers takes sides of 48 pixels or more"),
    (["--netD", "pixel", "--crop_size", "4", "--load_size", "4"], "--netG resnet_6blocks takes sides of 5 pixels or "
                                                                  "more (got --crop_size 4)"),
    (["--netD", "pixel", "--padding_type", "zero", "--crop_size", "4", "--load_size", "4"],
     "--netG resnet_6blocks --padding_type zero shrinks --crop_size 4 to 1x1 pixel in its ResNet blocks, and --norm "
     "instance cannot normalize one value (the reference fails on it too): use a larger --crop_size"),
    (["--preprocess", "scale_width", "--load_size", "16"],
     "--netD basic (3 layers) is too deep for --load_size 16: its 4x4 convs shrink the width to 8 -> 4 -> 2 -> 1"),
    (["--preprocess", "none", "--gan_mode", "wgangp", "--lambda_gp", "10"], "--lambda_gp interpolates real and fake"),
    (["--compile", "nets", "--gan_mode", "wgangp", "--lambda_gp", "10"],
     "--compile nets with --lambda_gp: the gradient penalty differentiates the discriminators twice"),
    (["--continue_train"], "holds no latest_net_G_A.pth, latest_net_G_B.pth, latest_net_D_A.pth, "
                           "latest_net_D_B.pth and no training_state.pt; train without --continue_train first"),
])
def test_bad_options_are_one_clear_line(extra, message, unaligned_root, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        train_cli.main(tiny_args(unaligned_root, tmp_path, "bad") + extra)
    assert e.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "bad").exists() or os.listdir(tmp_path / "bad")  # no empty run folder left behind


def test_saves_and_epoch_ends_print_the_references_lines(unaligned_root, tmp_path, capsys):
    """For scripts that watch the reference's console (6 images per epoch, 2 epochs)."""
    train_cli.main(tiny_args(unaligned_root, tmp_path, "run") + ["--save_latest_freq", "4"])
    out = capsys.readouterr().out
    for line in ("saving the latest model (epoch 1, total_iters 4)", "saving the model at the end of epoch 1, iters 6",
                 "End of epoch 1 / 2 \t Time Taken: ", "learning rate 0.0002000 -> 0.0001000",
                 "saving the latest model (epoch 2, total_iters 8)", "saving the model at the end of epoch 2, iters 12",
                 "End of epoch 2 / 2 \t Time Taken: "):
        assert out.count(line) == 1, line
    assert out.index("end of epoch 1, iters 6") < out.index("End of epoch 1 / 2") < out.index("learning rate 0.0002")


def test_a_fresh_run_over_an_earlier_one_says_its_saves_replace_it(unaligned_root, tmp_path, capsys):
    args = tiny_args(unaligned_root, tmp_path, "run") + ["--max_iters", "1"]
    train_cli.main(args)
    assert "holds an earlier run" not in capsys.readouterr().out
    train_cli.main(args)
    assert (f"note: {tmp_path / 'run'} holds an earlier run (training_state.pt, latest_net_*); this run starts "
            "afresh and its saves replace those files (--continue_train resumes that run" in capsys.readouterr().out)


def test_the_options_files_keep_the_levels_as_typed(unaligned_root, tmp_path, monkeypatch):
    """channels_last resolved from the device's defaults reaches the loader (NHWC batches) but
    not train_opt.txt / .json, where it read as typed ("True [default: None]")."""
    import json

    import fastgan.data

    loaded_as = []
    real = fastgan.data.create_loader
    monkeypatch.setattr(fastgan.data, "create_loader", lambda opt, *a, **k: loaded_as.append(opt.channels_last)
                        or real(opt, *a, **k))
    train_cli.main(tiny_args(unaligned_root, tmp_path, "run") + ["--max_iters", "1"])
    assert loaded_as == [True]  # the CPU's default levels: accelerate, channels_last, ...
    assert json.loads((tmp_path / "run" / "train_opt.json").read_text())["channels_last"] is None
    text = (tmp_path / "run" / "train_opt.txt").read_text()
    assert [line.split(":", 1)[1].strip() for line in text.splitlines() if line.strip().startswith("channels_last:")] \
        == ["None"]


def test_frequencies_of_0_mean_never(unaligned_root, tmp_path):
    args = tiny_args(unaligned_root, tmp_path, "quiet") + ["--print_freq", "0", "--display_freq", "0",
                                                           "--save_latest_freq", "0", "--max_iters", "3"]
    assert train_cli.main(args)["iteration"] == 3
    run = tmp_path / "quiet"
    assert read_loss_log(str(run / "loss_log.jsonl")) == []
    assert not (run / "samples").exists() or not os.listdir(run / "samples")
    assert (run / "latest_net_G_A.pth").exists()  # the stop's save


def test_a_cyclegan_option_is_refused_by_pix2pix(aligned_root, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        train_cli.main(tiny_args(aligned_root, tmp_path, "p", "pix2pix") + ["--lambda_identity", "0.1"])
    assert e.value.code == 2
    assert "--lambda_identity is a cyclegan option: --arch pix2pix has no use for it" in capsys.readouterr().err


def test_a_level_the_device_cannot_run_is_refused_before_the_options_table(unaligned_root, tmp_path, capsys):
    """fastgan's own refusals of an option come before the table, as the reference's parser's
    do: the 60-line table preceded "--cuda_graphs needs a CUDA device"."""
    with pytest.raises(SystemExit) as e:
        train_cli.main(tiny_args(unaligned_root, tmp_path, "g") + ["--cuda_graphs", "true"])
    assert e.value.code == 2
    out, err = capsys.readouterr()
    assert "--cuda_graphs needs a CUDA device; this run is on cpu" in err and "Options" not in out


def test_continuing_another_arch_run_is_one_clear_line(unaligned_root, aligned_root, tmp_path, capsys):
    train_cli.main(tiny_args(unaligned_root, tmp_path, "run") + ["--max_iters", "1"])
    with pytest.raises(SystemExit):
        train_cli.main(tiny_args(aligned_root, tmp_path, "run", "pix2pix") + ["--continue_train"])
    assert "is a cyclegan run's (nets D_A, D_B, G_A, G_B), not one of this --arch pix2pix" in capsys.readouterr().err


def test_an_unreadable_training_state_is_one_clear_line(unaligned_root, tmp_path, capsys):
    args = tiny_args(unaligned_root, tmp_path, "run")
    train_cli.main(args + ["--max_iters", "1"])
    state = tmp_path / "run" / "training_state.pt"
    state.write_bytes(state.read_bytes()[:100])  # cut short, as by a full disk
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        train_cli.main(args + ["--continue_train"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert f"{state} cannot be read" in err and "move it away" in err and "Traceback" not in err


def test_a_resume_with_another_pool_size_keeps_the_first_saved_fakes(unaligned_root, tmp_path, capsys):
    """--pool_size changed on --continue_train: the pools keep what fits of the saved ones, and
    the run says so (it used to end in a ValueError traceback)."""
    args = tiny_args(unaligned_root, tmp_path, "run")
    train_cli.main(args + ["--pool_size", "4", "--max_iters", "5"])
    capsys.readouterr()
    result = train_cli.main(args + ["--pool_size", "2", "--continue_train", "--max_iters", "6"])
    assert result["iteration"] == 6
    assert "--pool_size 2, the run's 4: each image pool keeps the first 2 fakes it saved" in capsys.readouterr().out
    state = torch.load(tmp_path / "run" / "training_state.pt", map_location="cpu", weights_only=False)
    pools = state["model"]["pools"].values()
    assert all(pool["size"] == 2 and len(pool["images"]) == 2 for pool in pools), pools


def _pool_image_sizes(run_dir) -> set:
    """The (height, width) of every fake the saved pools hold, of either kind (list or ring)."""
    state = torch.load(run_dir / "training_state.pt", map_location="cpu", weights_only=False)
    sizes = set()
    for pool in state["model"]["pools"].values():
        images = pool["images"]
        held = images[: pool["count"]] if isinstance(images, torch.Tensor) else images
        sizes |= {tuple(t.shape[-2:]) for t in held}
    return sizes


@pytest.mark.parametrize("level", [[], ["--eager"]])
def test_a_resume_at_another_crop_size_starts_the_pools_empty(level, unaligned_root, tmp_path, capsys):
    """--continue_train with another --crop_size: the pools' saved fakes are of the run's size,
    which the device ring cannot hold and a batch of two cannot stack with this run's; the pools
    start empty, and the run says so (the ring ended in a ValueError traceback); not that they
    keep saved fakes up to another --pool_size."""
    args = tiny_args(unaligned_root, tmp_path, "run") + level + ["--batch_size", "2"]
    train_cli.main(args + ["--pool_size", "4", "--max_iters", "3"])
    assert _pool_image_sizes(tmp_path / "run") == {(32, 32)}
    capsys.readouterr()
    result = train_cli.main(args + ["--crop_size", "28", "--load_size", "32", "--pool_size", "3", "--continue_train",
                                    "--max_iters", "4"])
    assert result["iteration"] == 4 and result["stopped"] == "reached --max_iters 4"
    out = capsys.readouterr().out
    assert ("note: images of 28x28, the run's 32x32: the image pools start empty (their saved fakes are of the "
            "run's sizes)") in out and "each image pool keeps" not in out
    assert _pool_image_sizes(tmp_path / "run") == {(28, 28)}


def test_a_resume_that_resizes_to_another_load_size_starts_the_pools_empty(unaligned_root, tmp_path, capsys):
    """--preprocess resize makes squares of --load_size, not --crop_size: another --load_size at
    the resume empties the pools too."""
    args = tiny_args(unaligned_root, tmp_path, "run") + ["--preprocess", "resize", "--pool_size", "4"]
    train_cli.main(args + ["--load_size", "32", "--max_iters", "3"])
    assert _pool_image_sizes(tmp_path / "run") == {(32, 32)}
    capsys.readouterr()
    result = train_cli.main(args + ["--load_size", "36", "--continue_train", "--max_iters", "4"])
    assert result["iteration"] == 4
    assert "note: images of 36x36, the run's 32x32: the image pools start empty" in capsys.readouterr().out
    assert _pool_image_sizes(tmp_path / "run") == {(36, 36)}


def test_a_resume_that_crops_images_the_run_kept_whole_starts_the_pools_empty(tmp_path, capsys):
    """A run under --preprocess none (its pools hold fakes of each image's size) resumed with
    crops: the pools start empty, and the run says so (the device ring could not stack fakes of
    two sizes, nor take one size's for another's)."""
    root = str(tmp_path / "data")
    write_images_of_sizes(root, ("trainA", "trainB"), [(40, 48), (36, 44)], seed=5)
    args = tiny_args(root, tmp_path / "ckpt", "run") + ["--pool_size", "4"]
    train_cli.main(args + ["--preprocess", "none", "--max_iters", "3"])
    assert _pool_image_sizes(tmp_path / "ckpt" / "run") == {(40, 48), (36, 44)}
    capsys.readouterr()
    result = train_cli.main(args + ["--continue_train", "--max_iters", "4"])
    assert result["iteration"] == 4
    assert ("note: images of 32x32, the run's images kept their own sizes (--preprocess none): the image pools "
            "start empty") in capsys.readouterr().out
    assert _pool_image_sizes(tmp_path / "ckpt" / "run") == {(32, 32)}


def test_a_training_state_that_does_not_fit_is_one_clear_line(unaligned_root, tmp_path, capsys):
    args = tiny_args(unaligned_root, tmp_path, "run")
    train_cli.main(args + ["--max_iters", "1"])
    path = tmp_path / "run" / "training_state.pt"
    state = torch.load(path, map_location="cpu", weights_only=False)
    state["progress"]["phase"] = 1  # a field this fastgan does not know
    torch.save(state, path)
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        train_cli.main(args + ["--continue_train"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert f"{path} does not fit this run (TypeError: " in err and "train_opt.json" in err


def test_a_file_as_checkpoints_dir_is_one_clear_line(unaligned_root, tmp_path, capsys):
    (tmp_path / "file").write_text("")
    with pytest.raises(SystemExit) as e:
        train_cli.main(tiny_args(unaligned_root, tmp_path / "file", "run") + ["--max_iters", "1"])
    captured = capsys.readouterr()
    assert e.value.code == 2
    assert (f"error: --checkpoints_dir {tmp_path / 'file'}: {tmp_path / 'file'} is a file, not a folder "
            f"(this run's folder: {tmp_path / 'file' / 'run'})") in captured.err
    assert "loader:" not in captured.out  # said before the data is read


def test_the_references_train_command_line_runs(unaligned_root, tmp_path, capsys):
    """--model, --gpu_ids, the display options, --suffix and --verbose, as the reference takes them."""
    args = [a for a in tiny_args(unaligned_root, tmp_path, "ref") if a not in ("--arch", "cyclegan", "--device", "cpu")]
    result = train_cli.main(args + ["--model", "cycle_gan", "--gpu_ids", "-1", "--display_id", "0", "--no_html",
                                    "--display_port", "8097", "--suffix", "{netG}_size{load_size}", "--verbose",
                                    "--max_iters", "1"])
    out = capsys.readouterr().out
    assert result["iteration"] == 1
    assert "unused: --display_id, --display_port (the reference's visdom/wandb display" in out
    assert not (tmp_path / "ref_resnet_6blocks_size36" / "web").exists()  # --no_html
    assert "fastgan cyclegan on cpu" in out and "ResnetGenerator(" in out
    saved = json.load(open(tmp_path / "ref_resnet_6blocks_size36" / "train_opt.json"))
    assert saved["name"] == "ref_resnet_6blocks_size36" and saved["device"] == "cpu"
    # the options table lists the options fastgan drops as the reference's does: typed, else its defaults
    table = (tmp_path / "ref_resnet_6blocks_size36" / "train_opt.txt").read_text().splitlines()
    for name, value, default in [("suffix", "{netG}_size{load_size}", ""), ("display_id", "0", "1"),
                                 ("display_port", "8097", None), ("display_env", "main", None),
                                 ("display_ncols", "4", None), ("display_server", "http://localhost", None),
                                 ("use_wandb", "False", None), ("wandb_project_name", "CycleGAN-and-pix2pix", None)]:
        assert f"{name:>25}: {value:<30}" + ("" if default is None else f"\t[default: {default}]") in table, name
    # the options fastgan drops format the suffix too: as typed, else as the reference's defaults
    train_cli.main(args + ["--gpu_ids", "-1", "--display_id", "0", "--suffix", "g{gpu_ids}_{display_id}_{display_env}",
                           "--max_iters", "1"])
    assert (tmp_path / "ref_g-1_0_main" / "latest_net_G_A.pth").exists()


@pytest.mark.parametrize("extra,message", [
    (["--gpu_ids", "0,1"], "torchrun --nproc_per_node 2 -m fastgan.train"),
    (["--gpu_ids", "x"], "--gpu_ids 'x': expected -1 or GPU numbers"),
    (["--model", "pix2pix"], "--model pix2pix and --arch cyclegan disagree"),
    (["--gpu_ids", "-1", "--device", "cuda"], "--gpu_ids -1 (--device cpu) and --device cuda disagree"),
    (["--gpu_ids", "0", "--device", "cuda"], "--device cuda:0: no CUDA device is available here"),
    (["--gpu_ids", "-2"], "--gpu_ids '-2': expected -1 or GPU numbers"),
    (["--suffix", "{nope}"], "--suffix '{nope}': {nope} is not an option name"),
    (["--suffix", "{"], "--suffix '{' is not a format such as {netG}_size{load_size}"),
    # the reference's models fastgan has not: argparse's "invalid choice" did not say so
    (["--model", "colorization"], "--model colorization: the reference's colorization model (pix2pix from L to ab "
                                  "in Lab colour) is not in fastgan, which trains cycle_gan and pix2pix"),
    (["--dataset_mode", "colorization"], "--dataset_mode colorization: the reference's colorization dataset"),
    (["--model", "template"], "--model template: the reference's template for a model of one's own is not in"),
])
def test_reference_options_that_cannot_apply_are_one_clear_line(extra, message, unaligned_root, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        train_cli.main([a for a in tiny_args(unaligned_root, tmp_path, "bad") if a not in ("--device", "cpu")] + extra)
    assert e.value.code == 2
    assert message in capsys.readouterr().err


def test_every_option_is_described_in_help():
    from fastgan.option_help import HELP
    from fastgan.options import OPTION_NAMES

    assert set(HELP) == OPTION_NAMES - {"demo", "isTrain"}
    text = " ".join(run_module(["fastgan.train", "--help"], timeout=120).stdout.split())  # (wrapped to $COLUMNS)
    assert "--lambda_gp LAMBDA_GP" in text and "the reference: none" in text and "(default: None)" not in text
    # the demo's own defaults, which a run without --dataroot takes over those listed
    demo = text.split("Without --dataroot (the embedded demo) these defaults differ:")[1]
    assert "cyclegan: --load_size 72 --crop_size 64" in demo and "pix2pix: --load_size 144" in demo


def test_a_later_run_computes_with_the_kernels_an_earlier_one_measured(unaligned_root, tmp_path, monkeypatch,
                                                                      capsys):
    from fastgan.engine import choice_cache
    from fastgan.engine.state import measured_choices
    from fastgan.ops import _reflect_conv2d, _unfolded_conv

    def new_process():
        _reflect_conv2d.clear_selection_cache()
        _unfolded_conv.clear_selection_cache()

    monkeypatch.setenv(choice_cache.ENV, str(tmp_path / "choices"))
    new_process()
    train_cli.main(tiny_args(unaligned_root, tmp_path, "first") + ["--max_iters", "2"])
    path = choice_cache.cache_file(torch.device("cpu"))
    saved = torch.load(path, weights_only=False)
    assert saved == measured_choices() and saved["conv_choices"] and saved["unfolded_conv_choices"]
    # a choice the next run could not have measured itself: it must come from the file
    key, entry = next(iter(saved["unfolded_conv_choices"].items()))
    entry["choice"] = flipped = "aten" if entry["choice"] == "gemm" else "gemm"
    torch.save(saved, path)
    new_process()
    capsys.readouterr()
    train_cli.main(tiny_args(unaligned_root, tmp_path, "second") + ["--max_iters", "2"])
    count = len(saved["conv_choices"]) + len(saved["unfolded_conv_choices"])
    assert f"kernel choices: {count} measured by earlier runs on this machine, each taken if" in capsys.readouterr().out
    assert _unfolded_conv.selection_cache()[key]["choice"] == flipped
    # a run of another size saves its own shapes' choices alone (it saved every shape the file had)
    new_process()
    train_cli.main(tiny_args(unaligned_root, tmp_path, "bigger") + ["--max_iters", "1", "--load_size", "44",
                                                                     "--crop_size", "40"])
    state = torch.load(tmp_path / "bigger" / "training_state.pt", weights_only=False)
    for kind in ("conv_choices", "unfolded_conv_choices"):
        assert state[kind] and set(state[kind]).isdisjoint(saved[kind]), kind
    capsys.readouterr()

    monkeypatch.setenv(choice_cache.ENV, "off")  # measures anew, reads and writes nothing
    new_process()
    train_cli.main(tiny_args(unaligned_root, tmp_path, "third") + ["--max_iters", "2"])
    assert "kernel choices" not in capsys.readouterr().out and choice_cache.cache_file(torch.device("cpu")) is None
    assert torch.load(path, weights_only=False)["unfolded_conv_choices"][key]["choice"] == flipped
    threads = torch.get_num_threads()
    key_here = choice_cache.machine_key(torch.device("cpu"))
    torch.set_num_threads(threads + 1)
    try:
        assert choice_cache.machine_key(torch.device("cpu")) != key_here  # timings depend on threads
    finally:
        torch.set_num_threads(threads)
        new_process()  # no flipped choice left for the next test


def test_images_of_their_own_sizes_train_with_kernels_measured_once_per_size_class(tmp_path, capsys):
    """--preprocess none keeps each image's size: the run's measured kernels are keyed by size
    class (pixels within a power of 2), not by size, and the start says so; outside the run,
    by size again."""
    from fastgan import ops
    from fastgan.ops import _measure, _reflect_conv2d, _unfolded_conv

    root = tmp_path / "own_sizes"
    # (height, width): 1152, 1152 and 3360 pixels, two size classes (so in the ResNet blocks,
    # at a quarter of each side: 72, 72 and 210 pixels)
    write_images_of_sizes(root, ("trainA", "trainB"), [(32, 36), (36, 32), (56, 60)], seed=4)
    ops.clear_measured_choices()
    try:
        train_cli.main(tiny_args(str(root), tmp_path, "run") + ["--preprocess", "none", "--max_iters", "3"])
        keys = [*_reflect_conv2d.selection_cache(), *_unfolded_conv.selection_cache()]
    finally:
        ops.clear_measured_choices()
    assert "--preprocess none keeps each image's size: kernels measured once per size class (pixels within a " \
        "power of 2)" in capsys.readouterr().out
    assert keys and all("pixels 2^" in str(key) for key in keys)
    # (merged passes run images of one size as one batch: batch 1 to 3)
    block_inputs = {key[-1][0][0][2] for key in keys if key[0] == "forward" and key[-1][0][0][1] == 16}
    assert block_inputs == {"pixels 2^6", "pixels 2^8"}  # three sizes, two classes
    assert _measure.activation_shape((1, 16, 8, 9)) == (1, 16, 8, 9)  # by size again after the run


def test_saved_options_are_the_reference_names(unaligned_root, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(loader_select, "_said", set())  # the loader's line, said once a process, is said here
    train_cli.main(tiny_args(unaligned_root, tmp_path, "opts") + ["--max_iters", "1", "--lambda_identity", "0.25"])
    saved = json.load(open(tmp_path / "opts" / "train_opt.json"))
    assert saved["lambda_identity"] == 0.25 and saved["netG"] == "resnet_6blocks" and saved["no_dropout"] is True
    # the table is printed first (before the loader's line), as the reference's print_options does, then written
    table = (tmp_path / "opts" / "train_opt.txt").read_text()
    assert table.startswith("----------------- Options ---------------\n")
    assert capsys.readouterr().out.startswith(table)


def test_a_resume_writes_the_options_table_it_printed(unaligned_root, tmp_path, capsys):
    """The reference writes the table it prints; a resume taking the run's first epoch (2, where
    the command left --epoch_count at 1) wrote another than it printed."""
    args = tiny_args(unaligned_root, tmp_path, "run") + ["--n_epochs", "2"]
    train_cli.main(args + ["--epoch_count", "2", "--max_iters", "1"])
    capsys.readouterr()
    train_cli.main(args + ["--continue_train", "--max_iters", "2"])
    out, table = capsys.readouterr().out, (tmp_path / "run" / "train_opt.txt").read_text()
    assert f"{'epoch_count':>25}: {'1':<30}\n" in table and table in out


@pytest.mark.parametrize("arch", ["cyclegan", "pix2pix"])
def test_demo_run_without_dataroot_reports_its_ground_truth_score(arch, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FASTGAN_DEMO_DIR", str(tmp_path / "demo"))
    summary = train_cli.main(["--arch", arch, "--checkpoints_dir", str(tmp_path), "--max_iters", "2",
                              "--device", "cpu"])
    score = summary["demo_score"]
    assert 0 < score["identity"] < 1 and 0 < score["model"] < 1
    assert json.load(open(tmp_path / f"demo_{arch}" / "demo_score.json")) == score
    out = capsys.readouterr().out
    assert "training on the embedded" in out and "identity baseline" in out
    # the demo's test split translates with the run's checkpoint
    index = test_cli.main(["--name", f"demo_{arch}", "--checkpoints_dir", str(tmp_path), "--results_dir",
                           str(tmp_path / "results"), "--device", "cpu", "--num_test", "3"])
    assert open(index).read().count("<tr>") == 3


def test_a_run_folder_in_use_by_another_run_is_refused(unaligned_root, tmp_path, capsys):
    """Two runs under one --name mixed their checkpoints, options and loss records, and a later
    resume cut the first's records."""
    (tmp_path / "busy").mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from fastgan.engine.run_lock import "
                               "lock_run_folder; lock_run_folder(sys.argv[1]); print('locked', flush=True); "
                               "time.sleep(60)", str(tmp_path / "busy")],
                              cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(SystemExit) as e:
            train_cli.main(tiny_args(unaligned_root, tmp_path, "busy") + ["--max_iters", "1"])
        err = capsys.readouterr().err
        assert e.value.code == 2 and len(err.strip().splitlines()) == 1, err
        assert f"{tmp_path / 'busy'} is in use by another fastgan.train (pid {holder.pid} on " in err
        assert sorted(os.listdir(tmp_path / "busy")) == [".fastgan_train.lock"]
    finally:
        holder.kill()
        holder.wait()
    train_cli.main(tiny_args(unaligned_root, tmp_path, "busy") + ["--max_iters", "1"])  # its end freed it
    train_cli.main(tiny_args(unaligned_root, tmp_path, "busy") + ["--max_iters", "1"])  # and this run's end


def test_a_resume_with_another_seed_says_what_changes(unaligned_root, tmp_path, capsys):
    """The data stream is drawn from (seed, epoch, index): mid-epoch, another --seed takes the
    rest of the epoch in another order, silently before."""
    args = tiny_args(unaligned_root, tmp_path, "run")
    train_cli.main(args + ["--max_iters", "1"])
    capsys.readouterr()
    train_cli.main(args + ["--seed", "9", "--continue_train", "--max_iters", "2"])
    out = capsys.readouterr().out
    assert ("note: --seed 9, the run's 7: its data order, crops and flips follow seed 9 from here; the rest of "
            "epoch 1 takes its images in that order's") in out
    train_cli.main(args + ["--seed", "9", "--continue_train", "--max_iters", "3"])  # the state's seed now: no note
    assert "note: --seed" not in capsys.readouterr().out


def test_a_refused_new_run_leaves_no_folder_and_no_lock(unaligned_root, tmp_path, monkeypatch, capsys):
    """Refused after its folder was made (the model could not be built): nothing is left, and
    no lock is held (a Trainer locks its folder while it runs)."""
    from fastgan.engine import run_lock, trainer

    def cannot_build(opt):
        raise ValueError("no model here")

    monkeypatch.setattr(trainer, "model_from_options", cannot_build)
    with pytest.raises(SystemExit):
        train_cli.main(tiny_args(unaligned_root, tmp_path, "new"))
    assert "no model here" in capsys.readouterr().err
    assert not (tmp_path / "new").exists() and os.path.realpath(tmp_path / "new") not in run_lock._held


def test_a_refused_run_leaves_the_folder_another_run_made_meanwhile(unaligned_root, tmp_path, monkeypatch, capsys):
    """Two runs started at once under a new --name: the one refused found the folder holding only
    the other's lock and removed it, lock and all, and a third run then locked freely."""
    from fastgan.engine import models

    started = []
    real = models.resolve_device

    def the_other_run_starts_now(device):  # after this run found no folder, before its Trainer
        if started:
            return real(device)
        started.append(subprocess.Popen(
            [sys.executable, "-c", "import os, sys, time; from fastgan.engine.run_lock import lock_run_folder; "
             "os.makedirs(sys.argv[1]); lock_run_folder(sys.argv[1]); print('locked', flush=True); time.sleep(60)",
             str(tmp_path / "race")], cwd=REPO, stdout=subprocess.PIPE, text=True))
        assert started[0].stdout.readline().strip() == "locked"
        return real(device)

    monkeypatch.setattr(models, "resolve_device", the_other_run_starts_now)
    try:
        with pytest.raises(SystemExit):
            train_cli.main(tiny_args(unaligned_root, tmp_path, "race"))
        assert "is in use by another fastgan.train" in capsys.readouterr().err
        assert os.listdir(tmp_path / "race") == [".fastgan_train.lock"]
    finally:
        for p in started:
            p.kill()
            p.wait()


def test_a_state_with_nan_is_refused_but_an_earlier_epochs_networks_continue(unaligned_root, tmp_path, capsys):
    """A diverged (or damaged) training_state.pt: the exact resume is refused naming it; the
    reference's continue from an earlier epoch's networks, which never reads the state, runs."""
    args = tiny_args(unaligned_root, tmp_path, "run")
    train_cli.main(args + ["--max_iters", "8"])  # 6 images an epoch: 1_net_* saved, then 2 more
    path = tmp_path / "run" / "training_state.pt"
    state = torch.load(path, weights_only=False)
    next(iter(state["model"]["nets"]["G_A"].values())).fill_(float("nan"))
    torch.save(state, path)
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        train_cli.main(args + ["--continue_train", "--max_iters", "9"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and f"{path} holds non-finite values (nets.G_A." in err and "--epoch N" in err
    result = train_cli.main(args + ["--continue_train", "--epoch", "1", "--epoch_count", "2", "--max_iters", "2"])
    assert result["iteration"] == 2


def test_the_bar_shows_each_records_losses_as_its_line_is_printed(unaligned_root, tmp_path, monkeypatch):
    """The progress bar redrawn under a printed loss line carries that line's record, not the
    one before it. A record holds the logs module's progress and timing fields and the losses."""
    from tqdm import tqdm

    from fastgan.engine import trainer

    events = []

    class RecordingBar(tqdm):
        def display(self, *args, **kwargs):
            events.append(("bar", self.postfix or ""))
            return super().display(*args, **kwargs)

    real_line = trainer.reference_loss_line

    def noted_line(record, names):
        events.append(("line", record))
        return real_line(record, names)

    monkeypatch.setattr(trainer, "tqdm", RecordingBar)
    monkeypatch.setattr(trainer, "reference_loss_line", noted_line)
    train_cli.main(tiny_args(unaligned_root, tmp_path, "run") + ["--max_iters", "4"])
    lines = [i for i, (kind, _) in enumerate(events) if kind == "line"]
    assert len(lines) == 4
    assert set(events[lines[0]][1]) == {*PROGRESS_FIELDS, *TIMING_FIELDS, *CycleGAN.loss_names}
    for i in lines:
        record = events[i][1]
        shown = next(postfix for kind, postfix in events[i + 1:] if kind == "bar")
        assert f"D_A {record['D_A']:.3f}" in shown and f"G_A {record['G_A']:.3f}" in shown, (record, shown)


def test_the_speed_is_that_since_the_previous_record(monkeypatch):
    """images_per_second in a record is the speed since the record before (the first: since the
    start), not the run's average, which the first iteration's compiling would hold down."""
    from fastgan.engine import trainer

    clock = iter([10.0, 12.0, 13.0])
    monkeypatch.setattr(trainer.time, "perf_counter", lambda: next(clock))
    tally = trainer.RunTally(start=0.0)
    tally.images = 10
    assert tally.rate() == 1.0  # 10 images in 10 s
    tally.images = 30
    assert tally.rate() == 10.0  # 20 in 2 s (the run's average: 2.5)
    tally.images = 31
    assert tally.rate() == 1.0


def test_a_resume_on_another_loader_or_thread_count_says_its_losses_are_not_the_runs(unaligned_root, tmp_path,
                                                                                      capsys):
    """--loader auto picks by the free memory of the moment and torch's threads default to the
    cores: a resume with DALI where the run had PIL's pixels (or the reverse), or with another
    CPU thread count, goes on and says so. torch and cache give the same pixels: no note."""
    args = tiny_args(unaligned_root, tmp_path, "run") + ["--max_iters", "2"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train_cli.main(args + ["--loader", "torch"])
        capsys.readouterr()
        train_cli.main(args[:-1] + ["3", "--loader", "cache", "--continue_train"])
        assert "note:" not in capsys.readouterr().out
        state_file = tmp_path / "run" / "training_state.pt"
        state = torch.load(state_file, map_location="cpu", weights_only=False)
        assert state["loader"] == "cache" and state["cpu_threads"] == 1
        state["loader"] = "dali"  # as a run on DALI saves it (DALI need not be installed for this test)
        torch.save(state, state_file)
        torch.set_num_threads(2)
        train_cli.main(args[:-1] + ["4", "--loader", "torch", "--continue_train"])
    finally:
        torch.set_num_threads(threads)
    out = capsys.readouterr().out
    assert "note: loader torch, the run's dali: DALI resizes with other rounding" in out
    assert "note: 2 CPU threads, the run's 1: sums add in another order" in out


def test_a_resume_says_where_the_state_does_not_tell_its_levels_or_its_ops_differ(unaligned_root, tmp_path,
                                                                                   capsys):
    """A state saved by an earlier fastgan holds no speed levels, and none held which back ends
    computed the ops (fastgan._C built since, or not loaded): such resumes went on silently,
    their losses drifting up to 1e-2 from the run's by iteration 12."""
    args = tiny_args(unaligned_root, tmp_path, "run") + ["--max_iters", "2"]
    train_cli.main(args)
    state_file = tmp_path / "run" / "training_state.pt"
    state = torch.load(state_file, map_location="cpu", weights_only=False)
    assert set(state["backends"]) == {"cycle_losses", "instance_norm_act", "l1_loss", "reflect_conv2d"}
    capsys.readouterr()
    train_cli.main(args[:-1] + ["3", "--continue_train"])
    assert "note:" not in capsys.readouterr().out
    state = torch.load(state_file, map_location="cpu", weights_only=False)
    del state["levels"]
    now = state["backends"]["l1_loss"]
    state["backends"]["l1_loss"] = "triton"
    torch.save(state, state_file)
    train_cli.main(args[:-1] + ["4", "--continue_train"])
    out = capsys.readouterr().out
    assert "note: training_state.pt does not say which speed levels the run had (an earlier fastgan" in out
    assert f"note: fastgan.ops back ends l1_loss {now} (the run's triton): they round otherwise" in out
