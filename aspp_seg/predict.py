"""Prediction on any images: a source (file, folder or glob) and a writer of results.

    aspp-seg predict --config configs/demo.yaml \\
        --ckpt_path runs/demo/version_0/checkpoints/last.ckpt \\
        --data.init_args.predict_source "photos/*.jpg" --model.predict_dir out/

The images are listed, read and batched by `aspp_seg.data.predict_source` (re-exported
here); `PredictionWriter` writes per image:

- ``trainIds/<name>.png``: the predicted class per pixel (0..C-1);
- ``labelIds/<name>.png``: Cityscapes labelIds, the test-server format (only for the
  Cityscapes classes; ``*_leftImg8bit.png`` keeps its name, as the server expects);
- ``color/<name>.png``: the classes in the data set's palette;
- ``overlay/<name>.png``: the colours blended over the input image.

``<name>`` is the image's path relative to the source folder (or glob base), with a
``.png`` extension.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
from lightning.pytorch.callbacks import BasePredictionWriter

from aspp_seg.data.io import IMAGE_EXTENSIONS, read_rgb
from aspp_seg.data.labels import CITYSCAPES_CLASSES, CITYSCAPES_PALETTE, TRAIN_ID_TO_LABEL_ID
from aspp_seg.data.predict_source import (
    ImageSource,
    SizeBatchSampler,
    image_source,
    predict_loader,
)
from aspp_seg.errors import DataError
from aspp_seg.visualize import colorize, overlay

__all__ = [
    "IMAGE_EXTENSIONS",
    "OUTPUTS",
    "ImageSource",
    "PredictionWriter",
    "SizeBatchSampler",
    "image_source",
    "predict_loader",
]

OUTPUTS = ("trainIds", "labelIds", "color", "overlay")


def _write_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if array.ndim == 3:
        array = cv2.cvtColor(array, cv2.COLOR_RGB2BGR)
    if not cv2.imwrite(str(path), array):
        raise DataError(f"cannot write {path}")


class PredictionWriter(BasePredictionWriter):
    """Writes each predicted label map as trainId, labelId, colour and overlay PNGs.

    Attached automatically by ``aspp-seg predict`` (see `SegmentationModule`); may also be
    listed in ``trainer.callbacks`` to choose its settings.

    Args:
        output_dir: folder for the ``trainIds/``, ``labelIds/``, ``color/`` and
            ``overlay/`` subfolders.
        palette: RGB per class; None: the data module's ``palette``, else Cityscapes'.
        class_names: None: the module's; decides whether labelIds are written.
        outputs: which of ``trainIds``, ``labelIds``, ``color``, ``overlay`` to write.
        alpha: weight of the colours in the overlay.
        keep_predictions: also keep every prediction in memory for `Trainer.predict`'s
            return value; off by default, since the files hold them and a large folder
            of full-size label maps would not fit.
    """

    def __init__(
        self,
        output_dir: str = "predictions",
        *,
        palette: Sequence[Sequence[int]] | None = None,
        class_names: Sequence[str] | None = None,
        outputs: Sequence[str] = OUTPUTS,
        alpha: float = 0.5,
        keep_predictions: bool = False,
    ) -> None:
        super().__init__(write_interval="batch")
        unknown = set(outputs) - set(OUTPUTS)
        if unknown:
            raise DataError(f"unknown prediction outputs {sorted(unknown)}; allowed: {OUTPUTS}")
        self.output_dir = Path(output_dir)
        self.palette = palette
        self.class_names = class_names
        self.outputs = tuple(outputs)
        self.alpha = alpha
        self.keep_predictions = keep_predictions
        self.written = 0

    def on_predict_start(self, trainer, pl_module) -> None:
        if not self.keep_predictions:
            trainer.predict_loop.return_predictions = False

    def _palette(self, trainer) -> Sequence[Sequence[int]]:
        if self.palette is not None:
            return self.palette
        palette = getattr(trainer.datamodule, "palette", None) if trainer is not None else None
        return palette if palette else CITYSCAPES_PALETTE

    def write_image(
        self,
        name: str,
        pred: np.ndarray,
        *,
        image_path: str | None = None,
        palette: Sequence[Sequence[int]] = CITYSCAPES_PALETTE,
        label_ids: bool = True,
    ) -> list[Path]:
        """Writes the outputs for one H x W uint8 prediction; returns their paths."""
        rel = Path(name).with_suffix(".png")
        written = []
        if "trainIds" in self.outputs:
            written.append(self.output_dir / "trainIds" / rel)
            _write_png(written[-1], pred)
        if "labelIds" in self.outputs and label_ids:
            written.append(self.output_dir / "labelIds" / rel)
            _write_png(written[-1], TRAIN_ID_TO_LABEL_ID[pred])
        if "color" in self.outputs:
            written.append(self.output_dir / "color" / rel)
            _write_png(written[-1], colorize(pred, palette))
        if "overlay" in self.outputs and image_path is not None:
            image = read_rgb(image_path)
            if image.shape[:2] == pred.shape:
                written.append(self.output_dir / "overlay" / rel)
                _write_png(written[-1], overlay(image, pred, palette, alpha=self.alpha))
        return written

    @staticmethod
    def _image_paths(trainer, batch, batch_indices, dataloader_idx) -> list[str] | None:
        """Input files of a batch: its ``path`` entry, else the data set's ``samples``."""
        if isinstance(batch, dict) and "path" in batch:
            return list(batch["path"])
        loaders = trainer.predict_dataloaders if trainer is not None else None
        if isinstance(loaders, (list, tuple)):
            loaders = loaders[dataloader_idx]
        samples = getattr(getattr(loaders, "dataset", None), "samples", None)
        if samples is None or batch_indices is None:
            return None
        return [str(samples[i].image) for i in batch_indices]

    def write_on_batch_end(
        self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx
    ) -> None:
        names = self.class_names or getattr(pl_module, "class_names", CITYSCAPES_CLASSES)
        label_ids = tuple(names) == CITYSCAPES_CLASSES
        palette = self._palette(trainer)
        preds = [p.to(torch.uint8).cpu().numpy() for p in prediction["pred"]]  # or a list
        paths = self._image_paths(trainer, batch, batch_indices, dataloader_idx)
        for i, name in enumerate(prediction["name"]):
            self.write_image(
                name,
                preds[i],
                image_path=paths[i] if paths is not None else None,
                palette=palette,
                label_ids=label_ids,
            )
            self.written += 1

    def on_predict_epoch_end(self, trainer, pl_module) -> None:
        # each process wrote its own share of the images: the line gives their sum
        written = trainer.strategy.reduce(torch.tensor(self.written), reduce_op="sum")
        if trainer.is_global_zero:
            print(f"aspp-seg: wrote predictions of {int(written)} images to {self.output_dir}")
