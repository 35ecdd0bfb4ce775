"""Logger-agnostic callbacks: what a validation epoch looked like, for people to read.

`SegmentationLogger` reads the module's last evaluation (``pl_module.last_result``:
per-class IoU, mIoU and the confusion matrix) and predicts a fixed set of validation
images, then hands them to whichever loggers the trainer has:

- `WandbLogger`: a per-class IoU table, W&B's confusion-matrix chart (plus a heat-map
  image) and the images with predicted and true masks in W&B's mask format, so the
  class of every pixel can be toggled in the UI;
- `TensorBoardLogger`: the overlays and the confusion heat map as images, the table as
  text;
- any other logger (CSV) or none: PNG files and a CSV under the run's log folder.

wandb is imported only here and only when a `WandbLogger` is in use; the models never
import it.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger

from aspp_seg.data.labels import IGNORE_INDEX
from aspp_seg.evaluation.reports import IoURow, column_names, iou_table
from aspp_seg.evaluation.visualize import denormalize, overlay, plot_confusion
from aspp_seg.training.callbacks.prediction_writer import data_classes
from aspp_seg.training.module import labels_at_size


def fixed_indices(length: int, count: int) -> list[int]:
    """`count` indices spread evenly over a split of `length` items (the same every epoch)."""
    if length <= 0 or count <= 0:
        return []
    return sorted({round(i) for i in np.linspace(0, length - 1, min(count, length))})


class SegmentationLogger(Callback):
    """Logs the per-class IoU table, the confusion matrix and segmentation overlays.

    Runs after every `every_n_epochs`-th validation epoch of `fit` (and after every
    `validate`), on rank zero, never during the sanity check.

    Args:
        every_n_epochs: log every N-th validation epoch; the last epoch is always logged.
        num_images: validation images shown, spread evenly over the split and the same
            in every epoch so that progress can be compared.
        alpha: weight of the label colours in the overlays written as files or to
            TensorBoard.
    """

    def __init__(self, *, every_n_epochs: int = 5, num_images: int = 4, alpha: float = 0.5):
        super().__init__()
        if every_n_epochs < 1:
            raise ValueError(f"every_n_epochs={every_n_epochs} must be >= 1")
        if num_images < 0:
            raise ValueError(f"num_images={num_images} must be >= 0")
        self.every_n_epochs = every_n_epochs
        self.num_images = num_images
        self.alpha = alpha
        self._log_dir: str | None = None

    # ------------------------------------------------------------------ hooks

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # trainer.log_dir is a broadcast under DDP: every rank asks, then only rank 0 logs
        # (asking on rank 0 alone would leave it waiting for the others forever).
        self._log_dir = trainer.log_dir
        if not trainer.is_global_zero:
            return
        if trainer.sanity_checking or getattr(pl_module, "last_result", None) is None:
            return
        epoch = trainer.current_epoch
        max_epochs, max_steps = trainer.max_epochs, getattr(trainer, "max_steps", -1)
        last_epoch = (max_epochs is not None and 0 < max_epochs <= epoch + 1) or (
            max_steps > 0 and trainer.global_step >= max_steps  # step budgets (SegNet)
        )
        if trainer.state.fn == "fit" and (epoch + 1) % self.every_n_epochs and not last_epoch:
            return
        result = pl_module.last_result
        class_names, palette = data_classes(trainer, pl_module)
        samples = self.predict_samples(trainer, pl_module)
        wrote = False
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                self._to_wandb(logger, trainer, result, class_names, samples)
                wrote = True
            elif isinstance(logger, TensorBoardLogger):
                self._to_tensorboard(logger, trainer, result, class_names, palette, samples)
                wrote = True
        if not wrote and self._log_dir is not None:
            self._to_files(Path(self._log_dir), epoch, result, class_names, palette, samples)

    # ---------------------------------------------------------------- samples

    def _val_dataset(self, trainer: Trainer):
        datasets = getattr(trainer.datamodule, "datasets", None)
        if isinstance(datasets, dict) and "val" in datasets:
            return datasets["val"]
        loaders = trainer.val_dataloaders
        if isinstance(loaders, Sequence):
            loaders = loaders[0] if loaders else None
        return getattr(loaders, "dataset", None)

    @torch.no_grad()
    def predict_samples(self, trainer: Trainer, pl_module: LightningModule) -> list[dict]:
        """Predicts the fixed validation images.

        Returns:
            One dict per image: ``name``, ``image`` (H x W x 3 uint8), ``pred`` and
            ``mask`` (H x W int64 numpy, 255 = ignore).
        """
        dataset = self._val_dataset(trainer)
        if dataset is None or self.num_images == 0:
            return []
        was_training = pl_module.training
        pl_module.eval()
        samples = []
        try:
            for index in fixed_indices(len(dataset), self.num_images):
                item = dataset[index]
                image = item["image"].unsqueeze(0).to(pl_module.device)
                mask = torch.as_tensor(item["mask"])
                # labels are scored at their files' size, which the image may not have
                pred = labels_at_size(pl_module(image), {"mask": mask[None]})[0]
                rgb = denormalize(item["image"])
                if rgb.shape[:2] != tuple(mask.shape):
                    from PIL import Image

                    size = (mask.shape[1], mask.shape[0])
                    rgb = np.asarray(Image.fromarray(rgb).resize(size, Image.BILINEAR))
                samples.append(
                    {
                        "name": str(item.get("name", index)),
                        "image": rgb,
                        "pred": pred.cpu().numpy().astype(np.int64),
                        "mask": mask.numpy().astype(np.int64),
                    }
                )
        finally:
            pl_module.train(was_training)
        return samples

    # ---------------------------------------------------------------- writers

    @staticmethod
    def _iou_rows(result: dict, class_names: Sequence[str]) -> list[list]:
        names = column_names(class_names) if class_names else []
        rows = [
            [name, None if np.isnan(v) else round(100 * float(v), 2)]
            for name, v in zip(names, result["iou"], strict=False)
        ]
        miou = result["miou"]
        rows.append(["mIoU", None if np.isnan(miou) else round(100 * float(miou), 2)])
        return rows

    def _to_wandb(
        self,
        logger: WandbLogger,
        trainer: Trainer,
        result: dict,
        class_names: Sequence[str],
        samples: list[dict],
    ) -> None:
        import wandb

        payload = {
            "val/IoU_table": wandb.Table(
                columns=["class", "IoU (%)"], data=self._iou_rows(result, class_names)
            ),
        }
        confusion = result.get("confusion")
        if confusion is not None:
            counts = torch.as_tensor(confusion).cpu().numpy()
            names = list(class_names) or [str(i) for i in range(len(counts))]
            data = [
                [names[i], names[j], int(counts[i, j])]
                for i in range(len(counts))
                for j in range(len(counts))
            ]
            payload["val/confusion_matrix"] = wandb.plot_table(
                "wandb/confusion_matrix/v1",
                wandb.Table(columns=["Actual", "Predicted", "nPredictions"], data=data),
                {"Actual": "Actual", "Predicted": "Predicted", "nPredictions": "nPredictions"},
                {"title": f"validation confusion, epoch {trainer.current_epoch}"},
            )
            heat_map = Path(self._log_dir or logger.save_dir or ".") / "confusion_val.png"
            plot_confusion(counts, names, heat_map, title=f"epoch {trainer.current_epoch}")
            payload["val/confusion_heatmap"] = wandb.Image(str(heat_map))
        if samples:
            labels = {i: name for i, name in enumerate(class_names)}
            labels[IGNORE_INDEX] = "ignore"
            payload["val/overlays"] = [
                wandb.Image(
                    s["image"],
                    caption=s["name"],
                    masks={
                        "prediction": {"mask_data": s["pred"], "class_labels": labels},
                        "ground_truth": {"mask_data": s["mask"], "class_labels": labels},
                    },
                )
                for s in samples
            ]
        payload["trainer/global_step"] = trainer.global_step
        logger.experiment.log(payload)

    def _panel(self, sample: dict, palette) -> np.ndarray:
        """Image | truth overlay | prediction overlay, side by side (H x 3W x 3)."""
        truth = overlay(sample["image"], sample["mask"], palette, alpha=self.alpha)
        pred = overlay(sample["image"], sample["pred"], palette, alpha=self.alpha)
        return np.concatenate([sample["image"], truth, pred], axis=1)

    def _to_tensorboard(
        self,
        logger: TensorBoardLogger,
        trainer: Trainer,
        result: dict,
        class_names: Sequence[str],
        palette,
        samples: list[dict],
    ) -> None:
        writer = logger.experiment
        step = trainer.global_step
        iou = [float(v) for v in result["iou"]]
        names = list(class_names) or [str(i) for i in range(len(iou))]
        table = iou_table([IoURow([*iou, float(result["miou"])])], names, vertical=True)
        writer.add_text("val/IoU_table", table, step)
        confusion = result.get("confusion")
        if confusion is not None:
            path = plot_confusion(confusion, class_names, Path(logger.log_dir) / "confusion.png")
            from PIL import Image

            writer.add_image(
                "val/confusion", np.asarray(Image.open(path).convert("RGB")), step,
                dataformats="HWC",
            )  # fmt: skip
        for s in samples:
            writer.add_image(f"val/overlay/{s['name']}", self._panel(s, palette), step,
                             dataformats="HWC")  # fmt: skip

    def _to_files(
        self,
        folder: Path,
        epoch: int,
        result: dict,
        class_names: Sequence[str],
        palette,
        samples: list[dict],
    ) -> None:
        from PIL import Image

        media = folder / "media" / f"epoch_{epoch:03d}"
        media.mkdir(parents=True, exist_ok=True)
        for s in samples:
            Image.fromarray(self._panel(s, palette)).save(media / f"{Path(s['name']).stem}.png")
        confusion = result.get("confusion")
        if confusion is not None:
            counts = torch.as_tensor(confusion).cpu().numpy()
            with (folder / "confusion_val.csv").open("w", newline="") as f:
                writer = csv.writer(f)
                writer.writerow(["truth \\ prediction", *class_names])
                for name, row in zip(class_names, counts, strict=False):
                    writer.writerow([name, *(int(c) for c in row)])
            plot_confusion(counts, class_names, media / "confusion_val.png")
