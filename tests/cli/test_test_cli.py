"""`python -m fastgan.test` end to end, on the runs of tiny `python -m fastgan.train` models."""

import os
import re

import numpy as np
import pytest
import torch
from PIL import Image

from fastgan import test as test_cli
from fastgan import train as train_cli
from fastgan.image_pages import tensor2im, write_image_page
from fastgan.models import count_parameters
from tests.cli.runs import tiny_args, write_images, write_images_of_sizes


def test_inference_cli_translates_with_a_saved_checkpoint(unaligned_root, tmp_path, capsys):
    train_cli.main(tiny_args(unaligned_root, tmp_path, "run") + ["--max_iters", "2"])
    capsys.readouterr()
    index = test_cli.main(["--name", "run", "--checkpoints_dir", str(tmp_path), "--results_dir",
                           str(tmp_path / "results"), "--device", "cpu", "--eval", "--display_winsize", "128",
                           "--num_threads", "2"])
    out = capsys.readouterr().out
    table = (tmp_path / "run" / "test_opt.txt").read_text()  # printed too, before the models load, as the reference's
    assert table in out and out.index(table) < out.index("loading the model from")
    out = out.splitlines()  # the reference's lines, which scripts read
    assert f"loading the model from {tmp_path / 'run' / 'latest_net_G_A.pth'}" in out
    size = count_parameters(plain_generator(tmp_path / "run" / "latest_net_G_A.pth")) / 1e6
    assert [line for line in out if line.startswith("[Network")] == [
        f"[Network G_A] Total number of parameters : {size:.3f} M"]
    assert [line for line in out if line.startswith("processing")] == [
        f"processing (0000)-th image... {[os.path.join(unaligned_root, 'testA', 'img000.png')]}"]
    html = open(index).read()
    images = os.path.join(os.path.dirname(index), "images")
    assert sorted(os.listdir(images)) == sorted(f"img{i:03d}_{k}.png" for i in range(3) for k in ("real", "fake"))
    assert html.count("<tr>") == 3 and "img000_fake.png" in html
    assert html.count("style='width:128px'") == 6 and html.index("<h3>img000</h3>") < html.index("<h3>img001</h3>")
    table = (tmp_path / "run" / "test_opt.txt").read_text()  # as the reference's test writes it
    lines = table.splitlines()
    # the reference's test options' defaults: phase test, --model test, load_size the default crop size
    assert f"{'phase':>25}: {'test':<30}" in lines and (tmp_path / "run" / "train_opt.txt").exists()
    # (no testB/: one generator, G_A, on testA/: the reference's --model test --model_suffix _A)
    assert f"{'model':>25}: {'test':<30}" in lines and f"{'model_suffix':>25}: {'_A':<30}\t[default: ]" in lines
    assert f"{'gpu_ids':>25}: {'-1':<30}\t[default: 0]" in lines
    assert f"{'load_size':>25}: {'32':<30}\t[default: 256]" in lines  # the run's crop size
    assert f"{'isTrain':>25}: {'False':<30}\t[default: None]" in lines
    # as typed: the reference's test.py forces serial order, no flip, batch 1 and no workers after its table
    assert f"{'num_threads':>25}: {'2':<30}\t[default: 4]" in lines
    assert f"{'serial_batches':>25}: {'False':<30}" in lines and f"{'no_flip':>25}: {'False':<30}" in lines
    assert f"{'eval':>25}: {'True':<30}\t[default: False]" in table  # the test's own options too
    assert f"{'num_test':>25}: {'50':<30}" in table.splitlines()
    assert f"{'dataset_mode':>25}: {'single':<30}" in lines  # how testA/ was read: the test model's default
    named = {line.split(":")[0].strip() for line in lines}
    assert not named & {"lambda_A", "lambda_B", "lambda_identity", "lambda_L1"}  # the reference's models add
    # them in training only, and its test has none of its training options
    assert not named & {"lr", "n_epochs", "pool_size", "print_freq", "continue_train", "gan_mode", "amp", "loader"}

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


def test_image_page_links_file_names_that_are_no_utf8(tmp_path):
    """A Latin-1 file name (os.fsdecode's surrogate for byte 0xE9) failed the page's UTF-8
    write after every image was saved; its link now holds the name's bytes, percent-encoded."""
    from urllib.parse import unquote_to_bytes

    name = os.fsdecode(b"caf\xe9 <1>")
    page = tmp_path / "index.html"
    write_image_page(str(page), "Experiment = x", [(name, [("fake", f"images/{name}_fake.png")])], 64)
    html = page.read_text(encoding="utf-8")
    href = html.split('href="')[1].split('"')[0]
    assert unquote_to_bytes(href) == b"images/caf\xe9 <1>_fake.png"
    assert "<h3>caf\ufffd &lt;1&gt;</h3>" in html and not (tmp_path / "index.html.tmp").exists()


def test_inference_cli_under_torchrun_is_refused(monkeypatch, capsys):
    """Every rank would translate everything into the same files at once."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(SystemExit) as e:
        test_cli.main(["--name", "run"])
    assert e.value.code == 2
    assert "fastgan.test runs in one process (started as one of 2 by torchrun)" in capsys.readouterr().err


@pytest.mark.parametrize("content", ["", '{"arch": "cyclegan", "ng', "[1, 2]"], ids=["empty", "cut off", "a list"])
def test_a_damaged_train_opt_json_is_one_line_naming_it(content, tmp_path, capsys):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "train_opt.json").write_text(content)
    with pytest.raises(SystemExit) as e:
        test_cli.main(["--name", "run", "--checkpoints_dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert e.value.code == 2 and len(err.strip().splitlines()) == 1, err
    assert f"{tmp_path / 'run' / 'train_opt.json'} holds no options (" in err and "remove it and type" in err


@pytest.mark.parametrize("extra,message", [
    (["--num_test", "-1"], "--num_test -1 must not be negative"),
    (["--display_winsize", "-3"], "--display_winsize -3 must be positive (pixels)"),
    (["--checkpoint", "EMPTY"], "EMPTY: empty"),
    (["--checkpoint", "LFS"], "a Git LFS pointer"),
    (["--checkpoint", "GARBAGE"], "not a PyTorch network file"),
    (["--checkpoint", "FOLDER"], "is a folder, not a network file"),
    (["--checkpoint", "PAGE"], "PAGE: a web page or other markup (HTML, XML), not a network file"),
    (["--checkpoint", "STATE"], "STATE is a fastgan training state (training_state.pt), which a run resumes from, "
                                "not a network: give one of the run's network files ({epoch}_net_{name}.pth)"),
    (["--checkpoint", "OTHER"], "OTHER holds no network weights: its entries (epoch, nets) are not tensors"),
    (["--checkpoint", "WRAPPED"], "WRAPPED holds no network weights: its entries (epoch, state_dict) are not tensors; "
                                  "a network's weights may be the tensors under 'state_dict': save those alone"),
    (["--results_dir", "FILE"], "FILE is a file, not a folder"),
    (["--model", "colorization"], "--model colorization: the reference's colorization model"),
])
def test_inference_cli_bad_input_is_one_clear_line(extra, message, unaligned_root, tmp_path, capsys):
    train_cli.main(tiny_args(unaligned_root, tmp_path, "run") + ["--max_iters", "1"])
    files = {"EMPTY": b"", "LFS": b"version https://git-lfs.github.com/spec/v1\noid sha256:00\n",
             "GARBAGE": b"not a checkpoint" * 10, "FILE": b"a file", "PAGE": b"\n<!DOCTYPE html><html>moved</html>",
             "STATE": (tmp_path / "run" / "training_state.pt").read_bytes()}
    torch.save({"epoch": 3, "nets": {}}, tmp_path / "OTHER")
    torch.save({"epoch": 3, "state_dict": {"w": torch.zeros(1)}}, tmp_path / "WRAPPED")
    for key, content in files.items():
        (tmp_path / key).write_bytes(content)
    (tmp_path / "FOLDER").mkdir()
    extra = [str(tmp_path / e) if e in (*files, "FOLDER", "OTHER", "WRAPPED") else e for e in extra]
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


def test_model_test_on_pairs_takes_the_left_halves_whatever_the_direction(aligned_root, tmp_path):
    """The reference's aligned dataset never swaps the halves (its pix2pix model does), and its
    test model translates input['A']: the left half, also for a run trained BtoA (the right
    halves were taken)."""
    train_cli.main(tiny_args(aligned_root, tmp_path, "p2p", "pix2pix") + ["--direction", "BtoA", "--max_iters", "1"])
    index = test_cli.main(["--name", "p2p", "--checkpoints_dir", str(tmp_path), "--dataroot", aligned_root,
                           "--results_dir", str(tmp_path / "results"), "--model", "test", "--dataset_mode", "aligned",
                           "--eval", "--num_test", "1"])
    with Image.open(os.path.join(aligned_root, "test", "img000.png")) as pair:
        left = np.asarray(pair.crop((0, 0, 40, 40)).resize((32, 32), Image.BICUBIC), dtype=np.float32)
    real = np.asarray(Image.open(os.path.join(os.path.dirname(index), "images", "img000_real.png")), dtype=np.float32)
    assert np.abs(real - left).max() <= 2
    # the test model sets no norm or netG: its table's defaults are the base options', not pix2pix's
    table = (tmp_path / "p2p" / "test_opt.txt").read_text().splitlines()
    assert f"{'norm':>25}: {'batch':<30}\t[default: instance]" in table
    assert f"{'netG':>25}: {'resnet_6blocks':<30}\t[default: resnet_9blocks]" in table
    assert f"{'dataset_mode':>25}: {'aligned':<30}\t[default: single]" in table


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
    table = (run / "test_opt.txt").read_text().splitlines()  # the defaults of the reference's test model
    assert f"{'model':>25}: {'test':<30}" in table and f"{'dataset_mode':>25}: {'single':<30}" in table
    assert f"{'model_suffix':>25}: {'':<30}" in table and f"{'no_dropout':>25}: {'True':<30}\t[default: False]" in table
    side_b = test_cli.main(common + ["--results_dir", str(tmp_path / "b"), "--model_suffix", "_B"])
    assert f"{'model_suffix':>25}: {'_B':<30}\t[default: ]" in (run / "test_opt.txt").read_text().splitlines()

    def fake(index):
        return np.asarray(Image.open(os.path.join(os.path.dirname(index), "images", "img000_fake.png")))

    assert np.array_equal(fake(plain), fake(side_b))


def test_a_model_suffix_alone_is_the_references_test_model(unaligned_root, tmp_path, capsys):
    """The reference's test default model is test, whose option --model_suffix is: it was refused
    without --model test."""
    train_cli.main(tiny_args(unaligned_root, tmp_path, "run") + ["--max_iters", "1"])
    capsys.readouterr()
    test_cli.main(["--name", "run", "--checkpoints_dir", str(tmp_path), "--dataroot",
                   os.path.join(unaligned_root, "testA"), "--results_dir", str(tmp_path / "results"),
                   "--model_suffix", "_B", "--num_test", "1"])
    assert f"with G_B from {tmp_path / 'run' / 'latest_net_G_B.pth'}" in capsys.readouterr().out


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


def test_inference_cli_names_an_image_too_small_for_a_resnet_generator(unaligned_root, tmp_path, capsys):
    """A ResNet generator takes any size from 5 pixels: a 4x4 image is named, on either side of
    the cycle test and alone, rather than failing inside the net."""
    train_cli.main(tiny_args(unaligned_root, tmp_path, "run") + ["--max_iters", "1"])
    tree = tmp_path / "tiny"
    write_images(tree / "testA", 1, 8, seed=1)
    write_images(tree / "testB", 1, 4, seed=2)
    for root, path in ((tree, tree / "testB" / "img000.png"), (tree / "testB", tree / "testB" / "img000.png")):
        with pytest.raises(SystemExit) as e:
            test_cli.main(["--name", "run", "--checkpoints_dir", str(tmp_path), "--dataroot", str(root),
                           "--results_dir", str(tmp_path / "results"), "--preprocess", "none"])
        assert e.value.code == 2
        assert (f"{path}: 4x4 after --preprocess none; --netG resnet_6blocks takes sides of 5 pixels or more"
                in capsys.readouterr().err), root
    index = test_cli.main(["--name", "run", "--checkpoints_dir", str(tmp_path), "--dataroot", str(tree / "testA"),
                           "--results_dir", str(tmp_path / "results"), "--preprocess", "none"])
    assert np.asarray(Image.open(os.path.join(os.path.dirname(index), "images", "img000_fake.png"))).shape == (8, 8, 3)


def test_inference_cli_names_a_4x4_image_whose_norm_would_get_one_value(unaligned_root, tmp_path, capsys):
    """With --padding_type zero a ResNet generator takes 4 pixel sides, but a 4x4 image leaves its
    blocks one pixel: instance norm always, and batch norm without --eval, cannot take it."""
    tree = tmp_path / "tiny"
    write_images(tree, 1, 4, seed=1)
    for norm, eval_mode in (("instance", False), ("instance", True), ("batch", False), ("batch", True)):
        name = f"run_{norm}"
        if not eval_mode:
            train_cli.main(tiny_args(unaligned_root, tmp_path, name) + ["--max_iters", "1", "--padding_type", "zero",
                                                                        "--norm", norm])
        args = ["--name", name, "--checkpoints_dir", str(tmp_path), "--dataroot", str(tree), "--results_dir",
                str(tmp_path / "results"), "--preprocess", "none", "--padding_type", "zero", "--norm", norm]
        if norm == "batch" and eval_mode:  # running statistics: it translates
            index = test_cli.main(args + ["--eval"])
            image = Image.open(os.path.join(os.path.dirname(index), "images", "img000_fake.png"))
            assert image.size == (4, 4)
            continue
        with pytest.raises(SystemExit) as e:
            test_cli.main(args + (["--eval"] if eval_mode else []))
        assert e.value.code == 2
        assert (f"{tree / 'img000.png'}: 4x4 after --preprocess none; --netG resnet_6blocks --padding_type zero "
                f"shrinks it to 1x1 pixel in its ResNet blocks, and --norm {norm} cannot normalize one value"
                in capsys.readouterr().err), (norm, eval_mode)


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


def test_the_cycle_test_calls_the_generators_in_the_references_order():
    """fake_B, rec_A, fake_A, rec_B, as the reference's CycleGANModel.forward (where dropout is on,
    its masks are drawn in that order)."""
    calls = []

    def net(name, shift):
        def run(x):
            calls.append((name, x.flatten()[0].item()))
            return x + shift
        return run

    item = {"A": torch.zeros(3, 4, 4), "B": torch.full((3, 4, 4), 100.0)}
    images = test_cli.visuals("cycle", {"G_A": net("G_A", 1), "G_B": net("G_B", 10)}, item, "cpu")
    assert calls == [("G_A", 0), ("G_B", 1), ("G_B", 100), ("G_A", 110)]
    assert {k: v.flatten()[0].item() for k, v in images.items()} == \
        {"real_A": 0, "fake_B": 1, "rec_A": 11, "real_B": 100, "fake_A": 110, "rec_B": 111}


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


def test_files_of_a_tree_that_share_a_name_keep_their_own_results(unaligned_root, tmp_path):
    """a/img000.png and b/img000.png under one dataroot: the first one's results keep the
    reference's names, the later one's are named by its path, not written over them."""
    train_cli.main(tiny_args(unaligned_root, tmp_path, "run") + ["--max_iters", "1"])
    tree = tmp_path / "tree"
    write_images(tree / "a", 1, 40, seed=8)
    write_images(tree / "b", 1, 40, seed=9)
    index = test_cli.main(["--name", "run", "--checkpoints_dir", str(tmp_path), "--dataroot", str(tree),
                           "--model", "test", "--results_dir", str(tmp_path / "results")])
    images = os.path.join(os.path.dirname(index), "images")
    assert sorted(os.listdir(images)) == ["b_img000_fake.png", "b_img000_real.png", "img000_fake.png",
                                          "img000_real.png"]
    for name, folder in (("img000_real.png", "a"), ("b_img000_real.png", "b")):
        written = np.asarray(Image.open(os.path.join(images, name))).astype(int)
        source = np.asarray(Image.open(tree / folder / "img000.png").resize((32, 32), Image.BICUBIC)).astype(int)
        assert np.abs(written - source).max() <= 1, name


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
    out = capsys.readouterr().out  # with --verbose, as the reference's: the net, then its size
    assert "ResnetGenerator(" in out and "[Network G_A] Total number of parameters" in out
    assert out.index("ResnetGenerator(") < out.index("[Network G_A]")
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


def test_a_model_suffix_for_a_pix2pix_run_is_refused(aligned_root, tmp_path, capsys):
    """Its one generator is G: --model_suffix _A was ignored without a word (the reference looks
    for G_A and fails); the empty suffix names G."""
    train_cli.main(tiny_args(aligned_root, tmp_path, "p2p", "pix2pix") + ["--max_iters", "1"])
    common = ["--name", "p2p", "--checkpoints_dir", str(tmp_path), "--dataroot", str(tmp_path / "single"),
              "--results_dir", str(tmp_path / "r"), "--model", "test"]
    write_images(tmp_path / "single", 1, 32, seed=3)
    with pytest.raises(SystemExit) as e:
        test_cli.main(common + ["--model_suffix", "_A"])
    assert e.value.code == 2
    assert ("--model_suffix _A: a pix2pix run has one generator, latest_net_G.pth; leave --model_suffix out"
            in capsys.readouterr().err)
    assert os.path.exists(test_cli.main(common + ["--model_suffix", ""]))


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


def test_a_pix2pix_run_on_a_folder_of_images_points_to_model_test(aligned_root, tmp_path, capsys):
    train_cli.main(tiny_args(aligned_root, tmp_path, "p2p", "pix2pix") + ["--max_iters", "1"])
    folder = tmp_path / "photos"
    write_images(folder, 1, 32, seed=3)
    common = ["--name", "p2p", "--checkpoints_dir", str(tmp_path), "--dataroot", str(folder),
              "--results_dir", str(tmp_path / "results")]
    with pytest.raises(SystemExit) as e:
        test_cli.main(common)
    assert e.value.code == 2
    assert (f"{folder} holds no test/ of A|B pairs for the pix2pix test (G on the A halves, beside B); to "
            "translate a folder of images with G, use --model test") in capsys.readouterr().err
    index = test_cli.main(common + ["--model", "test"])
    assert sorted(os.listdir(os.path.join(os.path.dirname(index), "images"))) == ["img000_fake.png", "img000_real.png"]


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
    out = capsys.readouterr().out
    assert "unused: --display_id" in out and "loss_curve" not in out  # a test writes no training pictures
    table = (tmp_path / "run" / "test_opt.txt").read_text().splitlines()  # visdom's are training options
    assert f"{'suffix':>25}: {'':<30}" in table and f"{'use_wandb':>25}: {'False':<30}" in table
    assert not [line for line in table if line.strip().startswith("display_id")]
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


def test_aspect_ratio_sizes_as_the_references_save_image():
    """The reference's save_image for an h x w image: PIL size (h, w * ratio) above 1, (h / ratio, w)
    below, width first (a 30 wide, 20 high image here, so that every order differs)."""
    image = Image.new("RGB", (30, 20))
    assert test_cli.with_aspect_ratio(image, 2.0).size == (20, 60)
    assert test_cli.with_aspect_ratio(image, 0.5).size == (40, 30)
    assert test_cli.with_aspect_ratio(image, 1.0) is image


def test_inference_cli_runs_on_one_device_and_says_so_for_several_gpu_ids(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        test_cli.main(["--name", "run", "--checkpoints_dir", str(tmp_path), "--gpu_ids", "0,1"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "fastgan.test runs on one device; pick one, such as --gpu_ids 0" in err
    assert "torchrun" not in err


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
    with pytest.raises(SystemExit):
        test_cli.main(["--checkpoint", str(tmp_path / "nope.pth"), "--dataroot", testA])
    assert f"--checkpoint {tmp_path / 'nope.pth'}: no such file" in capsys.readouterr().err
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
    # a typed --model_suffix names the generator to load, as the reference's test model: it was
    # replaced by latest_net_G.pth, still called G_B
    with pytest.raises(SystemExit) as e:
        test_cli.main(common + ["--model", "test", "--model_suffix", "_B"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert f"no checkpoint {run / 'latest_net_G_B.pth'} (--model_suffix _B)" in err
    assert "holds one generator, latest_net_G.pth: leave --model_suffix out" in err


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
    # without --model too: the reference's test default model (it was built without dropout)
    test_cli.main([a for a in common if a not in ("--model", "test")] + ["--verbose"])
    assert "Dropout(p=0.5" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        test_cli.main(common + ["--no_dropout"])
    assert "trained with dropout and the network built without it" in capsys.readouterr().err


def ctrl_c_at_call(n: int, real):
    """`real`, which raises KeyboardInterrupt (Ctrl-C) at its n-th call instead."""
    calls = []

    def stopped(*a, **k):
        calls.append(1)
        if len(calls) == n:
            raise KeyboardInterrupt
        return real(*a, **k)

    return stopped


def test_a_stopped_test_lists_what_it_translated(unaligned_root, tmp_path, monkeypatch, capsys):
    """Ctrl-C midway: index.html listed an earlier test's whole set, half of it from other networks."""
    train_cli.main(tiny_args(unaligned_root, tmp_path, "run") + ["--max_iters", "1"])
    args = ["--name", "run", "--checkpoints_dir", str(tmp_path), "--results_dir", str(tmp_path / "results"),
            "--device", "cpu"]
    index = test_cli.main(args)
    assert open(index).read().count("<tr>") == 3
    monkeypatch.setattr(test_cli, "visuals", ctrl_c_at_call(2, test_cli.visuals))  # the second image
    with pytest.raises(SystemExit) as e:
        test_cli.main(args)
    assert e.value.code == 130 and open(index).read().count("<tr>") == 1
    assert f"stopped after 1 of 3 images; {index} lists those" in capsys.readouterr().err


def test_a_test_stopped_in_the_middle_of_an_image_leaves_none_of_its_files(unaligned_root, tmp_path, monkeypatch,
                                                                           capsys):
    """Ctrl-C between an image's two pictures (real, fake): its first stayed, listed nowhere."""
    train_cli.main(tiny_args(unaligned_root, tmp_path, "run") + ["--max_iters", "1"])
    # the second image's second picture
    monkeypatch.setattr(test_cli, "with_aspect_ratio", ctrl_c_at_call(4, test_cli.with_aspect_ratio))
    with pytest.raises(SystemExit) as e:
        test_cli.main(["--name", "run", "--checkpoints_dir", str(tmp_path), "--results_dir", str(tmp_path / "results"),
                       "--device", "cpu"])
    assert e.value.code == 130 and "stopped after 1 of 3 images" in capsys.readouterr().err
    (folder,) = (tmp_path / "results" / "run").iterdir()
    listed = set(re.findall(r"images/([^\"']+\.png)", (folder / "index.html").read_text()))
    assert len(listed) == 2 and set(os.listdir(folder / "images")) == listed


def test_a_test_with_dropout_translates_alike_every_time_and_follows_seed(aligned_root, tmp_path):
    """Without --eval a pix2pix generator keeps its dropout (the reference's test too, whose
    draws differ run to run): here they follow --seed (the run's by default)."""
    train_cli.main(tiny_args(aligned_root, tmp_path, "p2p", "pix2pix") + ["--max_iters", "1"])

    def fakes(*extra):
        index = test_cli.main(["--name", "p2p", "--checkpoints_dir", str(tmp_path), "--dataroot", aligned_root,
                               "--results_dir", str(tmp_path / "results"), *extra])
        images = os.path.join(os.path.dirname(index), "images")
        return [np.array(Image.open(os.path.join(images, f))) for f in sorted(os.listdir(images)) if "fake" in f]

    first, again, run_seed, other = fakes(), fakes(), fakes("--seed", "7"), fakes("--seed", "1")
    assert all((a == b).all() for a, b in zip(first, again))
    assert all((a == b).all() for a, b in zip(first, run_seed))  # the run's --seed 7 (0 was taken)
    assert any((a != b).any() for a, b in zip(first, other))


@pytest.mark.parametrize("device,netG,no_dropout,eval_mode,eager,preprocess,path", [
    ("cpu", "resnet_9blocks", True, False, False, "resize_and_crop", (True, True)),
    ("cpu", "resnet_9blocks", False, True, False, "resize_and_crop", (True, True)),  # dropout, not live in eval
    ("cpu", "resnet_9blocks", False, False, False, "resize_and_crop", (True, False)),  # live dropout's draws: NCHW
    ("cpu", "unet_256", True, True, False, "resize_and_crop", (True, False)),  # U-Nets measured slower in NHWC
    ("cpu", "resnet_9blocks", True, True, True, "resize_and_crop", (False, False)),
    ("gpu", "resnet_9blocks", True, True, False, "resize_and_crop", (False, False)),
    ("cpu", "resnet_9blocks", True, True, False, "none", (True, True)),  # measured once per size class
    ("cpu", "resnet_9blocks", True, True, False, "scale_width", (True, True)),
    ("cpu", "resnet_9blocks", True, True, False, "scale_width_and_crop", (True, True)),
], ids=["resnet", "resnet-dropout-eval", "resnet-live-dropout", "unet", "eager", "cuda-device", "sizes-vary",
        "widths-vary", "cropped"])
def test_the_generators_path_follows_device_net_dropout_sizes_and_eager(device, netG, no_dropout, eval_mode, eager,
                                                                          preprocess, path):
    from fastgan.options import resolve

    opt = resolve("cyclegan", {"netG": netG, "no_dropout": no_dropout, "preprocess": preprocess})
    tool = dict(test_cli.TOOL_DEFAULTS, eval=eval_mode, eager=eager)
    device = torch.device("cuda" if device == "gpu" else device)  # (only its type is read: no GPU needed)
    assert test_cli.generator_path(opt, tool, device) == path


@pytest.mark.parametrize("device,eager,preprocess,timed", [
    ("cuda", False, "resize_and_crop", True),
    ("cuda", False, "none", False),  # every size would be timed anew
    ("cuda", False, "scale_width", False),
    ("cuda", True, "none", True),  # --eager: the reference's test, on but for scale_width
    ("cuda", True, "scale_width", False),
    ("cpu", False, "resize_and_crop", None),  # not cuDNN's device: left as it was
])
def test_cudnn_times_its_algorithms_on_a_gpu_as_training_and_the_reference_set_it(device, eager, preprocess, timed):
    from fastgan.options import resolve

    opt = resolve("cyclegan", {"preprocess": preprocess})
    tool = dict(test_cli.TOOL_DEFAULTS, eager=eager)
    for before in (False, True):  # (tests/conftest.py restores the flag)
        torch.backends.cudnn.benchmark = before
        test_cli.time_cudnn_algorithms(opt, tool, torch.device(device))  # (only the type is read: no GPU needed)
        assert torch.backends.cudnn.benchmark == (before if timed is None else timed)


def test_a_cpu_test_runs_the_fused_generators_and_writes_what_eager_writes(unaligned_root, tmp_path, capsys,
                                                                          monkeypatch):
    """On a CPU the generators run through fastgan.accelerate in channels_last: the same images
    as --eager's (the reference's modules) to one level of a truncation step, the swap said."""
    from fastgan.nn import FusedInstanceNormAct, ReflectConv2d

    train_cli.main(tiny_args(unaligned_root, tmp_path, "run") + ["--max_iters", "1"])
    capsys.readouterr()
    kinds, nhwc = set(), []
    real_speed_up = test_cli.speed_up

    def recorded(nets, *args):
        memory_format = real_speed_up(nets, *args)
        kinds.update(type(m) for G in nets.values() for m in G.modules())
        nhwc.extend(p.is_contiguous(memory_format=torch.channels_last) for G in nets.values()
                    for p in G.parameters() if p.dim() == 4)
        return memory_format

    def written(*extra):
        index = test_cli.main(["--name", "run", "--checkpoints_dir", str(tmp_path), "--dataroot", unaligned_root,
                               "--results_dir", str(tmp_path / "results" / (extra[0] if extra else "fast")),
                               "--phase", "train", "--eval", *extra])
        images = os.path.join(os.path.dirname(index), "images")
        return {f: np.asarray(Image.open(os.path.join(images, f)), dtype=int) for f in sorted(os.listdir(images))}

    plain = written("--eager")
    assert "generators: the reference's modules (--eager)" in capsys.readouterr().out.splitlines()
    monkeypatch.setattr(test_cli, "speed_up", recorded)
    fused = written()
    assert "generators: fastgan's fused modules, channels_last (--eager: the reference's)" in \
        capsys.readouterr().out.splitlines()
    assert FusedInstanceNormAct in kinds and ReflectConv2d in kinds and torch.nn.InstanceNorm2d not in kinds
    assert nhwc and all(nhwc)  # every convolution's weight in channels_last
    assert plain.keys() == fused.keys() and len(plain) == 6 * 6  # both generators, both ways
    assert all(np.abs(plain[f] - fused[f]).max() <= 1 for f in plain)


def test_a_later_test_translates_with_the_kernels_an_earlier_one_measured(unaligned_root, tmp_path, monkeypatch,
                                                                         capsys):
    """As training runs do (fastgan/engine/choice_cache.py): a CPU test adopts the machine's
    measured choices at start and adds its own when it ends; --eager, whose modules measure
    nothing, leaves the file alone."""
    from fastgan import ops
    from fastgan.engine import choice_cache
    from fastgan.engine.state import measured_choices
    from fastgan.ops import _unfolded_conv

    train_cli.main(tiny_args(unaligned_root, tmp_path, "run") + ["--max_iters", "1"])
    monkeypatch.setenv(choice_cache.ENV, str(tmp_path / "choices"))
    path = choice_cache.cache_file(torch.device("cpu"))

    def a_test(*extra):
        ops.clear_measured_choices()  # (a new process)
        capsys.readouterr()
        test_cli.main(["--name", "run", "--checkpoints_dir", str(tmp_path), "--dataroot", unaligned_root,
                       "--results_dir", str(tmp_path / "results"), "--eval", *extra])
        return capsys.readouterr().out

    try:
        a_test()
        saved = torch.load(path, weights_only=False)
        assert saved == measured_choices() and saved["conv_choices"] and saved["unfolded_conv_choices"]
        # a choice the next test could not have measured itself: it must come from the file
        key, entry = next(iter(saved["unfolded_conv_choices"].items()))
        entry["choice"] = flipped = "aten" if entry["choice"] == "gemm" else "gemm"
        torch.save(saved, path)
        count = len(saved["conv_choices"]) + len(saved["unfolded_conv_choices"])
        out = a_test()
        assert f"kernel choices: {count} measured by earlier runs on this machine, each taken if this test meets " \
            "its shape" in out
        assert _unfolded_conv.selection_cache()[key]["choice"] == flipped
        assert torch.load(path, weights_only=False) == saved  # nothing new measured: the file as it was
        assert "kernel choices" not in a_test("--eager") and torch.load(path, weights_only=False) == saved
    finally:
        ops.clear_measured_choices()  # no flipped choice left for the next test


def test_images_of_their_own_sizes_run_the_fused_generators_measured_once_per_size_class(unaligned_root, tmp_path,
                                                                                          capsys):
    """--preprocess none keeps each image's size: the fused generators run all the same (the
    images --eager writes, to one level), their kernels measured once per size class (pixels
    within a power of 2), not once per size; the line says so."""
    from fastgan import ops
    from fastgan.ops import _reflect_conv2d, _unfolded_conv

    train_cli.main(tiny_args(unaligned_root, tmp_path, "run") + ["--max_iters", "1"])
    root = tmp_path / "own_sizes"
    # (height, width), taken to multiples of 4 as the reference does (26 -> 24): 480, 480 and 1760
    # pixels, two size classes (a sixteenth of each in the ResNet blocks)
    write_images_of_sizes(root, ("testA", "testB"), [(20, 24), (26, 20), (40, 44)], seed=3)
    capsys.readouterr()

    def written(*extra):
        index = test_cli.main(["--name", "run", "--checkpoints_dir", str(tmp_path), "--dataroot", str(root),
                               "--results_dir", str(tmp_path / "results" / (extra[0] if extra else "fast")),
                               "--preprocess", "none", "--eval", *extra])
        images = os.path.join(os.path.dirname(index), "images")
        return {f: np.asarray(Image.open(os.path.join(images, f)), dtype=int) for f in sorted(os.listdir(images))}

    plain = written("--eager")
    ops.clear_measured_choices()
    fused = written()
    assert ("generators: fastgan's fused modules, channels_last (--eager: the reference's); --preprocess none "
            "keeps each image's size: kernels measured once per size class (pixels within a power of 2)") in \
        capsys.readouterr().out.splitlines()
    assert plain.keys() == fused.keys() and len(plain) == 3 * 6
    assert {plain[f].shape for f in plain} == {(20, 24, 3), (24, 20, 3), (40, 44, 3)}
    assert all(np.abs(plain[f] - fused[f]).max() <= 1 for f in plain)
    keys = [*_reflect_conv2d.selection_cache(), *_unfolded_conv.selection_cache()]
    ops.clear_measured_choices()
    assert keys and all("pixels 2^" in str(key) for key in keys)
    forward_inputs = {key[-1][0][0] for key in keys if key[0] == "forward"}  # the ResNet blocks' inputs
    assert len(forward_inputs) == 2, forward_inputs  # three sizes, two classes


def test_a_pix2pix_run_on_unaligned_data_tests_as_the_references_pix2pix(aligned_root, tmp_path, capsys):
    """A typed --dataset_mode unaligned: G on testA/ beside testB/'s unpaired images (it became a
    one-generator test, unsaid, overriding the typed mode); without testB/, refused in words."""
    train_cli.main(tiny_args(aligned_root, tmp_path, "p2p", "pix2pix") + ["--max_iters", "1"])
    data = tmp_path / "unaligned"
    write_images(data / "testA", 2, 40, seed=11)
    write_images(data / "testB", 3, 40, seed=12)
    common = ["--name", "p2p", "--checkpoints_dir", str(tmp_path), "--dataroot", str(data),
              "--dataset_mode", "unaligned"]
    index = test_cli.main(common + ["--results_dir", str(tmp_path / "res")])
    images = os.path.join(os.path.dirname(index), "images")
    assert sorted(os.listdir(images)) == sorted(f"img{i:03d}_{k}.png" for i in range(2)
                                                for k in ("real_A", "fake_B", "real_B"))
    # max(|A|, |B|) items, B indexed serially: the third, A's img000 again beside B's img002, is the
    # one img000's files keep (as the reference's test, which writes over the first)
    real_b = np.asarray(Image.open(os.path.join(images, "img000_real_B.png")), dtype=int)
    apart = []
    for i in range(3):  # (resized to the run's crop size, 32: the test's load size)
        with Image.open(data / "testB" / f"img{i:03d}.png") as b:
            apart.append(np.abs(real_b - np.asarray(b.resize((32, 32), Image.BICUBIC), dtype=int)).max())
    assert apart[2] <= 1 and min(apart[:2]) > 50, apart
    table = (tmp_path / "p2p" / "test_opt.txt").read_text().splitlines()
    assert f"{'dataset_mode':>25}: {'unaligned':<30}\t[default: aligned]" in table
    for name in os.listdir(data / "testB"):
        os.remove(data / "testB" / name)
    os.rmdir(data / "testB")
    capsys.readouterr()
    with pytest.raises(SystemExit):
        test_cli.main(common + ["--results_dir", str(tmp_path / "res2")])
    assert "holds neither test/ of A|B pairs nor testA/ and testB/ for the pix2pix test" in capsys.readouterr().err
    assert not (tmp_path / "res2").exists()


def test_the_test_commands_words_name_what_it_did(unaligned_root, tmp_path, capsys):
    """A folder missing one network of the epoch says which; --checkpoint's generator is not called
    G_A; a direction taken from the run is said as its sizes are; a first image refused leaves no
    empty results folder."""
    import json

    train_cli.main(tiny_args(unaligned_root, tmp_path, "run") + ["--max_iters", "1"])
    run = tmp_path / "run"
    data = tmp_path / "data"
    write_images(data / "testA", 1, 40, seed=3)
    write_images(data / "testB", 1, 40, seed=4)
    (run / "latest_net_G_B.pth").rename(tmp_path / "G_B.pth")
    capsys.readouterr()
    with pytest.raises(SystemExit):
        test_cli.main(["--name", "run", "--checkpoints_dir", str(tmp_path), "--dataroot", str(data)])
    assert (f"no checkpoint {run / 'latest_net_G_B.pth'}; {run} holds latest_net_D_A.pth, latest_net_D_B.pth, "
            "latest_net_G_A.pth of --epoch latest, not latest_net_G_B.pth") in capsys.readouterr().err
    test_cli.main(["--checkpoint", str(tmp_path / "G_B.pth"), "--dataroot", str(data / "testA"), "--netG",
                   "resnet_6blocks", "--ngf", "4", "--crop_size", "32", "--no_dropout", "--results_dir",
                   str(tmp_path / "res")])
    out = capsys.readouterr().out
    assert f"with the generator in {tmp_path / 'G_B.pth'}; open" in out and "G_A" not in out.splitlines()[-1]
    options = json.loads((run / "train_opt.json").read_text())
    (run / "train_opt.json").write_text(json.dumps({**options, "direction": "BtoA"}))
    (tmp_path / "G_B.pth").rename(run / "latest_net_G_B.pth")
    test_cli.main(["--name", "run", "--checkpoints_dir", str(tmp_path), "--dataroot", str(data),
                   "--results_dir", str(tmp_path / "res")])
    assert ("note: --crop_size 32 --direction BtoA from the run's train_opt.json (the reference's test would take "
            "--crop_size 256 --direction AtoB unless typed)") in capsys.readouterr().out
    with pytest.raises(SystemExit):  # 40x40 images, a typed crop of 64: the first image is refused
        test_cli.main(["--name", "run", "--checkpoints_dir", str(tmp_path), "--dataroot", str(data), "--crop_size",
                       "64", "--load_size", "64", "--preprocess", "crop", "--results_dir", str(tmp_path / "refused")])
    assert not (tmp_path / "refused").exists()
