"""The embedded demo: layout, caching, the known style, scoring."""

from __future__ import annotations

import os
import re
import shutil
import time

import numpy as np
import pytest
import torch
from PIL import Image

from fastgan.data import DEMO_DEFAULTS, DatasetError, create_dataset, demo_score, demo_style, prepare_demo
from fastgan.data import demo as demo_module
from fastgan.data.demo_build import COUNTS, STYLE_GAIN, STYLE_GAMMA
from fastgan.options import resolve


@pytest.fixture(scope="module")
def demos(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("demo"))
    return root, {arch: prepare_demo(arch, root) for arch in ("cyclegan", "pix2pix")}


def count(folder):
    return len([f for f in os.listdir(folder) if f.endswith(".png")])


def size(path):
    with Image.open(path) as im:
        return im.size


def test_cyclegan_layout_and_counts(demos):
    root, roots = demos
    d = roots["cyclegan"]
    assert d == os.path.join(root, "cyclegan")
    c = COUNTS["cyclegan"]
    assert {f: count(os.path.join(d, f)) for f in ("trainA", "trainB", "testA", "testB", "testA_true")} == {
        "trainA": c["train"], "trainB": c["train"], "testA": c["test"], "testB": c["test"], "testA_true": c["test"],
    }
    assert sorted(os.listdir(os.path.join(d, "testA"))) == sorted(os.listdir(os.path.join(d, "testA_true")))
    assert size(os.path.join(d, "trainA", "0000_astronaut.png")) == (c["train_size"],) * 2
    assert size(os.path.join(d, "testA", "0000_astronaut.png")) == (c["test_size"],) * 2
    # the train crops of the two domains come from different photos
    stems = lambda f: {n.split("_", 1)[1] for n in os.listdir(os.path.join(d, f))}  # noqa: E731
    assert not stems("trainA") & stems("trainB")


def test_testA_true_is_the_style_of_testA(demos):
    d = demos[1]["cyclegan"]
    for name in sorted(os.listdir(os.path.join(d, "testA")))[::7]:
        a = np.asarray(Image.open(os.path.join(d, "testA", name)).convert("RGB")).astype(np.float64) / 255
        t = np.asarray(Image.open(os.path.join(d, "testA_true", name)).convert("RGB")).astype(np.float64)
        expected = np.asarray(STYLE_GAIN) * a ** np.asarray(STYLE_GAMMA) * 255
        assert np.abs(t - expected).max() <= 0.5 + 1e-6
    # visible: the grade moves pixels a lot on average
    assert np.abs(expected / 255 - a).mean() > 0.05


def test_pix2pix_layout_pairs_gray_and_colour(demos):
    d = demos[1]["pix2pix"]
    c = COUNTS["pix2pix"]
    assert count(os.path.join(d, "train")) == c["train"] and count(os.path.join(d, "test")) == c["test"]
    name = sorted(os.listdir(os.path.join(d, "test")))[0]
    ab = np.asarray(Image.open(os.path.join(d, "test", name)).convert("RGB"))
    assert ab.shape == (c["test_size"], 2 * c["test_size"], 3)
    a, b = ab[:, : c["test_size"]], ab[:, c["test_size"] :]
    assert np.array_equal(a[..., 0], a[..., 1]) and np.array_equal(a[..., 0], a[..., 2])
    assert np.array_equal(a[..., 0], np.asarray(Image.fromarray(b).convert("L")))
    assert size(os.path.join(d, "train", sorted(os.listdir(os.path.join(d, "train")))[0])) == (
        2 * c["train_size"], c["train_size"])


def test_reused_not_rebuilt(demos, monkeypatch):
    root, roots = demos

    def fail(_):
        raise AssertionError("rebuilt")

    monkeypatch.setitem(demo_module.BUILDERS, "cyclegan", fail)
    assert prepare_demo("cyclegan", root) == roots["cyclegan"]
    monkeypatch.setenv("FASTGAN_DEMO_DIR", root)
    assert prepare_demo("cyclegan") == roots["cyclegan"]


def test_incomplete_demo_is_rebuilt_and_failed_build_leaves_nothing(tmp_path, monkeypatch):
    half = tmp_path / "cyclegan" / "trainA"  # a folder without the manifest: never used
    half.mkdir(parents=True)

    def tiny(root):
        os.makedirs(os.path.join(root, "trainA"))
        return {}

    monkeypatch.setitem(demo_module.BUILDERS, "cyclegan", tiny)
    d = prepare_demo("cyclegan", str(tmp_path))
    assert os.path.exists(os.path.join(d, "demo.json"))

    def crash(root):
        os.makedirs(os.path.join(root, "trainA"))
        raise KeyboardInterrupt

    monkeypatch.setitem(demo_module.BUILDERS, "pix2pix", crash)
    with pytest.raises(KeyboardInterrupt):
        prepare_demo("pix2pix", str(tmp_path))
    assert sorted(os.listdir(tmp_path)) == ["cyclegan"]
    with pytest.raises(DatasetError, match="no demo for arch 'gan'"):
        prepare_demo("gan", str(tmp_path))


def test_a_demo_with_a_folder_deleted_or_emptied_is_rebuilt(tmp_path, monkeypatch):
    """Its manifest counts each folder's files: a demo missing testA_true trained a whole run,
    then failed to score it (DatasetError traceback after training)."""
    builds = []

    def tiny(root):
        builds.append(root)
        for folder in ("trainA", "testA_true"):
            os.makedirs(os.path.join(root, folder))
            open(os.path.join(root, folder, "0.png"), "w").close()
        return {"counts": {"trainA": 1, "testA_true": 1}}

    monkeypatch.setitem(demo_module.BUILDERS, "cyclegan", tiny)
    d = prepare_demo("cyclegan", str(tmp_path))
    assert prepare_demo("cyclegan", str(tmp_path)) == d and len(builds) == 1
    open(os.path.join(d, "trainA", ".DS_Store"), "w").close()  # a file manager's: not one of the demo's
    assert prepare_demo("cyclegan", str(tmp_path)) == d and len(builds) == 1
    os.remove(os.path.join(d, "testA_true", "0.png"))
    assert prepare_demo("cyclegan", str(tmp_path)) == d and len(builds) == 2
    shutil.rmtree(os.path.join(d, "trainA"))
    assert prepare_demo("cyclegan", str(tmp_path)) == d and len(builds) == 3
    assert sorted(os.listdir(os.path.join(d, "trainA"))) == ["0.png"]


def test_a_demo_folder_that_cannot_be_written_is_named_with_the_variable_that_moves_it(tmp_path):
    """A full disk said only '[Errno 28] No space left on device'; a file in the folder's
    place, 'File exists'."""
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(DatasetError, match=rf"cannot build the cyclegan demo in {re.escape(str(tmp_path / 'file'))} \(.*\); point "
                                           "FASTGAN_DEMO_DIR at a writable folder with 11 MB free"):
        prepare_demo("cyclegan", str(tmp_path / "file"))


def test_a_killed_builds_leftovers_go_once_stale_though_the_demo_is_there(demos):
    root, roots = demos
    leftover = os.path.join(root, ".cyclegan.building-k1ll3d")
    os.makedirs(os.path.join(leftover, "trainA"))
    old = time.time() - 2 * 3600
    os.utime(leftover, (old, old))
    assert prepare_demo("cyclegan", root) == roots["cyclegan"]
    assert not os.path.exists(leftover)


class TrueStyle(torch.nn.Module):
    """A generator that applies the known grade exactly (in the model's [-1, 1] units)."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.seen = []

    def forward(self, x):
        self.seen.append((self.training, torch.is_grad_enabled(), x.min().item(), x.max().item()))
        return demo_style((x + 1) / 2, channel_axis=1) * 2 - 1 + self.w


def test_demo_score_identity_and_true_transform(demos):
    d = demos[1]["cyclegan"]
    ident = demo_score("cyclegan", torch.nn.Identity(), d, "cpu")
    assert ident["model"] == pytest.approx(ident["identity"], abs=1e-6)
    assert ident["identity"] > 0.05
    g = TrueStyle()
    s = demo_score("cyclegan", g, d, "cpu")
    assert s["model"] < 0.003 and s["identity"] == ident["identity"]
    assert g.training  # mode restored
    assert all(not training and not grad and lo >= -1 and hi <= 1 for training, grad, lo, hi in g.seen)


def test_demo_score_pix2pix(demos):
    d = demos[1]["pix2pix"]
    s = demo_score("pix2pix", torch.nn.Identity(), d, "cpu")
    assert s["model"] == pytest.approx(s["identity"], abs=1e-6) and s["identity"] > 0.02
    grey = demo_score("pix2pix", lambda x: torch.zeros_like(x), d, "cpu")  # mid-grey everywhere
    assert grey["model"] > 0.1


@pytest.mark.parametrize("arch", ["cyclegan", "pix2pix"])
def test_demo_defaults_fit_the_demo(demos, arch):
    opt = resolve(arch, {}, DEMO_DEFAULTS[arch]).replace(dataroot=demos[1][arch], num_threads=0)
    assert opt.demo
    ds = create_dataset(opt)
    c = COUNTS[arch]
    assert opt.load_size == c["train_size"] and opt.crop_size == c["test_size"]
    item = ds.get(0, 0)
    assert item["A"].shape == item["B"].shape == (3, opt.crop_size, opt.crop_size)
    if opt.netG.startswith("unet_"):
        assert opt.crop_size % int(opt.netG.split("_")[1]) == 0
    # at test time the held-out crops pass through unchanged
    test = create_dataset(opt.replace(phase="test", isTrain=False,
                                      dataset_mode="single" if arch == "cyclegan" else "aligned",
                                      dataroot=os.path.join(demos[1][arch], "testA") if arch == "cyclegan"
                                      else demos[1][arch]))
    assert test.get(0, 0)["A"].shape == (3, opt.crop_size, opt.crop_size)


def test_no_dataroot_uses_the_demo(demos, monkeypatch):
    root, roots = demos
    monkeypatch.setenv("FASTGAN_DEMO_DIR", root)
    opt = resolve("cyclegan", {}, DEMO_DEFAULTS["cyclegan"])
    assert opt.dataroot is None and opt.demo
    ds = create_dataset(opt)
    assert ds.root == roots["cyclegan"] and len(ds) == COUNTS["cyclegan"]["train"]
