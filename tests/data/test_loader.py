"""The torch loader: batches, determinism across worker counts, resuming, errors from workers."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from fastgan.data import DatasetError, create_loader
from fastgan.data import select as loader_select
from fastgan.data import datasets as datasets_module

from .conftest import make_opt, random_image, save


@pytest.fixture
def root(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(7):
        save(tmp_path / "trainA" / f"a{i}.png", random_image(rng, 40, 40))
    for i in range(4):
        save(tmp_path / "trainB" / f"b{i}.png", random_image(rng, 40, 40))
    return tmp_path


def collect(loader, epoch, skip=0):
    return list(loader.epoch_batches(epoch, skip))


def same(b1, b2) -> bool:
    return len(b1) == len(b2) and all(
        x["A_paths"] == y["A_paths"] and x["B_paths"] == y["B_paths"]
        and torch.equal(x["A"], y["A"]) and torch.equal(x["B"], y["B"])
        for x, y in zip(b1, b2)
    )


def test_batches_shape_len_and_paths(root):
    loader = create_loader(make_opt(root, batch_size=3), "cpu")
    assert len(loader) == 3 and loader.num_images == 7 and len(loader.dataset) == 7
    batches = collect(loader, 1)
    assert [b["A"].shape[0] for b in batches] == [3, 3, 1]  # drop_last=False
    for b in batches:
        assert b["A"].shape[1:] == (3, 32, 32) and b["B"].shape[1:] == (3, 32, 32)
        assert b["A"].device.type == "cpu" and b["A"].dtype == torch.float32
        assert isinstance(b["A_paths"], list) and len(b["A_paths"]) == b["A"].shape[0]
    names = sorted(p for b in batches for p in b["A_paths"])
    assert names == sorted(loader.dataset.A_paths)  # every image once per epoch


def test_shuffle_and_serial_order(root):
    shuffled = create_loader(make_opt(root, batch_size=1), "cpu")
    orders = [[b["A_paths"][0] for b in collect(shuffled, e)] for e in (1, 2)]
    assert orders[0] != orders[1] and sorted(orders[0]) == sorted(orders[1])
    serial = create_loader(make_opt(root, batch_size=2, serial_batches=True), "cpu")
    paths = [p for b in collect(serial, 3) for p in b["A_paths"]]
    assert paths == serial.dataset.A_paths
    assert [p.rsplit("/", 1)[1] for b in collect(serial, 3) for p in b["B_paths"]] == [
        f"b{i % 4}.png" for i in range(7)
    ]


def test_same_seed_and_epoch_same_batches_whatever_the_workers(root):
    opt = make_opt(root, batch_size=2)
    l0 = create_loader(opt, "cpu")
    l2 = create_loader(opt.replace(num_threads=2), "cpu")
    e5 = collect(l0, 5)
    assert same(e5, collect(l2, 5))
    assert same(e5, collect(l0, 5))
    assert same(collect(l2, 6), collect(l0, 6))  # persistent workers follow the epoch change
    assert not same(e5, collect(l0, 6))
    assert not same(e5, collect(create_loader(opt.replace(seed=1), "cpu"), 5))
    # skip: the tail of the full epoch, also with workers
    assert same(collect(l2, 5, skip=2), e5[2:])
    assert collect(l2, 5, skip=len(l2)) == []


def test_skip_does_not_decode_skipped_images(root, monkeypatch):
    loader = create_loader(make_opt(root, batch_size=2), "cpu")
    full = collect(loader, 4)
    calls = []
    real = datasets_module.load_image
    monkeypatch.setattr(datasets_module, "load_image", lambda p, c: calls.append(p) or real(p, c))
    tail = collect(loader, 4, skip=3)
    assert same(tail, full[3:])
    assert len(calls) == 2 * 1  # one batch of one item left: its A and B image only


def test_bad_file_error_is_clean_through_workers(root):
    (root / "trainA" / "a3.png").unlink()
    (root / "trainA" / "a3.jpg").write_bytes(b"not a jpeg at all")
    for threads in (0, 2):
        loader = create_loader(make_opt(root, num_threads=threads, batch_size=2), "cpu")
        with pytest.raises(DatasetError) as e:
            collect(loader, 0)
        msg = str(e.value)
        assert type(e.value) is DatasetError
        assert "a3.jpg" in msg and "\n" not in msg and "Traceback" not in msg and "worker" not in msg
        assert msg.startswith("cannot read image")
        # fixed file: the same loader carries on with the next epoch
        (root / "trainA" / "a3.jpg").write_bytes((root / "trainA" / "a2.png").read_bytes())
        assert sum(len(b["A_paths"]) for b in collect(loader, 1)) == 7
        (root / "trainA" / "a3.jpg").write_bytes(b"not a jpeg at all")
        loader.close()


def test_mixed_sizes_without_crop_name_the_fix(tmp_path):
    save(tmp_path / "imgs" / "a.png", np.zeros((40, 40, 3), np.uint8))
    save(tmp_path / "imgs" / "b.png", np.zeros((40, 48, 3), np.uint8))
    opt = make_opt(tmp_path / "imgs", dataset_mode="single", preprocess="none", batch_size=2, num_threads=2)
    with pytest.raises(DatasetError, match=r"different sizes.*--batch_size 1") as e:
        collect(create_loader(opt, "cpu"), 0)
    # as image sizes are read: width x height (b.png is 48 wide, 40 high)
    assert "different sizes (width x height: " in str(e.value)
    assert f"{tmp_path / 'imgs' / 'b.png'} 48x40" in str(e.value) and f"{tmp_path / 'imgs' / 'a.png'} 40x40" in str(e.value)


def test_negative_skip_refused(root):
    with pytest.raises(ValueError):
        create_loader(make_opt(root), "cpu").epoch_batches(0, -1)


@pytest.mark.gpu
def test_batches_land_on_cuda(root):
    loader = create_loader(make_opt(root, batch_size=2, num_threads=2), "cuda")
    batches = collect(loader, 0)
    assert all(b["A"].is_cuda and b["B"].is_cuda for b in batches)
    cpu = collect(create_loader(make_opt(root, batch_size=2), "cpu"), 0)
    assert all(torch.equal(x["A"].cpu(), y["A"]) for x, y in zip(batches, cpu))


def test_no_more_workers_than_cpus(root, monkeypatch, capsys):
    """Workers past the usable CPUs only compete for them (torch warns at each epoch): the
    loader starts one per CPU, says so once, and its batches are those of any worker count."""
    from fastgan.data import loader as loader_module
    from fastgan.data import select

    monkeypatch.setattr(loader_module, "usable_cpus", lambda: 1)
    monkeypatch.setattr(select, "_said", set())
    opt = make_opt(root, batch_size=2, num_threads=4)
    capped = create_loader(opt, "cpu")
    assert capped._loader.num_workers == 1
    assert "DataLoader workers: 1, one per CPU (--num_threads asks 4)" in capsys.readouterr().out
    assert same(collect(capped, 2), collect(create_loader(opt.replace(num_threads=0), "cpu"), 2))
    monkeypatch.setattr(loader_module, "usable_cpus", lambda: 8)
    with warnings.catch_warnings():  # torch counts this machine's CPUs itself
        warnings.filterwarnings("ignore", "This DataLoader will create", UserWarning)
        assert create_loader(opt, "cpu")._loader.num_workers == 4


def test_the_loader_lines_are_rank_zeros(monkeypatch, capsys):
    """Every rank of a data-parallel run selects its loader: rank 0 alone says which."""
    monkeypatch.setattr(loader_select, "_said", set())
    loader_select.say_once("loader: torch", rank=1)
    assert capsys.readouterr().out == ""
    loader_select.say_once("loader: torch", rank=0)
    assert capsys.readouterr().out == "loader: torch\n"
