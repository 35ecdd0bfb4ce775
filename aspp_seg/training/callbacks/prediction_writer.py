"""Prediction on any images: a source (file, folder or glob) and a writer of results.

    aspp-seg predict --config configs/demo.yaml \\
        --ckpt_path runs/demo/version_0/checkpoints/last.ckpt \\
        --data.init_args.predict_source "photos/*.jpg" --predict_dir out/

The images are listed, read and batched by `aspp_seg.data.predict_source` (re-exported
here); `PredictionWriter` writes per image:

- ``trainIds/<name>.png``: the predicted class per pixel (0..C-1);
- ``labelIds/<name>.png``: Cityscapes labelIds, the test-server format (only when the
  data's classes are Cityscapes'; ``*_leftImg8bit.png`` keeps its name, as the server
  expects);
- ``color/<name>.png``: the classes in the data set's palette;
- ``overlay/<name>.png``: the colours blended over the input image.

``<name>`` is the image's path relative to the source folder (or glob base), with a
``.png`` extension; two images that would share it (``frame.png`` and ``frame.jpg``)
keep their own file name before it instead (``frame.png``, ``frame.jpg.png``: see
`aspp_seg.data.predict_source.output_names`). The folder is checked before any
inference runs: it must be writable, and no input may lie in the subfolders written (a
source folder that holds an earlier run's output would read its predictions as images,
and could have inputs overwritten). Files of an earlier run in the same folder are
overwritten by name; each file is written complete or not at all.
"""

from __future__ import annotations

import contextlib
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
from lightning.pytorch.callbacks import BasePredictionWriter

from aspp_seg.data.datasets import cityscapes
from aspp_seg.data.io import IMAGE_EXTENSIONS, read_rgb, replacing
from aspp_seg.data.labels import distinct_palette
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
    "data_classes",
    "image_source",
    "predict_loader",
]

OUTPUTS = ("trainIds", "labelIds", "color", "overlay")
WRITER_SETTING = "output_dir of the PredictionWriter in trainer.callbacks"


def data_classes(trainer, pl_module) -> tuple[list[str], list[tuple[int, int, int]]]:
    """The class names and palette of the run's data: the data module's, else the
    module's class names (linked from the data) with distinct colours."""
    datamodule = getattr(trainer, "datamodule", None) if trainer is not None else None
    names = list(getattr(datamodule, "class_names", None) or [])
    names = names or [str(n) for n in getattr(pl_module, "class_names", None) or []]
    palette = getattr(datamodule, "palette", None)
    if palette:
        return names, [tuple(int(v) for v in color) for color in palette]
    return names, list(distinct_palette(len(names)))


def _write_png(path: Path, array: np.ndarray) -> None:
    if array.ndim == 3:
        array = cv2.cvtColor(array, cv2.COLOR_RGB2BGR)
    with replacing(path) as staged:  # creates the folder
        if not cv2.imwrite(str(staged), array):
            raise DataError(f"cannot write {path}")


def _why_unwritable(folder: Path, subfolders: Sequence[str]) -> str | None:
    """Why PNGs cannot be written in `folder` and its `subfolders`, or None when they can.

    Folders made to find out are removed again: a run that fails before its first
    prediction leaves no empty output folder behind."""
    missing = [p for p in (folder, *folder.parents) if not p.exists()]
    blocking = folder.parents[len(missing) - 1] if missing else folder
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
    finally:
        for made in missing:  # innermost first
            with contextlib.suppress(OSError):
                made.rmdir()
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

    ``aspp-seg predict`` adds one writing to ``--predict_dir`` (default: the evaluation
    folder beside the checkpoint, else ``<log dir>/predictions``) unless
    ``trainer.callbacks`` lists a writer, which chooses its own settings.

    Args:
        output_dir: folder for the ``trainIds/``, ``labelIds/``, ``color/`` and
            ``overlay/`` subfolders.
        palette: RGB per class; None: the data module's ``palette``, else distinct
            colours.
        class_names: None: the data's (the data module's, else the module's); decides
            whether labelIds are written (for Cityscapes' classes only).
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
        self.setting = WRITER_SETTING
        """The setting that chose `output_dir`, named in errors (the CLI sets its own)."""

    def setup(self, trainer, pl_module, stage: str) -> None:
        """Checks the output folder before any inference runs (Lightning calls this before
        it restores the checkpoint and reads the data)."""
        if stage != "predict":
            return
        # one process finds out and tells the others: with several, one removed the
        # folders it had made to probe while another was probing in them
        problem = _why_unwritable(self.output_dir, self.outputs) if trainer.is_global_zero else None
        problem = trainer.strategy.broadcast(problem, src=0)
        if problem is not None:
            raise DataError(
                f"cannot write predictions to {self.output_dir} ({self.setting}): {problem}"
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
        self._check_inputs_outside(trainer)

    def _check_inputs_outside(self, trainer) -> None:
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
                    f"({self.setting}); choose an output folder outside the predict source"
                )

    def write_image(
        self,
        name: str,
        pred: np.ndarray,
        *,
        palette: Sequence[Sequence[int]],
        image_path: str | None = None,
        label_ids: bool = False,
    ) -> list[Path]:
        """Writes the outputs for one H x W uint8 prediction; returns their paths.

        Args:
            name: the image's name; the files are ``<output>/<kind>/<name>.png``.
            pred: H x W class indices.
            palette: RGB per class, for the colour and overlay pictures.
            image_path: the input image, for the overlay (none without it).
            label_ids: also write Cityscapes labelIds (for Cityscapes' classes only).
        """
        rel = Path(name).with_suffix(".png")
        written = []
        if "trainIds" in self.outputs:
            written.append(self.output_dir / "trainIds" / rel)
            _write_png(written[-1], pred)
        if "labelIds" in self.outputs and label_ids:
            written.append(self.output_dir / "labelIds" / rel)
            _write_png(written[-1], cityscapes.TRAIN_ID_TO_LABEL_ID[pred])
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
        names, palette = data_classes(trainer, pl_module)
        names = list(self.class_names or names)
        label_ids = tuple(names) == cityscapes.CLASSES
        palette = self.palette if self.palette is not None else palette
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
