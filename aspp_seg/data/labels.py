"""How label files store classes: `IGNORE_INDEX` and `LabelEncoding`.

A data set file (`aspp_seg.data.datasets`) names the encodings its label files use
(Cityscapes: labelIds and labelTrainIds, built from `cityscapesscripts`; CamVid: class
indices with 11 = void); training, `check-data` and `aspp-seg evaluate` decode files
through those same objects. The class tables themselves live in the data set files.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import cv2
import numpy as np

from aspp_seg.errors import DataError

IGNORE_INDEX = 255
"""Label value excluded from the loss and the metrics (Cityscapes' trainId for void)."""


@dataclass(frozen=True, eq=False)
class LabelEncoding:
    """How a data set's label files store classes.

    Args:
        name: what the files hold, as users know it (``labelIds``, ``labelTrainIds``).
        lut: uint8[256], file value -> training class (0..C-1, 255 = ignore).
        valid: bool[256], the values a file may hold at all.
        allowed: the valid values in words, for error messages.
        look_alike: for a data set whose encodings tell apart by their values
            (Cityscapes): names, in words, the one a file holding the values `present`
            (bool[256]) is in, else None. Error messages then say which it looks like.
    """

    name: str
    lut: np.ndarray
    valid: np.ndarray
    allowed: str
    look_alike: Callable[[np.ndarray], str | None] | None = None

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

    def with_void(self, value: int = IGNORE_INDEX) -> LabelEncoding:
        """This encoding, also accepting `value` as "no class" (a void prediction)."""
        valid = self.valid.copy()
        valid[value] = True
        lut = self.lut.copy()
        lut[value] = IGNORE_INDEX
        return LabelEncoding(self.name, lut, valid, f"{self.allowed}, {value} (void)")

    def decode(self, label: np.ndarray, path: object) -> np.ndarray:
        """Checks a label map (H x W, uint8) and maps it to training classes (H x W, uint8).

        Raises:
            DataError: naming `path` when it holds values this encoding does not allow
                (and which encoding of the same data set it looks like, if any).
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
                f"label {path} holds {kind} (values {_values(present)}) "
                f"where {self.name} were expected"
            )
        return (
            f"label {path} holds values {_values(bad)} outside the class table of "
            f"{self.name} (allowed: {self.allowed})"
        )

    def mistaken_for(self, present: np.ndarray) -> str | None:
        """The other encoding of the same data set that a file holding `present`
        (bool[256]) is in, in words, when the values fit only that one."""
        if self.look_alike is None or not (present & ~self.valid).any():
            return None
        return self.look_alike(present)


def _values(present_or_values: np.ndarray) -> str:
    values = (
        np.flatnonzero(present_or_values) if present_or_values.dtype == bool else present_or_values
    )
    shown = ", ".join(str(v) for v in values[:12])
    return shown + (", ..." if len(values) > 12 else "")


def distinct_palette(count: int) -> tuple[tuple[int, int, int], ...]:
    """`count` distinct RGB colours (the PASCAL VOC bit pattern), for classes without a
    palette of their own."""
    palette = []
    for index in range(count):
        rgb, code = [0, 0, 0], index + 1
        for bit in range(8):
            for channel in range(3):
                rgb[channel] |= ((code >> channel) & 1) << (7 - bit)
            code >>= 3
        palette.append((rgb[0], rgb[1], rgb[2]))
    return tuple(palette)


def label_values(label: np.ndarray) -> np.ndarray:
    """bool[256]: which byte values occur in a uint8 label map (a fast histogram)."""
    hist = cv2.calcHist([np.ascontiguousarray(label)], [0], None, [256], [0, 256])
    return hist.ravel() > 0
