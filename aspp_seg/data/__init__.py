"""Data sets, transforms and LightningDataModules."""

from aspp_seg.data.datamodules import CityscapesDataModule, DemoDataModule
from aspp_seg.data.labels import IGNORE_INDEX

__all__ = ["IGNORE_INDEX", "CityscapesDataModule", "DemoDataModule"]
