"""The Cityscapes label table, built once from `cityscapesscripts.helpers.labels`.

Everything else in aspp-seg imports `IGNORE_INDEX` and the tables from here; there is
no second hand-typed copy of the Cityscapes classes.
"""

from __future__ import annotations

import numpy as np
from cityscapesscripts.helpers.labels import labels as _CS_LABELS

IGNORE_INDEX = 255
"""Label value excluded from the loss and the metrics (Cityscapes' trainId for void)."""

_EVAL_LABELS = sorted(
    (lb for lb in _CS_LABELS if 0 <= lb.trainId < IGNORE_INDEX), key=lambda lb: lb.trainId
)

CITYSCAPES_CLASSES: tuple[str, ...] = tuple(lb.name for lb in _EVAL_LABELS)
"""The 19 evaluated classes, in trainId order."""

CITYSCAPES_PALETTE: tuple[tuple[int, int, int], ...] = tuple(lb.color for lb in _EVAL_LABELS)
"""RGB colour of each trainId, from the official table."""

CITYSCAPES_NUM_CLASSES = len(CITYSCAPES_CLASSES)

TABLE1_COLUMNS: tuple[str, ...] = (
    "Road", "Sidewalk", "Building", "Wall", "Fence", "Pole", "T.Light", "T.Sign", "Veg.",
    "Terrain", "Sky", "Person", "Rider", "Car", "Truck", "Bus", "Train", "M.bike", "Bike",
)  # fmt: skip
"""Short column names of the study's Table 1, in trainId order."""

NAME_TO_LABEL_ID: dict[str, int] = {lb.name: lb.id for lb in _CS_LABELS if lb.id >= 0}


def _label_id_to_train_id() -> np.ndarray:
    lut = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    for lb in _CS_LABELS:
        if 0 <= lb.id < 256 and 0 <= lb.trainId < IGNORE_INDEX:
            lut[lb.id] = lb.trainId
    return lut


def _train_id_to_label_id() -> np.ndarray:
    lut = np.zeros(256, dtype=np.uint8)  # 0 = "unlabeled" for ignored pixels
    for lb in _EVAL_LABELS:
        lut[lb.trainId] = lb.id
    return lut


LABEL_ID_TO_TRAIN_ID: np.ndarray = _label_id_to_train_id()
"""uint8[256] lookup: Cityscapes labelId -> trainId (255 for classes not evaluated)."""

TRAIN_ID_TO_LABEL_ID: np.ndarray = _train_id_to_label_id()
"""uint8[256] lookup: trainId -> labelId (the test-server format); 255 -> 0."""

VALID_LABEL_IDS = frozenset(lb.id for lb in _CS_LABELS if lb.id >= 0)
"""Every labelId that may appear in a `*_gtFine_labelIds.png`."""


def to_train_ids(label_ids: np.ndarray) -> np.ndarray:
    """Maps a labelId map (H x W, uint8) to trainIds (H x W, uint8; 255 = ignore)."""
    return LABEL_ID_TO_TRAIN_ID[label_ids]
