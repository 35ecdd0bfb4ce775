"""Data: one file per data set, and the machinery they share.

    datasets/     one file per data set (cityscapes, camvid, folder, demo): its classes,
                  palette, label encodings, file scan, ``aspp-seg evaluate`` formats and
                  its data module, shared by fit, predict and evaluate
    labels        `IGNORE_INDEX` and `LabelEncoding` (what a label file's values mean)
    scan          `Scan`, `Sample`, `Problem`: what a data set's file scan returns
    datamodules   `SegmentationDataModule`, the LightningDataModule every data module
                  subclasses
    dataset, transforms, io, cache, sampler, parallel, predict_source: reading files,
                  augmentation, the decoded cache and loaders
    lazy          attributes made on first access (PEP 562 ``__getattr__``)

The data modules are made on first use, also when imported from here
(``aspp_seg.data.CamVidDataModule``, the ``class_path`` the configs use). A data module
subclasses Lightning's LightningDataModule, whose import takes about 4 s, while
``aspp-seg evaluate`` reads the same data set files for their classes and formats and
stays free of torch and Lightning. So a data set file writes its data module as an
ordinary class inside a builder function, and one shared helper,
`aspp_seg.data.lazy.lazy_classes`, makes that the module's ``__getattr__`` (PEP 562): the
class is built on first access under the module path and name of a top-level class (what
pickling, ``load_model`` and LightningCLI's ``class_path`` need). `aspp_seg.data.datasets`
says why this beats the alternatives.
"""

from aspp_seg.data.labels import IGNORE_INDEX
from aspp_seg.data.lazy import reexported

_DATAMODULES = {
    "CamVidDataModule": "aspp_seg.data.datasets.camvid.CamVidDataModule",
    "CityscapesDataModule": "aspp_seg.data.datasets.cityscapes.CityscapesDataModule",
    "DemoDataModule": "aspp_seg.data.datasets.demo.DemoDataModule",
    "FolderDataModule": "aspp_seg.data.datasets.folder.FolderDataModule",
    "SegmentationDataModule": "aspp_seg.data.datamodules.SegmentationDataModule",
}

__all__ = ["IGNORE_INDEX", *_DATAMODULES]

__getattr__ = reexported(globals(), _DATAMODULES)
