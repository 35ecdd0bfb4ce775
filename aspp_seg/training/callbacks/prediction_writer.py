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
``.png`` extension. The folder is checked before any inference runs: it must be
writable, and no input may lie in the subfolders written (a source folder that holds an
earlier run's output would read its predictions as images, and could have inputs
overwritten). Files of an earlier run in the same folder are overwritten by name.
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Iterator, Sequence
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
from aspp_seg.evaluation.visualize import colorize, overlay

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


def _why_unwritable(folder: Path, subfolders: Sequence[str]) -> str | None:
    """Why PNGs cannot be written in `folder` (created if missing) and its `subfolders`,
    or None when they can."""
    blocking = next((p for p in (folder, *folder.parents) if p.exists()), folder)
    if not blocking.is_dir():
        return f"{blocking} is a file, not a folder"
    for sub in subfolders:
        if (folder / sub).exists() and not (folder / sub).is_dir():
            return f"{folder / sub} is a file, not a folder"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):  # permissions alone miss read-only mounts
            pass
    except OSError as error:
        return error.strerror or str(error)
    return None


def _input_files(trainer) -> Iterator[Path]:
    """The files the predict data loaders read: `ImageSource` images, or a data set
    split's images and labels (a cached split names none)."""
    loaders = trainer.predict_dataloaders
    for loader in loaders if isinstance(loaders, (list, tuple)) else [loaders]:
        dataset = getattr(loader, "dataset", None)
        for path, _ in getattr(dataset, "files", ()):
            yield Path(path)
        for sample in getattr(dataset, "samples", ()):
            for path in (getattr(sample, "image", None), getattr(sample, "label", None)):
                if path is not None:
                    yield Path(path)


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

    def setup(self, trainer, pl_module, stage: str) -> None:
        """Checks the output folder before any inference runs (Lightning calls this before
        it restores the checkpoint and reads the data)."""
        if stage != "predict":
            return
        problem = _why_unwritable(self.output_dir, self.outputs)
        if problem is not None:
            raise DataError(
                f"cannot write predictions to {self.output_dir} "
                f"({self._setting(trainer, pl_module)}): {problem}"
            )
        earlier = [self.output_dir / sub for sub in self.outputs]
        if trainer.is_global_zero and any(next(d.iterdir(), None) for d in earlier if d.is_dir()):
            print(
                f"note: {self.output_dir} holds earlier predictions; files of the same name "
                "are overwritten, the others are kept",
                file=sys.stderr,
            )

    def on_predict_start(self, trainer, pl_module) -> None:
        if not self.keep_predictions:
            trainer.predict_loop.return_predictions = False
        self._check_inputs_outside(trainer, pl_module)

    def _setting(self, trainer, pl_module) -> str:
        """The setting that chose `output_dir`, for error messages."""
        predict_dir = getattr(pl_module, "predict_dir", None)
        if predict_dir is None:  # the module's writer then uses the run folder
            predict_dir = Path(trainer.log_dir or ".") / "predictions"
        if Path(predict_dir) == self.output_dir:
            return "model.predict_dir"
        return "output_dir of the PredictionWriter in trainer.callbacks"

    def _check_inputs_outside(self, trainer, pl_module) -> None:
        """Refuses inputs inside the subfolders written: they would be overwritten, or
        are an earlier run's predictions read back as images (a source folder that holds
        `output_dir`, predicted a second time)."""
        written = [(self.output_dir / sub).resolve() for sub in self.outputs]
        for path in _input_files(trainer):
            resolved = path.resolve()
            folder = next((d for d in written if resolved.is_relative_to(d)), None)
            if folder is not None:
                raise DataError(
                    f"input {path} lies in {folder}, where predictions are written "
                    f"({self._setting(trainer, pl_module)}); choose an output folder outside "
                    "the predict source"
                )

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
