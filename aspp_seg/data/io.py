"""Image and label decoding.

RGB PNGs are decoded with torchvision's libpng binding, the fastest of PIL, OpenCV and
torchvision measured on 1024x2048 frames (`benchmarks/dataloader.py`: best of three
rounds 75 ms against 104 (OpenCV) and 106 (PIL) on a loaded 2-core machine); other
formats, 16-bit files and anything it cannot read go through OpenCV, whose failure
names the file. Label maps (single channel, a few ms either way) use OpenCV, except
palette PNGs (PASCAL VOC's masks, and what many labelling tools write): their pixels
are class indices with a colour table for viewers, which OpenCV would expand to
colours, so PIL decodes those to the indices they hold.
"""

from __future__ import annotations

import io
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from aspp_seg.errors import DataError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
"""File name endings read as images (by folder data sets and prediction sources)."""

cv2.setNumThreads(0)  # data workers run in parallel already


def _png_rgb(path: str | Path) -> np.ndarray | None:
    """H x W x 3 uint8 from torchvision's PNG decoder, or None to fall back."""
    import torch  # here, not at the top: scoring label files (read_label) needs no torch
    from torchvision.io import ImageReadMode, decode_png, read_file

    try:
        decoded = decode_png(read_file(str(path)), mode=ImageReadMode.RGB)
    except RuntimeError:  # truncated or not a PNG: OpenCV decides and names the file
        return None
    if decoded.dtype != torch.uint8:
        return None
    return np.ascontiguousarray(decoded.permute(1, 2, 0).numpy())


def read_rgb(path: str | Path) -> np.ndarray:
    """H x W x 3 uint8 RGB; raises DataError naming an unreadable file."""
    if str(path).lower().endswith(".png"):
        img = _png_rgb(path)
        if img is not None:
            return img
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise DataError(f"cannot read image {path}")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_PALETTE = 3  # IHDR colour type of an indexed-colour (palette) PNG


def _is_palette_png(data: np.ndarray) -> bool:
    """Whether the file's bytes start a palette PNG (the IHDR chunk comes first and
    holds the colour type at byte 25), decided without decoding."""
    head = data[:26].tobytes()
    return len(head) == 26 and head[:8] == _PNG_SIGNATURE and head[25] == _PNG_PALETTE


def _palette_indices(data: np.ndarray, path: str | Path) -> np.ndarray:
    """H x W uint8 indices of a palette PNG's bytes."""
    try:
        with Image.open(io.BytesIO(data.tobytes()), formats=["PNG"]) as image:
            return np.array(image)  # mode "P": the indices; a copy, writable
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise DataError(f"cannot read label map {path}: {error}") from None


def read_label(path: str | Path) -> np.ndarray:
    """H x W uint8 single-channel label map: an 8-bit grey image, or a palette PNG read
    as its indices.

    The file is read once; its header decides the decoder (see the module docstring).

    Raises:
        DataError: naming a file that is unreadable, or holds colours (a colour-coded
            mask) or anything but 8-bit single-channel values.
    """
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as error:
        raise DataError(f"cannot read label map {path}: {error.strerror or error}") from None
    if _is_palette_png(data):
        label = _palette_indices(data, path)
    else:
        label = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if label is None:
        raise DataError(f"cannot read label map {path}")
    if label.ndim == 3 and label.shape[2] in (3, 4):
        raise DataError(
            f"label map {path} has {label.shape[2]} channels (colour or alpha); a mask "
            "must hold one class index per pixel, as an 8-bit grey or palette PNG "
            "(convert colour-coded masks to indices first)"
        )
    if label.ndim != 2 or label.dtype != np.uint8:
        raise DataError(
            f"label map {path} must be 8-bit single-channel, got shape {label.shape} "
            f"of {label.dtype}"
        )
    return label
