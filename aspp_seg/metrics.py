"""Confusion-matrix metrics with the Cityscapes benchmark definitions.

IoU = TP / (TP + FP + FN) per class, accumulated over the whole split; a class with
no ground-truth and no predicted pixel has no IoU (NaN) and is left out of the mean,
as in cityscapesscripts' `evalPixelLevelSemanticLabeling`.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torchmetrics.classification import MulticlassConfusionMatrix

from aspp_seg.data.labels import CITYSCAPES_CLASSES, IGNORE_INDEX, TABLE1_COLUMNS


def confusion_matrix_metric(num_classes: int) -> MulticlassConfusionMatrix:
    """Accumulating C x C matrix (rows: truth, columns: prediction), ignoring 255."""
    return MulticlassConfusionMatrix(num_classes, ignore_index=IGNORE_INDEX, validate_args=False)


def scores(confusion: torch.Tensor | np.ndarray) -> dict:
    """Per-class IoU, mIoU and pixel accuracy from a confusion matrix.

    Args:
        confusion: C x C counts, rows = ground truth, columns = prediction.

    Returns:
        ``{"iou": float64[C] (NaN where undefined), "miou": float, "pixel_acc": float}``.
    """
    cm = torch.as_tensor(confusion).double().cpu()
    tp = cm.diagonal()
    union = cm.sum(0) + cm.sum(1) - tp
    iou = torch.where(union > 0, tp / union.clamp(min=1), torch.nan).numpy()
    total = cm.sum().item()
    return {
        "iou": iou,
        "miou": float(np.nanmean(iou)) if not np.isnan(iou).all() else float("nan"),
        "pixel_acc": tp.sum().item() / total if total else float("nan"),
    }


def column_names(class_names: Sequence[str]) -> list[str]:
    """Table headers: the study's short names for Cityscapes, else the class names."""
    if tuple(class_names) == CITYSCAPES_CLASSES:
        return list(TABLE1_COLUMNS)
    return list(class_names)


def _pct(value: float) -> str:
    return "-" if np.isnan(value) else f"{100 * value:.2f}"


def iou_markdown(iou: Sequence[float], miou: float, class_names: Sequence[str]) -> str:
    """One-row Markdown table of per-class IoU (%) and mIoU, the study's Table 1 layout."""
    header = [*column_names(class_names), "mIoU"]
    row = [_pct(v) for v in iou] + [_pct(miou)]
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        "| " + " | ".join(row) + " |",
    ]
    return "\n".join(lines) + "\n"


def iou_csv(iou: Sequence[float], miou: float, class_names: Sequence[str]) -> str:
    """The same table as CSV (IoU in %, empty where undefined)."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow([*column_names(class_names), "mIoU"])
    writer.writerow(["" if np.isnan(v) else f"{100 * v:.4f}" for v in [*iou, miou]])
    return buf.getvalue()


def write_iou_table(
    folder: str | Path, stem: str, result: dict, class_names: Sequence[str]
) -> list[Path]:
    """Writes ``{stem}.md`` and ``{stem}.csv`` into `folder`; returns their paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    md, cs = folder / f"{stem}.md", folder / f"{stem}.csv"
    md.write_text(iou_markdown(result["iou"], result["miou"], class_names))
    cs.write_text(iou_csv(result["iou"], result["miou"], class_names))
    return [md, cs]
