"""Data: one file per data set, and the machinery they share.

    datasets/     one file per data set (found by listing the folder): its classes,
                  palette, label encodings, file scan and ``aspp-seg evaluate`` formats,
                  in plain Python and numpy
    datamodules   the LightningDataModules: `SegmentationDataModule`, the base, and the
                  data module of each data set of `datasets/`
    labels        `IGNORE_INDEX` and `LabelEncoding` (what a label file's values mean)
    scan          `Scan`, `Sample`, `Problem`: what a data set's file scan returns
    dataset, transforms, io, cache, sampler, parallel, predict_source: reading files,
                  augmentation, the decoded cache and loaders

The configs name the data modules from here (``aspp_seg.data.CamVidDataModule``, also the
``class_path`` in every run's ``config.yaml``). Importing them imports Lightning (about
4 s), while ``aspp-seg evaluate`` imports this package for the data set files and stays
free of torch; so a data module name is imported from `datamodules` when first looked up.
"""

from aspp_seg.data.labels import IGNORE_INDEX

__all__ = ["IGNORE_INDEX"]


def __getattr__(name: str) -> type:
    """``aspp_seg.data.<Name>DataModule``: the class of that name in `datamodules`."""
    if name.endswith("DataModule"):
        from aspp_seg.data import datamodules

        return getattr(datamodules, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
