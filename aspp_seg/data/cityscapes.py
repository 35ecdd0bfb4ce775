"""The Cityscapes data set, read from its official folder layout."""

from __future__ import annotations

from pathlib import Path

import albumentations as A
import numpy as np
import torch
from torch.utils.data import Dataset

from aspp_seg.data.io import read_label, read_rgb
from aspp_seg.data.labels import to_train_ids
from aspp_seg.errors import DataError

IMAGE_SUFFIX = "_leftImg8bit.png"
LABEL_SUFFIX = "_gtFine_labelIds.png"
LAYOUT = (
    "leftImg8bit/{split}/<city>/<city>_<seq>_<frame>" + IMAGE_SUFFIX + " and "
    "gtFine/{split}/<city>/<city>_<seq>_<frame>" + LABEL_SUFFIX
)


def find_pairs(root: str | Path, split: str) -> list[tuple[Path, Path]]:
    """(image, label) paths of a split, sorted; every image must have its label.

    Raises:
        DataError: naming the folder that is missing, an image without its label, or a
            label without its image.
    """
    root = Path(root)
    image_dir = root / "leftImg8bit" / split
    label_dir = root / "gtFine" / split
    for folder in (root, image_dir, label_dir):
        if not folder.is_dir():
            raise DataError(
                f"Cityscapes folder {folder} not found; expected {LAYOUT.format(split=split)} "
                f"under data.root={root}"
            )
    images = {p.name[: -len(IMAGE_SUFFIX)]: p for p in image_dir.glob(f"*/*{IMAGE_SUFFIX}")}
    labels = {p.name[: -len(LABEL_SUFFIX)]: p for p in label_dir.glob(f"*/*{LABEL_SUFFIX}")}
    if not images:
        raise DataError(f"no images in {image_dir}; expected {LAYOUT.format(split=split)}")
    for stem in sorted(images.keys() - labels.keys()):
        raise DataError(
            f"image {images[stem]} has no label file "
            f"{label_dir / images[stem].parent.name / (stem + LABEL_SUFFIX)}"
        )
    for stem in sorted(labels.keys() - images.keys()):
        raise DataError(
            f"label {labels[stem]} has no image file "
            f"{image_dir / labels[stem].parent.name / (stem + IMAGE_SUFFIX)}"
        )
    return [(images[stem], labels[stem]) for stem in sorted(images)]


class CityscapesDataset(Dataset):
    """Cityscapes frames with fine labels mapped from labelIds to the 19 trainIds.

    Args:
        root: folder holding ``leftImg8bit/`` and ``gtFine/``.
        split: ``train``, ``val`` or ``test``.
        transform: albumentations pipeline ending in ToTensorV2.

    Items: ``{"image": 3 x H x W float, "mask": H x W int64 (255 = ignore), "name": str}``.
    """

    def __init__(self, root: str | Path, split: str, transform: A.Compose) -> None:
        self.pairs = find_pairs(root, split)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> dict:
        image_path, label_path = self.pairs[index]
        image = read_rgb(image_path)
        mask = to_train_ids(read_label(label_path))
        if image.shape[:2] != mask.shape:
            raise DataError(
                f"image {image_path} is {image.shape[1]}x{image.shape[0]} but its label "
                f"{label_path} is {mask.shape[1]}x{mask.shape[0]}"
            )
        out = self.transform(image=image, mask=mask)
        return {
            "image": out["image"],
            "mask": torch.as_tensor(np.asarray(out["mask"]), dtype=torch.long),
            "name": image_path.name,
        }
