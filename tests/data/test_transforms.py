"""The reference's preprocess modes, crop/flip draws and normalization."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from fastgan.data import DatasetError
from fastgan.data.rng import item_rng
from fastgan.data.transforms import check_preprocess_options, get_params, resized_size, to_tensor, transform_image
from fastgan.options import Options

from .conftest import coord_image


def opt(**kw):
    return Options(**{"load_size": 72, "crop_size": 64, **kw})


def run(o, arr, rng=None, path="img.png"):
    img = Image.fromarray(arr)
    return transform_image(o, img, get_params(o, img.size, rng), path)


@pytest.mark.parametrize(
    "preprocess, size, load, crop, out_hw",
    [
        ("resize_and_crop", (100, 60), 72, 64, (64, 64)),
        ("crop", (100, 60), 72, 32, (32, 32)),
        ("resize", (100, 60), 48, 32, (48, 48)),  # no crop: the reference's "resize" substring alone
        ("scale_width", (100, 60), 80, 32, (48, 80)),
        ("scale_width", (200, 20), 64, 32, (32, 64)),  # the reference stretches height up to crop_size
        ("scale_width_and_crop", (100, 60), 80, 32, (32, 32)),
        ("scale_width_and_crop", (200, 20), 64, 32, (32, 32)),
        ("none", (100, 60), 72, 64, (60, 100)),
        ("none", (98, 61), 72, 64, (60, 96)),  # Python's round: 24.5 -> 24, as the reference
        ("none", (102, 61), 72, 64, (60, 104)),
    ],
)
def test_output_sizes(preprocess, size, load, crop, out_hw):
    o = opt(preprocess=preprocess, load_size=load, crop_size=crop)
    arr = np.random.default_rng(0).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    for rng in (None, item_rng(0, 0, 0)):
        t = run(o, arr, rng)
        assert t.dtype == torch.float32 and tuple(t.shape) == (3, *out_hw)
        assert t.min() >= -1 and t.max() <= 1


def test_normalization_values():
    arr = np.array([[[0, 255, 51]]], np.uint8)
    t = to_tensor(Image.fromarray(arr))
    assert torch.allclose(t.flatten(), torch.tensor([-1.0, 1.0, 51 / 127.5 - 1]), atol=1e-7)
    g = to_tensor(Image.fromarray(np.array([[0, 255]], np.uint8)))
    assert g.shape == (1, 1, 2) and g.flatten().tolist() == [-1.0, 1.0]


def test_resize_is_bicubic_to_load_size():
    o = opt(preprocess="resize_and_crop", load_size=40, crop_size=40)
    arr = np.random.default_rng(1).integers(0, 256, (30, 50, 3), dtype=np.uint8)
    expected = to_tensor(Image.fromarray(arr).resize((40, 40), Image.Resampling.BICUBIC))
    assert torch.equal(run(o, arr), expected)


def test_crop_takes_the_params_window_and_flip_mirrors():
    o = opt(preprocess="crop", crop_size=16)
    arr = coord_image(40, 30)
    img = Image.fromarray(arr)
    plain = transform_image(o, img, {"crop_pos": (5, 9), "flip": False})
    px = ((plain + 1) * 127.5).round().to(torch.int64)
    assert px[0, 0, 0] == 5 and px[1, 0, 0] == 9 and px[0, 0, -1] == 20 and px[1, -1, 0] == 24
    flipped = transform_image(o, img, {"crop_pos": (5, 9), "flip": True})
    assert torch.equal(flipped, plain.flip(-1)) and not torch.equal(flipped, plain)


def test_crop_positions_uniform_and_flip_rate_half():
    o = opt(preprocess="crop", crop_size=64)
    size = (64 + 15, 64 + 7)  # 16 x positions, 8 y positions
    n = 3200
    params = [get_params(o, size, item_rng(0, 0, i)) for i in range(n)]
    xs = np.bincount([p["crop_pos"][0] for p in params], minlength=16)
    ys = np.bincount([p["crop_pos"][1] for p in params], minlength=8)
    assert len(xs) == 16 and len(ys) == 8  # never outside the valid range
    for counts in (xs, ys):
        expected = n / len(counts)
        chi2 = ((counts - expected) ** 2 / expected).sum()
        assert chi2 < 3 * len(counts), counts  # loose: ~df; a skewed or stuck draw is far above
        assert counts.min() > 0.6 * expected
    flips = np.mean([p["flip"] for p in params])
    assert 0.45 < flips < 0.55


def test_crop_position_covers_the_image_end_to_end():
    # the crop really is taken where the params say, for every draw
    o = opt(preprocess="crop", crop_size=16)
    arr = coord_image(20, 18)
    seen = set()
    for i in range(200):
        img = Image.fromarray(arr)
        p = get_params(o, img.size, item_rng(3, 1, i))
        t = transform_image(o, img, p)
        px = ((t + 1) * 127.5).round().to(torch.int64)
        x0 = int(px[0, 0].min())
        assert (x0, int(px[1, 0, 0])) == p["crop_pos"]
        assert bool(px[0, 0, 0] > px[0, 0, -1]) == p["flip"]
        seen.add(p["crop_pos"])
    assert len(seen) == 5 * 3  # all positions reached


def test_no_flip_and_test_phase_are_deterministic():
    size = (80, 70)
    flips = [get_params(opt(no_flip=True), size, item_rng(0, 0, i))["flip"] for i in range(100)]
    assert not any(flips)
    test_opt = opt(phase="test", isTrain=False)
    p = [get_params(test_opt, size, item_rng(0, 0, i)) for i in range(20)]
    assert all(q == {"crop_pos": (4, 4), "flip": False} for q in p)  # centre of the 72x72 resize
    # an image that is not square: centred on each axis by its own extent
    assert get_params(opt(phase="test", isTrain=False, preprocess="crop"), (100, 70), item_rng(0, 0, 1)) == \
        {"crop_pos": (18, 3), "flip": False}
    portrait = opt(phase="test", isTrain=False, preprocess="scale_width_and_crop")
    assert get_params(portrait, (36, 60), item_rng(0, 0, 1))["crop_pos"] == (4, 28)  # 72x120 after the resize


def test_no_flip_still_draws_the_flip_so_later_draws_keep_their_place():
    """An unaligned item draws A's crop and flip, then B's from the same stream. The reference's
    get_params draws the flip whatever --no_flip: so must this, or B's crop would move with it."""
    size = (80, 70)
    for i in range(20):
        second = {}
        for no_flip in (False, True):
            rng = item_rng(0, 0, i)
            get_params(opt(no_flip=no_flip), size, rng)
            second[no_flip] = get_params(opt(no_flip=no_flip), size, rng)["crop_pos"]
        assert second[True] == second[False], i


def test_training_on_another_split_still_augments():
    """As the reference: the split's name (--phase) does not turn the random crop and flip off."""
    size = (80, 70)
    p = [get_params(opt(phase="trainval"), size, item_rng(0, 0, i)) for i in range(40)]
    assert len({q["crop_pos"] for q in p}) > 1 and {q["flip"] for q in p} == {False, True}


def test_params_depend_only_on_seed_epoch_index():
    size = (100, 100)
    a = [get_params(opt(), size, item_rng(7, 2, i)) for i in range(50)]
    b = [get_params(opt(), size, item_rng(7, 2, i)) for i in range(50)]
    c = [get_params(opt(), size, item_rng(7, 3, i)) for i in range(50)]
    assert a == b and a != c


def test_image_smaller_than_crop_is_refused_naming_file():
    o = opt(preprocess="crop", crop_size=64)
    arr = np.zeros((50, 80, 3), np.uint8)
    with pytest.raises(DatasetError, match=r"small\.png.*80x50.*--crop_size 64.*resize_and_crop"):
        run(o, arr, item_rng(0, 0, 0), path="/data/small.png")
    # the resize modes handle the same image: it is brought to load_size first
    assert run(opt(preprocess="resize_and_crop"), arr, item_rng(0, 0, 0)).shape == (3, 64, 64)
    assert run(opt(preprocess="scale_width_and_crop"), arr, item_rng(0, 0, 0)).shape == (3, 64, 64)


def test_option_checks():
    with pytest.raises(DatasetError, match="--load_size 50 is smaller than --crop_size 64"):
        check_preprocess_options(opt(load_size=50))
    check_preprocess_options(opt(load_size=50, preprocess="crop"))  # load_size unused there
    with pytest.raises(DatasetError, match="--load_size 50"):
        check_preprocess_options(opt(load_size=50, preprocess="crop"), require_load_ge_crop=True)
    check_preprocess_options(opt(load_size=50, preprocess="resize"))  # resize takes no crop
    with pytest.raises(DatasetError, match="the reference's aligned dataset requires it, though --preprocess resize "
                                           "takes no crop"):
        check_preprocess_options(opt(load_size=50, preprocess="resize"), require_load_ge_crop=True)
    with pytest.raises(DatasetError, match="unknown --preprocess 'zoom'"):
        check_preprocess_options(opt(preprocess="zoom"))
    with pytest.raises(DatasetError, match="--crop_size 0 must both be positive"):
        check_preprocess_options(opt(crop_size=0, load_size=8))


def test_scale_width_truncates_the_height_as_the_reference():
    """int(load_size * h / w), as the reference's __scale_width: 66.7 rows are 66."""
    assert resized_size(opt(preprocess="scale_width", load_size=100, crop_size=10), (300, 200)) == (100, 66)


def test_none_refuses_tiny_image():
    with pytest.raises(DatasetError, match="tiny.png"):
        run(opt(preprocess="none"), np.zeros((1, 9, 3), np.uint8), path="tiny.png")
