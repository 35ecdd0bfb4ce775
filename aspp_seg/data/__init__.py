"""Data sets, transforms and LightningDataModules."""

from aspp_seg.data.datamodules import (
    CamVidDataModule,
    CityscapesDataModule,
    DemoDataModule,
    FolderDataModule,
    SegmentationDataModule,
)
from aspp_seg.data.labels import IGNORE_INDEX

__all__ = [
    "IGNORE_INDEX",
    "CamVidDataModule",
    "CityscapesDataModule",
    "DemoDataModule",
    "FolderDataModule",
    "SegmentationDataModule",
]
