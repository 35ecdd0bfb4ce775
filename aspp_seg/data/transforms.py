"""Albumentations presets, chosen by name in YAML.

``none`` is the study's protocol: no augmentation beyond an optional resize and a
random crop of `crop_size`. Evaluation never crops.
"""

from __future__ import annotations

from collections.abc import Sequence

import albumentations as A
import cv2
from albumentations.pytorch import ToTensorV2

from aspp_seg.data.labels import IGNORE_INDEX
from aspp_seg.errors import ConfigError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

PRESETS = ("none",)


def _resize(image_size: Sequence[int] | None) -> list[A.BasicTransform]:
    if image_size is None:
        return []
    return [A.Resize(*image_size, interpolation=cv2.INTER_LINEAR)]


def _finish() -> list[A.BasicTransform]:
    return [A.Normalize(mean=IMAGENET_MEAN, std=IMAGENET_STD), ToTensorV2()]


def train_transform(
    preset: str = "none",
    *,
    crop_size: Sequence[int] | None = None,
    image_size: Sequence[int] | None = None,
) -> A.Compose:
    """Training pipeline: resize, random crop (label padded with 255), normalise.

    Args:
        preset: augmentation preset, one of `PRESETS`.
        crop_size: (height, width) of the random crop; None trains on whole images.
        image_size: (height, width) to resize to first; None keeps the file's size.
    """
    if preset not in PRESETS:
        raise ConfigError(f"data.augment={preset!r} is not a preset; allowed: {PRESETS}")
    steps = _resize(image_size)
    if crop_size is not None:
        steps.append(
            A.RandomCrop(
                *crop_size,
                pad_if_needed=True,
                border_mode=cv2.BORDER_CONSTANT,
                fill=0,
                fill_mask=IGNORE_INDEX,
            )
        )
    return A.Compose(steps + _finish())


def eval_transform(*, image_size: Sequence[int] | None = None) -> A.Compose:
    """Evaluation pipeline: optional resize, normalise; labels are never cropped."""
    return A.Compose(_resize(image_size) + _finish())
