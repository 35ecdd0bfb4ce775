"""Image and label decoding."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from aspp_seg.errors import DataError

cv2.setNumThreads(0)  # data workers run in parallel already


def read_rgb(path: str | Path) -> np.ndarray:
    """H x W x 3 uint8 RGB; raises DataError naming an unreadable file."""
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
