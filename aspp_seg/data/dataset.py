"""The one map-style data set behind every data module, and the checks on its files.

A data set is a list of `Sample`s (image path, label path, label encoding) found by a
layout-specific scanner (`cityscapes.py`, `folder.py`); scanners report what is wrong
as `Problem`s, so `aspp-seg check-data` can list every fault while training stops at
the first one with a one-line `DataError`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch.utils.data import Dataset

from aspp_seg.data.io import read_label, read_rgb
from aspp_seg.data.labels import LabelEncoding, label_values
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
    """What a layout scanner found for one split: usable samples and problems."""

    samples: list[Sample] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    def raise_first(self) -> list[Sample]:
        """The samples, or a DataError with the first problem (the training path)."""
        if self.problems:
            raise DataError(self.problems[0].message)
        return self.samples


def load_sample(sample: Sample) -> tuple[np.ndarray, np.ndarray]:
    """Decodes and checks one sample: (H x W x 3 uint8 RGB, H x W uint8 classes, 255 =
    ignore). This is the cheap per-file check that training runs on every read.

    Raises:
        DataError: naming the file that is unreadable, of another size than its
            partner, or holds values outside its encoding.
    """
    image = read_rgb(sample.image)
    label = read_label(sample.label)
    if image.shape[:2] != label.shape:
        raise DataError(_size_message(sample, image.shape, label.shape))
    return image, sample.encoding.decode(label, sample.label)


def _size_message(sample: Sample, image_shape: Sequence[int], label_shape: Sequence[int]) -> str:
    return (
        f"image {sample.image} is {image_shape[1]}x{image_shape[0]} but its label "
        f"{sample.label} is {label_shape[1]}x{label_shape[0]}"
    )


def inspect_sample(sample: Sample) -> list[Problem]:
    """Every problem of one sample, without raising (the full check of `check-data`)."""
    problems = []
    try:
        image = read_rgb(sample.image)
    except DataError as error:
        problems.append(Problem(UNREADABLE, str(error)))
        image = None
    try:
        label = read_label(sample.label)
    except DataError as error:
        problems.append(Problem(UNREADABLE, str(error)))
        return problems
    if image is not None and image.shape[:2] != label.shape:
        problems.append(Problem(SIZE_MISMATCH, _size_message(sample, image.shape, label.shape)))
    present = label_values(label)
    message = sample.encoding.problem(present, sample.label)
    if message is not None:
        wrong_kind = sample.encoding.mistaken_for(present) is not None
        problems.append(Problem(WRONG_KIND if wrong_kind else OUT_OF_TABLE, message))
    return problems


class SegmentationDataset(Dataset):
    """Images with label maps mapped to training classes.

    Args:
        samples: the files, e.g. from `aspp_seg.data.cityscapes.find_samples`.
        transform: called as ``transform(image=H x W x 3 uint8, mask=H x W uint8)``
            (an albumentations pipeline ending in ToTensorV2).

    Items: ``{"image": 3 x H x W uint8 RGB, "mask": H x W uint8 (255 = ignore), "name":
    str}``; the model normalises images and widens masks on its device.
    """

    def __init__(self, samples: Sequence[Sample], transform: Callable[..., dict]) -> None:
        self.samples = list(samples)
        self.transform = transform

    @property
    def pairs(self) -> list[tuple[Path, Path]]:
        """(image, label) paths, in order."""
        return [(s.image, s.label) for s in self.samples]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict:
        sample = self.samples[index]
        image, mask = load_sample(sample)
        out = self.transform(image=image, mask=mask)
        return {
            "image": out["image"],
            "mask": torch.as_tensor(np.asarray(out["mask"]), dtype=torch.uint8),
            "name": sample.image.name,
        }
