"""CamVid in the SegNet tutorial release: 11 classes (label 11 = void, ignored), its
palette, the folder scan and the ``evaluate`` format ``camvid``; its data module is
`aspp_seg.data.datamodules.CamVidDataModule`.

The layout: ``train/ trainannot/ val/ valannot/ test/ testannot/``, 360x480 PNGs,
each ``<split>annot/x.png`` the label map of ``<split>/x.png``.
"""

from __future__ import annotations

from pathlib import Path

from aspp_seg.data.datasets import EvalFormat, stem_key
from aspp_seg.data.datasets.folder import scan_folders
from aspp_seg.data.labels import LabelEncoding
from aspp_seg.data.scan import Scan

CLASSES: tuple[str, ...] = (
    "sky", "building", "pole", "road", "pavement", "tree", "sign/symbol", "fence", "car",
    "pedestrian", "bicyclist",
)  # fmt: skip
"""The 11 CamVid classes of the SegNet tutorial split, in index order."""

PALETTE: tuple[tuple[int, int, int], ...] = (
    (128, 128, 128), (128, 0, 0), (192, 192, 128), (128, 64, 128), (60, 40, 222),
    (128, 128, 0), (192, 128, 128), (64, 64, 128), (64, 0, 128), (64, 64, 0), (0, 128, 192),
)  # fmt: skip
"""RGB colour of each class, as in the SegNet tutorial's visualisation."""

VOID = 11
"""Label value of unlabelled pixels in the CamVid files (ignored)."""

ENCODING = LabelEncoding.indices("CamVid", len(CLASSES), ignore=[VOID])


def scan_split(root: str | Path, split: str) -> Scan:
    """The (image, label) files of ``<root>/<split>/`` and ``<root>/<split>annot/``."""
    root = Path(root)
    return scan_folders(
        root / split, root / f"{split}annot", encoding=ENCODING, setting=f"CamVid data.root={root}"
    )


FORMATS = (
    EvalFormat(
        name="camvid",
        class_names=CLASSES,
        truth=ENCODING,
        prediction=ENCODING.with_void(),
        gt_globs=("*.png",),
        key=stem_key,
        help="CamVid 0..10, 11 = void",
    ),
)
