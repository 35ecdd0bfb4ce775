"""Data sets, transforms and LightningDataModules.

The data modules are imported on first use (they import Lightning), so that label
tables and readers (`aspp_seg.data.labels`, `aspp_seg.data.io`) load fast for the
commands that need no training stack (``aspp-seg evaluate``).
"""

from aspp_seg.data.labels import IGNORE_INDEX

_DATAMODULES = (
    "CamVidDataModule",
    "CityscapesDataModule",
    "DemoDataModule",
    "FolderDataModule",
    "SegmentationDataModule",
)

__all__ = ["IGNORE_INDEX", *_DATAMODULES]


def __getattr__(name: str):
    if name in _DATAMODULES:
        from aspp_seg.data import datamodules

        return getattr(datamodules, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
