"""NVIDIA DALI decodes the images: nvJPEG (and the hardware JPEG decoder where there
is one) on a GPU, libjpeg-turbo, libpng and libtiff threads on a CPU (device_id=None,
DALI's CPU-only mode: how CI runs it). DALI is optional: it is imported on first
use, and fastgan.data.select falls back when it cannot be.

The plan drives DALI; DALI's file reader does not shuffle. The reader shuffles
within its own buffer, cannot start an epoch at batch k, and knows nothing of
unaligned B partners or of the other ranks' slices, while fastgan.data.plan
already decides, for every loader and rank, which items each batch holds. So
each domain's reader is one stream of an external source fed batch by batch
from the plan: the file paths of that domain (A's in the epoch's permutation,
B's drawn per item by its own generator, independent of A's, as the reference's
UnalignedDataset draws them) and each image's decisions from
fastgan.data.recipes (aligned half, resize size, crop position, flip); DALI
reads the files (fn.io.file.read) and decodes them in its threads. Crops and
flips are therefore the torch path's own (item_rng), the images differ from it
only by decoder and resampler rounding, and rank sharding and exact mid-epoch
resume (skip) come with the plan.

The pipeline, per output image:
  read -> decode (device "mixed" with a GPU, "cpu" without; RGB, EXIF orientation
  ignored as PIL does) -> aligned: slice the half -> 1 channel: RGB to GRAY -> then
  transform_on="dali" (the default on a GPU): resize with cubic interpolation,
     antialiased (the reference's BICUBIC; DALI's kernel is close to PIL's, not
     equal: README's "Loaders" has the measured differences), then crop_mirror_normalize (the recipe's crop and
     mirror, (x - 127.5) / 127.5, CHW, or HWC read as channels_last);
  transform_on="torch" (the default on a CPU): DALI stops after decoding and
     tensor_transforms resizes, crops, flips and normalizes. DALI's CPU resize is
     scalar code: 9 ms per 600x400 -> 286x286 image on this 2-core Xeon, against
     0.5 ms for torch's uint8 AVX2 resize (which matches PIL to a level or two) and
     1.7 ms for DALI's decode; with it the DALI loader is no faster than the
     DataLoader here.

Refusals: a file DALI cannot decode fails its batch (and the pipeline). The
loader then loads the batches in flight, in order, through the torch path's
decoding (PIL in this process, fastgan.data.loader.load_batch), yields them,
builds a new pipeline and carries on with the rest of the epoch: an image PIL
reads and DALI does not (a 1-bit TIFF, say) costs speed, not the run, and a
note says so once per loader and DALI reason, quoting DALI's operator and error
(a failure that is not the file's, a GPU out of memory say, is then seen as such).
A pipeline that cannot be built (DALI imports but cannot run on the device: a CUDA
driver older than its own, say) is refused when the loader is made, as
DaliUnavailable: --loader auto then falls back to the DataLoader (select.py); one
that cannot be built again later (after a failed batch, or for a new epoch) leaves
the rest of that epoch to PIL, with a note.
A batch holding a file DALI decodes without failing but to other pixels than
PIL's convert (the reference's) is loaded through PIL too, in place of DALI's
output, with no new pipeline: a floating-point image (PIL mode "F", found by its
header's mode, whatever the file's name), which DALI saturates.
A file PIL cannot read either raises the torch path's DatasetError (the words
every loader uses) when its batch is due, after the batches before it: the
recipes read every file's header, so a file PIL refuses to open (a decompression
bomb, a damaged PNG chunk) is refused even where DALI would decode it. Refusals
the recipes find (an image smaller than the crop, mixed sizes in a batch) are
raised the same way, as from the torch loader.
"""

from __future__ import annotations

import functools
import importlib
import os
import re
from collections import deque
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import torch

from fastgan.data.errors import DatasetError
from fastgan.data.loader import PlannedLoader, load_batch
from fastgan.data.recipes import ImageSizes, ItemRecipes, check_same_size
from fastgan.data.tensor_transforms import crop_flip, one_torch_thread, resize_like_pil, to_batch


@functools.cache
def dali_import_error() -> str | None:
    """Why NVIDIA DALI (with its PyTorch plugin) cannot be imported, or None when it can."""
    try:
        importlib.import_module("nvidia.dali")
        importlib.import_module("nvidia.dali.plugin.pytorch")
    except Exception as e:  # ImportError, or a broken install's OSError/RuntimeError
        return f"{type(e).__name__}: {e}"
    return None


class DaliUnavailable(DatasetError):
    """DALI imports but cannot build its pipeline on the device; `reason` quotes DALI."""

    def __init__(self, device: torch.device, reason: str):
        self.reason = f"NVIDIA DALI cannot build its pipeline on {device} ({reason})"
        super().__init__(f"--loader dali: {self.reason}; use --loader cache or torch")


def dali_reason(error: BaseException) -> str:
    """DALI's error in a line: the operator that failed and what it encountered (its message
    is many lines: the pipeline's traceback, then "encountered:" and the cause)."""
    text = str(error)
    operator = re.search(r"Error in (\w+) operator `(?:nvidia\.dali\.)?([^`]+)`", text)
    after = text.split("encountered:", 1)[1] if "encountered:" in text else text
    lines = [ln.strip() for ln in after.splitlines()
             if ln.strip() and not ln.strip().startswith(("Critical error in pipeline", "Current pipeline object"))]
    cause = lines[0] if lines else type(error).__name__
    return f"{operator[2]} ({operator[1].lower()}): {cause}" if operator else cause


@dataclass
class _Column:
    """One stream of the external source: a name, its DALI type, and its batch from the recipes."""

    name: str
    dtype: str  # a nvidia.dali.types.DALIDataType name
    ndim: int
    values: Callable[[list[dict]], object]


class _Epoch:
    """One epoch as the external source sees it: batches still to feed, batches fed and
    not yet returned (with their items and whether PIL must load them instead, oldest
    first), and a refusal waiting its turn."""

    def __init__(self, epoch: int, plan: list[list[int]]):
        self.epoch = epoch
        self.pending = deque(plan)
        self.in_flight: deque[tuple[list[int], list[dict], bool]] = deque()
        self.error: Exception | None = None


class _Feeder:
    """The external source's callback: the next planned batch as DALI inputs.

    Kept apart from the loader so that the pipeline holding it holds no loader
    (no reference cycle: dropping the loader's pipeline frees it at once).
    """

    def __init__(self, recipes: ItemRecipes, sizes: ImageSizes, columns: list[_Column], crop_size: int):
        self.recipes, self.sizes, self.columns, self.crop_size = recipes, sizes, columns, crop_size
        self.epoch: _Epoch | None = None

    def __call__(self):
        ep = self.epoch
        if ep is None or ep.error is not None or not ep.pending:
            raise StopIteration
        indices = ep.pending.popleft()
        try:
            items = [self.recipes(i, ep.epoch) for i in indices]
            for key in self.recipes.channels:
                check_same_size(items, key, self.crop_size)
        except DatasetError as e:  # raised by the loader once the batches before it are out
            ep.error = e
            raise StopIteration from None
        # a file DALI would misread (fastgan/data/dali_misreads.py; the recipes read every
        # header, and what it says is remembered): DALI still decodes the batch, and the loader
        # takes PIL's instead of its output
        misread = any(self.sizes.dali_misreads(it[key].path) for it in items for key in self.recipes.channels)
        ep.in_flight.append((indices, items, misread))
        return tuple(col.values(items) for col in self.columns)


def _path_bytes(path: str) -> np.ndarray:
    """The file name's bytes as the OS has them: os.fsencode, not .encode("utf-8"), so a name
    that is not valid UTF-8 (a Latin-1 archive's b"caf\\xe9.png", surrogate-escaped by Python)
    opens as the torch loader opens it."""
    return np.frombuffer(os.fsencode(path), dtype=np.uint8)


def _normalized(pos: int, extent: int, crop_size: int) -> float:
    """crop_mirror_normalize's crop_pos for a crop at `pos`: it rounds pos / (extent - crop) back to pos."""
    return pos / (extent - crop_size) if extent > crop_size else 0.0


class DaliLoader(PlannedLoader):
    """Batches decoded by a DALI pipeline (see the module docstring).

    transform_on: "dali" or "torch", where resize, crop, flip and normalize run
    (default: "dali" on a GPU, "torch" on a CPU; "torch" needs a CPU device).
    """

    kind = "dali"  # its --loader name

    def __init__(self, opt, device, dataset=None, rank: int = 0, world_size: int = 1,
                 transform_on: str | None = None, sizes=None):
        problem = dali_import_error()
        if problem is not None:
            raise DatasetError(f"--loader dali needs NVIDIA DALI, which cannot be imported ({problem}); "
                               f"install nvidia-dali (requirements.txt) or use --loader cache or torch")
        super().__init__(opt, device, dataset, rank, world_size)
        self.on_gpu = self.device.type == "cuda"
        self.transform_on = transform_on or ("dali" if self.on_gpu else "torch")
        if self.transform_on not in ("dali", "torch"):
            raise ValueError(f"transform_on must be 'dali' or 'torch', got {self.transform_on!r}")
        if self.transform_on == "torch" and self.on_gpu:
            raise ValueError("transform_on='torch' resizes on the CPU: use it with a CPU device")
        sizes = sizes if sizes is not None else ImageSizes()
        self.recipes = ItemRecipes(self.dataset, sizes)
        self.keys = list(self.recipes.channels)
        # the files each item reads: one per domain, or one A|B file for both halves
        self.sources = self.keys if self.dataset.mode == "unaligned" else ["A"]
        self._feeder = _Feeder(self.recipes, sizes, self._columns(), opt.crop_size)
        self._said_through_pil: set = set()  # the PIL fallback's notes, once per loader and reason
        self._pipe = self._new_pipeline()  # built now: a DALI that cannot run here is refused at once

    # -- the pipeline --------------------------------------------------------------
    def _columns(self) -> list[_Column]:
        opt, cs = self.opt, self.opt.crop_size
        cols = [_Column("path_" + s, "UINT8", 1, lambda items, s=s: [_path_bytes(it[s].path) for it in items])
                for s in self.sources]

        def per_image(name, dtype, value):  # a column per output image: value(recipe) -> scalar or pair
            numpy_type = np.int32 if dtype == "INT32" else np.float32
            for k in self.keys:
                cols.append(_Column(f"{name}_{k}", dtype, 1 if name in ("anchor", "shape") else 0,
                                    lambda items, k=k: np.array([value(it[k]) for it in items], numpy_type)))

        if self.dataset.mode == "aligned":
            per_image("anchor", "INT32", lambda r: r.region[:2])  # (x, y), then (w, h): axis_names "WH"
            per_image("shape", "INT32", lambda r: r.region[2:])
        if self.transform_on == "dali":
            if opt.preprocess != "crop":  # every other mode resizes (none: to a multiple of 4)
                per_image("width", "FLOAT", lambda r: r.resized[0])
                per_image("height", "FLOAT", lambda r: r.resized[1])
            if "crop" in opt.preprocess:
                per_image("crop_x", "FLOAT", lambda r: _normalized(r.crop[0], r.resized[0], cs))
                per_image("crop_y", "FLOAT", lambda r: _normalized(r.crop[1], r.resized[1], cs))
            per_image("flip", "INT32", lambda r: int(r.flip))
        return cols

    def _build_pipeline(self):
        from nvidia.dali import Pipeline, fn, types

        opt, cols = self.opt, self._feeder.columns
        pipe = Pipeline(batch_size=self.batch_size, num_threads=max(1, int(opt.num_threads)),
                        device_id=self.device.index if self.on_gpu else None, seed=opt.seed % (1 << 31),
                        prefetch_queue_depth=2)
        with pipe:
            streams = fn.external_source(source=self._feeder, num_outputs=len(cols),
                                         dtype=[getattr(types, c.dtype) for c in cols],
                                         ndim=[c.ndim for c in cols])
            node = {c.name: s for c, s in zip(cols, streams)}
            decoder = {"device": "mixed", "jpeg_fancy_upsampling": True} if self.on_gpu else {"device": "cpu"}
            decoded = {s: fn.decoders.image(fn.io.file.read(node["path_" + s]), output_type=types.RGB,
                                            adjust_orientation=False, **decoder)
                       for s in self.sources}
            outputs = []
            for k in self.keys:
                img = decoded[k if self.dataset.mode == "unaligned" else "A"]
                if self.dataset.mode == "aligned":
                    img = fn.slice(img, node["anchor_" + k], node["shape_" + k], axis_names="WH",
                                   normalized_anchor=False, normalized_shape=False)
                channels = self.recipes.channels[k]
                if channels == 1:
                    img = fn.color_space_conversion(img, image_type=types.RGB, output_type=types.GRAY)
                if self.transform_on == "dali":
                    if opt.preprocess != "crop":
                        img = fn.resize(img, resize_x=node["width_" + k], resize_y=node["height_" + k],
                                        interp_type=types.INTERP_CUBIC, antialias=True)
                    crop = {}
                    if "crop" in opt.preprocess:
                        crop = {"crop": (opt.crop_size, opt.crop_size), "crop_pos_x": node["crop_x_" + k],
                                "crop_pos_y": node["crop_y_" + k]}
                    img = fn.crop_mirror_normalize(img, mirror=node["flip_" + k], mean=[127.5] * channels,
                                                   std=[127.5] * channels, dtype=types.FLOAT,
                                                   output_layout="HWC" if self.channels_last else "CHW", **crop)
                outputs.append(img)
            pipe.set_outputs(*outputs)
        pipe.build()
        return pipe

    def _new_pipeline(self):
        try:
            return self._build_pipeline()
        except RuntimeError as e:
            raise DaliUnavailable(self.device, dali_reason(e)) from e

    # -- epochs --------------------------------------------------------------------
    def epoch_batches(self, epoch: int, skip: int = 0) -> Iterator[dict]:
        """The batches of `epoch` after the first `skip` (never read). One epoch iteration at a time."""
        return self._iterate(_Epoch(epoch, self.plan(epoch, skip)))

    def _iterate(self, ep: _Epoch) -> Iterator[dict]:
        if self._feeder.epoch is not None:  # an earlier iteration was left open: its prefetched batches are stale
            self.close()
        try:
            while True:
                if self._pipe is None:
                    try:
                        self._pipe = self._new_pipeline()
                    except DaliUnavailable as e:  # (mid-run: the GPU's memory taken, say) no file's fault
                        while ep.pending:  # the rest of the epoch through PIL; the next one tries DALI again
                            yield self._through_pil(ep.epoch, ep.pending.popleft(), e.reason)
                        break
                self._feeder.epoch = ep
                try:
                    outputs = self._pipe.run()
                except StopIteration:
                    break
                except RuntimeError as e:
                    if not ep.in_flight:  # no batch of ours to load instead: nothing to fall back on
                        self.close()
                        raise
                    outputs, failure = None, dali_reason(e)
                if outputs is not None:
                    indices, items, misread = ep.in_flight.popleft()
                    if misread:
                        yield self._through_pil(ep.epoch, indices, None)
                    else:
                        yield self._batch(outputs, items)
                    continue
                # DALI failed a batch (a file its decoders refuse, or a bad one): drop the
                # pipeline, load the batches in flight, in order, through the torch path (PIL),
                # which raises the loaders' DatasetError for a file it cannot read either; then
                # a new pipeline carries on with the batches still planned.
                self.close()
                while ep.in_flight:
                    indices, _, _ = ep.in_flight.popleft()
                    yield self._through_pil(ep.epoch, indices, failure)
                if ep.error is not None or not ep.pending:  # a refusal the recipes found after them, or the end
                    break
        except GeneratorExit:  # the caller stopped early: run out what DALI prefetched
            self._drain(ep)
            raise
        if self._pipe is not None:
            self._pipe.reset()
        self._feeder.epoch = None
        if ep.error is not None:
            raise ep.error

    def _through_pil(self, epoch: int, indices: list[int], failure: str | None) -> dict:
        """A batch the torch path (PIL) loads in DALI's place: DALI misreads one of its files
        (failure None) or failed on it for `failure` (dali_reason)."""
        batch = load_batch(self.dataset, epoch, indices, self.device, self.channels_last)
        self._say_through_pil(failure)  # only once PIL did read it
        return batch

    def _say_through_pil(self, failure: str | None) -> None:
        """The note (rank 0's), once per loader and DALI reason, that PIL loaded some images."""
        if failure not in self._said_through_pil:
            self._said_through_pil.add(failure)
            if self.rank == 0:
                print(f"loader: dali: DALI failed a batch ({failure}): its images were loaded through PIL" if failure
                      else "loader: dali: some images DALI cannot decode as PIL does were loaded through PIL",
                      flush=True)

    def _drain(self, ep: _Epoch) -> None:
        ep.pending.clear()
        ep.in_flight.clear()
        if self._pipe is None or self._feeder.epoch is not ep:
            return  # stopped while the fallback was yielding (no pipeline), or the pipeline is another iteration's
        try:
            while True:
                self._pipe.run()
        except StopIteration:
            self._pipe.reset()
            self._feeder.epoch = None
        except RuntimeError:
            self.close()

    def close(self) -> None:
        """Drop the pipeline (its threads and buffers); the next epoch builds a new one."""
        self._pipe = None
        self._feeder.epoch = None

    # -- outputs -> batches --------------------------------------------------------
    def _batch(self, outputs, items: list[dict]) -> dict:
        batch = {}
        for key, out in zip(self.keys, outputs):
            batch[key] = self._dali_batch(out) if self.transform_on == "dali" else \
                self._torch_batch(out, [it[key] for it in items])
        for key in self.keys:
            batch[key + "_paths"] = [it[key + "_paths"] for it in items]
        return batch

    def _dali_batch(self, out) -> torch.Tensor:
        from nvidia.dali.plugin.pytorch import feed_ndarray

        dense = out.as_tensor()
        batch = torch.empty(dense.shape(), dtype=torch.float32, device=self.device)
        feed_ndarray(dense, batch, cuda_stream=torch.cuda.current_stream(self.device) if self.on_gpu else None)
        return batch.permute(0, 3, 1, 2) if self.channels_last else batch

    def _torch_batch(self, out, recipes) -> torch.Tensor:
        cs = self.opt.crop_size
        with one_torch_thread():  # DALI's decoding threads hold the cores (tensor_transforms)
            images = []
            for i, r in enumerate(recipes):
                decoded = torch.from_dlpack(out[i]).permute(2, 0, 1)  # (C, H, W) view of DALI's HWC image
                images.append(crop_flip(resize_like_pil(decoded, r.resized), r.crop, cs, r.flip))
        return to_batch(images, self.device, self.channels_last)
