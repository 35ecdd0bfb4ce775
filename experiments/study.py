"""The study's published numbers (Mei & Khandelwal, Tables 1 and 2), read from
``study.csv`` beside this file: the one copy of them in the repository.

Table 1 is per-class IoU (%) on the Cityscapes validation set, in trainId order;
Table 2 is train and val mIoU (%). For DL-3 the paper's two tables disagree (val mIoU
60.99 in Table 1, 63.40 in Table 2), and DL-1's printed mIoU (65.43) is not the mean
of its printed per-class IoUs (65.34); all are kept as published.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from aspp_seg.data.datasets.cityscapes import COLUMNS

STUDY_CSV = Path(__file__).with_name("study.csv")


@dataclass(frozen=True)
class StudyRow:
    """One method of the study.

    Attributes:
        method: the paper's name (``DL-1``, ``SegNet``, ...).
        config: the aspp-seg config that reproduces it (``configs/<config>.yaml``).
        iou: per-class IoU (%), 19 values in trainId order (Table 1).
        miou: mean IoU (%) of Table 1.
        train_miou, val_miou: Table 2 (None where the paper gives none).
    """

    method: str
    config: str
    iou: tuple[float, ...]
    miou: float
    train_miou: float | None
    val_miou: float | None


def _number(text: str) -> float | None:
    return float(text) if text.strip() else None


def load_study(path: str | Path = STUDY_CSV) -> dict[str, StudyRow]:
    """Config name -> the study's row for it."""
    rows = {}
    with Path(path).open(newline="") as f:
        for record in csv.DictReader(f):
            row = StudyRow(
                method=record["method"],
                config=record["config"],
                iou=tuple(float(record[c]) for c in COLUMNS),
                miou=float(record["mIoU"]),
                train_miou=_number(record["train_mIoU"]),
                val_miou=_number(record["val_mIoU"]),
            )
            rows[row.config] = row
    return rows
