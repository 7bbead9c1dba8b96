"""Files DALI decodes to other pixels than PIL (fastgan/data/dali_misreads.py): told from
their headers, and loaded through PIL by the DALI loader, so that its batches equal the
torch loader's."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from PIL import Image, TiffImagePlugin

from fastgan.data.dali_misreads import TIFF_EXTRA_SAMPLES, TIFF_ORIENTATION, dali_misreads

from .conftest import make_opt, save
from .test_loader_equivalence import assert_close, epoch, make_loader, photo_like


def tiff_with_tag(path, image: Image.Image, tag: int, value) -> None:
    info = TiffImagePlugin.ImageFileDirectory_v2()
    info[tag] = value
    image.save(path, "TIFF", tiffinfo=info)


def premultiplied_tiff(path, rgba: np.ndarray) -> None:
    """PIL writes RGBA TIFFs with ExtraSamples 2 (straight alpha): its entry (little-endian,
    SHORT, count 1) rewritten to 1, premultiplied alpha, over colours premultiplied."""
    premultiplied = rgba.copy()
    premultiplied[..., :3] = (rgba[..., :3].astype(np.uint16) * rgba[..., 3:] // 255).astype(np.uint8)
    Image.fromarray(premultiplied, "RGBA").save(path, "TIFF")
    data = path.read_bytes()
    entry = struct.pack("<HHIH", TIFF_EXTRA_SAMPLES, 3, 1, 2)
    assert data.count(entry) == 1
    path.write_bytes(data.replace(entry, struct.pack("<HHIH", TIFF_EXTRA_SAMPLES, 3, 1, 1)))


def netpbm(path, rgb: np.ndarray, maxval: int) -> None:
    """A binary PPM of `rgb` (0..255) scaled to 0..maxval (16-bit samples above 255)."""
    h, w, _ = rgb.shape
    samples = np.round(rgb.astype(np.float64) * maxval / 255).astype(">u2" if maxval > 255 else np.uint8)
    path.write_bytes(f"P6\n{w} {h}\n{maxval}\n".encode() + samples.tobytes())


def bmp_16bit(path, rgb: np.ndarray, green_bits: int) -> None:
    """A 16-bit BMP (PIL writes none): 5-6-5 with BI_BITFIELDS masks, or plain 5-5-5."""
    h, w, _ = rgb.shape
    r, g, b = (rgb[..., 0] >> 3).astype(np.uint16), (rgb[..., 1] >> (8 - green_bits)).astype(np.uint16), \
        (rgb[..., 2] >> 3).astype(np.uint16)
    pixels = (r << (5 + green_bits)) | (g << 5) | b
    stride = (w * 2 + 3) // 4 * 4
    rows = b"".join(pixels[y].astype("<u2").tobytes().ljust(stride, b"\0") for y in range(h - 1, -1, -1))
    bitfields = green_bits == 6
    header = struct.pack("<IiiHHIIiiII", 40, w, h, 1, 16, 3 if bitfields else 0, len(rows), 2835, 2835, 0, 0)
    header += struct.pack("<III", 0xF800, 0x07E0, 0x001F) if bitfields else b""
    offset = 14 + len(header)
    path.write_bytes(b"BM" + struct.pack("<IHHI", offset + len(rows), 0, 0, offset) + header + rows)


def photo(seed: int, w: int = 40, h: int = 48) -> np.ndarray:
    return photo_like(np.random.default_rng(seed), w, h)


def with_alpha(seed: int) -> np.ndarray:
    rgb = photo(seed)
    alpha = np.linspace(40, 255, rgb.shape[1], dtype=np.uint8)[None, :, None].repeat(rgb.shape[0], 0)
    return np.concatenate([rgb, alpha], -1)


# 40x48 (not square: a turned image has other sides), each a file DALI reads otherwise
MISREAD = {
    "orientation.tif": lambda p: tiff_with_tag(p, Image.fromarray(photo(1)), TIFF_ORIENTATION, 6),
    "gray_alpha.tif": lambda p: Image.fromarray(with_alpha(2)[..., 2:], "LA").save(p, "TIFF"),
    "premultiplied.tif": lambda p: premultiplied_tiff(p, with_alpha(3)),
    "maxval15.ppm": lambda p: netpbm(p, photo(4), 15),
    "maxval1000.ppm": lambda p: netpbm(p, photo(5), 1000),
    "rgb565.bmp": lambda p: bmp_16bit(p, photo(6), 6),
    "cielab.tif": lambda p: Image.fromarray(photo(16)).convert("LAB").save(p, "TIFF"),
    "gray16.png": lambda p: Image.fromarray(photo(19)[..., 0].astype(np.uint16) * 3).save(p, "PNG"),  # 0..765
    "gray32.tif": lambda p: Image.fromarray(photo(20)[..., 1].astype(np.int32), "I").save(p, "TIFF"),
}
READ_ALIKE = {
    "plain.tif": lambda p: Image.fromarray(photo(7)).save(p, "TIFF"),
    "upright.tif": lambda p: tiff_with_tag(p, Image.fromarray(photo(8)), TIFF_ORIENTATION, 1),
    "straight_alpha.tif": lambda p: Image.fromarray(with_alpha(9), "RGBA").save(p, "TIFF"),
    "maxval255.ppm": lambda p: netpbm(p, photo(10), 255),
    "maxval65535.ppm": lambda p: netpbm(p, photo(11), 65535),
    "rgb24.bmp": lambda p: Image.fromarray(photo(12)).save(p, "BMP"),
    "rgb555.bmp": lambda p: bmp_16bit(p, photo(15), 5),  # (DALI refuses it: loaded through PIL on failure)
    "gray_alpha.png": lambda p: Image.fromarray(with_alpha(13)[..., 2:], "LA").save(p, "PNG"),
    "photo.jpg": lambda p: Image.fromarray(photo(14)).save(p, "JPEG"),
    "cmyk.tif": lambda p: Image.fromarray(photo(17)).convert("CMYK").save(p, "TIFF"),
    "rgb32.bmp": lambda p: Image.fromarray(with_alpha(18), "RGBA").save(p, "BMP"),
}


@pytest.mark.parametrize("name", [*MISREAD, *READ_ALIKE])
def test_the_files_dali_misreads_are_told_from_their_headers(name, tmp_path):
    path = tmp_path / name
    {**MISREAD, **READ_ALIKE}[name](path)
    with Image.open(path) as im:
        assert dali_misreads(im) is (name in MISREAD)


@pytest.mark.filterwarnings("ignore:.* holds grayscale values from")  # gray16.png's, clipped as meant
@pytest.mark.parametrize("name", [*MISREAD, "rgb555.bmp"])
@pytest.mark.parametrize("kind", ["dali", "dali graph"])
def test_dali_loads_the_files_it_misreads_as_the_torch_loader(name, kind, tmp_path):
    """Each such file among ordinary ones: DALI's batches are the torch loader's (its own
    decoding was up to 255 levels off: a TIFF left unturned, gray and alpha read as colours,
    alpha not divided out, a maxval not scaled, 5-6-5 fields widened otherwise, CIELab's
    colours mapped otherwise, wide grayscale scaled where PIL clips)."""
    for i in range(2):
        save(tmp_path / "trainA" / f"a{i}.png", photo(20 + i))
        save(tmp_path / "trainB" / f"b{i}.png", photo(30 + i))
    {**MISREAD, **READ_ALIKE}[name](tmp_path / "trainB" / name)
    opt = make_opt(tmp_path, serial_batches=True, no_flip=True, preprocess="none", batch_size=1)
    ref = epoch(make_loader("torch", opt))
    assert name in {p.rsplit("/", 1)[-1] for b in ref for p in b["B_paths"]}
    assert_close(kind, ref, epoch(make_loader(kind, opt)))
