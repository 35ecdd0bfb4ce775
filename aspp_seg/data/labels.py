"""The label tables: Cityscapes (built once from `cityscapesscripts.helpers.labels`),
CamVid, and the `LabelEncoding`s that say which values a data set's label files hold.

Everything else in aspp-seg imports `IGNORE_INDEX` and the tables from here; there is
no second hand-typed copy of the Cityscapes classes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import cv2
import numpy as np
from cityscapesscripts.helpers.labels import labels as _CS_LABELS

from aspp_seg.errors import DataError

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


# --- Label encodings: which byte values a label file may hold and what they mean ---


@dataclass(frozen=True, eq=False)
class LabelEncoding:
    """How a data set's label files store classes.

    Args:
        name: what the files hold, as users know it (``labelIds``, ``labelTrainIds``).
        lut: uint8[256], file value -> training class (0..C-1, 255 = ignore).
        valid: bool[256], the values a file may hold at all.
        allowed: the valid values in words, for error messages.
    """

    name: str
    lut: np.ndarray
    valid: np.ndarray
    allowed: str

    @classmethod
    def indices(cls, name: str, num_classes: int, ignore: Iterable[int] = ()) -> LabelEncoding:
        """Files hold class indices 0..num_classes-1; the `ignore` values become 255."""
        lut = np.full(256, IGNORE_INDEX, dtype=np.uint8)
        lut[:num_classes] = np.arange(num_classes)
        valid = np.zeros(256, dtype=bool)
        valid[:num_classes] = True
        ignore = sorted(set(ignore))
        valid[ignore] = True
        lut[ignore] = IGNORE_INDEX
        words = f"0-{num_classes - 1}" + "".join(f", {v} (ignored)" for v in ignore)
        return cls(name, lut, valid, words)

    def decode(self, label: np.ndarray, path: object) -> np.ndarray:
        """Checks a label map (H x W, uint8) and maps it to training classes (H x W, uint8).

        Raises:
            DataError: naming `path` when it holds values this encoding does not allow
                (and which other Cityscapes encoding it looks like, if any).
        """
        problem = self.problem(label_values(label), path)
        if problem is not None:
            raise DataError(problem)
        return cv2.LUT(np.ascontiguousarray(label), self.lut)  # 8x numpy's lut[label]

    def problem(self, present: np.ndarray, path: object) -> str | None:
        """The one-line complaint about a file holding the values `present` (bool[256])."""
        bad = np.flatnonzero(present & ~self.valid)
        if not len(bad):
            return None
        kind = self.mistaken_for(present)
        if kind is not None:
            return (
                f"label {path} holds Cityscapes {kind} (values {_values(present)}) "
                f"where {self.name} were expected"
            )
        return (
            f"label {path} holds values {_values(bad)} outside the class table of "
            f"{self.name} (allowed: {self.allowed})"
        )

    def mistaken_for(self, present: np.ndarray) -> str | None:
        """The other Cityscapes encoding a file holding `present` (bool[256]) is in, if
        this one is a Cityscapes encoding and the values fit only the other."""
        if self.name not in CITYSCAPES_ENCODINGS or not (present & ~self.valid).any():
            return None
        kind = guess_cityscapes_kind(present)
        return kind if kind != self.name else None


def _values(present_or_values: np.ndarray) -> str:
    values = (
        np.flatnonzero(present_or_values) if present_or_values.dtype == bool else present_or_values
    )
    shown = ", ".join(str(v) for v in values[:12])
    return shown + (", ..." if len(values) > 12 else "")


def label_values(label: np.ndarray) -> np.ndarray:
    """bool[256]: which byte values occur in a uint8 label map (a fast histogram)."""
    hist = cv2.calcHist([np.ascontiguousarray(label)], [0], None, [256], [0, 256])
    return hist.ravel() > 0


def _cityscapes_train_ids() -> LabelEncoding:
    lut = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    lut[:CITYSCAPES_NUM_CLASSES] = np.arange(CITYSCAPES_NUM_CLASSES)
    valid = np.zeros(256, dtype=bool)
    valid[:CITYSCAPES_NUM_CLASSES] = valid[IGNORE_INDEX] = True
    return LabelEncoding("labelTrainIds", lut, valid, f"0-{CITYSCAPES_NUM_CLASSES - 1}, 255")


def _cityscapes_label_ids() -> LabelEncoding:
    valid = np.zeros(256, dtype=bool)
    valid[sorted(VALID_LABEL_IDS)] = True
    return LabelEncoding("labelIds", LABEL_ID_TO_TRAIN_ID, valid, f"0-{max(VALID_LABEL_IDS)}")


CITYSCAPES_LABEL_IDS = _cityscapes_label_ids()
"""``*_gtFine_labelIds.png``: the 34 Cityscapes labelIds, mapped to trainIds on the fly."""

CITYSCAPES_TRAIN_IDS = _cityscapes_train_ids()
"""``*_gtFine_labelTrainIds.png`` (from `aspp-seg prepare-cityscapes`): trainIds as is."""

CITYSCAPES_ENCODINGS = {e.name: e for e in (CITYSCAPES_LABEL_IDS, CITYSCAPES_TRAIN_IDS)}


def guess_cityscapes_kind(present: np.ndarray) -> str | None:
    """``labelIds`` or ``labelTrainIds`` from the values a file holds (bool[256]).

    A trainId file holds 255 wherever a pixel is void and nothing in 19..33; a labelId
    file never holds 255 and holds 19..33 wherever there is sky, vegetation, a car, ...
    None when the values fit neither or both (e.g. only values 0..18, no 255).
    """
    fits = [e.name for e in CITYSCAPES_ENCODINGS.values() if not (present & ~e.valid).any()]
    if len(fits) == 1:
        return fits[0]
    return None


# --- CamVid (the SegNet tutorial release: 11 classes, 11 = void) ---

CAMVID_CLASSES: tuple[str, ...] = (
    "sky", "building", "pole", "road", "pavement", "tree", "sign/symbol", "fence", "car",
    "pedestrian", "bicyclist",
)  # fmt: skip
"""The 11 CamVid classes of the SegNet tutorial split, in index order."""

CAMVID_PALETTE: tuple[tuple[int, int, int], ...] = (
    (128, 128, 128), (128, 0, 0), (192, 192, 128), (128, 64, 128), (60, 40, 222),
    (128, 128, 0), (192, 128, 128), (64, 64, 128), (64, 0, 128), (64, 64, 0), (0, 128, 192),
)  # fmt: skip
"""RGB colour of each CamVid class, as in the SegNet tutorial's visualisation."""

CAMVID_VOID = 11
"""Label value of unlabelled pixels in the CamVid files (ignored)."""

CAMVID_ENCODING = LabelEncoding.indices("CamVid", len(CAMVID_CLASSES), ignore=[CAMVID_VOID])
