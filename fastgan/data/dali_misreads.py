"""Files DALI's decoders read to other pixels than PIL's convert("RGB") (the reference's),
told from the header PIL opened (nothing decoded). The DALI loader sends the batches
holding one through PIL instead (dali_loader: misread batches)."""

from __future__ import annotations

import os

from PIL import Image

from fastgan.data.image_folder import WIDE_GRAY_MODES

TIFF_ORIENTATION, TIFF_SAMPLES_PER_PIXEL, TIFF_EXTRA_SAMPLES = 274, 277, 338
ASSOCIATED_ALPHA = 1  # an ExtraSamples value: premultiplied alpha


def dali_misreads(im: Image.Image) -> bool:
    """Whether DALI's decoding of the opened image `im` differs from PIL's (measured, on
    DALI's CPU decoders, by whole levels):
    - a floating-point image (mode F): DALI saturates where convert("RGB") clips;
    - a 16- or 32-bit grayscale image: DALI scales it to 8 bits where convert("RGB") clips;
    - a CIELab image (mode LAB, a TIFF's): DALI's fallback decoder maps its colours otherwise
      (up to 79 levels apart);
    - a TIFF with an Orientation other than 1: PIL turns it upright as it loads it, DALI
      keeps it as stored (on JPEG and PNG both leave EXIF's orientation alone);
    - a TIFF of gray and alpha (2 samples): DALI reads the two as colour channels;
    - a TIFF with premultiplied alpha: PIL divides the alpha out, DALI does not;
    - a PPM/PGM whose maxval is not 255 or 65535: PIL scales it to 0..255, DALI does not;
    - a 5-6-5 BMP (16 bits with bit-field masks): DALI widens the fields otherwise (up to 6
      levels apart);
    - an uncompressed BMP shorter than its pixel rows: DALI decodes a 32-bit one to whatever
      it finds, where PIL refuses it as truncated.
    The rest of what PIL reads, DALI reads alike, or refuses (e.g. a 5-5-5 BMP): a batch it
    fails on is loaded through PIL too."""
    if im.mode in ("F", "LAB", *WIDE_GRAY_MODES):
        return True
    if im.format == "TIFF":
        tags = im.tag_v2
        extra = tags.get(TIFF_EXTRA_SAMPLES, ())
        extra = extra if isinstance(extra, tuple) else (extra,)
        return (tags.get(TIFF_ORIENTATION, 1) != 1 or tags.get(TIFF_SAMPLES_PER_PIXEL, 1) == 2
                or ASSOCIATED_ALPHA in extra)
    if im.format == "PPM":
        args = im.tile[0].args if im.tile else ()
        return isinstance(args, tuple) and len(args) > 1 and args[1] not in (255, 65535)
    if im.format == "BMP":
        args = im.tile[0].args if im.tile else ()
        rawmode = args[0] if isinstance(args, tuple) and args else ""
        return rawmode == "BGR;16" or _truncated_raw_bmp(im)
    return False


def _truncated_raw_bmp(im: Image.Image) -> bool:
    """Whether the BMP file `im` was opened from ends before its uncompressed pixel rows do."""
    tile = im.tile[0] if im.tile else None
    if tile is None or tile.codec_name != "raw" or not isinstance(im.filename, str) or not im.filename:
        return False
    _, top, _, bottom = tile.extents
    stride = tile.args[1]
    return os.path.getsize(im.filename) < tile.offset + stride * (bottom - top)
