"""CamVid in the SegNet tutorial release: 11 classes (label 11 = void, ignored), its
palette, the folder scan, the ``evaluate`` format ``camvid`` and `CamVidDataModule`.

The layout: ``train/ trainannot/ val/ valannot/ test/ testannot/``, 360x480 PNGs,
each ``<split>annot/x.png`` the label map of ``<split>/x.png``.
"""

from __future__ import annotations

from pathlib import Path

from aspp_seg.data.datasets import EvalFormat, stem_key
from aspp_seg.data.datasets.folder import scan_folders
from aspp_seg.data.labels import LabelEncoding
from aspp_seg.data.lazy import lazy_classes
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


# --- the data module (Lightning: made on first use, see aspp_seg.data.datasets) ---


def _data_module() -> type:
    from aspp_seg.data.datamodules import SegmentationDataModule

    class CamVidDataModule(SegmentationDataModule):
        """CamVid in the SegNet tutorial layout: ``train/ trainannot/ val/ valannot/ test/
        testannot/``, 360x480 PNGs, 11 classes, label 11 (void) ignored.

        Args:
            root: the folder holding ``train/`` and ``trainannot/`` etc.
            val_batch_size, num_workers: CamVid defaults (4 equal-sized frames, 2 workers).
            **kwargs: the shared settings of `SegmentationDataModule`.
        """

        class_names = CLASSES
        palette = PALETTE
        encoding = ENCODING

        def __init__(
            self,
            root: str = "data/camvid",
            *,
            val_batch_size: int = 4,
            num_workers: int | None = 2,
            **kwargs,
        ) -> None:
            super().__init__(val_batch_size=val_batch_size, num_workers=num_workers, **kwargs)
            self.save_hyperparameters()
            self.root = Path(root)
            self._check_on_init()

        def scan(self, split: str) -> Scan:
            return scan_split(self.root, split)

    return CamVidDataModule


__getattr__ = lazy_classes(globals(), CamVidDataModule=_data_module)
