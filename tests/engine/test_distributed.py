"""Data-parallel training on this CPU: 2 gloo ranks started as torchrun starts them.

What must hold (fastgan.engine.distributed): every rank ends with bit-identical
weights; 2 ranks at batch B train as 1 rank at batch 2B over the same images
(losses and weights to float32 rounding, pool_size 0); a run stopped and
resumed continues identically; a rank that dies or hangs stops the others with
a clear error within a bounded time.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import fastgan
from benchmarks.machine import free_port
from fastgan import train as train_cli
from fastgan.engine.logs import PROGRESS_FIELDS, TIMING_FIELDS, read_loss_log
from fastgan.models import define_D, define_G, load_reference_checkpoint

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NETS = {"cyclegan": ("G_A", "G_B", "D_A", "D_B"), "pix2pix": ("G", "D")}
LOSS_META = {*PROGRESS_FIELDS, *TIMING_FIELDS}


def write_images(folder, n, height, width, seed):
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(
            os.path.join(folder, f"img{i:03d}.png"))


@pytest.fixture(scope="module")
def unaligned_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("unaligned")
    write_images(root / "trainA", 8, 36, 36, seed=1)
    write_images(root / "trainB", 8, 36, 36, seed=2)
    return str(root)


def uneven_root(tmp_path_factory, a: int, b: int) -> str:
    root = tmp_path_factory.mktemp("uneven")
    write_images(root / "trainA", a, 36, 36, seed=11)
    write_images(root / "trainB", b, 36, 36, seed=12)
    return str(root)


@pytest.fixture(scope="module")
def aligned_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("aligned")
    write_images(root / "train", 8, 128, 256, seed=3)
    return str(root)


def options(arch, root, checkpoints, name, batch_size, *extra):
    tiny = {"cyclegan": ["--netG", "resnet_6blocks", "--load_size", "36", "--crop_size", "32"],
            "pix2pix": ["--netG", "unet_128", "--load_size", "128", "--crop_size", "128"]}[arch]
    return ["--arch", arch, "--dataroot", root, "--checkpoints_dir", str(checkpoints), "--name", name,
            "--ngf", "8", "--ndf", "8", *tiny, "--batch_size", str(batch_size), "--n_epochs", "1",
            "--n_epochs_decay", "1", "--print_freq", "1", "--display_freq", "1000", "--num_threads", "0",
            "--device", "cpu", "--seed", "3", *extra]


def rank_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=REPO, **extra)
    return env


def torchrun(args, timeout=150, **env) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory() as tmp:  # torchrun's agent leaves its torchelastic_* folders in TMPDIR
        result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                                 "2", *args], cwd=REPO, env=rank_env(TMPDIR=tmp, **env), capture_output=True,
                                text=True, timeout=timeout)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def assert_no_gloo_threads_left(out):
    """Once fastgan.train.main returned, no rank may still run a gloo thread (ddp_worker lists them): one
    that frees a tensor made in Python after the interpreter began its exit is ended by pthread_exit, and
    that aborts the process (SIGABRT, "terminate called without an active exception") after a good run."""
    for r in (0, 1):
        with open(out / f"rank{r}_threads.json") as f:
            names = json.load(f)
        assert not [n for n in names if "gloo" in n], (r, names)


def loss_records(directory) -> list[dict]:
    return read_loss_log(os.path.join(directory, "loss_log.jsonl"))


def checkpoint(directory, name) -> dict:
    return torch.load(os.path.join(directory, f"latest_net_{name}.pth"), map_location="cpu", weights_only=True)


def net_options(arch, norm) -> dict:
    return dict(ngf=8, ndf=8, netG="resnet_6blocks" if arch == "cyclegan" else "unet_128", norm=norm,
                no_dropout=True)


def plain_net(arch, name, norm):
    """The net `name` of the test runs as the reference builds it, to load their checkpoints into."""
    if name.startswith("G"):
        return define_G(3, 3, 8, net_options(arch, norm)["netG"], norm=norm, use_dropout=False)
    return define_D(3 if arch == "cyclegan" else 6, 8, "basic", norm=norm)


def biases_feeding_instance_norm(net: nn.Module) -> set[str]:
    """Keys of conv biases followed by a (non-affine) instance norm.

    The norm subtracts any per-channel constant, so their gradient is zero up to
    rounding, and Adam turns that rounding into ±lr steps that differ between any
    two summation orders (one rank at batch 2B or two at B alike). They change
    nothing the net computes: the nets' outputs are compared instead.
    """
    keys = set()
    for prefix, module in net.named_modules():
        if isinstance(module, nn.Sequential):
            children = list(module.named_children())
            for (name, first), (_, second) in zip(children, children[1:]):
                if isinstance(first, (nn.Conv2d, nn.ConvTranspose2d)) and isinstance(second, nn.InstanceNorm2d):
                    keys.add(f"{prefix}.{name}.bias" if prefix else f"{name}.bias")
    return keys


LR = 0.0002  # the reference's default, which the runs keep


def assert_same_training(arch, norm, one_rank_dir, two_rank_dir, two_rank_nets, total_iters=(4, 8, 12, 16)):
    """The first iteration's losses to float32 rounding; weights to a fraction of one Adam step.

    Adam's first steps are nearly sign steps (lr · g/|g| per element), so an element
    whose gradient is close to zero moves by up to ±lr on the strength of the
    gradient's rounding, which differs between one sum over 2B images and two over
    B (and with the thread count and the CPU's vector width). Measured on a Xeon
    (AVX-512) and an EPYC (AVX2): at most 0.6% of a weight's elements past lr/4, at
    most 2.7 lr apart, losses of later iterations up to 2e-4 apart. A wrong or
    missing rank's gradient (one rank at batch 2 over half the images, measured)
    puts 22% to 94% of each weight's elements past lr/4. So: all but 2% of each
    weight's elements agree to lr/4 and none is more than 6 lr apart; the first
    iteration's losses, computed from the same weights, agree to 2e-5 and later
    ones to 1e-3. Running statistics move with the activations, not by Adam: they
    agree to 0.5% of their largest value (measured: 0.1%), and the nets' outputs in
    eval mode are compared as well.
    """
    log_1, log_2 = loss_records(one_rank_dir), loss_records(two_rank_dir)
    assert [r["total_iters"] for r in log_2] == [r["total_iters"] for r in log_1] == list(total_iters)
    for i, (a, b) in enumerate(zip(log_1, log_2)):
        assert a["epoch"] == b["epoch"] and a["lr"] == b["lr"]
        for k in set(a) - LOSS_META:
            assert b[k] == pytest.approx(a[k], rel=2e-5 if i == 0 else 1e-3, abs=1e-6), (a["total_iters"], k)
    size, d_channels = (32, 3) if arch == "cyclegan" else (128, 6)
    probe = torch.rand((2, d_channels, size, size), generator=torch.Generator().manual_seed(5)) * 2 - 1
    for name in NETS[arch]:
        one = checkpoint(one_rank_dir, name)
        net = plain_net(arch, name, norm)
        skip = biases_feeding_instance_norm(net)
        parameters = {k for k, _ in net.named_parameters()}
        for k, v in two_rank_nets[name].items():
            if k in skip or not v.is_floating_point():
                continue
            apart = (v - one[k]).abs()
            if k in parameters:
                assert (apart > LR / 4).float().mean() < 2e-2, f"{name}.{k}: many elements apart"
                assert apart.max() <= 6 * LR, f"{name}.{k}: {apart.max() / LR:.2f} lr apart"
            else:
                assert apart.max() <= 5e-3 * one[k].abs().max(), f"{name}.{k}: running statistics apart"
        net.eval()  # batch norm: its running statistics are compared through the outputs too
        x = probe[:, :3] if name.startswith("G") else probe
        with torch.no_grad():
            load_reference_checkpoint(net, one)
            expected = net(x)
            load_reference_checkpoint(net, two_rank_nets[name])
            # measured: 0.24% of the outputs' largest value apart; one rank at batch 2 over
            # half the images: 3% to 22%
            apart = (net(x) - expected).abs().max()
            assert apart <= 1e-2 * expected.abs().max(), f"{name}: outputs {apart:.2e} apart"


@pytest.mark.parametrize("arch,norm", [("cyclegan", "instance"), ("pix2pix", "syncbatch")])
def test_two_ranks_at_batch_b_train_as_one_rank_at_batch_2b(arch, norm, tmp_path_factory, aligned_root, tmp_path):
    """Two ranks at batch 2 against one at batch 4, two epochs of 7 items, pool_size 0.

    Each epoch's last global batch of 3 splits 2 and 1: each rank's losses weigh its
    share of the batch (DDP's plain average put the losses 6e-3 apart by the third
    iteration). Rank 1 starts from other weights (--perturb): DDP must replace them
    with rank 0's. pix2pix runs without dropout: each rank draws its own dropout
    masks, which cannot be those of one process's batch of 4; its batch norm is
    syncbatch, whose statistics over both ranks' batches are those of the batch of 4,
    and a rank's backward then also carries the other rank's loss terms (the batch
    statistics' gradients are all-reduced), so the ranks' losses take the shares, not
    their finished gradients (weighting those put every layer before a synced norm
    20-70% off). Both run --eager, the reference's path, which holds these
    tolerances; on the CPU's default level (fused kernels) the two runs agree to 2e-7
    after one iteration but weights drift up to 1.5 lr apart at the second (Adam's
    first steps turn small gradient differences into whole steps), past the weights'
    lr/4.
    """
    # cyclegan: 5 A images, 7 B (an epoch is the larger domain); pix2pix: 7 of the 8 pairs
    root = uneven_root(tmp_path_factory, 5, 7) if arch == "cyclegan" else aligned_root
    extra = ["--norm", norm, "--pool_size", "0", "--eager", "--max_dataset_size", "7"]
    extra += ["--no_dropout"] if arch == "pix2pix" else []
    one = train_cli.main(options(arch, root, tmp_path, "one", 4, *extra))
    assert one["iteration"] == 4 and one["images"] == 14

    out = tmp_path / "ranks"
    torchrun(["-m", "tests.engine.ddp_worker", str(out), "--perturb", "--",
              *options(arch, root, tmp_path, "two", 2, *extra)])
    ranks = [torch.load(out / f"rank{r}.pt", weights_only=False) for r in (0, 1)]
    assert ranks[0]["summary"] == {**ranks[0]["summary"], "iteration": 4, "images": 14, "stopped": None}
    assert_no_gloo_threads_left(out)
    for name in NETS[arch]:
        for k, v in ranks[0]["nets"][name].items():
            assert torch.equal(v, ranks[1]["nets"][name][k]), f"ranks differ at {name}.{k}"
        # what rank 0 wrote has the reference's keys, no "module." prefix
        written = checkpoint(tmp_path / "two", name)
        assert written.keys() == ranks[0]["nets"][name].keys()
        assert all(torch.equal(written[k], v) for k, v in ranks[0]["nets"][name].items())
    assert_same_training(arch, norm, tmp_path / "one", tmp_path / "two", ranks[0]["nets"])
    # the comparison could fail: training moved every net by more than its tolerance
    start = fastgan.build_model(arch, **net_options(arch, norm), seed=3, device="cpu", eager=True).nets
    for name in NETS[arch]:
        moved = max((v - start[name].state_dict()[k]).abs().max().item()
                    for k, v in ranks[0]["nets"][name].items() if v.is_floating_point())
        assert moved > 2 * LR, (name, moved)


def test_a_last_batch_of_one_image_trains_as_one_batch(tmp_path_factory, tmp_path):
    """3 items at batch 1 (one epoch): the last global batch is 1 image, and rank 1's a
    padding copy, which counts nothing (DDP's plain average put 35% of G_A's first
    weight's elements past lr/4, and counted 4 images for 3)."""
    root = uneven_root(tmp_path_factory, 1, 3)
    extra = ["--pool_size", "0", "--eager", "--n_epochs_decay", "0"]
    one = train_cli.main(options("cyclegan", root, tmp_path, "one", 2, *extra))
    assert one["images"] == 3
    out = tmp_path / "ranks"
    torchrun(["-m", "tests.engine.ddp_worker", str(out), "--",
              *options("cyclegan", root, tmp_path, "two", 1, *extra)])
    ranks = [torch.load(out / f"rank{r}.pt", weights_only=False) for r in (0, 1)]
    assert ranks[0]["summary"]["images"] == 3
    assert_same_training("cyclegan", "instance", tmp_path / "one", tmp_path / "two", ranks[0]["nets"], (2, 4))


def test_gloo_sync_batch_norm_is_the_batch_norm_of_the_whole_batch(tmp_path):
    """Two ranks holding 3 and 1 images of a batch of 4: each rank's outputs, input gradients and
    running statistics, and the summed parameter gradients, are nn.BatchNorm2d's on the batch
    of 4, in float32 and in float64 (whose running-statistics update used to raise)."""
    torchrun(["-m", "tests.engine.sync_batch_norm_worker", str(tmp_path)])
    for rank in (0, 1):
        with open(tmp_path / f"rank{rank}.json") as f:
            result = json.load(f)
        for dtype, tolerance in (("torch.float32", 1e-5), ("torch.float64", 1e-12)):
            found = result[dtype]
            assert found.pop("dtype") == dtype
            assert max(found.values()) < tolerance, (rank, dtype, found)


@pytest.mark.parametrize("levels", [["--amp", "bf16"], ["--compile", "nets"]], ids=lambda flags: " ".join(flags))
def test_speed_levels_compose_with_data_parallel(levels, unaligned_root, tmp_path):
    """The CPU's default levels (accelerate, channels_last, fused Adam, merged passes) with mixed
    precision or compiled nets, on 2 ranks: the run trains, and every rank ends with rank 0's
    weights, bit for bit. (The default levels alone: test_stopped_and_resumed_two_rank_run_continues_identically.)
    The nets compile with the aot_eager back end: dynamo, DDP's graph splitting and AOT autograd
    as for inductor, whose own code generation test_levels.py checks (here it took 60 s)."""
    out = tmp_path / "ranks"
    torchrun(["-m", "tests.engine.ddp_worker", str(out), "--perturb", "--aot_eager", "--",
              *options("cyclegan", unaligned_root, tmp_path, "levels", 2, "--n_epochs_decay", "0", *levels)],
             timeout=240)
    ranks = [torch.load(out / f"rank{r}.pt", weights_only=False) for r in (0, 1)]
    assert ranks[0]["summary"]["iteration"] == 2 and ranks[0]["levels"] == ranks[1]["levels"]
    compiled = "--compile" in levels
    assert all((rank["compiled_graphs"] > 0) == compiled for rank in ranks), [r["compiled_graphs"] for r in ranks]
    assert_no_gloo_threads_left(out)  # compiled nets wrap the DDP wrappers: those go too
    assert ranks[0]["levels"].accelerate and not ranks[0]["levels"].cuda_graphs
    # nothing forced off that a CPU's default never turns on: train_opt.txt marks only what was typed
    table = (tmp_path / "levels" / "train_opt.txt").read_text().splitlines()
    assert [line.split() for line in table if line.strip().startswith("cuda_graphs:")] == [["cuda_graphs:", "None"]]
    for name in NETS["cyclegan"]:
        for k, v in ranks[0]["nets"][name].items():
            assert torch.equal(v, ranks[1]["nets"][name][k]), f"ranks differ at {name}.{k}"
    losses = loss_records(tmp_path / "levels")
    assert len(losses) == 2 and all(np.isfinite(r[k]) for r in losses for k in set(r) - LOSS_META)


def pool_images(state: dict) -> torch.Tensor:
    """The stored images of a saved pool (the reference's pool keeps a list, the device pool a tensor)."""
    images = state["images"]
    return torch.cat(images) if isinstance(images, list) else images


def test_stopped_and_resumed_two_rank_run_continues_identically(unaligned_root, tmp_path):
    """Image pools and random streams are per rank: each rank must get its own back on resume.

    The full run and the stopped one measure reflect_conv2d's kernels in separate processes, so
    they could pick different ones (Winograd or oneDNN: different rounding); both take oneDNN's
    here. That a resumed process keeps the kernels its run measured: test_state.py."""
    extra = ["--pool_size", "2", "--batch_size", "1"]
    same_kernels = dict(FASTGAN_REFLECT_CONV2D="aten", FASTGAN_CONV="aten")
    torchrun(["-m", "fastgan.train", *options("cyclegan", unaligned_root, tmp_path, "full", 1, *extra)],
             **same_kernels)
    torchrun(["-m", "fastgan.train", *options("cyclegan", unaligned_root, tmp_path, "part", 1, *extra),
              "--max_iters", "3"], **same_kernels)
    result = torchrun(["-m", "fastgan.train", *options("cyclegan", unaligned_root, tmp_path, "part", 1, *extra),
                       "--continue_train"], **same_kernels)
    assert "resumed from" in result.stdout and "epoch 1, batch 3, total_iters 6" in result.stdout

    full, part = loss_records(tmp_path / "full"), loss_records(tmp_path / "part")
    assert [r["total_iters"] for r in part] == [r["total_iters"] for r in full] == list(range(2, 17, 2))
    for a, b in zip(full, part):
        assert {k: v for k, v in a.items() if k not in TIMING_FIELDS} == \
            {k: v for k, v in b.items() if k not in TIMING_FIELDS}
    for name in NETS["cyclegan"]:
        a, b = checkpoint(tmp_path / "full", name), checkpoint(tmp_path / "part", name)
        assert all(torch.equal(a[k], b[k]) for k in a), name
    state = torch.load(tmp_path / "part" / "training_state.pt", map_location="cpu", weights_only=False)
    pools = [pool_images(rank["pools"]["fake_A"]) for rank in state["ranks"]]
    assert len(pools) == 2 and pools[0].shape == pools[1].shape and not torch.equal(*pools)

    # the state a 2-rank run wrote resumes in one process (the reference's keys, rank 0's streams)
    single = train_cli.main(options("cyclegan", unaligned_root, tmp_path, "part", 1, *extra)
                            + ["--continue_train", "--n_epochs_decay", "2"])
    assert single["iteration"] == 8 + 8 and single["images"] == 8


def start_two_ranks(root, checkpoints, name, **env) -> list[subprocess.Popen]:
    """Ranks 0 and 1 of a long run, started as torchrun starts them, without torchrun (which
    would stop the others itself when one dies)."""
    env = dict(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()), WORLD_SIZE="2", **env)
    args = [sys.executable, "-m", "fastgan.train",
            *options("cyclegan", root, checkpoints, name, 1, "--n_epochs", "1000")]
    return [subprocess.Popen(args, cwd=REPO, env=rank_env(RANK=str(r), LOCAL_RANK=str(r), **env),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for r in (0, 1)]


def wait_for_three_records(run_dir, rank0: subprocess.Popen) -> None:
    log = run_dir / "loss_log.jsonl"
    deadline = time.time() + 90
    while time.time() < deadline and not (log.exists() and len(read_loss_log(str(log))) >= 3):
        assert rank0.poll() is None, rank0.communicate()[1]
        time.sleep(0.1)
    assert len(read_loss_log(str(log))) >= 3, "training did not start"


@pytest.mark.parametrize("failure", ["killed", "hung"])
def test_a_dead_or_hung_rank_stops_the_other_with_a_clear_error(failure, unaligned_root, tmp_path):
    """SIGKILL or SIGSTOP rank 1 mid-training; rank 0 must exit 1 with one clear line, well before 60 s."""
    ranks = start_two_ranks(unaligned_root, tmp_path, "dies", FASTGAN_DIST_TIMEOUT="5")
    try:
        wait_for_three_records(tmp_path / "dies", ranks[0])
        ranks[1].send_signal(signal.SIGKILL if failure == "killed" else signal.SIGSTOP)
        start = time.time()
        _, err = ranks[0].communicate(timeout=60)
        elapsed = time.time() - start
    finally:
        for process in ranks:
            if process.poll() is None:
                process.kill()
            process.communicate()
    assert ranks[0].returncode == 1, err[-3000:]
    assert elapsed < (10 if failure == "killed" else 5 + 10), elapsed  # hung: the 5 s timeout, then the exit
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: rank 0 of 2 stopped: another rank died or stopped answering"), err[-3000:]
    assert "FASTGAN_DIST_TIMEOUT" in last and "Traceback" not in err


def test_a_signal_torchrun_passes_on_again_stops_every_rank_saved_with_its_status(unaligned_root, tmp_path):
    """Slurm's scancel and systemd's stop signal every process of a job: under torchrun each rank
    gets the signal directly and again from torchrun's agent. That copy is not a second request
    (it used to stop the rank at once, unsaved, and the other one with it), and a rank stopped
    because another was signalled exits with that signal's status (it said 143 for a SIGINT).
    torchrun's TORCHELASTIC_RUN_ID set; the copy sent once rank 1 has taken the first."""
    ranks = start_two_ranks(unaligned_root, tmp_path, "stop", TORCHELASTIC_RUN_ID="t")
    rank1_err, took_first = [], threading.Event()

    def read_rank1():
        for line in ranks[1].stderr:
            rank1_err.append(line)
            if "stopping after this iteration" in line:
                took_first.set()

    reader = threading.Thread(target=read_rank1, daemon=True)
    reader.start()
    try:
        wait_for_three_records(tmp_path / "stop", ranks[0])
        ranks[1].send_signal(signal.SIGINT)
        assert took_first.wait(60), "".join(rank1_err)[-3000:]
        ranks[1].send_signal(signal.SIGINT)  # the agent's copy
        _, rank0_err = ranks[0].communicate(timeout=60)
        ranks[1].wait(timeout=60)
        reader.join(timeout=10)
    finally:
        for process in ranks:
            if process.poll() is None:
                process.kill()
        ranks[0].communicate()
    err = "".join(rank1_err)
    assert [process.returncode for process in ranks] == [128 + signal.SIGINT] * 2, (rank0_err[-2000:], err[-2000:])
    assert "rank 1 of 2: SIGINT again (torchrun passes on the one it got)" in err and "stopped at once" not in err
    assert "rank 1 of 2: SIGINT: stopping after this iteration and saving" in err
    state = torch.load(tmp_path / "stop" / "training_state.pt", map_location="cpu", weights_only=False)
    assert state["progress"]["iteration"] >= 3


def test_ranks_started_with_different_settings_are_refused_at_once(unaligned_root, tmp_path):
    """Rank 1 with another --lr and a dataset of another size: both ranks exit 2 naming what
    differs, before training (unchecked, they trained apart silently or waited for each
    other until the timeout)."""
    small = tmp_path / "small"
    write_images(small / "trainA", 3, 40, 40, seed=9)
    write_images(small / "trainB", 3, 40, 40, seed=10)
    # a timeout far beyond the start of two processes on a loaded machine (60 s was within reach)
    env = dict(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()), WORLD_SIZE="2", FASTGAN_DIST_TIMEOUT="900")
    ranks = []
    for r, (root, lr) in enumerate([(unaligned_root, "0.0002"), (str(small), "0.0003")]):
        args = [sys.executable, "-m", "fastgan.train", *options("cyclegan", root, tmp_path, "differ", 1, "--lr", lr)]
        ranks.append(subprocess.Popen(args, cwd=REPO, env=rank_env(RANK=str(r), LOCAL_RANK=str(r), **env),
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    start = time.time()
    errors = [p.communicate(timeout=600)[1] for p in ranks]
    assert time.time() - start < 450  # not the timeout
    for r, (process, err) in enumerate(zip(ranks, errors)):
        assert process.returncode == 2, err[-3000:]
        assert f"error: rank {r} of 2: the ranks were started with different settings" in err
        assert "Traceback" not in err
        assert "--lr: rank 0 0.0002, rank 1 0.0003" in err
        assert "images in the dataset: rank 0 8, rank 1 3" in err
    assert not (tmp_path / "differ" / "loss_log.jsonl").exists()


def test_a_rank_outside_the_world_is_refused(unaligned_root, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "5")
    with pytest.raises(SystemExit) as e:
        train_cli.main(options("cyclegan", unaligned_root, tmp_path, "outside", 1))
    assert e.value.code == 2
    assert "$RANK 5 is not in [0, $WORLD_SIZE 2)" in capsys.readouterr().err


def test_a_rank_label_before_the_ranks_join_only_from_a_launch_that_makes_sense(monkeypatch):
    from fastgan.engine.distributed import Ranks, rank_label

    monkeypatch.setenv("WORLD_SIZE", "2")
    for rank, label in [("1", "rank 1 of 2: "), ("5", ""), ("x", ""), (None, "")]:
        if rank is None:
            monkeypatch.delenv("RANK", raising=False)
        else:
            monkeypatch.setenv("RANK", rank)
        assert rank_label(Ranks()) == label, rank
    assert rank_label(Ranks(3, 4)) == "rank 3 of 4: "
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert rank_label(Ranks()) == ""


def test_cuda_graphs_with_several_ranks_is_refused_before_anything_starts(unaligned_root, tmp_path, monkeypatch,
                                                                          capsys):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    with pytest.raises(SystemExit) as e:
        train_cli.main(options("cyclegan", unaligned_root, tmp_path, "graphs", 1, "--cuda_graphs"))
    assert e.value.code == 2
    err = capsys.readouterr().err
    # each rank says which it is, before the process group is up too
    assert "rank 1 of 2: --cuda_graphs cannot be combined with data-parallel training" in err



def test_ranks_sharing_a_nodes_one_gpu_are_refused_clearly(monkeypatch):
    from fastgan.engine.distributed import rank_device

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    with pytest.raises(ValueError, match="2 processes on this node share its one CUDA device"):
        rank_device(torch.device("cuda"), 1)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")  # a launcher giving each process its own GPU
    assert rank_device(torch.device("cuda"), 1) == torch.device("cuda", 0)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert rank_device(torch.device("cuda"), 0) == torch.device("cuda", 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "3")
    with pytest.raises(ValueError, match="LOCAL_RANK 2 but this node has 2 CUDA devices"):
        rank_device(torch.device("cuda"), 2)
    assert rank_device(torch.device("cpu"), 5) == torch.device("cpu")


def test_only_the_process_groups_own_failures_count_as_a_lost_rank():
    """is_peer_failure decides whether a rank exits as 'another rank died': gloo's errors name
    its source files; an error that merely mentions gloo is this rank's own."""
    from fastgan.engine.distributed import is_peer_failure

    lost = ["[/pytorch/third_party/gloo/gloo/transport/tcp/unbound_buffer.cc:81] Timed out waiting 600000ms "
            "for recv operation to complete", "Connection closed by peer [10.0.0.2]:4567",
            "[../third_party/gloo/gloo/transport/tcp/pair.cc:534] Connection reset by peer"]
    assert all(is_peer_failure(RuntimeError(message)) for message in lost)
    assert is_peer_failure(torch.distributed.DistError("store timeout"))
    assert not is_peer_failure(RuntimeError("ProcessGroupGloo does not support reduce_scatter on gloo tensors"))
    assert not is_peer_failure(RuntimeError("the gloo backend does not support this op"))
    assert not is_peer_failure(ValueError("gloo/ is a folder"))


def test_ranks_that_took_different_loaders_are_said(capsys):
    """--loader auto on a node whose GPU DALI cannot run takes the DataLoader there: the ranks'
    pixels then differ by decoder rounding, said by the first rank (not refused: the run is
    sound); other options that differ are refused."""
    from fastgan.engine.distributed import check_ranks_agree
    from fastgan.options import Options

    opt = Options(dataroot="data")

    class TwoRanks:
        world_size, is_main, other = 2, True, {"loader": "torch"}

        def all_gather(self, mine):
            return [mine, {**mine, **self.other}]

        def close(self):
            pass

    check_ranks_agree(TwoRanks(), opt, 5, "dali")
    assert ("note: the ranks' loaders differ (rank 0 dali, rank 1 torch): their images differ by decoder "
            "rounding") in capsys.readouterr().out
    check_ranks_agree(TwoRanks(), opt, 5, "torch")
    assert "loaders differ" not in capsys.readouterr().out
    TwoRanks.other = {"--lr": 0.1}
    with pytest.raises(ValueError, match="--lr: rank 0 0.0002, rank 1 0.1"):
        check_ranks_agree(TwoRanks(), opt, 5, "torch")
