"""Images and pages of images as the reference writes them: its tensor2im, and its HTML
pages of images under headings (a training run's web/index.html, fastgan.test's
index.html)."""

from __future__ import annotations

import html
import os
from urllib.parse import quote

import numpy as np
import torch

from fastgan.errors import replace_file


def tensor2im(x: torch.Tensor) -> np.ndarray:
    """A (C, H, W) image in [-1, 1] as the reference's tensor2im makes it: an (H, W, 3) uint8
    array of (x + 1) / 2 * 255 truncated (not rounded), one channel tiled to RGB. Values
    outside [-1, 1] are clamped (the reference would wrap them around)."""
    if x.dim() != 3 or x.shape[0] not in (1, 3):
        raise ValueError(f"an image to save has shape {tuple(x.shape)}: expected 1 or 3 channels, (C, H, W)")
    image = ((x.detach().float().cpu().clamp(-1, 1) + 1) / 2 * 255).to(torch.uint8)
    return image.expand(3, -1, -1).permute(1, 2, 0).numpy()


def write_image_page(path: str, title: str, sections: list[tuple[str, list[tuple[str, str]]]], width: int,
                     refresh: int | None = None) -> None:
    """An HTML page at `path` titled `title`: each section's heading over one row of its
    (label, image path relative to the page) images, each `width` pixels wide and linked to
    itself, as the reference's html.HTML lays them out. Paths are percent-encoded from their
    bytes, so a file name that is no UTF-8 (os.fsdecode's surrogates) still links to its file.
    `refresh`: seconds after which a browser reloads the page (the reference's training page:
    1). Written whole, then renamed into place: a browser reloading it never reads half a page."""
    parts = ["<!doctype html><html><head><meta charset='utf-8'>"]
    if refresh:
        parts.append(f"<meta http-equiv='refresh' content='{int(refresh)}'>")
    parts.append(f"<title>{_text(title)}</title></head><body>")
    for heading, images in sections:
        cells = "".join(f"<td style='word-wrap: break-word;' halign='center' valign='top'><p>"
                        f"<a href=\"{_address(src)}\"><img style='width:{int(width)}px' src=\"{_address(src)}\">"
                        f"</a><br><p>{_text(label)}</p></p></td>" for label, src in images)
        parts.append(f"<h3>{_text(heading)}</h3><table border='1' style='table-layout: fixed;'>"
                     f"<tr>{cells}</tr></table>")
    parts.append("</body></html>\n")
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write("".join(parts))
    replace_file(tmp, path)


def _text(s: str) -> str:
    """`s` as HTML text; a file name's undecodable bytes (surrogates) shown as U+FFFD."""
    return html.escape(os.fsencode(s).decode("utf-8", "replace"))


def _address(path: str) -> str:
    """A relative URL of the file at `path`: its bytes percent-encoded (a browser maps them back)."""
    return html.escape(quote(os.fsencode(path)))
