"""The one map-style data set behind every data module, and the checks on its files.

A data set is a list of `Sample`s (image path, label path, label encoding) found by the
scan of a data set file (`aspp_seg.data.datasets`); scans report what is wrong as
`Problem`s (`aspp_seg.data.scan`, also importable from here).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, default_collate

from aspp_seg.data.io import read_label, read_rgb
from aspp_seg.data.labels import IGNORE_INDEX, label_values
from aspp_seg.data.scan import (  # noqa: F401  (the scan's names, importable from here too)
    EMPTY_SPLIT,
    MISSING_FOLDER,
    MISSING_PARTNER,
    OUT_OF_TABLE,
    PROBLEM_KINDS,
    SIZE_MISMATCH,
    UNREADABLE,
    WRONG_KIND,
    Problem,
    Sample,
    Scan,
)
from aspp_seg.errors import DataError


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


def make_item(
    image: np.ndarray,
    mask: np.ndarray,
    name: str,
    transform: Callable[..., dict],
    *,
    label_at_file_size: bool,
) -> dict:
    """One data set item from a decoded sample (shared by the PNG and cached data sets).

    Args:
        image: H x W x 3 uint8 RGB.
        mask: H x W uint8 training classes (255 = ignore).
        name: the image file's name.
        transform: albumentations pipeline ending in ToTensorV2.
        label_at_file_size: evaluation: only the image goes through `transform` (e.g.
            resized to ``data.image_size``); the mask keeps the file's H x W, so scores
            are computed at the label's resolution, as the Cityscapes benchmark does.

    Returns:
        ``{"image": 3 x h x w uint8, "mask": h x w uint8 (H x W with
        `label_at_file_size`), "name": str}``, plus ``"label_size"`` (int64[2], the
        mask's H, W) with `label_at_file_size`.
    """
    if label_at_file_size:
        return {
            "image": transform(image=image)["image"],
            "mask": torch.as_tensor(np.ascontiguousarray(mask), dtype=torch.uint8),
            "name": name,
            "label_size": torch.tensor(mask.shape[:2], dtype=torch.int64),
        }
    out = transform(image=image, mask=mask)
    return {
        "image": out["image"],
        "mask": torch.as_tensor(np.asarray(out["mask"]), dtype=torch.uint8),
        "name": name,
    }


def collate_eval(items: Sequence[dict]) -> dict:
    """Batches evaluation items whose label maps may differ in size.

    Images must share one size (they do with ``data.image_size``, or when the files
    do); masks are padded with 255 (ignore) at the bottom and right to the largest
    label of the batch.

    Returns:
        ``{"image": B x 3 x h x w uint8, "mask": B x H x W uint8 (255 = ignore beyond
        each label), "label_size": B x 2 int64 (each label's own H, W), "name":
        list[str]}`` and any further keys as `default_collate` batches them.
    """
    masks = [item["mask"] for item in items]
    height = max(m.shape[0] for m in masks)
    width = max(m.shape[1] for m in masks)
    padded = torch.full((len(masks), height, width), IGNORE_INDEX, dtype=torch.uint8)
    for out, mask in zip(padded, masks, strict=True):
        out[: mask.shape[0], : mask.shape[1]] = mask
    rest = default_collate([{k: v for k, v in item.items() if k != "mask"} for item in items])
    return {**rest, "mask": padded}


class SegmentationDataset(Dataset):
    """Images with label maps mapped to training classes.

    Args:
        samples: the files, e.g. from `aspp_seg.data.datasets.cityscapes.find_samples`.
        transform: called as ``transform(image=H x W x 3 uint8, mask=H x W uint8)``
            (an albumentations pipeline ending in ToTensorV2).
        label_at_file_size: evaluation: the mask skips `transform` (see `make_item`).

    Items: ``{"image": 3 x h x w uint8 RGB, "mask": h x w uint8 (255 = ignore), "name":
    str}``; with `label_at_file_size` the mask is the file's H x W and ``"label_size"``
    (int64[2]: H, W) is added. The model normalises images and widens masks on its
    device.
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        transform: Callable[..., dict],
        *,
        label_at_file_size: bool = False,
    ) -> None:
        self.samples = list(samples)
        self.transform = transform
        self.label_at_file_size = label_at_file_size

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict:
        sample = self.samples[index]
        image, mask = load_sample(sample)
        return make_item(
            image,
            mask,
            sample.image.name,
            self.transform,
            label_at_file_size=self.label_at_file_size,
        )
