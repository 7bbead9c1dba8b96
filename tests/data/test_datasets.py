"""The three dataset modes: indexing, pairing, channels, direction, bad folders."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from PIL import Image

from fastgan.data import DatasetError, create_dataset
from fastgan.data.datasets import AlignedDataset, SingleDataset, UnalignedDataset

from .conftest import coord_image, make_opt, random_image, save


def pixels(t: torch.Tensor) -> np.ndarray:
    """A [-1, 1] tensor back to integer pixel values (exact for unresampled images)."""
    return ((t + 1) * 127.5).round().to(torch.int64).numpy()


# unaligned ---------------------------------------------------------------------------------


def test_unaligned_items(unaligned_root):
    ds = create_dataset(make_opt(unaligned_root))
    assert isinstance(ds, UnalignedDataset) and len(ds) == 5
    for i in range(len(ds)):
        item = ds.get(i, 0)
        assert item["A"].shape == (3, 32, 32) and item["B"].shape == (3, 32, 32)
        assert item["A"].dtype == torch.float32
        assert -1 <= item["A"].min() and item["A"].max() <= 1 and -1 <= item["B"].min() and item["B"].max() <= 1
        assert item["A_paths"].endswith(f"trainA/a{i}.png")
        assert "/trainB/" in item["B_paths"]


def test_unaligned_serial_indexing(unaligned_root):
    ds = create_dataset(make_opt(unaligned_root, serial_batches=True))
    b = [ds.get(i, 0)["B_paths"].rsplit("/", 1)[1] for i in range(5)]
    assert b == ["b0.png", "b1.png", "b2.png", "b0.png", "b1.png"]
    assert [ds.get(i, 9)["B_paths"] for i in range(5)] == [ds.get(i, 0)["B_paths"] for i in range(5)]


def test_unaligned_random_partner_is_seeded(unaligned_root):
    ds = create_dataset(make_opt(unaligned_root))
    draws = [ds.get(0, e)["B_paths"] for e in range(60)]
    assert len(set(draws)) == 3  # every B reachable
    assert draws == [ds.get(0, e)["B_paths"] for e in range(60)]  # same (seed, epoch, index), same B
    ds.set_epoch(5)
    assert ds[0]["B_paths"] == draws[5]
    assert ds.get(0, 5)["A_paths"].endswith("a0.png")


def test_unaligned_a_and_b_transforms_are_independent(tmp_path):
    # same content in both folders: equal crops every time would mean shared params
    arr = coord_image(48, 48)
    save(tmp_path / "trainA" / "x.png", arr)
    save(tmp_path / "trainB" / "x.png", arr)
    ds = create_dataset(make_opt(tmp_path, preprocess="crop"))
    same = sum(torch.equal(it["A"], it["B"]) for it in (ds.get(0, e) for e in range(40)))
    assert same < 5


def test_unaligned_btoa_swaps_domains_and_channels(unaligned_root):
    o = make_opt(unaligned_root, serial_batches=True, input_nc=1, output_nc=3)
    ab = create_dataset(o).get(4, 0)
    assert ab["A"].shape[0] == 1 and ab["B"].shape[0] == 3
    assert "/trainA/" in ab["A_paths"] and "/trainB/" in ab["B_paths"]
    ba = create_dataset(o.replace(direction="BtoA")).get(4, 0)
    # "A" is the model's input side: folder B's image, with input_nc channels
    assert "/trainB/" in ba["A_paths"] and "/trainA/" in ba["B_paths"]
    assert ba["A"].shape[0] == 1 and ba["B"].shape[0] == 3
    assert ba["A_paths"].endswith("b1.png") and ba["B_paths"].endswith("a4.png")


def test_grayscale_side_has_one_channel_with_luma_values(tmp_path):
    arr = random_image(np.random.default_rng(5), 32, 32)
    save(tmp_path / "trainA" / "a.png", arr)
    save(tmp_path / "trainB" / "b.png", arr)
    o = make_opt(tmp_path, preprocess="crop", no_flip=True, output_nc=1)
    item = create_dataset(o).get(0, 0)
    assert item["A"].shape == (3, 32, 32) and item["B"].shape == (1, 32, 32)
    luma = np.asarray(Image.fromarray(arr).convert("L"))
    assert np.array_equal(pixels(item["B"])[0], luma)
    assert np.array_equal(pixels(item["A"]).transpose(1, 2, 0), arr)


def test_max_dataset_size(unaligned_root):
    ds = create_dataset(make_opt(unaligned_root, max_dataset_size=2))
    assert len(ds) == 2 and [p.rsplit("/", 1)[1] for p in ds.A_paths] == ["a0.png", "a1.png"]
    assert [p.rsplit("/", 1)[1] for p in ds.B_paths] == ["b0.png", "b1.png"]


@pytest.mark.parametrize("size", [0, -1, 0.5])
def test_max_dataset_size_below_one_is_refused_by_name(unaligned_root, size):
    """Not as an empty folder: the folders hold images, the option asked for none of them."""
    with pytest.raises(DatasetError, match=rf"^--max_dataset_size {size:g} must be at least 1") as e:
        create_dataset(make_opt(unaligned_root, max_dataset_size=size))
    assert "holds no images" not in str(e.value)


def test_missing_and_empty_folders_name_the_folder_and_layout(tmp_path):
    save(tmp_path / "trainA" / "a.png", np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(DatasetError, match=rf"{re.escape(str(tmp_path))}/trainB does not exist.*trainA and .*trainB"):
        create_dataset(make_opt(tmp_path))
    (tmp_path / "trainB").mkdir()
    (tmp_path / "trainB" / "readme.txt").write_text("no images")
    with pytest.raises(DatasetError, match=rf"{re.escape(str(tmp_path))}/trainB holds no images"):
        create_dataset(make_opt(tmp_path))
    with pytest.raises(DatasetError, match=rf"{re.escape(str(tmp_path))}/train does not exist.*A\|B"):
        create_dataset(make_opt(tmp_path, dataset_mode="aligned"))
    with pytest.raises(DatasetError, match="nowhere"):
        create_dataset(make_opt(tmp_path / "nowhere", dataset_mode="single"))


def test_unknown_mode_and_direction(unaligned_root):
    with pytest.raises(DatasetError, match="unknown --dataset_mode 'paired'.*unaligned, aligned, single"):
        create_dataset(make_opt(unaligned_root, dataset_mode="paired"))
    with pytest.raises(DatasetError, match="--direction"):
        create_dataset(make_opt(unaligned_root, direction="AB"))


def test_no_dataroot_without_demo_is_refused():
    from fastgan.options import Options

    with pytest.raises(DatasetError, match="--dataroot"):
        create_dataset(Options())


# aligned -----------------------------------------------------------------------------------


def _pair(w: int, h: int, step: int = 1) -> np.ndarray:
    """A|B with B = 255 - A, A a coordinate image (so a different crop or flip would show)."""
    a = coord_image(w, h, offset=77, step=step)
    return np.concatenate([a, 255 - a], axis=1)


@pytest.mark.parametrize("preprocess", ["crop", "resize_and_crop", "resize", "scale_width_and_crop", "none"])
def test_aligned_halves_share_crop_and_flip(tmp_path, preprocess):
    save(tmp_path / "train" / "p.png", _pair(44, 40, step=5))  # a 1-pixel shift: >= 0.04 apart
    o = make_opt(tmp_path, dataset_mode="aligned", preprocess=preprocess, load_size=40, crop_size=32)
    ds = create_dataset(o)
    assert isinstance(ds, AlignedDataset)
    flips = 0
    exact = preprocess in ("crop", "none")  # no resampling: B = -A exactly
    for e in range(12):
        it = ds.get(0, e)
        assert it["A"].shape == it["B"].shape
        assert it["A_paths"] == it["B_paths"] and it["A_paths"].endswith("p.png")
        err = (it["A"] + it["B"]).abs().max().item()
        assert err < (1e-6 if exact else 0.02), err  # resampled: rounding only
        a = pixels(it["A"])
        flips += a[0, 0, 0] > a[0, 0, -1]
    assert 0 < flips < 12


def test_aligned_odd_width_drops_last_column(tmp_path):
    ab = np.concatenate([_pair(20, 16), np.full((16, 1, 3), 9, np.uint8)], axis=1)  # 41 wide
    save(tmp_path / "train" / "odd.png", ab)
    o = make_opt(tmp_path, dataset_mode="aligned", preprocess="none", no_flip=True)
    it = create_dataset(o).get(0, 0)
    assert it["A"].shape == it["B"].shape == (3, 16, 20)
    assert np.array_equal(pixels(it["A"]).transpose(1, 2, 0), ab[:, :20])
    assert np.array_equal(pixels(it["B"]).transpose(1, 2, 0), ab[:, 20:40])


def test_aligned_btoa_and_channels(tmp_path):
    save(tmp_path / "train" / "p.png", _pair(32, 32))
    o = make_opt(tmp_path, dataset_mode="aligned", preprocess="crop", no_flip=True, input_nc=1)
    ab = create_dataset(o).get(0, 0)
    assert ab["A"].shape[0] == 1 and ab["B"].shape[0] == 3
    ba = create_dataset(o.replace(direction="BtoA")).get(0, 0)
    assert ba["A"].shape[0] == 1 and ba["B"].shape[0] == 3
    pair = _pair(32, 32)
    # BtoA: the model's A is the right half (B), converted to input_nc=1 channel
    assert np.array_equal(pixels(ba["A"])[0], np.asarray(Image.fromarray(pair[:, 32:]).convert("L")))
    assert np.array_equal(pixels(ba["B"]).transpose(1, 2, 0), pair[:, :32])


def test_aligned_requires_load_ge_crop(tmp_path):
    save(tmp_path / "train" / "p.png", _pair(32, 32))
    with pytest.raises(DatasetError, match="--load_size 16 is smaller than --crop_size 32"):
        create_dataset(make_opt(tmp_path, dataset_mode="aligned", preprocess="crop", load_size=16))


def test_aligned_small_image_names_file(tmp_path):
    save(tmp_path / "train" / "small.png", _pair(20, 40))
    ds = create_dataset(make_opt(tmp_path, dataset_mode="aligned", preprocess="crop"))
    with pytest.raises(DatasetError, match=r"small\.png is 20x40.*--crop_size 32"):
        ds.get(0, 0)


# single ------------------------------------------------------------------------------------


def test_single(tmp_path):
    for i in range(3):
        save(tmp_path / "imgs" / f"{i}.jpg", random_image(np.random.default_rng(i), 50, 40))
    o = make_opt(tmp_path / "imgs", dataset_mode="single", output_nc=1, direction="BtoA")
    ds = create_dataset(o)
    assert isinstance(ds, SingleDataset) and len(ds) == 3
    it = ds.get(2, 0)
    assert set(it) == {"A", "A_paths"} and it["A"].shape == (1, 32, 32) and it["A_paths"].endswith("2.jpg")
    assert create_dataset(o.replace(direction="AtoB")).get(0, 0)["A"].shape == (3, 32, 32)
