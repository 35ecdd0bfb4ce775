"""What a data set's file scan returns: `Sample`s (image, label, label encoding) and
`Problem`s, so that `aspp-seg check-data` can list every fault while training stops at
the first one with a one-line `DataError`.

Plain Python (no torch): the data set files import it, and `aspp-seg evaluate` imports
those.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from aspp_seg.data.labels import LabelEncoding
from aspp_seg.errors import DataError

# Problem kinds, in the order `check-data` reports them.
MISSING_FOLDER = "missing folder"
EMPTY_SPLIT = "empty split"
MISSING_PARTNER = "missing partner file"
UNREADABLE = "unreadable or truncated file"
SIZE_MISMATCH = "image/label size mismatch"
WRONG_KIND = "labelIds where trainIds were expected (or the reverse)"
OUT_OF_TABLE = "label values outside the class table"
PROBLEM_KINDS = (
    MISSING_FOLDER,
    EMPTY_SPLIT,
    MISSING_PARTNER,
    UNREADABLE,
    SIZE_MISMATCH,
    WRONG_KIND,
    OUT_OF_TABLE,
)


@dataclass(frozen=True)
class Problem:
    """One fault in a data set: its kind (one of `PROBLEM_KINDS`) and a one-line message
    that names the files involved."""

    kind: str
    message: str


class Sample(NamedTuple):
    """One labelled image: where its two files are and how the label file is encoded."""

    image: Path
    label: Path
    encoding: LabelEncoding


@dataclass
class Scan:
    """What a data set's scan found for one split: usable samples and problems."""

    samples: list[Sample] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    def raise_first(self) -> list[Sample]:
        """The samples, or a DataError with the first problem (the training path)."""
        if self.problems:
            raise DataError(self.problems[0].message)
        return self.samples
