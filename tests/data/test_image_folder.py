"""Finding and decoding image files, including the ones a plain convert('RGB') gets wrong."""

from __future__ import annotations

import os
import struct
import warnings
import zlib

import numpy as np
import pytest
from PIL import Image, ImageFile

from fastgan.data import IMG_EXTENSIONS, DatasetError, load_image, make_dataset

from .conftest import random_image, save


def test_extensions_are_the_reference_list():
    for ext in ("jpg", "jpeg", "png", "ppm", "bmp", "tif", "tiff"):
        assert "." + ext in IMG_EXTENSIONS and "." + ext.upper() in IMG_EXTENSIONS
    assert len(IMG_EXTENSIONS) == 14


def test_make_dataset_recursive_sorted_filtered_and_capped(tmp_path):
    for rel in ("b.png", "a.JPG", "sub/c.jpeg", "sub/deeper/d.tiff", "notes.txt", "e.gif", "f.Png"):
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")
    found = make_dataset(str(tmp_path))
    rel = [p[len(str(tmp_path)) + 1 :] for p in found]
    assert rel == ["a.JPG", "b.png", "sub/c.jpeg", "sub/deeper/d.tiff"]  # mixed case .Png: not the reference's
    assert make_dataset(str(tmp_path), 2) == found[:2]
    assert make_dataset(str(tmp_path), 0) == []


def test_make_dataset_follows_links_but_lists_each_folder_once(tmp_path, monkeypatch):
    top = tmp_path / "trainA"
    for i in range(5):
        (top / "sub" if i == 4 else top).mkdir(parents=True, exist_ok=True)
        (top / ("sub" if i == 4 else "") / f"{i}.png").write_bytes(b"x")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "o.png").write_bytes(b"x")
    (top / "loop").symlink_to("../trainA")  # a link back up: a loop
    (top / "z_other").symlink_to("../other")  # a linked folder outside: followed
    (top / "a_other").symlink_to("../other")  # and a second link to it: listed once, the first by name
    found = [p[len(str(top)) + 1 :] for p in make_dataset(str(top))]
    assert found == ["0.png", "1.png", "2.png", "3.png", "a_other/o.png", "sub/4.png"]
    # whatever order the file system lists the folders in
    real_walk = os.walk

    def walk_listing_in_reverse(*args, **kwargs):
        for root, dirs, files in real_walk(*args, **kwargs):
            dirs.reverse()  # (in place: the walk descends into the list it yields)
            yield root, dirs, files

    monkeypatch.setattr(os, "walk", walk_listing_in_reverse)
    assert [p[len(str(top)) + 1 :] for p in make_dataset(str(top))] == found


def test_make_dataset_missing_folder_names_it(tmp_path):
    with pytest.raises(DatasetError, match=str(tmp_path / "nope")):
        make_dataset(str(tmp_path / "nope"))


def test_rgb_and_grayscale_loading(tmp_path):
    arr = random_image(np.random.default_rng(1), 9, 7)
    p = save(tmp_path / "x.png", arr)
    rgb = load_image(p, 3)
    assert rgb.mode == "RGB" and np.array_equal(np.asarray(rgb), arr)
    gray = load_image(p, 1)
    r, g, b = (arr[..., i].astype(np.int64) for i in range(3))
    luma = (r * 299 + g * 587 + b * 114 + 500) // 1000  # ITU-R 601-2, as PIL's convert("L")
    assert gray.mode == "L" and np.abs(np.asarray(gray).astype(int) - luma).max() <= 1


def test_a_ycbcr_image_in_grayscale_is_the_luma_of_its_rgb(tmp_path):
    """The reference converts to RGB, then to L: a YCbCr file's Y channel is not that (61 levels
    apart on random colours)."""
    arr = random_image(np.random.default_rng(2), 9, 7)
    Image.fromarray(arr, "YCbCr").save(tmp_path / "y.tif")
    gray = load_image(str(tmp_path / "y.tif"), 1)
    assert np.array_equal(np.asarray(gray), np.asarray(Image.open(tmp_path / "y.tif").convert("RGB").convert("L")))


def test_grayscale_file_replicated_to_rgb(tmp_path):
    a = np.arange(35, dtype=np.uint8).reshape(5, 7) * 7
    p = save(tmp_path / "g.png", a)
    rgb = np.asarray(load_image(p, 3))
    assert rgb.shape == (5, 7, 3) and all(np.array_equal(rgb[..., c], a) for c in range(3))
    assert np.array_equal(np.asarray(load_image(p, 1)), a)


def test_rgba_drops_alpha_like_convert_rgb(tmp_path):
    arr = random_image(np.random.default_rng(2), 6, 6)
    alpha = np.full((6, 6, 1), 10, np.uint8)  # nearly transparent: compositing would change colours
    p = save(tmp_path / "a.png", np.concatenate([arr, alpha], -1))
    assert np.array_equal(np.asarray(load_image(p, 3)), arr)


def test_palette_image(tmp_path):
    palette = [255, 0, 0, 0, 255, 0, 0, 0, 255, 10, 20, 30]
    idx = np.array([[0, 1, 2, 3], [3, 2, 1, 0]], np.uint8)
    im = Image.fromarray(idx, "P")
    im.putpalette(palette + [0] * (768 - len(palette)))
    p = str(tmp_path / "p.png")
    im.save(p)
    colours = np.array(palette).reshape(-1, 3)
    assert np.array_equal(np.asarray(load_image(p, 3)), colours[idx])


def test_cmyk_jpeg_is_converted(tmp_path):
    p = str(tmp_path / "c.jpg")
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(p, quality=100)  # pure red in CMYK
    out = np.asarray(load_image(p, 3)).astype(int)
    assert out.shape == (8, 8, 3)
    assert (out[..., 0] > 240).all() and (out[..., 1:] < 15).all()


def _png16(path, arr: np.ndarray) -> str:
    """A real 16-bit PNG (PIL cannot write 16-bit colour), written by hand."""
    h, w = arr.shape[:2]
    colour_type = {2: 0, 3: 2}[arr.ndim]
    raw = b"".join(b"\x00" + arr[y].astype(">u2").tobytes() for y in range(h))

    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", w, h, 16, colour_type, 0, 0, 0)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
    return str(path)


def reference_read(path) -> tuple[str, np.ndarray]:
    """The mode PIL opens `path` in, and the reference's convert("RGB") of it."""
    with Image.open(path) as im:
        return im.mode, np.asarray(im.convert("RGB"))


def test_wide_grayscale_is_clipped_as_the_reference_reads_it(tmp_path, monkeypatch):
    """16-bit PNG, 32-bit TIFF and 16-bit PGM: the values convert() keeps (0..255) stay, the
    rest clip, with one warning naming the first such file. They were scaled by 1/257 before
    (a 16-bit label map of values under 256 came out almost black), and a 32-bit TIFF kept or
    scaled its values by whether one pixel passed 255."""
    from fastgan.data import image_folder

    monkeypatch.setattr(image_folder, "_said_clipped", False)
    small = (np.arange(16 * 16).reshape(16, 16) % 256).astype(np.uint16)
    files = {"labels16.png": _png16(tmp_path / "labels16.png", small)}
    Image.fromarray(small.astype(np.int32), "I").save(tmp_path / "i32.tif")
    files["i32.tif"] = str(tmp_path / "i32.tif")
    (tmp_path / "dark.pgm").write_bytes(b"P5\n16 16\n65535\n" + small.astype(">u2").tobytes())
    files["dark.pgm"] = str(tmp_path / "dark.pgm")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for name, p in files.items():
            mode, reference = reference_read(p)
            assert mode.startswith("I"), name  # really a wide image to PIL
            assert np.array_equal(np.asarray(load_image(p, 3)), reference), name
            assert np.array_equal(np.asarray(load_image(p, 1)), small.astype(np.uint8)), name

    wide = small.astype(np.int32) * 256 - 1000  # -1000 .. 64280
    files = {"wide16.png": _png16(tmp_path / "wide16.png", np.clip(wide, 0, None).astype(np.uint16))}
    Image.fromarray(wide, "I").save(tmp_path / "wide32.tif")
    files["wide32.tif"] = str(tmp_path / "wide32.tif")
    with pytest.warns(UserWarning, match=r"wide16.png holds grayscale values from 0 to 64280: they are clipped"):
        for name, p in files.items():
            assert np.array_equal(np.asarray(load_image(p, 3)), reference_read(p)[1]), name
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # said once
        load_image(files["wide32.tif"], 1)


def test_16bit_colour_png_within_one_level(tmp_path):
    a = (np.arange(8 * 8).reshape(8, 8) * 1000).astype(np.uint16)
    arr = np.stack([a, 65535 - a, a // 2], -1)
    p = _png16(tmp_path / "c16.png", arr)
    out = np.asarray(load_image(p, 3)).astype(int)
    assert np.abs(out - arr / 257.0).max() <= 1.0


def test_non_image_with_image_extension(tmp_path):
    p = tmp_path / "fake.jpg"
    p.write_text("this is not a jpeg")
    with pytest.raises(DatasetError, match="fake.jpg") as e:
        load_image(str(p), 3)
    assert "\n" not in str(e.value)


def test_truncated_jpeg_is_refused(tmp_path):
    p = str(tmp_path / "full.jpg")
    Image.fromarray(random_image(np.random.default_rng(3), 64, 64)).save(p, quality=90)
    data = open(p, "rb").read()
    t = tmp_path / "cut.jpg"
    t.write_bytes(data[: len(data) // 2])
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    with pytest.raises(DatasetError, match="cut.jpg"):
        load_image(str(t), 3)
    assert load_image(p, 3).size == (64, 64)


def test_unsupported_channel_count(tmp_path):
    p = save(tmp_path / "x.png", random_image(np.random.default_rng(4), 4, 4))
    with pytest.raises(DatasetError, match="input_nc"):
        load_image(p, 2)
