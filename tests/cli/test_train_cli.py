"""`python -m fastgan.train` and `python -m fastgan.test` end to end, with tiny models."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from PIL import Image

from fastgan import test as test_cli
from fastgan import train as train_cli
from fastgan.engine.logs import PROGRESS_FIELDS, TIMING_FIELDS, read_loss_log
from fastgan.image_pages import tensor2im

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# the images each model shows, in the reference's order (cyclegan: identity loss on)
VISUAL_NAMES = {"cyclegan": ("real_A", "fake_B", "rec_A", "idt_B", "real_B", "fake_A", "rec_B", "idt_A"),
                "pix2pix": ("real_A", "fake_B", "real_B")}


def write_images(folder, n, size, seed, width_factor=1):
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        array = rng.integers(0, 256, (size, size * width_factor, 3), dtype=np.uint8)
        Image.fromarray(array).save(os.path.join(folder, f"img{i:03d}.png"))


@pytest.fixture(scope="module")
def unaligned_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("unaligned")
    write_images(root / "trainA", 6, 40, seed=1)
    write_images(root / "trainB", 5, 40, seed=2)
    write_images(root / "testA", 3, 40, seed=3)
    return str(root)


@pytest.fixture(scope="module")
def aligned_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("aligned")
    write_images(root / "train", 5, 40, seed=4, width_factor=2)
    write_images(root / "test", 2, 40, seed=5, width_factor=2)
    return str(root)


def tiny_args(root, checkpoints, name, arch="cyclegan"):
    return ["--arch", arch, "--dataroot", root, "--checkpoints_dir", str(checkpoints), "--name", name,
            "--ngf", "4", "--ndf", "4", "--netG", "resnet_6blocks", "--load_size", "36", "--crop_size", "32",
            "--n_epochs", "1", "--n_epochs_decay", "1", "--print_freq", "1", "--display_freq", "4",
            "--num_threads", "0", "--device", "cpu", "--save_epoch_freq", "1", "--seed", "7"]


def load(path):
    return torch.load(path, map_location="cpu", weights_only=True)


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
    assert "continuing from the epoch 1's networks" in out and "training_state.pt unused" in out
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


def test_continuing_a_run_started_at_another_epoch_resumes_it(unaligned_root, tmp_path, capsys):
    """A run whose first epoch is 2, stopped, then continued with the same --epoch_count: the
    exact training state, not the reference's restart (the command names the run's own first
    epoch); an --epoch_count past the schedule trains nothing and says so."""
    args = tiny_args(unaligned_root, tmp_path, "run") + ["--epoch_count", "2", "--n_epochs", "2"]  # epochs 2..3
    assert train_cli.main(args + ["--max_iters", "3"])["iteration"] == 3
    capsys.readouterr()
    result = train_cli.main(args + ["--continue_train"])
    assert "resumed from" in capsys.readouterr().out
    assert result["iteration"] == 12 and result["images"] == 9 and result["epoch"] == 4
    result = train_cli.main(args + ["--continue_train", "--epoch", "3", "--epoch_count", "5"])
    assert result["images"] == 0
    assert "nothing to train: epoch 5 is past the schedule's last, 3" in capsys.readouterr().out


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
    assert "SIGINT: stopping once this save is written" in err and "stopped at once" in err
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
    assert e.value.code == 128 + signal.SIGTERM and "stopped at once" in capsys.readouterr().err
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

    stop = trainer.StopRequest()
    stop._handle(signal.SIGTERM, None)
    assert stop.requested and stop.signal == signal.SIGTERM
    assert "SIGTERM: stopping after this iteration" in capsys.readouterr().err
    with pytest.raises(trainer.StopNow) as second:
        stop._handle(signal.SIGTERM, None)
    monkeypatch.setattr(trainer.Trainer, "run", lambda self: (_ for _ in ()).throw(second.value))
    with pytest.raises(SystemExit) as e:
        train_cli.main(tiny_args(unaligned_root, tmp_path, "run"))
    assert e.value.code == 128 + signal.SIGTERM
    assert "stopped at once" in capsys.readouterr().err


def test_a_run_removes_the_unfinished_saves_a_killed_run_left(unaligned_root, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = f".training_state.pt.{socket.gethostname()}.{int(dead.stdout)}.ab_c.tmp"
    (run / stale).write_bytes(b"PK half a state")
    train_cli.main(tiny_args(unaligned_root, tmp_path, "run") + ["--max_iters", "1"])
    assert not (run / stale).exists()
    assert f"removed 1 unfinished checkpoint file(s) a killed run left in {run}: {stale}" in capsys.readouterr().out


def test_inference_cli_translates_with_a_saved_checkpoint(unaligned_root, tmp_path):
    train_cli.main(tiny_args(unaligned_root, tmp_path, "run") + ["--max_iters", "2"])
    index = test_cli.main(["--name", "run", "--checkpoints_dir", str(tmp_path), "--results_dir",
                           str(tmp_path / "results"), "--device", "cpu", "--eval", "--display_winsize", "128"])
    html = open(index).read()
    images = os.path.join(os.path.dirname(index), "images")
    assert sorted(os.listdir(images)) == sorted(f"img{i:03d}_{k}.png" for i in range(3) for k in ("real", "fake"))
    assert html.count("<tr>") == 3 and "img000_fake.png" in html
    assert html.count("style='width:128px'") == 6 and html.index("<h3>img000</h3>") < html.index("<h3>img001</h3>")
    table = (tmp_path / "run" / "test_opt.txt").read_text()  # as the reference's test writes it
    assert f"{'phase':>25}: {'test':<30}\t[default: train]" in table and (tmp_path / "run" / "train_opt.txt").exists()
    assert f"{'model':>25}: {'cycle_gan':<30}\n" in table and f"{'gpu_ids':>25}: {'-1':<30}\t[default: 0]" in table
    assert f"{'eval':>25}: {'True':<30}\t[default: False]" in table  # the test's own options too
    assert f"{'num_test':>25}: {'50':<30}" in table.splitlines()
    assert f"{'dataset_mode':>25}: {'single':<30}\t[default: unaligned]" in table  # how testA/ was read

    # the written images are the input and G_A of it, as tensor2im writes them
    x = translated_inputs(["--name", "run", "--checkpoints_dir", str(tmp_path)])[0]["A"][None]
    G = plain_generator(tmp_path / "run" / "latest_net_G_A.pth")
    with torch.no_grad():
        for name, value in (("real", x), ("fake", G(x))):
            assert_written(os.path.join(images, f"img000_{name}.png"), value)


def translated_inputs(args):
    """The dataset fastgan.test translates for `args`: its items are the generators' exact inputs."""
    from fastgan.data import create_dataset

    opt, tool, training = test_cli.test_options(test_cli.parse(args))
    return create_dataset(test_cli.input_data(opt, tool, training)[1])


def plain_generator(path):
    from fastgan.models import define_G, load_reference_checkpoint

    G = define_G(3, 3, 4, "resnet_6blocks", norm="instance")
    load_reference_checkpoint(G, str(path))
    return G.eval()


def assert_written(path, value):
    """The PNG at `path` holds `value` (1 x C x H x W in [-1, 1]) as tensor2im writes it, to one
    level where float rounding puts a value on the other side of a truncation step."""
    written = np.asarray(Image.open(path), dtype=int)
    want = tensor2im(value[0]).astype(int)
    assert np.abs(written - want).max() <= 1, path


def test_saved_images_are_the_references_tensor2im():
    """(x + 1) / 2 * 255 truncated, not rounded; one channel tiled to RGB; out of range clamped."""
    x = torch.tensor([-1.5, -1.0, -0.999, 0.0, 0.5, 0.999, 1.0, 2.0]).view(1, 1, 8)
    image = tensor2im(x)
    assert image.shape == (1, 8, 3) and image.dtype == np.uint8
    assert image[0, :, 0].tolist() == [0, 0, 0, 127, 191, 254, 255, 255]
    assert (image[..., 0] == image[..., 2]).all()
    rgb = torch.rand(3, 2, 5) * 2 - 1
    assert (tensor2im(rgb) == ((rgb + 1) / 2 * 255).to(torch.uint8).permute(1, 2, 0).numpy()).all()
    with pytest.raises(ValueError, match="expected 1 or 3 channels"):
        tensor2im(torch.zeros(2, 4, 4))


@pytest.mark.parametrize("extra,message", [
    (["--num_test", "-1"], "--num_test -1 must not be negative"),
    (["--display_winsize", "-3"], "--display_winsize -3 must be positive (pixels)"),
    (["--checkpoint", "EMPTY"], "EMPTY: empty"),
    (["--checkpoint", "LFS"], "a Git LFS pointer"),
    (["--checkpoint", "GARBAGE"], "not a PyTorch network file"),
    (["--checkpoint", "FOLDER"], "is a folder, not a network file"),
    (["--results_dir", "FILE"], "Not a directory"),
])
def test_inference_cli_bad_input_is_one_clear_line(extra, message, unaligned_root, tmp_path, capsys):
    train_cli.main(tiny_args(unaligned_root, tmp_path, "run") + ["--max_iters", "1"])
    files = {"EMPTY": b"", "LFS": b"version https://git-lfs.github.com/spec/v1\noid sha256:00\n",
             "GARBAGE": b"not a checkpoint" * 10, "FILE": b"a file"}
    for key, content in files.items():
        (tmp_path / key).write_bytes(content)
    (tmp_path / "FOLDER").mkdir()
    extra = [str(tmp_path / e) if e in (*files, "FOLDER") else e for e in extra]
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        test_cli.main(["--name", "run", "--checkpoints_dir", str(tmp_path), "--dataroot",
                       os.path.join(unaligned_root, "testA"), "--results_dir", str(tmp_path / "results"), *extra])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err


def test_inference_cli_honours_a_typed_direction_on_pairs(aligned_root, tmp_path, capsys):
    """The reference's pix2pix test with --direction BtoA: real_A is the right half."""
    train_cli.main(tiny_args(aligned_root, tmp_path, "p2p", "pix2pix") + ["--max_iters", "1"])
    index = test_cli.main(["--name", "p2p", "--checkpoints_dir", str(tmp_path), "--dataroot", aligned_root,
                           "--results_dir", str(tmp_path / "results"), "--direction", "BtoA"])
    assert "note: --direction BtoA is not the run's (AtoB" in capsys.readouterr().out
    images = os.path.join(os.path.dirname(index), "images")
    with Image.open(os.path.join(aligned_root, "test", "img000.png")) as pair:
        right = np.asarray(pair.crop((40, 0, 80, 40)).resize((32, 32), Image.BICUBIC), dtype=np.float32)
    real_A = np.asarray(Image.open(os.path.join(images, "img000_real_A.png")), dtype=np.float32)
    assert np.abs(real_A - right).max() <= 2


def test_inference_cli_model_suffix_b_takes_the_b_side_with_its_channels(unaligned_root, tmp_path):
    """G_B of a run with --input_nc 1 --output_nc 3 takes 3-channel B images, from testB."""
    train_cli.main(tiny_args(unaligned_root, tmp_path, "gray") + ["--input_nc", "1", "--lambda_identity", "0",
                                                                  "--max_iters", "1"])
    os.makedirs(tmp_path / "data" / "testB")
    write_images(tmp_path / "data" / "testB", 2, 40, seed=8)
    os.makedirs(tmp_path / "data" / "testA")
    index = test_cli.main(["--name", "gray", "--checkpoints_dir", str(tmp_path), "--dataroot", str(tmp_path / "data"),
                           "--results_dir", str(tmp_path / "results"), "--model", "test", "--model_suffix", "_B"])
    images = sorted(os.listdir(os.path.join(os.path.dirname(index), "images")))
    assert images == ["img000_fake.png", "img000_real.png", "img001_fake.png", "img001_real.png"]


def test_model_test_loads_the_runs_plain_g_as_the_reference_does(unaligned_root, tmp_path, capsys):
    """The reference's test model loads G + the empty suffix: with latest_net_G.pth beside
    G_A and G_B (its documented way of testing one side: copy it to latest_net_G.pth), that
    file is translated with, not G_A."""
    import shutil

    train_cli.main(tiny_args(unaligned_root, tmp_path, "two") + ["--max_iters", "1"])
    run = tmp_path / "two"
    shutil.copy(run / "latest_net_G_B.pth", run / "latest_net_G.pth")
    common = ["--name", "two", "--checkpoints_dir", str(tmp_path), "--dataroot", os.path.join(unaligned_root, "testA"),
              "--model", "test", "--num_test", "1"]
    capsys.readouterr()
    plain = test_cli.main(common + ["--results_dir", str(tmp_path / "plain")])
    assert "with G from " + str(run / "latest_net_G.pth") in capsys.readouterr().out
    side_b = test_cli.main(common + ["--results_dir", str(tmp_path / "b"), "--model_suffix", "_B"])

    def fake(index):
        return np.asarray(Image.open(os.path.join(os.path.dirname(index), "images", "img000_fake.png")))

    assert np.array_equal(fake(plain), fake(side_b))


def test_model_test_builds_the_generator_with_the_typed_channels(unaligned_root, tmp_path):
    """--model test --model_suffix _B --input_nc 3 --output_nc 1, the reference's command line
    for G_B of a run trained 1 -> 3: the typed counts are the loaded generator's own."""
    train_cli.main(tiny_args(unaligned_root, tmp_path, "gray") + ["--input_nc", "1", "--lambda_identity", "0",
                                                                  "--max_iters", "1"])
    index = test_cli.main(["--name", "gray", "--checkpoints_dir", str(tmp_path), "--dataroot",
                           os.path.join(unaligned_root, "testA"), "--results_dir", str(tmp_path / "results"),
                           "--model", "test", "--model_suffix", "_B", "--input_nc", "3", "--output_nc", "1",
                           "--num_test", "1"])
    with Image.open(os.path.join(os.path.dirname(index), "images", "img000_real.png")) as real:
        assert real.mode == "RGB"  # read with input_nc 3
    # one count typed: the other is the run's for G_B (3 in), not its G_A's (1 in)
    test_cli.main(["--name", "gray", "--checkpoints_dir", str(tmp_path), "--dataroot",
                   os.path.join(unaligned_root, "testA"), "--results_dir", str(tmp_path / "results1"),
                   "--model", "test", "--model_suffix", "_B", "--output_nc", "1", "--num_test", "1"])


def test_a_typed_model_is_honoured(unaligned_root, tmp_path, capsys):
    """--model cycle_gan on a folder without testB/ is refused (the reference fails there too),
    not run as one generator; --model test --dataset_mode single reads the dataroot itself,
    recursively, as the reference's single dataset."""
    train_cli.main(tiny_args(unaligned_root, tmp_path, "run") + ["--max_iters", "1"])
    common = ["--name", "run", "--checkpoints_dir", str(tmp_path), "--results_dir", str(tmp_path / "results")]
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        test_cli.main(common + ["--dataroot", unaligned_root, "--model", "cycle_gan"])
    assert e.value.code == 2
    assert "--model cycle_gan tests both generators on testA/ and testB/" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        test_cli.main(common + ["--dataroot", str(tmp_path / "nowhere")])
    assert f"--dataroot {tmp_path / 'nowhere'} does not exist" in capsys.readouterr().err
    index = test_cli.main(common + ["--dataroot", unaligned_root, "--model", "test", "--dataset_mode", "single"])
    images = os.listdir(os.path.join(os.path.dirname(index), "images"))
    assert len(images) == 2 * (6 + 5 + 3)  # trainA, trainB and testA, not testA alone


def test_the_result_page_has_the_references_title(unaligned_root, tmp_path):
    train_cli.main(tiny_args(unaligned_root, tmp_path, "run") + ["--max_iters", "1"])
    index = test_cli.main(["--name", "run", "--checkpoints_dir", str(tmp_path), "--results_dir",
                           str(tmp_path / "results"), "--dataroot", os.path.join(unaligned_root, "testA"),
                           "--model", "test", "--num_test", "1", "--phase", "val"])
    with open(index) as f:
        assert "<title>Experiment = run, Phase = val, Epoch = latest</title>" in f.read()


def test_sizes_taken_from_the_run_are_said(unaligned_root, tmp_path, capsys):
    """The reference's test reads the command line alone: sizes fastgan takes from the run's
    train_opt.json instead are named where they differ from its defaults."""
    train_cli.main(tiny_args(unaligned_root, tmp_path, "run") + ["--max_iters", "1", "--preprocess", "crop"])
    common = ["--name", "run", "--checkpoints_dir", str(tmp_path), "--results_dir", str(tmp_path / "results"),
              "--dataroot", os.path.join(unaligned_root, "testA"), "--model", "test", "--num_test", "1"]
    capsys.readouterr()
    test_cli.main(common)
    assert ("note: --preprocess crop --crop_size 32 from the run's train_opt.json (the reference's test would "
            "take --preprocess resize_and_crop --crop_size 256 unless typed)") in capsys.readouterr().out
    test_cli.main(common + ["--preprocess", "crop", "--crop_size", "32"])
    assert "note: --" not in capsys.readouterr().out


def test_inference_cli_names_an_image_the_unet_cannot_take(aligned_root, tmp_path, capsys):
    train_cli.main(tiny_args(aligned_root, tmp_path, "p2p", "pix2pix") + ["--netG", "unet_128", "--load_size", "128",
                                                                          "--crop_size", "128", "--max_iters", "1"])
    with pytest.raises(SystemExit) as e:
        test_cli.main(["--name", "p2p", "--checkpoints_dir", str(tmp_path), "--dataroot", aligned_root,
                       "--results_dir", str(tmp_path / "results"), "--preprocess", "none"])
    assert e.value.code == 2
    assert "40x40 after --preprocess none; --netG unet_128 takes sides that are multiples of 128" in \
        capsys.readouterr().err


def test_inference_cli_formats_the_suffix_with_the_tests_options(unaligned_root, tmp_path):
    """The reference's test defaults load_size to crop_size: --suffix sz{load_size} names run_sz32."""
    train_cli.main(tiny_args(unaligned_root, tmp_path, "run_sz32") + ["--max_iters", "1"])
    index = test_cli.main(["--name", "run", "--suffix", "sz{load_size}", "--checkpoints_dir", str(tmp_path),
                           "--dataroot", os.path.join(unaligned_root, "testA"), "--results_dir",
                           str(tmp_path / "results"), "--crop_size", "32"])
    assert os.path.basename(os.path.dirname(os.path.dirname(index))) == "run_sz32"


def test_inference_cli_loads_the_networks_load_iter_names(unaligned_root, tmp_path, capsys):
    """--load_iter N: iter_N_net_G_A.pth (--save_by_iter's files), results in
    {phase}_{epoch}_iterN, as the reference's test."""
    train_cli.main(tiny_args(unaligned_root, tmp_path, "run") + ["--max_iters", "4", "--save_by_iter",
                                                                 "--save_latest_freq", "2"])
    saved = sorted(f for f in os.listdir(tmp_path / "run") if f.endswith("_net_G_A.pth"))
    assert "iter_2_net_G_A.pth" in saved, saved
    index = test_cli.main(["--name", "run", "--checkpoints_dir", str(tmp_path), "--results_dir",
                           str(tmp_path / "results"), "--device", "cpu", "--load_iter", "2", "--num_test", "1"])
    assert os.path.dirname(index) == str(tmp_path / "results" / "run" / "test_latest_iter2")
    assert "iter_2_net_G_A.pth" in capsys.readouterr().out
    with pytest.raises(SystemExit):  # no such iteration saved: the missing file is named
        test_cli.main(["--name", "run", "--checkpoints_dir", str(tmp_path), "--load_iter", "3"])
    assert "iter_3_net_G_A.pth" in capsys.readouterr().err


def test_inference_cli_on_an_unaligned_root_translates_its_phase_split(unaligned_root, tmp_path):
    """--dataroot holding trainA/trainB/testA: with testA alone, the testA images through G_A, never
    the other domain's or split's; --model test on the train split: trainB's through G_B with
    BtoA. The reference's base options that a test has no use for are accepted."""
    train_cli.main(tiny_args(unaligned_root, tmp_path, "run") + ["--max_iters", "1"])
    common = ["--name", "run", "--checkpoints_dir", str(tmp_path), "--dataroot", unaligned_root,
              "--results_dir", str(tmp_path / "results"), "--device", "cpu"]

    def translated(index):
        return sorted(os.listdir(os.path.join(os.path.dirname(index), "images")))

    index = test_cli.main(common + ["--netD", "basic", "--ndf", "4", "--n_layers_D", "3", "--batch_size", "1",
                                    "--no_flip", "--serial_batches", "--num_threads", "4", "--init_type", "normal",
                                    "--init_gain", "0.02"])
    assert translated(index) == sorted(f"img{i:03d}_{k}.png" for i in range(3) for k in ("real", "fake"))
    real = np.asarray(Image.open(os.path.join(os.path.dirname(index), "images", "img002_real.png")))
    with Image.open(os.path.join(unaligned_root, "testA", "img002.png")) as source:  # load = crop: 32x32
        assert np.abs(real.astype(int) - np.asarray(source.resize((32, 32), Image.BICUBIC), dtype=int)).max() <= 1
    index = test_cli.main(common + ["--phase", "train", "--direction", "BtoA", "--model", "test"])
    assert os.path.dirname(index).endswith("train_latest")
    assert len(translated(index)) == 2 * 5  # trainB's 5 images


def test_inference_cli_on_both_domains_is_the_references_cycle_gan_test(unaligned_root, tmp_path):
    """{phase}A and {phase}B both there (the train split here: 6 A, 5 B images): both generators
    both ways, max(|A|, |B|) items with B = index mod |B|, the reference's six images per item."""
    train_cli.main(tiny_args(unaligned_root, tmp_path, "run") + ["--max_iters", "1"])
    index = test_cli.main(["--name", "run", "--checkpoints_dir", str(tmp_path), "--dataroot", unaligned_root,
                           "--results_dir", str(tmp_path / "results"), "--phase", "train", "--eval"])
    images = os.path.join(os.path.dirname(index), "images")
    names = ("real_A", "fake_B", "rec_A", "real_B", "fake_A", "rec_B")
    assert sorted(os.listdir(images)) == sorted(f"img{i:03d}_{k}.png" for i in range(6) for k in names)

    def read(stem, name):
        return torch.from_numpy(np.asarray(Image.open(os.path.join(images, f"{stem}_{name}.png")),
                                           dtype=np.float32) / 127.5 - 1).permute(2, 0, 1)[None]

    nets = {net: plain_generator(tmp_path / "run" / f"latest_net_{net}.pth") for net in ("G_A", "G_B")}
    item = translated_inputs(["--name", "run", "--checkpoints_dir", str(tmp_path), "--dataroot", unaligned_root,
                              "--phase", "train", "--eval"])[5]
    with torch.no_grad():  # item 5: A = trainA/img005, B = trainB/img000 (5 mod 5)
        real_A, real_B = item["A"][None], item["B"][None]
        with Image.open(os.path.join(unaligned_root, "trainB", "img000.png")) as b:
            source_B = torch.from_numpy(np.asarray(b.resize((32, 32), Image.BICUBIC), dtype=np.float32))
        assert (read("img005", "real_B")[0].permute(1, 2, 0) - (source_B / 127.5 - 1)).abs().max() <= 1.5 / 127.5
        for name, value in (("real_A", real_A), ("fake_B", nets["G_A"](real_A)),
                            ("rec_A", nets["G_B"](nets["G_A"](real_A))), ("real_B", real_B),
                            ("fake_A", nets["G_B"](real_B)), ("rec_B", nets["G_A"](nets["G_B"](real_B)))):
            assert_written(os.path.join(images, f"img005_{name}.png"), value)


def test_inference_cli_writes_a_repeated_file_over_as_the_reference(unaligned_root, tmp_path):
    """BtoA on the train split: the A side (trainB) has 5 images, the B side 6, so item 5
    meets trainB/img000 again: its images are written over under the same name (the
    reference's results), with item 5's B side, not kept under a second name."""
    train_cli.main(tiny_args(unaligned_root, tmp_path, "run") + ["--max_iters", "1"])
    args = ["--name", "run", "--checkpoints_dir", str(tmp_path), "--dataroot", unaligned_root,
            "--phase", "train", "--eval", "--direction", "BtoA"]
    index = test_cli.main(args + ["--results_dir", str(tmp_path / "results")])
    images = os.path.join(os.path.dirname(index), "images")
    names = ("real_A", "fake_B", "rec_A", "real_B", "fake_A", "rec_B")
    assert sorted(os.listdir(images)) == sorted(f"img{i:03d}_{k}.png" for i in range(5) for k in names)
    item = translated_inputs(args)[5]
    assert item["A_paths"].endswith(os.path.join("trainB", "img000.png"))
    assert_written(os.path.join(images, "img000_real_B.png"), item["B"][None])


def test_inference_cli_follows_the_runs_direction_and_suffix(unaligned_root, tmp_path, capsys):
    """A run trained BtoA (its G_A takes B images) under --suffix: the test finds the suffixed run
    (the suffix formatted with the test's options, as the reference) and takes its options (norm,
    direction); one generator (--model test) on the run's A side, testB, is G_A, the net the cycle
    test applies to the same images; --model_suffix _B picks G_B; a dataset root without the split
    asked for is refused."""
    root = tmp_path / "both"
    for folder, seed in (("trainA", 1), ("trainB", 2), ("testA", 3), ("testB", 4)):
        write_images(root / folder, 2, 40, seed=seed)
    train_cli.main(tiny_args(str(root), tmp_path, "run") + ["--direction", "BtoA", "--suffix", "{model}_{netG}",
                                                            "--norm", "batch", "--max_iters", "1"])
    name = "run_cycle_gan_resnet_6blocks"
    index = test_cli.main(["--name", "run", "--suffix", "{model}_{netG}", "--netG", "resnet_6blocks",
                           "--checkpoints_dir", str(tmp_path), "--dataroot", str(root), "--eval",
                           "--results_dir", str(tmp_path / "cycle")])
    cycle = os.path.join(os.path.dirname(index), "images")
    assert os.path.dirname(index).endswith(os.path.join(name, "test_latest"))
    common = ["--name", name, "--checkpoints_dir", str(tmp_path), "--dataroot", str(root), "--eval", "--results_dir"]
    capsys.readouterr()
    index = test_cli.main(common + [str(tmp_path / "single"), "--model", "test", "--verbose"])
    assert "G_A: ResnetGenerator(" in capsys.readouterr().out
    single = os.path.join(os.path.dirname(index), "images")

    def pixels(folder, file):
        return np.asarray(Image.open(os.path.join(folder, file)), dtype=int)

    # the run's A side is testB: the same input both ways, and G_A's output both ways
    assert np.array_equal(pixels(cycle, "img000_real_A.png"), pixels(single, "img000_real.png"))
    assert np.abs(pixels(cycle, "img000_fake_B.png") - pixels(single, "img000_fake.png")).max() <= 1
    with Image.open(root / "testB" / "img000.png") as b:
        expected = np.asarray(b.resize((32, 32), Image.BICUBIC), dtype=int)
    assert np.abs(pixels(single, "img000_real.png") - expected).max() <= 1
    test_cli.main(common + [str(tmp_path / "g_b"), "--model", "test", "--model_suffix", "_B"])
    assert "latest_net_G_B.pth" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        test_cli.main(common + [str(tmp_path / "val"), "--phase", "val"])
    assert "holds no valB/ to translate" in capsys.readouterr().err  # the run's direction: its A side


def test_inference_cli_on_aligned_pairs_with_a_cyclegan_run(aligned_root, tmp_path):
    """A CycleGAN trained on aligned data: its cycle test on the aligned pairs."""
    train_cli.main(tiny_args(aligned_root, tmp_path, "cyc", "cyclegan") + ["--dataset_mode", "aligned",
                                                                          "--max_iters", "1"])
    index = test_cli.main(["--name", "cyc", "--checkpoints_dir", str(tmp_path), "--results_dir", str(tmp_path / "r")])
    names = ("real_A", "fake_B", "rec_A", "real_B", "fake_A", "rec_B")
    assert sorted(os.listdir(os.path.join(os.path.dirname(index), "images"))) == \
        sorted(f"img{i:03d}_{k}.png" for i in range(2) for k in names)


def test_inference_cli_takes_aligned_pairs_given_to_a_run_trained_on_unaligned_folders(unaligned_root,
                                                                                        aligned_root, tmp_path):
    """--dataroot holding test/ (A|B pairs) and no testA/ or testB/: its pairs, with the cycle
    test, though the run's own data was unaligned (it said "holds no testA/" before)."""
    train_cli.main(tiny_args(unaligned_root, tmp_path, "run") + ["--max_iters", "1"])
    index = test_cli.main(["--name", "run", "--checkpoints_dir", str(tmp_path), "--dataroot", aligned_root,
                           "--results_dir", str(tmp_path / "r")])
    names = ("real_A", "fake_B", "rec_A", "real_B", "fake_A", "rec_B")
    assert sorted(os.listdir(os.path.join(os.path.dirname(index), "images"))) == \
        sorted(f"img{i:03d}_{k}.png" for i in range(2) for k in names)


def test_inference_cli_on_aligned_pairs_writes_the_references_pix2pix_names(aligned_root, tmp_path):
    train_cli.main(tiny_args(aligned_root, tmp_path, "p2p", "pix2pix") + ["--max_iters", "1"])
    index = test_cli.main(["--name", "p2p", "--checkpoints_dir", str(tmp_path), "--dataroot", aligned_root,
                           "--results_dir", str(tmp_path / "results")])
    images = os.path.join(os.path.dirname(index), "images")
    assert sorted(os.listdir(images)) == sorted(f"img{i:03d}_{k}.png" for i in range(2)
                                                for k in ("real_A", "fake_B", "real_B"))


def test_inference_cli_takes_the_references_test_command_line(unaligned_root, tmp_path, capsys):
    """--model test, --gpu_ids -1, --display_id, --aspect_ratio (saved images' shape), a typed
    --load_size (resize, then the fixed centre crop), and same-named files in a folder tree."""
    train_cli.main(tiny_args(unaligned_root, tmp_path, "run") + ["--max_iters", "1"])
    tree = tmp_path / "tree"
    write_images(tree / "x", 2, 40, seed=8)
    write_images(tree / "y", 1, 40, seed=9)  # y/img000.png beside x/img000.png
    common = ["--name", "run", "--checkpoints_dir", str(tmp_path), "--results_dir", str(tmp_path / "results"),
              "--model", "test", "--gpu_ids", "-1", "--display_id", "0", "--no_dropout"]
    index = test_cli.main(common + ["--dataroot", str(tree), "--aspect_ratio", "2.0"])
    assert "unused: --display_id" in capsys.readouterr().out
    images = os.path.join(os.path.dirname(index), "images")
    assert sorted(os.listdir(images)) == sorted(f"{stem}_{k}.png" for stem in ("img000", "img001", "y_img000")
                                                for k in ("real", "fake"))
    with Image.open(os.path.join(images, "img000_fake.png")) as fake:
        assert fake.size == (32, 64)  # the reference's save_image: PIL size (h, 2w), so twice as tall

    index = test_cli.main(common + ["--dataroot", str(tree / "y"), "--load_size", "40", "--results_dir",
                                    str(tmp_path / "loaded")])
    real = np.asarray(Image.open(os.path.join(os.path.dirname(index), "images", "img000_real.png")), dtype=int)
    with Image.open(tree / "y" / "img000.png") as source:  # load 40 = the file's size: the centre 32x32
        assert np.abs(real - np.asarray(source, dtype=int)[4:36, 4:36]).max() <= 1


def test_inference_cli_reports_a_missing_checkpoint(unaligned_root, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        test_cli.main(["--name", "nothing", "--checkpoints_dir", str(tmp_path), "--dataroot", str(tmp_path)])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "no checkpoint" in err and "train with --name nothing first" in err
    train_cli.main(tiny_args(unaligned_root, tmp_path, "run") + ["--max_iters", "1"])  # latest only
    capsys.readouterr()
    testA = os.path.join(unaligned_root, "testA")
    with pytest.raises(SystemExit):
        test_cli.main(["--name", "run", "--checkpoints_dir", str(tmp_path), "--dataroot", testA, "--epoch", "5"])
    assert "holds the networks of --epoch latest (iter_N: --load_iter N)" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # a file as --dataroot
        test_cli.main(["--name", "run", "--checkpoints_dir", str(tmp_path),
                       "--dataroot", os.path.join(testA, "img000.png")])
    assert "img000.png is a file, not a folder of images" in capsys.readouterr().err


def test_a_published_generator_is_tested_alone_never_as_both_of_the_cycle(unaligned_root, tmp_path, capsys):
    """A folder holding one latest_net_G.pth (the published pretrained layout): --model test uses
    it; the cycle test, which needs G_A and G_B, is refused rather than running it both ways."""
    train_cli.main(tiny_args(unaligned_root, tmp_path, "run") + ["--max_iters", "1"])
    run = tmp_path / "run"
    os.rename(run / "latest_net_G_A.pth", run / "latest_net_G.pth")
    for net in ("G_B", "D_A", "D_B"):
        os.remove(run / f"latest_net_{net}.pth")
    common = ["--name", "run", "--checkpoints_dir", str(tmp_path), "--dataroot", unaligned_root,
              "--results_dir", str(tmp_path / "results"), "--phase", "train", "--device", "cpu"]
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        test_cli.main(common)
    assert e.value.code == 2
    assert "holds one generator, latest_net_G.pth" in capsys.readouterr().err
    index = test_cli.main(common + ["--model", "test", "--num_test", "2"])
    assert "G from " + str(run / "latest_net_G.pth") in capsys.readouterr().out
    assert len(os.listdir(os.path.join(os.path.dirname(index), "images"))) == 2 * 2


def test_a_reference_generator_is_tested_with_its_dropout(unaligned_root, tmp_path, capsys):
    """A reference checkpoint with no train_opt.json under --model test: the generator is built as
    the reference's test model builds it, with dropout unless --no_dropout is typed (cycle_gan's
    default, no dropout, used to apply), so a ResNet trained with dropout loads."""
    from fastgan.models import define_G

    os.makedirs(tmp_path / "ref")
    G = define_G(3, 3, 4, "resnet_6blocks", norm="instance", use_dropout=True)
    torch.save(G.state_dict(), tmp_path / "ref" / "latest_net_G.pth")
    common = ["--name", "ref", "--checkpoints_dir", str(tmp_path), "--dataroot", os.path.join(unaligned_root, "testA"),
              "--results_dir", str(tmp_path / "results"), "--model", "test", "--netG", "resnet_6blocks", "--ngf", "4",
              "--crop_size", "32", "--num_test", "1", "--device", "cpu"]
    test_cli.main(common + ["--verbose"])
    assert "Dropout(p=0.5" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        test_cli.main(common + ["--no_dropout"])
    assert "trained with dropout and the network built without it" in capsys.readouterr().err


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


@pytest.mark.parametrize("variable,value,words", [
    ("FASTGAN_REFLECT_CONV2D", "bogus", "FASTGAN_REFLECT_CONV2D='bogus': expected 'auto' or 'aten'"),
    ("FASTGAN_CONV", "bogus", "FASTGAN_CONV='bogus': expected one of auto, aten, gemm"),
    ("FASTGAN_BACKEND", "bogus", "FASTGAN_BACKEND='bogus' cannot run on cpu; back ends that can: "),
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
    """SIGINT 0.3 s after the start, while the imports run (torch takes seconds to load): exit
    130 and one line, not a KeyboardInterrupt traceback."""
    process = subprocess.Popen([sys.executable, "-m", "fastgan.train", *tiny_args(unaligned_root, tmp_path, "run")],
                               cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(0.3)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 128 + signal.SIGINT and "Traceback" not in err, err
    assert "stopped before the run began" in err


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
    assert "move training_state.pt away and run again to continue from them" in out


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


@pytest.mark.parametrize("batch_size,after,again", [(3, 3, 0), (2, 2, 1)])
def test_a_resume_with_another_batch_continues_after_the_images_trained(batch_size, after, again, unaligned_root,
                                                                         tmp_path, capsys):
    """The saved run trained 3 batches of 1 (the state counts batches); resumed at batch 3 it
    skips 1 batch of 3, at batch 2 one batch of 2 (its third image trains again). The
    same holds for another number of ranks: the global batch is what counts."""
    args = tiny_args(unaligned_root, tmp_path, "run")  # 6 items per epoch
    assert train_cli.main(args + ["--max_iters", "3"])["iteration"] == 3
    capsys.readouterr()
    resumed = train_cli.main(args + ["--continue_train", "--batch_size", str(batch_size), "--n_epochs_decay", "0"])
    out = capsys.readouterr().out
    assert f"this one {batch_size}: epoch 1 continues after its first {after} images" in out
    assert (f"{again} of the 3 already trained train again" in out) == bool(again)
    assert resumed["images"] == 6 - after  # the rest of epoch 1 and nothing more
    records = read_loss_log(str(tmp_path / "run" / "loss_log.jsonl"))
    assert [r["epoch_iter"] for r in records] == [1, 2, 3] + list(range(after + batch_size, 7, batch_size))


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


def test_max_iters_already_reached_trains_nothing(unaligned_root, tmp_path, capsys):
    args = tiny_args(unaligned_root, tmp_path, "run")
    assert train_cli.main(args + ["--max_iters", "0"])["images"] == 0
    assert not (tmp_path / "run" / "training_state.pt").exists()
    assert train_cli.main(args + ["--max_iters", "3"])["iteration"] == 3
    capsys.readouterr()
    again = train_cli.main(args + ["--continue_train", "--max_iters", "2"])
    assert again["images"] == 0 and again["iteration"] == 3
    assert "already at --max_iters 2 (iteration 3)" in capsys.readouterr().out
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
    (["--device", "tpu"], "--device 'tpu' is not a device; use auto, cpu, cuda or cuda:N"),
    (["--device", "meta"], "--device meta: fastgan trains on cpu or cuda devices"),
    (["--device", "cuda:abc"], "--device 'cuda:abc' is not a device"),
    (["--crop_size", "30", "--load_size", "30"], "--netG resnet_6blocks needs --crop_size a multiple of 4 "
                                                 "(got 30): use --crop_size 28"),
    (["--netG", "unet_128"], "--netG unet_128 needs --crop_size a multiple of 128 (got 32)"),
    (["--dataset_mode", "single"], "--dataset_mode single reads A images only, and training takes A and B"),
    (["--preprocess", "scale_width", "--load_size", "34"], "--preprocess scale_width makes every width --load_size "
                                                           "34: use --load_size 32"),
    (["--preprocess", "none", "--netG", "unet_128"], "x40 after --preprocess none; --netG unet_128 takes sides that "
                                                     "are multiples of 128"),
    (["--preprocess", "none", "--gan_mode", "wgangp", "--lambda_gp", "10"], "--lambda_gp interpolates real and fake"),
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
    assert e.value.code == 2 and "Not a directory" in capsys.readouterr().err


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
    text = run_module(["fastgan.train", "--help"], timeout=120).stdout
    assert "--lambda_gp LAMBDA_GP" in text and "the reference: none" in text and "(default: None)" not in text


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
    assert f"kernel choices: {count} measured by an earlier run on this machine" in capsys.readouterr().out
    assert _unfolded_conv.selection_cache()[key]["choice"] == flipped

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


def test_saved_options_are_the_reference_names(unaligned_root, tmp_path):
    train_cli.main(tiny_args(unaligned_root, tmp_path, "opts") + ["--max_iters", "1", "--lambda_identity", "0.25"])
    saved = json.load(open(tmp_path / "opts" / "train_opt.json"))
    assert saved["lambda_identity"] == 0.25 and saved["netG"] == "resnet_6blocks" and saved["no_dropout"] is True


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
