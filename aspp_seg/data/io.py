"""Image and label decoding.

RGB PNGs are decoded with torchvision's libpng binding, the fastest of PIL, OpenCV and
torchvision measured on 1024x2048 frames (`benchmarks/dataloader.py`: best of three
rounds 75 ms against 104 (OpenCV) and 106 (PIL) on a loaded 2-core machine); other
formats, 16-bit files and anything it cannot read go through OpenCV, whose failure
names the file. Label maps (single channel, a few ms either way) use OpenCV.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch
from torchvision.io import ImageReadMode, decode_png, read_file

from aspp_seg.errors import DataError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
"""File name endings read as images (by folder data sets and prediction sources)."""

cv2.setNumThreads(0)  # data workers run in parallel already


def _png_rgb(path: str | Path) -> np.ndarray | None:
    """H x W x 3 uint8 from torchvision's PNG decoder, or None to fall back."""
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


def read_label(path: str | Path) -> np.ndarray:
    """H x W uint8 single-channel label map; raises DataError for other files."""
    label = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if label is None:
        raise DataError(f"cannot read label map {path}")
    if label.ndim != 2 or label.dtype != np.uint8:
        raise DataError(
            f"label map {path} must be 8-bit single-channel, got shape {label.shape} "
            f"of {label.dtype}"
        )
    return label
