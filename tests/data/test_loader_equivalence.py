"""The three loaders against each other on generated datasets of every mode.

The torch loader (PIL, datasets.py) is the reference. The cache decodes with PIL
once and draws the same recipes, so it must match bit for bit; DALI decodes
with its own codecs (bit-identical to PIL for JPEG, PNG, BMP and TIFF on the
CPU) and, on the CPU, resizes with torch's PIL-compatible resampler: within 1
level per pixel (tensor_transforms.py), 2 allowed. An image DALI cannot
decode is loaded through PIL, as the torch loader loads it. "dali graph" is the
pipeline a GPU runs (DALI's own cubic resize and crop_mirror_normalize), run
here on the CPU: its resampler is close to PIL's kernel but not equal (1 level
at most on these photo-like images, 0.2 on average), so it is held to a mean of
half a level and a maximum of 4, which a crop off by one pixel or a missing
flip exceed many times over.
"""

from __future__ import annotations

import io
import os

import numpy as np
import pytest
import torch
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from fastgan.data import CacheLoader, DaliLoader, DatasetError, TorchLoader, create_loader
from fastgan.data import select as select_module
from fastgan.data.dali_loader import DaliUnavailable, dali_reason

from .conftest import coord_image, make_opt, save

LEVEL = 2 / 255  # one 8-bit level in [-1, 1] units
KINDS = ("torch", "cache", "dali", "dali graph")


def make_loader(kind: str, opt, **kw):
    if kind == "torch":
        return TorchLoader(opt, "cpu", **kw)
    if kind == "cache":
        return CacheLoader(opt, "cpu", **kw)
    return DaliLoader(opt, "cpu", transform_on="dali" if kind == "dali graph" else None, **kw)


def epoch(loader, e=0, skip=0) -> list[dict]:
    return list(loader.epoch_batches(e, skip))


def photo_like(rng, w: int, h: int) -> np.ndarray:
    """Smooth gradients plus mild noise: resamplers and JPEG behave as on photographs."""
    y, x = np.mgrid[0:h, 0:w]
    phase = rng.uniform(0, 6, 3)
    base = np.stack([np.sin(x / (5 + 3 * i) + y / (7 + i) + phase[i]) for i in range(3)], -1) * 100 + 128
    return np.clip(base + rng.normal(0, 6, base.shape), 0, 255).astype(np.uint8)


def save_as(path, arr: np.ndarray, fmt: str) -> None:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.getvalue())


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    """unaligned (A: JPEG and PNG, B: PNG, BMP, TIFF; 5 vs 3), aligned (A|B, one of odd width),
    single (sizes of different aspect)."""
    base = tmp_path_factory.mktemp("loaders")
    rng = np.random.default_rng(0)
    for i, fmt in enumerate(["JPEG", "PNG", "JPEG", "PNG", "JPEG"]):
        save_as(base / "unaligned" / "trainA" / f"a{i}.{fmt.lower()}", photo_like(rng, 40, 40), fmt)
    for i, (fmt, ext) in enumerate([("PNG", "png"), ("BMP", "bmp"), ("TIFF", "tif")]):
        save_as(base / "unaligned" / "trainB" / f"b{i}.{ext}", photo_like(rng, 44, 40), fmt)
    for i, w in enumerate([80, 80, 81, 84]):
        save_as(base / "aligned" / "train" / f"ab{i}.jpg", photo_like(rng, w, 40), "JPEG")
    for i, (w, h) in enumerate([(40, 40), (48, 40), (40, 46), (52, 44)]):
        save_as(base / "single" / f"s{i}.png", photo_like(rng, w, h), "PNG")
    return base


def assert_close(kind: str, ref: list[dict], got: list[dict]) -> None:
    assert len(ref) == len(got)
    for r, g in zip(ref, got):
        assert set(g) == set(r)
        for key in r:
            if key.endswith("_paths"):
                assert g[key] == r[key]
                continue
            assert g[key].shape == r[key].shape and g[key].dtype == torch.float32
            diff = (g[key] - r[key]).abs()
            if kind == "cache":
                assert torch.equal(g[key], r[key])
            elif kind == "dali":
                assert diff.max() <= 2 * LEVEL + 1e-6
            else:
                assert diff.mean() <= 0.5 * LEVEL and diff.max() <= 4 * LEVEL


CASES = {
    # the same images in serial order, no random crop or flip
    "unaligned serial": ("unaligned", dict(serial_batches=True, no_flip=True, load_size=32, crop_size=32)),
    "aligned serial": ("aligned", dict(dataset_mode="aligned", serial_batches=True, no_flip=True,
                                       load_size=32, crop_size=32)),
    "single serial": ("single", dict(dataset_mode="single", serial_batches=True, no_flip=True,
                                     load_size=32, crop_size=32)),
    # and with the training augmentation: the same random crops, flips and B partners
    "unaligned BtoA gray B": ("unaligned", dict(direction="BtoA", output_nc=1, batch_size=2)),
    "unaligned crop": ("unaligned", dict(preprocess="crop", crop_size=28, batch_size=3)),
    "aligned gray A": ("aligned", dict(dataset_mode="aligned", input_nc=1, batch_size=2)),
    "aligned resize": ("aligned", dict(dataset_mode="aligned", preprocess="resize", load_size=28, crop_size=24,
                                       batch_size=2)),
    "single scale_width_and_crop": ("single", dict(dataset_mode="single", preprocess="scale_width_and_crop",
                                                   load_size=36, crop_size=28, batch_size=2)),
    "single none": ("single", dict(dataset_mode="single", preprocess="none", batch_size=1)),
}


@pytest.mark.parametrize("case", CASES)
def test_loaders_yield_the_torch_loaders_images(roots, case):
    folder, options = CASES[case]
    opt = make_opt(roots / folder, **options)
    ref = epoch(make_loader("torch", opt), 1)
    assert sum(len(b["A_paths"]) for b in ref) == {"unaligned": 5, "aligned": 4, "single": 4}[folder]
    for kind in KINDS[1:]:
        loader = make_loader(kind, opt.replace(num_threads=2))  # the cache's build threads, DALI's threads
        assert len(loader) == len(ref) and loader.num_images == len(loader.dataset)
        assert_close(kind, ref, epoch(loader, 1))


# augmentation statistics, read off coordinate images -----------------------------------------


STEP = 6  # coordinate images: R = 6 x, G = 6 y, so a crop's position and flip show in its pixels


@pytest.fixture(scope="module")
def coord_roots(tmp_path_factory):
    base = tmp_path_factory.mktemp("coords")
    for i in range(10):
        save(base / "unaligned" / "trainA" / f"a{i}.png", coord_image(40, 40, offset=i, step=STEP))
    for i in range(7):
        save(base / "unaligned" / "trainB" / f"b{i}.png", coord_image(40, 40, offset=100 + i, step=STEP))
    for i in range(10):
        pair = np.concatenate([coord_image(40, 40, i, STEP), coord_image(40, 40, 100 + i, STEP)], axis=1)
        save(base / "aligned" / "train" / f"ab{i}.png", pair)
    return base


def crop_of(img: torch.Tensor) -> tuple[int, int, bool]:
    """(x, y, flipped) of a 32x32 crop of a coordinate image."""
    px = ((img + 1) * 127.5).round().to(torch.int64)
    left, right = int(px[0, 0, 0]), int(px[0, 0, -1])
    flipped = left > right
    return (right if flipped else left) // STEP, int(px[1, 0, 0]) // STEP, flipped


def chi_square(counts: np.ndarray) -> float:
    expected = counts.sum() / len(counts)
    return float(((counts - expected) ** 2 / expected).sum())


@pytest.mark.parametrize("kind", KINDS)
def test_augmentation_statistics(coord_roots, kind):
    """Uniform crop positions, flip rate 0.5, A and B independent (unaligned, B drawn at random)
    or identical (aligned halves), epoch length max(|A|, |B|)."""
    samples = {"unaligned": [], "aligned": []}
    for mode in samples:
        opt = make_opt(coord_roots / mode, dataset_mode=mode, preprocess="crop", batch_size=10)
        loader = make_loader(kind, opt)
        assert len(loader) == 1 and loader.num_images == 10  # max(|A| = 10, |B| = 7)
        for e in range(30):
            for b in loader.epoch_batches(e):
                samples[mode] += [(crop_of(a), crop_of(bb), pb) for a, bb, pb in zip(b["A"], b["B"], b["B_paths"])]
    unaligned, aligned = samples["unaligned"], samples["aligned"]
    for name, crops in (("unaligned A", [a for a, _, _ in unaligned]), ("unaligned B", [b for _, b, _ in unaligned]),
                        ("aligned", [a for a, _, _ in aligned])):
        xs, ys, flips = (np.array(v) for v in zip(*crops))
        assert 0.4 <= flips.mean() <= 0.6, name
        for pos in (xs, ys):  # 9 positions, 300 draws: chi-square, 8 dof, p = 0.001 at 26.1
            assert chi_square(np.bincount(pos, minlength=9)) < 26.1, name
    same_x = np.mean([a[0] == b[0] for a, b, _ in unaligned])
    assert same_x < 0.2  # independent: about 1/9 of the A and B crops share a column
    partners = np.unique([p for _, _, p in unaligned], return_counts=True)[1]
    assert len(partners) == 7 and chi_square(partners) < 22.5  # 6 dof, p = 0.001
    assert all(a == b for a, b, _ in aligned)  # one crop and flip for both halves


# errors: the same words from every loader --------------------------------------------------


def refusal(kind, opt) -> str:
    with pytest.raises(DatasetError) as e:
        epoch(make_loader(kind, opt))
    assert type(e.value) is DatasetError and "\n" not in str(e.value)
    return str(e.value)


def damaged_chunk_png(good: bytes) -> bytes:
    """`good` with a text chunk whose CRC is zeroed: PIL refuses to open it, DALI decodes it."""
    im, buf, info = Image.open(io.BytesIO(good)), io.BytesIO(), PngInfo()
    info.add_text("k", "v")
    im.save(buf, "PNG", pnginfo=info)
    data = buf.getvalue()
    at = data.index(b"tEXt")
    length = int.from_bytes(data[at - 4:at], "big")
    return data[:at + 4 + length] + bytes(4) + data[at + 8 + length:]


def bmp_32bit(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.concatenate([rgb, rgb[..., :1]], -1), "RGBA").save(buf, "BMP")
    return buf.getvalue()


@pytest.mark.parametrize("bad", ["garbage.jpg", "truncated.png", "headless.bmp", "damaged_chunk.png", "bomb.png",
                                 "truncated32.bmp"])
def test_bad_file_same_error_from_every_loader(tmp_path, bad, monkeypatch):
    """(DALI decoded a truncated 32-bit BMP to whatever it found, where PIL refuses it.)"""
    rng = np.random.default_rng(1)
    for i in range(4):
        save(tmp_path / "trainA" / f"a{i}.png", photo_like(rng, 40, 40))
    save(tmp_path / "trainB" / "b0.png", photo_like(rng, 40, 40))
    good = (tmp_path / "trainA" / "a1.png").read_bytes()
    if bad == "bomb.png":  # PIL's decompression-bomb limit, scaled down: 60x60 is over twice it
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1700)
        save(tmp_path / "bomb.png", photo_like(rng, 60, 60))
    content = {"garbage.jpg": lambda: b"not a jpeg at all", "truncated.png": lambda: good[: len(good) // 2],
               "headless.bmp": lambda: b"BM and then no bitmap at all",
               "damaged_chunk.png": lambda: damaged_chunk_png(good),
               "bomb.png": lambda: (tmp_path / "bomb.png").read_bytes(),
               "truncated32.bmp": lambda: bmp_32bit(photo_like(rng, 40, 40))[:-400]}[bad]()
    (tmp_path / "trainA" / bad).write_bytes(content)
    opt = make_opt(tmp_path, batch_size=2)
    words = refusal("torch", opt)
    assert words.startswith("cannot read image") and bad in words
    for kind in KINDS[1:]:
        assert refusal(kind, opt) == words, kind
    # the DALI loader carries on once the file is fixed (its failed pipeline was replaced)
    loader = make_loader("dali", opt)
    with pytest.raises(DatasetError):
        epoch(loader)
    (tmp_path / "trainA" / bad).write_bytes(good)
    assert sum(len(b["A_paths"]) for b in epoch(loader, 1)) == 5


def test_empty_folder_same_error_from_every_loader(tmp_path):
    (tmp_path / "trainA").mkdir()
    save(tmp_path / "trainB" / "b.png", np.zeros((40, 40, 3), np.uint8))
    words = set()
    for kind in ("torch", "cache", "dali", "auto"):
        with pytest.raises(DatasetError) as e:
            create_loader(make_opt(tmp_path, loader=kind), "cpu")
        words.add(str(e.value))
    assert len(words) == 1 and "holds no images" in words.pop()


@pytest.mark.parametrize("mode", ["unaligned", "aligned", "single"])
def test_channel_counts_no_loader_makes_are_refused_at_start_by_every_loader(roots, mode):
    """--input_nc 4: one error before any file is read (DALI's pipeline made RGB batches of it
    and training failed later in a convolution)."""
    root = roots / "single" if mode == "single" else roots / mode
    opt = make_opt(root, dataset_mode=mode, input_nc=4)
    words = set()
    for kind in ("torch", "cache", "dali", "auto"):
        with pytest.raises(DatasetError) as e:
            create_loader(opt.replace(loader=kind), "cpu")
        words.add(str(e.value))
    assert words == {f"cannot load the images of {root} with 4 channels: only 1 (grayscale) or 3 (RGB) are "
                     "supported; set --input_nc/--output_nc to 1 or 3"}


def test_mixed_sizes_and_small_images_same_error_from_every_loader(roots, tmp_path):
    opt = make_opt(roots / "single", dataset_mode="single", preprocess="none", batch_size=2, serial_batches=True)
    words = {refusal(kind, opt) for kind in KINDS}
    assert len(words) == 1 and "different sizes" in words.pop()
    save(tmp_path / "imgs" / "a.png", np.zeros((40, 40, 3), np.uint8))
    save(tmp_path / "imgs" / "small.png", np.zeros((20, 40, 3), np.uint8))
    opt = make_opt(tmp_path / "imgs", dataset_mode="single", preprocess="crop", serial_batches=True)
    words = {refusal(kind, opt) for kind in KINDS}
    assert len(words) == 1 and "smaller than --crop_size" in words.pop()


def test_dali_yields_the_batches_before_a_refusal(roots, tmp_path):
    """A refusal found while feeding DALI ahead comes when its batch is due, as from the torch loader."""
    save(tmp_path / "imgs" / "a.png", np.zeros((40, 40, 3), np.uint8))
    save(tmp_path / "imgs" / "b.png", np.zeros((40, 40, 3), np.uint8))
    save(tmp_path / "imgs" / "c.png", np.zeros((20, 40, 3), np.uint8))
    opt = make_opt(tmp_path / "imgs", dataset_mode="single", preprocess="crop", serial_batches=True)
    for kind in ("torch", "dali"):
        got = []
        with pytest.raises(DatasetError, match="c.png"):
            for b in make_loader(kind, opt).epoch_batches(0):
                got.append(b["A_paths"])
        assert got == [[str(tmp_path / "imgs" / "a.png")], [str(tmp_path / "imgs" / "b.png")]], kind


def test_dali_reads_file_names_that_are_not_utf8(tmp_path):
    """A Latin-1 archive's b"bad\\xe9name.png" (surrogate-escaped by Python) opens as PIL opens it."""
    rng = np.random.default_rng(2)
    odd = os.fsdecode(os.fsencode(str(tmp_path / "trainA")) + b"/bad\xe9name.png")
    save(odd, photo_like(rng, 40, 40))
    save(tmp_path / "trainA" / "good.png", photo_like(rng, 40, 40))
    save(tmp_path / "trainB" / "b.png", photo_like(rng, 40, 40))
    opt = make_opt(tmp_path, batch_size=2, serial_batches=True)
    ref = epoch(make_loader("torch", opt))
    assert odd in ref[0]["A_paths"]
    assert_close("dali", ref, epoch(make_loader("dali", opt)))


@pytest.fixture
def one_bit_tiff_root(tmp_path):
    """single: five PNGs and, second in order, a 1-bit TIFF, which PIL reads and DALI does not decode."""
    rng = np.random.default_rng(3)
    for i in range(6):
        save(tmp_path / "imgs" / f"{i}.png", photo_like(rng, 40, 40))
    (tmp_path / "imgs" / "1.png").unlink()
    Image.fromarray(photo_like(rng, 40, 40)).convert("1").save(tmp_path / "imgs" / "1.tif")
    return tmp_path / "imgs"


@pytest.mark.parametrize("kind", ["dali", "dali graph"])
def test_dali_loads_what_it_cannot_decode_through_pil(one_bit_tiff_root, kind, capsys):
    """DALI fails the TIFF's batch: the batches then in flight come from PIL, the rest of the
    epoch from a new pipeline, all equal to the torch loader's; the note is printed once."""
    opt = make_opt(one_bit_tiff_root, dataset_mode="single", serial_batches=True, batch_size=1)
    ref = epoch(make_loader("torch", opt), 1)
    assert [os.path.basename(b["A_paths"][0]) for b in ref] == ["0.png", "1.tif", "2.png", "3.png", "4.png", "5.png"]
    loader = make_loader(kind, opt)
    capsys.readouterr()
    for e in (1, 1):  # and again: a second epoch (a new pipeline) falls back the same way
        assert_close(kind, ref, epoch(loader, e))
    # once, in one line quoting DALI's failed operator and its cause
    said = [line for line in capsys.readouterr().out.splitlines() if "through PIL" in line]
    assert len(said) == 1 and said[0].startswith("loader: dali: DALI failed a batch (fn.decoders.image (cpu): "), said
    assert said[0].endswith("): its images were loaded through PIL"), said
    # shuffled, in batches of 2 and from a mid-epoch resume
    opt = opt.replace(serial_batches=False, batch_size=2)
    ref = epoch(make_loader("torch", opt), 2)
    assert_close(kind, ref, epoch(make_loader(kind, opt), 2))
    assert_close(kind, ref[1:], epoch(make_loader(kind, opt), 2, skip=1))


def test_dali_stopped_early_while_pil_loads_its_batches(one_bit_tiff_root):
    opt = make_opt(one_bit_tiff_root, dataset_mode="single", serial_batches=True, batch_size=1)
    loader = make_loader("dali", opt)
    batches = loader.epoch_batches(0)
    got = [next(batches)["A_paths"], next(batches)["A_paths"]]  # 0.png from DALI, 1.tif from PIL
    assert [os.path.basename(p[0]) for p in got] == ["0.png", "1.tif"]
    batches.close()  # the consumer stops while the fallback holds the pipeline-less epoch
    assert_close("dali", epoch(make_loader("torch", opt)), epoch(loader))


def test_dali_failing_with_nothing_in_flight_raises_instead_of_looping(one_bit_tiff_root):
    class Broken:  # a pipeline that fails before it asked for any batch
        runs = 0

        def run(self):
            Broken.runs += 1
            if Broken.runs > 3:
                raise StopIteration
            raise RuntimeError("Critical error in pipeline: out of memory")

    loader = make_loader("dali", make_opt(one_bit_tiff_root, dataset_mode="single", serial_batches=True))
    loader._build_pipeline = Broken
    loader.close()  # drops the pipeline built with the loader: the epoch builds a Broken one
    with pytest.raises(RuntimeError, match="out of memory"):
        epoch(loader)
    assert Broken.runs == 1


DALI_FAILURE = """Critical error in pipeline:
Error in MIXED operator `nvidia.dali.fn.decoders.image`,
which was used in the pipeline definition with the following traceback:

  File "dali_loader.py", line 1, in _build_pipeline

encountered:

CUDA allocation failed: out of memory
Current pipeline object is no longer valid."""


def test_dali_reason_is_the_failed_operator_and_its_cause():
    assert dali_reason(RuntimeError(DALI_FAILURE)) == \
        "fn.decoders.image (mixed): CUDA allocation failed: out of memory"
    assert dali_reason(RuntimeError("Critical error in pipeline:\nno device\n")) == "no device"
    assert dali_reason(RuntimeError("")) == "RuntimeError"


def test_each_reason_dali_fails_for_is_said_once(one_bit_tiff_root, monkeypatch, capsys):
    """A failure of another kind than the first (here: the GPU's memory) is said in its own note,
    and a misread batch's note says no failure."""
    opt = make_opt(one_bit_tiff_root, dataset_mode="single", serial_batches=True, batch_size=1)
    loader = make_loader("dali", opt)
    capsys.readouterr()
    epoch(loader)
    real_run = loader._pipe.run.__func__
    runs = []

    def out_of_memory_on_the_fourth_run(pipe):
        runs.append(1)
        if len(runs) == 4:
            raise RuntimeError(DALI_FAILURE)
        return real_run(pipe)

    monkeypatch.setattr(type(loader._pipe), "run", out_of_memory_on_the_fourth_run)
    assert_close("dali", epoch(make_loader("torch", opt)), epoch(loader))
    said = [line for line in capsys.readouterr().out.splitlines() if "through PIL" in line]
    assert len(said) == 2 and "DALI failed a batch (fn.decoders.image (cpu): " in said[0], said
    assert said[1] == ("loader: dali: DALI failed a batch (fn.decoders.image (mixed): CUDA allocation failed: out "
                       "of memory): its images were loaded through PIL"), said


def test_a_pipeline_that_cannot_be_built_again_mid_run_leaves_the_epoch_to_pil(one_bit_tiff_root, monkeypatch,
                                                                                capsys):
    """After the TIFF's batch failed, the new pipeline cannot be built (the GPU's memory taken by
    then, say): the rest of the epoch comes through PIL, equal to the torch loader's, with a
    note; no DatasetError (which the trainer would blame on a file)."""
    opt = make_opt(one_bit_tiff_root, dataset_mode="single", serial_batches=True, batch_size=1)
    loader = make_loader("dali", opt)

    def no_pipeline(self):
        raise RuntimeError("Critical error in pipeline:\nCUDA error: out of memory")

    monkeypatch.setattr(DaliLoader, "_build_pipeline", no_pipeline)
    capsys.readouterr()
    assert_close("dali", epoch(make_loader("torch", opt)), epoch(loader))
    said = [line for line in capsys.readouterr().out.splitlines() if "through PIL" in line]
    assert said[-1] == ("loader: dali: DALI failed a batch (NVIDIA DALI cannot build its pipeline on cpu (CUDA "
                        "error: out of memory)): its images were loaded through PIL"), said


def test_a_dali_that_cannot_build_its_pipeline_is_refused_and_auto_takes_torch(roots, monkeypatch, capsys):
    """A pipeline that fails to build (on a GPU: a CUDA driver older than DALI's, say) is refused
    when the loader is made, in words; auto then takes the DataLoader and says why, once."""
    def no_pipeline(self):
        raise RuntimeError("Critical error in pipeline:\nCUDA driver version is insufficient for CUDA runtime version")

    monkeypatch.setattr(DaliLoader, "_build_pipeline", no_pipeline)
    monkeypatch.setattr(select_module, "_said", set())
    opt = make_opt(roots / "unaligned", cache_memory_fraction=0.0)
    reason = ("NVIDIA DALI cannot build its pipeline on cpu "
              "(CUDA driver version is insufficient for CUDA runtime version)")
    with pytest.raises(DaliUnavailable) as refused:
        create_loader(opt.replace(loader="dali"), "cpu")
    assert str(refused.value) == f"--loader dali: {reason}; use --loader cache or torch"
    assert isinstance(refused.value, DatasetError)
    capsys.readouterr()
    for _ in range(2):
        assert isinstance(create_loader(opt.replace(loader="auto"), "cpu"), TorchLoader)
    out = capsys.readouterr().out
    assert out.count(f"{reason}: --loader auto falls back to the torch DataLoader") == 1
    assert out.count("does not fit in 0 of the") == 1 and "and DALI cannot run here)" in out, out


def test_dali_yields_the_batches_before_a_file_pil_cannot_read_either(one_bit_tiff_root):
    (one_bit_tiff_root / "3.png").write_bytes(b"not a png at all")
    opt = make_opt(one_bit_tiff_root, dataset_mode="single", serial_batches=True, batch_size=1)
    results = {}
    for kind in ("torch", "dali"):
        got = []
        with pytest.raises(DatasetError) as e:
            for b in make_loader(kind, opt).epoch_batches(0):
                got.append(b)
        results[kind] = (got, str(e.value))
    (ref, words), (got, dali_words) = results["torch"], results["dali"]
    assert words.startswith("cannot read image") and "3.png" in words and dali_words == words
    assert len(ref) == 3  # 0.png, 1.tif, 2.png
    assert_close("dali", ref, got)


def test_dali_says_nothing_of_pil_when_pil_cannot_read_the_file_either(tmp_path, capsys):
    (tmp_path / "0.png").write_bytes(b"not a png at all")
    save(tmp_path / "1.png", photo_like(np.random.default_rng(2), 40, 40))
    opt = make_opt(tmp_path, dataset_mode="single", serial_batches=True, batch_size=1)
    capsys.readouterr()
    assert "0.png" in refusal("dali", opt)
    assert "through PIL" not in capsys.readouterr().out


# resume, ranks, early stops, memory format --------------------------------------------------


@pytest.mark.parametrize("kind", ["cache", "dali", "dali graph"])
def test_resume_ranks_and_early_stop(roots, kind):
    opt = make_opt(roots / "unaligned", batch_size=1)
    loader = make_loader(kind, opt)
    full = epoch(loader, 3)
    assert len(full) == 5
    assert_close("cache", full[2:], epoch(loader, 3, skip=2))  # resuming mid-epoch: the same tail
    assert epoch(loader, 3, skip=5) == []
    for i, _ in enumerate(loader.epoch_batches(4)):  # stop early; the next epoch is unaffected
        if i == 1:
            break
    assert_close("cache", full, epoch(loader, 3))
    # two ranks at batch 1 see, batch by batch, the items of one rank at batch 2
    one = epoch(make_loader(kind, opt.replace(batch_size=2)), 3)
    ranks = [epoch(make_loader(kind, opt, rank=r, world_size=2), 3) for r in range(2)]
    assert len(ranks[0]) == len(ranks[1]) == len(one) == 3
    for b, whole in enumerate(one):
        joined = [ranks[0][b], ranks[1][b]]
        if len(whole["A_paths"]) == 2:
            assert [p for j in joined for p in j["A_paths"]] == whole["A_paths"]
            assert torch.equal(torch.cat([j["A"] for j in joined]), whole["A"])
        else:  # the last, short global batch: rank 1 is topped up from the epoch's start
            assert ranks[0][b]["A_paths"] == whole["A_paths"]


@pytest.mark.parametrize("kind", KINDS)
def test_channels_last(roots, kind):
    opt = make_opt(roots / "aligned", dataset_mode="aligned", input_nc=1, batch_size=2)
    plain = epoch(make_loader(kind, opt))
    nhwc = epoch(make_loader(kind, opt.replace(channels_last=True)))
    for p, n in zip(plain, nhwc):
        assert n["B"].is_contiguous(memory_format=torch.channels_last) and not n["B"].is_contiguous()
        assert p["B"].is_contiguous()
        assert torch.equal(p["A"], n["A"]) and torch.equal(p["B"], n["B"])


def test_the_caches_crops_and_flips_run_on_the_calling_thread_alone(roots, monkeypatch):
    """A flip copies its image; with torch's thread team per image such small ops stalled
    under load (tensor_transforms' docstring), so the cache runs them on one thread, as the
    DALI loader's torch transforms do."""
    from fastgan.data import cache_loader

    threads = []
    real = cache_loader.crop_flip
    monkeypatch.setattr(cache_loader, "crop_flip", lambda *a: threads.append(torch.get_num_threads()) or real(*a))
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        epoch(make_loader("cache", make_opt(roots / "unaligned", batch_size=2)), 1)
        assert threads and set(threads) == {1} and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


# which loader auto picks ---------------------------------------------------------------------


def test_auto_picks_cache_then_dali_then_torch(roots, monkeypatch, capsys):
    monkeypatch.setattr(select_module, "_said", set())
    opt = make_opt(roots / "unaligned", loader="auto")
    assert isinstance(create_loader(opt, "cpu"), CacheLoader)
    said = capsys.readouterr().out
    assert "loader: cache (auto: the decoded dataset, 31 kB, fits in 0.5 of the" in said
    assert "; 31 kB kept in host memory)" in said  # where: GPU memory, or pinned host memory when it does not fit
    with pytest.raises(DatasetError, match="more than --cache_memory_fraction 0"):
        create_loader(opt.replace(loader="cache", cache_memory_fraction=0.0), "cpu")
    assert "loader: cache" not in capsys.readouterr().out  # the choice is said once the loader took the data
    assert isinstance(create_loader(opt.replace(cache_memory_fraction=0.0), "cpu"), DaliLoader)
    assert "does not fit in 0 of the" in capsys.readouterr().out
    monkeypatch.setattr(select_module, "dali_import_error", lambda: "ImportError: no DALI here")
    # free memory moves between two calls: the line, which names it, is still said once
    frees = iter([19.13e9, 19.27e9, 19.41e9])
    monkeypatch.setattr(select_module, "free_memory", lambda device: next(frees))
    for _ in range(2):
        assert isinstance(create_loader(opt.replace(cache_memory_fraction=0.0), "cpu"), TorchLoader)
    out = capsys.readouterr().out
    assert out.count("NVIDIA DALI cannot be imported (ImportError: no DALI here)") == 1
    assert out.count("loader: torch (auto:") == 1
    # another dataset in the process (a sweep): its loader is said too
    create_loader(make_opt(roots / "aligned", dataset_mode="aligned", loader="auto", cache_memory_fraction=0.0), "cpu")
    assert capsys.readouterr().out.count("loader: torch (auto:") == 1
    assert isinstance(create_loader(opt.replace(loader="torch"), "cpu"), TorchLoader)


def test_dali_loads_floating_point_images_through_pil_whatever_their_name(tmp_path, monkeypatch, capsys):
    """DALI decodes a floating-point TIFF without failing, saturated (mean level 254 where PIL's
    convert gives 126): the header's mode, not the name, has PIL load its batches in place of
    DALI's output (no new pipeline), also for auto, which takes DALI here."""
    monkeypatch.setattr(select_module, "_said", set())
    rng = np.random.default_rng(3)
    for i in range(3):
        save(tmp_path / "trainA" / f"a{i}.png", photo_like(rng, 40, 40))
        save(tmp_path / "trainB" / f"b{i}.png", photo_like(rng, 40, 40))
    for name in ("b3.tif", "b4.png"):  # a TIFF named .png: decoders go by content
        Image.fromarray(rng.uniform(0, 250, (40, 40)).astype(np.float32), mode="F").save(
            tmp_path / "trainB" / name, "TIFF")
    opt = make_opt(tmp_path, batch_size=2, serial_batches=True, preprocess="none", no_flip=True)
    ref = epoch(make_loader("torch", opt))
    assert {os.path.basename(p) for b in ref for p in b["B_paths"]} >= {"b3.tif", "b4.png"}
    capsys.readouterr()
    builds = []
    real_build = DaliLoader._build_pipeline
    monkeypatch.setattr(DaliLoader, "_build_pipeline", lambda self: builds.append(1) or real_build(self))
    for kind in ("dali", "dali graph"):
        assert_close(kind, ref, epoch(make_loader(kind, opt)))
    assert len(builds) == 2  # one pipeline per loader: DALI's output of those batches is replaced, not failed
    auto = create_loader(opt.replace(loader="auto", cache_memory_fraction=0.0), "cpu")
    assert isinstance(auto, DaliLoader)
    assert_close("dali", ref, epoch(auto))
    assert capsys.readouterr().out.count("some images DALI cannot decode as PIL does were loaded through PIL") == 3  # once per loader


def test_ranks_of_one_node_share_its_host_memory(roots, monkeypatch, capsys):
    """Each rank caches the whole dataset: with 4 ranks on a node, each may take a quarter
    of the share (without this, 4 ranks together took 4 times the share)."""
    import fastgan.data.cache_loader as cache_module

    monkeypatch.setattr(select_module, "_said", set())
    opt = make_opt(roots / "unaligned", loader="auto")
    need = sum(im.nbytes for im in cache_module.cached_images(CacheLoader(opt, "cpu").dataset,
                                                                cache_module.ImageSizes()))
    monkeypatch.setattr(cache_module, "available_host_memory", lambda: 3 * need)  # a share of 0.5 fits it
    assert isinstance(create_loader(opt, "cpu"), CacheLoader)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")  # a quarter of it does not
    assert isinstance(create_loader(opt, "cpu"), DaliLoader)
    assert "(1/4 of it: 4 ranks on this node)" in capsys.readouterr().out
    with pytest.raises(DatasetError, match=r"of available host memory \(1/4 of it: 4 ranks on this node\)"):
        create_loader(opt.replace(loader="cache"), "cpu")


def test_explicit_choices_that_cannot_work_say_why(roots, monkeypatch):
    opt = make_opt(roots / "unaligned")
    with pytest.raises(DatasetError, match="unknown --loader 'fast'"):
        create_loader(opt.replace(loader="fast"), "cpu")
    with pytest.raises(DatasetError, match=r"takes .* than --cache_memory_fraction 0 of the memory it may use \("):
        create_loader(opt.replace(loader="cache", cache_memory_fraction=0.0), "cpu")
    with pytest.raises(DatasetError, match="between 0 and 1"):
        create_loader(opt.replace(loader="cache", cache_memory_fraction=1.5), "cpu")
    monkeypatch.setattr("fastgan.data.dali_loader.dali_import_error", lambda: "ImportError: gone")
    with pytest.raises(DatasetError, match=r"--loader dali needs NVIDIA DALI.*\(ImportError: gone\)"):
        create_loader(opt.replace(loader="dali"), "cpu")


# the GPU paths ------------------------------------------------------------------------------


def on_cpu(batches: list[dict]) -> list[dict]:
    return [{k: v.cpu() if torch.is_tensor(v) else v for k, v in b.items()} for b in batches]


def test_a_gpu_runs_cache_is_pinned_only_where_the_pinned_block_fits(roots, monkeypatch):
    """torch's pinned allocator rounds a block up to a power of two: a set that fits the host's
    share only unrounded is kept in plain host memory rather than pinning up to twice it."""
    from fastgan.data.cache_loader import pinned_bytes

    assert [pinned_bytes(n) for n in (1, 2, 3, 4096, 4097)] == [1, 2, 4, 4096, 8192]
    opt = make_opt(roots / "unaligned", batch_size=2)
    monkeypatch.setattr("fastgan.data.cache_loader.free_memory", lambda device: 0)  # no room on the GPU
    nbytes = CacheLoader(opt, "cpu").nbytes
    assert pinned_bytes(nbytes) > nbytes  # the test set is no power of two
    share = opt.cache_memory_fraction
    for host, placement in ((pinned_bytes(nbytes) / share, ("cpu", True)), (nbytes / share, ("cpu", False))):
        monkeypatch.setattr("fastgan.data.cache_loader.host_memory_per_rank", lambda host=host: host)
        loader = CacheLoader(opt, "cuda:0")  # (with its index: no CUDA call to find the current device)
        assert (loader.store_device.type, loader.pinned) == placement
    # GPU memory takes the set only where it fits in the share of the free memory, not in all of it
    for free, placement in ((nbytes / share, ("cuda", False)), (nbytes / share - 1, ("cpu", False))):
        monkeypatch.setattr("fastgan.data.cache_loader.free_memory", lambda device, free=free: free)
        loader = CacheLoader(opt, "cuda:0")
        assert (loader.store_device.type, loader.pinned) == placement, free


@pytest.mark.gpu
def test_gpu_cache_matches_the_torch_loader(roots, monkeypatch):
    opt = make_opt(roots / "unaligned", batch_size=2, num_threads=2)
    ref = epoch(make_loader("torch", opt), 2)
    for placement in ("gpu", "pinned"):
        if placement == "pinned":  # no room on the GPU: the cache stays in pinned host memory
            monkeypatch.setattr("fastgan.data.cache_loader.free_memory", lambda device: 0)
        loader = CacheLoader(opt, "cuda")
        assert (loader.store_device.type, loader.pinned) == (("cuda", False) if placement == "gpu" else ("cpu", True))
        got = epoch(loader, 2)
        assert all(b["A"].is_cuda and b["B"].is_cuda for b in got)
        for r, g in zip(ref, on_cpu(got)):
            assert r["A_paths"] == g["A_paths"] and r["B_paths"] == g["B_paths"]
            assert torch.equal(g["A"], r["A"]) and torch.equal(g["B"], r["B"])


@pytest.mark.gpu
def test_gpu_dali_matches_the_torch_loader(roots):
    from fastgan.data import dali_import_error

    if dali_import_error() is not None:  # an optional dependency: the GPU suite's machine may lack it
        pytest.skip(f"NVIDIA DALI is not installed here ({dali_import_error()})")
    opt = make_opt(roots / "unaligned", batch_size=2, num_threads=2)
    ref = epoch(make_loader("torch", opt), 2)
    got = epoch(DaliLoader(opt, "cuda"), 2)  # nvJPEG, DALI's GPU resize and crop_mirror_normalize
    assert all(b["A"].is_cuda for b in got)
    assert_close("dali graph", ref, on_cpu(got))
