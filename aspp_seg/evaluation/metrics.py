"""Confusion-matrix metrics with the Cityscapes benchmark definitions.

IoU = TP / (TP + FP + FN) per class, accumulated over the whole split; a class with
no ground-truth and no predicted pixel has no IoU (NaN) and is left out of the mean,
as in cityscapesscripts' `evalPixelLevelSemanticLabeling`.

This is the one metric path: validation and test
(`aspp_seg.evaluation.confusion.ConfusionMatrix`, a torchmetrics
`MulticlassJaccardIndex` on the device) and ``aspp-seg evaluate`` (`pair_histogram` +
`reduce_histogram`, on label files) both end in `scores`, and every per-class IoU table
(console, files, loggers, the experiment runners) is written by
`aspp_seg.evaluation.reports.iou_table`.

Pixels whose ground truth is ignored (255) count nowhere; a predicted label outside the
evaluated classes (``void``, e.g. Cityscapes labelId 0) is a false negative for the true
class and a false positive for none, as in the official script.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import cv2
import numpy as np

if TYPE_CHECKING:
    import torch


def pair_histogram(gt: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Joint histogram of two uint8 label maps of raw values (any label encoding).

    Args:
        gt, pred: H x W uint8 maps of the same shape.

    Returns:
        int64[256, 256]: counts of (gt value, predicted value).
    """
    if gt.shape != pred.shape or gt.dtype != np.uint8 or pred.dtype != np.uint8:
        raise ValueError(f"need two uint8 maps of one shape, got {gt.shape} {gt.dtype} "
                         f"and {pred.shape} {pred.dtype}")  # fmt: skip
    if gt.size < 2**24:  # OpenCV counts in float32: exact below 2^24 per bin
        # About 4x faster than a numpy bincount (no 16-bit index image), without the GIL.
        counts = cv2.calcHist([gt, pred], [0, 1], None, [256, 256], [0, 256, 0, 256])
        return counts.astype(np.int64)
    index = (gt.astype(np.uint16) << 8) | pred
    return np.bincount(index.ravel(), minlength=256 * 256).reshape(256, 256)


def reduce_histogram(
    histogram: np.ndarray, gt_lut: np.ndarray, pred_lut: np.ndarray, num_classes: int
) -> np.ndarray:
    """Folds a raw-value histogram into a C x (C + 1) confusion matrix.

    Args:
        histogram: int64[256, 256] from `pair_histogram` (summed over files).
        gt_lut: uint8[256] raw ground-truth value -> class (>= C: ignored).
        pred_lut: uint8[256] raw predicted value -> class (>= C: ``void``).
        num_classes: C.

    Returns:
        int64 C x (C + 1); the last column counts predictions of no evaluated class.
    """
    rows = np.asarray(gt_lut, dtype=np.int64)
    cols = np.minimum(np.asarray(pred_lut, dtype=np.int64), num_classes)
    out = np.zeros((num_classes + 1, num_classes + 1), dtype=np.int64)
    np.add.at(out, (np.minimum(rows, num_classes)[:, None], cols[None, :]), histogram)
    return out[:num_classes]


def scores(confusion: torch.Tensor | np.ndarray) -> dict:
    """Per-class IoU, mIoU and pixel accuracy from a confusion matrix.

    Args:
        confusion: C x C counts, rows = ground truth, columns = prediction; or
            C x (C + 1) whose last column counts ``void`` predictions (false negatives
            for the true class, false positives for no class).

    Returns:
        ``{"iou": float64[C] (NaN where undefined), "miou": float, "pixel_acc": float}``.
    """
    counts = confusion.cpu().numpy() if hasattr(confusion, "cpu") else confusion
    cm = np.asarray(counts, dtype=np.float64)
    num_classes = cm.shape[0]
    if cm.ndim != 2 or cm.shape[1] not in (num_classes, num_classes + 1):
        raise ValueError(f"confusion matrix must be C x C or C x (C + 1), got {cm.shape}")
    tp = cm.diagonal().copy()
    union = cm[:, :num_classes].sum(0) + cm.sum(1) - tp
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, tp / np.maximum(union, 1), np.nan)
    total = cm.sum()
    return {
        "iou": iou,
        "miou": float(np.nanmean(iou)) if not np.isnan(iou).all() else float("nan"),
        "pixel_acc": float(tp.sum() / total) if total else float("nan"),
    }
