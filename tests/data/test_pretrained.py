"""python -m fastgan.data download_model: the reference's pretrained generators, from a local
HTTP server (the `server` fixture) that serves generators the tests build, then
translated by fastgan.test as the reference's test command lines name them."""

from __future__ import annotations

import io
import os
import re

import numpy as np
import pytest
import torch
from PIL import Image

from fastgan import test as test_cli
from fastgan.data import DatasetError
from fastgan.models import define_G
from fastgan.data.__main__ import main as cli_main
from fastgan.data.pretrained import download_pretrained, model_source


def generator_file(seed: int, **kw) -> bytes:
    torch.manual_seed(seed)
    buf = io.BytesIO()
    torch.save(define_G(3, 3, 4, **kw).state_dict(), buf)
    return buf.getvalue()


def test_published_addresses():
    host = "http://efrosgans.eecs.berkeley.edu"
    assert model_source("horse2zebra") == ("cyclegan", f"{host}/cyclegan/pretrained_models/horse2zebra.pth")
    assert model_source("style_monet")[1] == f"{host}/cyclegan/pretrained_models/style_monet.pth"
    assert model_source("edges2shoes") == ("pix2pix", f"{host}/pix2pix/models-pytorch/edges2shoes.pth")
    # in both forms: pix2pix's unless --arch cyclegan, as the datasets
    assert model_source("facades_label2photo") == ("pix2pix", f"{host}/pix2pix/models-pytorch/facades_label2photo.pth")
    assert model_source("sat2map", "cyclegan") == ("cyclegan", f"{host}/cyclegan/pretrained_models/sat2map.pth")
    with pytest.raises(DatasetError, match="no pretrained model 'horse2cat'; the cyclegan pretrained models are "
                                           "apple2orange.*; the pix2pix pretrained models are edges2shoes"):
        model_source("horse2cat")
    with pytest.raises(DatasetError, match="no pix2pix pretrained model 'horse2zebra'; the pix2pix pretrained "
                                           "models are"):
        model_source("horse2zebra", "pix2pix")
    with pytest.raises(DatasetError, match="--host 'ftp://x' is not an http"):
        model_source("horse2zebra", host="ftp://x")


def test_resumes_then_translates_with_the_references_test_command_line(server, tmp_path):
    handler, host = server
    data = generator_file(3, netG="resnet_6blocks", norm="instance")
    handler.files["/cyclegan/pretrained_models/horse2zebra.pth"] = data
    folder = tmp_path / "checkpoints" / "horse2zebra_pretrained"
    folder.mkdir(parents=True)
    (folder / "latest_net_G.pth.cyclegan.part").write_bytes(data[:1000])  # an earlier, interrupted run
    said = []
    path = download_pretrained("horse2zebra", str(tmp_path / "checkpoints"), host=host, log=said.append)
    assert handler.log == [("/cyclegan/pretrained_models/horse2zebra.pth", "bytes=1000-")]
    assert path == str(folder / "latest_net_G.pth") and (folder / "latest_net_G.pth").read_bytes() == data
    assert sorted(os.listdir(folder)) == ["downloaded_from.txt", "latest_net_G.pth"]
    assert (folder / "downloaded_from.txt").read_text() == f"{host}/cyclegan/pretrained_models/horse2zebra.pth\n"
    assert "--name horse2zebra_pretrained --model test --no_dropout" in said[0]
    download_pretrained("horse2zebra", str(tmp_path / "checkpoints"), host=host, log=said.append)
    assert len(handler.log) == 1 and "already there" in said[1]  # no second request

    photos = tmp_path / "testA"
    photos.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(photos / f"p{i}.png")
    index = test_cli.main(["--dataroot", str(photos), "--name", "horse2zebra_pretrained", "--model", "test",
                           "--no_dropout", "--checkpoints_dir", str(tmp_path / "checkpoints"), "--results_dir",
                           str(tmp_path / "results"), "--netG", "resnet_6blocks", "--ngf", "4", "--load_size", "32",
                           "--crop_size", "32", "--device", "cpu"])
    images = sorted(os.listdir(os.path.join(os.path.dirname(index), "images")))
    assert images == ["p0_fake.png", "p0_real.png", "p1_fake.png", "p1_real.png"]


def test_a_short_download_is_refused_and_nothing_is_put_in_place(server, tmp_path):
    handler, host = server
    data = generator_file(4, netG="unet_128", norm="batch")
    handler.files["/pix2pix/models-pytorch/day2night.pth"] = data
    handler.cut_after = 500
    with pytest.raises(DatasetError, match=rf"stopped at 500 of {len(data)} bytes; run the command again"):
        download_pretrained("day2night", str(tmp_path), host=host)
    assert sorted(os.listdir(tmp_path / "day2night_pretrained")) == ["latest_net_G.pth.pix2pix.part",
                                                                     "latest_net_G.pth.pix2pix.part.validator"]
    download_pretrained("day2night", str(tmp_path), host=host, log=lambda m: None)
    assert (tmp_path / "day2night_pretrained" / "latest_net_G.pth").read_bytes() == data
    assert not [f for f in os.listdir(tmp_path / "day2night_pretrained") if f.endswith((".part", ".validator"))]


def test_command_line_errors_are_one_line(server, tmp_path, capsys):
    handler, host = server
    with pytest.raises(SystemExit) as e:
        cli_main(["download_model", "horse2cat", "--checkpoints_dir", str(tmp_path), "--host", host])
    assert e.value.code == 2 and capsys.readouterr().err.startswith("error: no pretrained model 'horse2cat'")
    with pytest.raises(SystemExit) as e:  # not on this server
        cli_main(["download_model", "zebra2horse", "--checkpoints_dir", str(tmp_path), "--host", host])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and err.endswith("zebra2horse.pth failed: HTTP 404 Not Found") and "\n" not in err
    assert handler.log == [("/cyclegan/pretrained_models/zebra2horse.pth", None)]
    assert list(tmp_path.iterdir()) == []  # no empty zebra2horse_pretrained/ left


def test_the_two_forms_of_a_name_never_mix(server, tmp_path):
    """facades_label2photo is published by both archs: a pix2pix download cut short is not
    completed from the cyclegan address, and a file of one form is not taken for the other."""
    handler, host = server
    pix2pix, cyclegan = generator_file(5, netG="unet_128", norm="batch"), generator_file(6, netG="resnet_6blocks")
    handler.files["/pix2pix/models-pytorch/facades_label2photo.pth"] = pix2pix
    handler.files["/cyclegan/pretrained_models/facades_label2photo.pth"] = cyclegan
    handler.cut_after = 700
    with pytest.raises(DatasetError, match="stopped at 700"):
        download_pretrained("facades_label2photo", str(tmp_path), host=host)
    path = download_pretrained("facades_label2photo", str(tmp_path), arch="cyclegan", host=host, log=lambda m: None)
    assert open(path, "rb").read() == cyclegan
    assert handler.log[-1] == ("/cyclegan/pretrained_models/facades_label2photo.pth", None)  # from its start
    with pytest.raises(DatasetError, match="latest_net_G.pth came from .*/cyclegan/pretrained_models/"
                                           "facades_label2photo.pth, not .*/pix2pix/models-pytorch/"
                                           "facades_label2photo.pth: move it away to download the pix2pix"):
        download_pretrained("facades_label2photo", str(tmp_path), host=host)
    assert open(path, "rb").read() == cyclegan


def test_a_file_that_is_no_state_dict_is_refused_and_removed(server, tmp_path):
    """A server that answers with a page of its own, of the length it announces."""
    handler, host = server
    handler.files["/pix2pix/models-pytorch/edges2shoes.pth"] = b"<html>maintenance</html>"
    with pytest.raises(DatasetError, match=r"edges2shoes.pth sent a file that is not a network's weights \(a web "
                                           r"page or other markup \(HTML, XML\), not a network file\); removed it"):
        download_pretrained("edges2shoes", str(tmp_path), host=host)
    assert list(tmp_path.iterdir()) == []
    buf = io.BytesIO()
    torch.save({"epoch": 3}, buf)
    handler.files["/pix2pix/models-pytorch/edges2shoes.pth"] = buf.getvalue()
    with pytest.raises(DatasetError, match=r"not a network's weights \(not a state dict of tensors\)"):
        download_pretrained("edges2shoes", str(tmp_path), host=host)


def test_a_checkpoints_dir_that_cannot_be_made_is_one_line(server, tmp_path, capsys):
    handler, host = server
    (tmp_path / "file").write_text("")
    with pytest.raises(SystemExit) as e:
        cli_main(["download_model", "horse2zebra", "--checkpoints_dir", str(tmp_path / "file"), "--host", host])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and err.startswith("error: ") and "Not a directory" in err and "\n" not in err


def test_a_second_download_of_a_model_says_the_first_is_running(server, tmp_path):
    from tests.test_file_lock import hold_in_another_process

    handler, host = server
    handler.files["/pix2pix/models-pytorch/day2night.pth"] = generator_file(4, netG="unet_128", norm="batch")
    folder = tmp_path / "day2night_pretrained"
    folder.mkdir()
    holder = hold_in_another_process(str(folder / ".download.lock"))
    try:
        with pytest.raises(DatasetError, match=rf"another download of the pretrained day2night into {re.escape(str(folder))} is "
                                               rf"running \(pid {holder.pid} on "):
            download_pretrained("day2night", str(tmp_path), host=host)
    finally:
        holder.kill()
        holder.wait()
    download_pretrained("day2night", str(tmp_path), host=host, log=lambda m: None)
    assert sorted(os.listdir(folder)) == ["downloaded_from.txt", "latest_net_G.pth"]
