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
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from lightning.pytorch import Callback, LightningModule, Trainer, callbacks
from lightning.pytorch.cli import SaveConfigCallback
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger
from lightning.pytorch.utilities import rank_zero_info

from aspp_seg.checkpoints import CHECKPOINT_KEY
from aspp_seg.data.labels import CITYSCAPES_PALETTE, IGNORE_INDEX
from aspp_seg.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from aspp_seg.errors import ConfigError
from aspp_seg.metrics import IoURow, column_names, iou_table, save_results
from aspp_seg.module import labels_at_size
from aspp_seg.visualize import overlay, plot_confusion


def denormalize(image: torch.Tensor) -> np.ndarray:
    """3 x H x W image tensor -> H x W x 3 uint8 RGB.

    Takes uint8 RGB (what the data sets yield) as it is, and undoes the ImageNet
    normalisation of a float tensor.
    """
    if image.dtype == torch.uint8:
        return image.detach().cpu().permute(1, 2, 0).numpy()
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    rgb = (image.detach().cpu().float() * std + mean).clamp(0, 1) * 255
    return (rgb + 0.5).byte().permute(1, 2, 0).numpy()


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
        class_names = list(getattr(pl_module, "class_names", []))
        palette = getattr(trainer.datamodule, "palette", CITYSCAPES_PALETTE)
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


class ResultFiles(Callback):
    """Writes the last evaluation's tables into the run folder, after every validation and
    test: ``<stage>_iou.md`` / ``.csv`` (per-class IoU), ``<stage>_iou_confusion.npy`` and
    ``.png`` (`aspp_seg.metrics.save_results`). ``aspp-seg`` adds it to every run."""

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.sanity_checking:
            self._write(trainer, pl_module, "val")

    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._write(trainer, pl_module, "test")

    @staticmethod
    def _write(trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        log_dir = trainer.log_dir  # a broadcast under DDP: every rank must ask
        result = getattr(pl_module, "last_result", None)
        if not trainer.is_global_zero or log_dir is None or result is None:
            return
        names = list(getattr(pl_module, "class_names", []))
        save_results(Path(log_dir), f"{stage}_iou", result, result["confusion"], names)


class ModelCheckpoint(callbacks.ModelCheckpoint):
    """Lightning's ModelCheckpoint whose ``last.ckpt`` is always the newest state.

    Lightning 2.6 writes ``last.ckpt`` at the end of a validation only when a top-k
    checkpoint was written at the same step: once the monitored score stops improving,
    ``last.ckpt`` falls behind, and ``--ckpt_path last`` then resumes (or extends) an
    older state and retrains steps that were already done. This subclass also writes it
    after every other validation and when training ends.
    """

    # Lightning saves at the end of the training epoch or at the end of validation
    # (`_should_save_on_train_epoch_end`); last.ckpt follows the same moment, after top-k.
    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if self._should_save_on_train_epoch_end(trainer):
            self._save_last_if_behind(trainer)

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        if not self._should_save_on_train_epoch_end(trainer):
            self._save_last_if_behind(trainer)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_train_end(trainer, pl_module)
        self._save_last_if_behind(trainer)

    def _save_last_if_behind(self, trainer: Trainer) -> None:
        if self.save_last and not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))


class EMA(callbacks.WeightAveraging):
    """An exponential moving average of the weights (and BN statistics), used for every
    evaluation: Lightning's `WeightAveraging` with a decay that ramps in, plus what it
    lacks here.

    The first optimizer step copies the weights; each later one, with t updates so far
    (AveragedModel's ``n_averaged``), folds them in as ema = d_t * ema + (1 - d_t) * weights:

        d_t = min(max_decay, 1 - (1 + t / warmup_gamma) ** -warmup_power)
        max_decay = decay, or else max(0, 1 - 1 / (horizon * total_steps))

    (timm's `ModelEmaV3` warm-up; ``warmup=False``: d_t = max_decay from the first
    step). ``total_steps`` is the run's optimizer steps
    (``trainer.estimated_stepping_batches``). A constant decay from the first step keeps
    the random initialisation in the average for ~1 / (1 - decay) steps; the ramp lets
    the early average follow the weights (with the default power, d_t reaches 0.99 after
    ~460 steps, 0.999 after ~10,000) and `horizon` sizes the memory by the run's length
    rather than for one schedule.

    Validation during ``fit`` runs on the averaged weights, and so do what reads them
    after it (`SegmentationLogger`'s overlays, `ModelCheckpoint`'s choice of the best). A
    checkpoint's ``state_dict`` holds the averaged weights, so
    ``aspp-seg validate / test / predict / export --ckpt_path ...`` and
    `aspp_seg.load_model` get them with or without this callback in their config; the
    live weights (``current_model_state``) and the averaging state (``averaging_state``:
    the update count t) let ``fit --ckpt_path last`` continue both, the ramp where it
    stopped. A resumed run computes ``max_decay`` from its own length, so a run extended
    with a larger ``max_epochs`` / ``max_steps`` continues with the decay of the longer
    run (one line says which decay a `horizon` gave).

    What this subclass changes in `WeightAveraging`:

    - the average lives on the training device (``trainer.strategy.root_device``):
      Lightning's ``setup`` runs before the module is moved, so its default would keep
      it on the CPU and copy every weight there after every GPU step;
    - the averaged weights stay in place until training continues (not only until the
      end of the validation epoch), so callbacks of ``on_validation_end`` see them;
    - a checkpoint written when training ends keeps the live weights as
      ``current_model_state`` (Lightning's would hold the average twice there, and a
      run extended from it would continue from the average);
    - nothing goes into the checkpoint's ``callbacks`` section (the step of the last
      update is the checkpoint's ``global_step``), so evaluating a checkpoint without
      this callback does not ask for it, and evaluating with it is silent too;
    - integer buffers (BatchNorm's ``num_batches_tracked``) take the live value: they
      count batches and have no average.

    Args:
        decay: the most weight the average keeps at a step (0.999: about the last 1000
            steps); None: from `horizon`.
        horizon: when `decay` is None, the fraction of the run's optimizer steps the
            average remembers: max_decay = 1 - 1 / (horizon * total_steps), at least 0
            (0.05 of a 1,472-step run: 74 steps, 0.9864).
        warmup: ramp the decay in with the update count; False: max_decay from the start.
        warmup_gamma: steps scale of the ramp (timm's ``warmup_gamma``).
        warmup_power: exponent of the ramp; timm suggests 3/4 for runs of up to ~100k
            steps and 2/3 for runs of a million.
        device: where to keep the average; None: the training device.

    Raises:
        ConfigError: for a setting outside its range, and when fit starts with a
            `horizon` but no finite run length (``max_epochs`` or ``max_steps``).
    """

    def __init__(
        self,
        *,
        decay: float | None = None,
        horizon: float = 0.05,
        warmup: bool = True,
        warmup_gamma: float = 1.0,
        warmup_power: float = 0.75,
        device: str | None = None,
    ) -> None:
        if decay is not None and not 0.0 <= decay <= 1.0:
            raise ConfigError(f"EMA decay={decay} must lie in [0, 1] (or be null: use horizon)")
        if not 0.0 < horizon <= 1.0:
            raise ConfigError(
                f"EMA horizon={horizon} must lie in (0, 1]: a fraction of the run's steps"
            )
        if warmup_gamma <= 0.0 or warmup_power <= 0.0:
            raise ConfigError(
                f"EMA warmup_gamma={warmup_gamma} and warmup_power={warmup_power} must be > 0"
            )
        super().__init__(device=device, use_buffers=True, multi_avg_fn=self._update_average)
        self.decay = decay
        self.horizon = horizon
        self.warmup = warmup
        self.warmup_gamma = warmup_gamma
        self.warmup_power = warmup_power
        self.max_decay: float | None = decay  # from `horizon` once fit knows the run length
        self._swapped = False  # the module holds the average, the average the live weights
        self._live_state: dict | None = None  # live weights once fit has ended

    def decay_at(self, updates: int) -> float:
        """The decay d of the update that follows `updates` earlier ones (0: a copy).

        Raises:
            RuntimeError: with a `horizon` before fit has started (no run length yet).
        """
        if self.max_decay is None:
            raise RuntimeError("EMA: the decay from `horizon` is known once fit starts")
        if not self.warmup:
            return self.max_decay
        ramp = 1.0 - (1.0 + updates / self.warmup_gamma) ** -self.warmup_power
        return min(self.max_decay, ramp)

    @torch.no_grad()
    def _update_average(
        self, averaged: list[torch.Tensor], current: list[torch.Tensor], updates: torch.Tensor
    ) -> None:
        # AveragedModel's `multi_avg_fn`, once per device and dtype group, with its update
        # count `n_averaged`; reading it costs no extra sync (AveragedModel reads it too)
        if averaged[0].is_floating_point() or averaged[0].is_complex():
            torch._foreach_lerp_(averaged, current, 1.0 - self.decay_at(int(updates)))
        else:
            torch._foreach_copy_(averaged, current)

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage == "fit":
            self._swapped, self._live_state = False, None
            if self._device is None:
                self._device = trainer.strategy.root_device
        super().setup(trainer, pl_module, stage)

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.decay is not None:
            return
        # the length of this run, also when it resumes a shorter one that it extends
        total = float(trainer.estimated_stepping_batches)
        if not math.isfinite(total):
            raise ConfigError(
                f"EMA horizon={self.horizon} needs a run of known length: set "
                "trainer.max_epochs or trainer.max_steps, or give the EMA a decay"
            )
        self.max_decay = max(0.0, 1.0 - 1.0 / (self.horizon * total))
        rank_zero_info(
            f"aspp-seg: EMA decay up to {self.max_decay:.5g} "
            f"(horizon {self.horizon} of {int(total)} steps)"
        )

    def on_validation_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._average_model is not None and trainer.state.fn == "fit" and not self._swapped:
            self._swap_models(pl_module)
            self._swapped = True

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        pass  # kept until training continues (see `_use_live`)

    def _use_live(self, pl_module: LightningModule) -> None:
        if self._swapped:
            self._swap_models(pl_module)
            self._swapped = False

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._use_live(pl_module)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._use_live(pl_module)
        super().on_train_epoch_end(trainer, pl_module)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._use_live(pl_module)
        self._live_state = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}
        super().on_train_end(trainer, pl_module)  # the module keeps the average from here

    def state_dict(self) -> dict:
        # Lightning keeps a callback's non-empty state under the checkpoint's "callbacks"
        # and, when a later run lacks that callback, prints "Please add the following
        # callbacks: ['EMA']" although the state_dict already holds the average. The one
        # entry WeightAveraging keeps there is restored from global_step instead.
        return {}

    def on_load_checkpoint(
        self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict
    ) -> None:
        if self._average_model is None:
            return  # validate / test / predict: the state_dict already holds the average
        super().on_load_checkpoint(trainer, pl_module, checkpoint)
        # the average was last updated after the step the checkpoint was written at (it
        # updates after every optimizer step, before ModelCheckpoint saves); without this,
        # a resumed run with gradient accumulation would fold that step's weights twice
        self._latest_update_step = int(checkpoint.get("global_step", 0))

    def on_save_checkpoint(
        self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict
    ) -> None:
        if self._average_model is None or not self._swapped:
            super().on_save_checkpoint(trainer, pl_module, checkpoint)
            if self._average_model is not None and self._live_state is not None:
                checkpoint["current_model_state"] = self._live_state
            return
        # saved after a validation: the module holds the average, the average the live ones
        state = self._average_model.state_dict()
        checkpoint["current_model_state"] = {
            k[len("module.") :]: v for k, v in state.items() if k.startswith("module.")
        }
        checkpoint["averaging_state"] = {
            k: v for k, v in state.items() if not k.startswith("module.")
        }


class RunConfigCallback(SaveConfigCallback):
    """LightningCLI's config saver that also gives the resolved config to W&B and
    remembers the W&B run id (and the config's path) in every checkpoint, so that
    ``--ckpt_path last`` resumes the same W&B run (see `aspp_seg.resume`).

    It never replaces another run's config: a new ``fit`` (no checkpoint to resume)
    whose folder already holds a ``config.yaml`` or checkpoints is refused before
    anything is written (it would overwrite them); ``validate`` / ``test`` / ``predict``
    keep an existing ``config.yaml`` unless the CLI made the folder their own evaluation
    folder (`replace`, see `aspp_seg.resume.evaluation_folder`).

    Attributes:
        replace: an existing ``config.yaml`` of validate / test / predict is this
            command's earlier output and may be replaced.
    """

    _config_path: str | None = None
    replace = False

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if self.save_to_log_dir and not self.already_saved:
            log_dir = trainer.log_dir  # a broadcast under DDP: every rank asks
            if log_dir is not None:
                path = Path(log_dir, self.config_filename)
                if stage == "fit" and not self.config.get("ckpt_path"):
                    _refuse_another_run(path)
                elif stage != "fit" and path.is_file() and not self.replace:
                    # e.g. validate with no logger and no checkpoint writes into
                    # default_root_dir: a config there (a training run's, which
                    # `load_model` and `--config` read back) stays as it is
                    self.already_saved = True
                    return
                self._config_path = str(path.resolve())
        super().setup(trainer, pl_module, stage)

    def save_config(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        config = self.config.as_dict() if hasattr(self.config, "as_dict") else dict(self.config)
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.experiment.config.update({"cli": config}, allow_val_change=True)

    def on_save_checkpoint(
        self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict
    ) -> None:
        own = checkpoint.setdefault(CHECKPOINT_KEY, {})
        if self._config_path is not None:
            own["config"] = self._config_path  # named when a checkpoint does not fit a config
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger) and logger.version is not None:
                own["wandb_id"] = str(logger.version)


_IMAGE_LOGGERS = ("WandbLogger", "TensorBoardLogger")


def add_result_files(trainer_cfg) -> bool:
    """Adds `ResultFiles` to a parsed trainer config that has none; returns whether it did.

    Args:
        trainer_cfg: the ``trainer`` Namespace of a parsed subcommand, changed in place.
    """
    return _add_callback(trainer_cfg, ResultFiles)


def add_segmentation_logger(trainer_cfg) -> bool:
    """Adds `SegmentationLogger` (defaults) to a parsed trainer config that logs to W&B or
    TensorBoard and has none, so that ``--config configs/logger/wandb.yaml`` gives every
    experiment its tables and overlays. Returns whether it added one.

    Args:
        trainer_cfg: the ``trainer`` Namespace of a parsed subcommand, changed in place.
    """
    loggers = trainer_cfg.get("logger")
    loggers = loggers if isinstance(loggers, list) else [loggers]
    kinds = {str(lg.get("class_path", "")).rsplit(".", 1)[-1] for lg in loggers if _has_get(lg)}
    if not kinds & set(_IMAGE_LOGGERS):
        return False
    return _add_callback(trainer_cfg, SegmentationLogger)


def _add_callback(trainer_cfg, callback: type[Callback]) -> bool:
    """Appends `callback` (default arguments) to the config's callbacks unless listed."""
    from jsonargparse import Namespace

    callbacks = list(trainer_cfg.get("callbacks") or [])
    path = f"{callback.__module__}.{callback.__name__}"
    if any(_has_get(c) and c.get("class_path") == path for c in callbacks):
        return False
    callbacks.append(Namespace(class_path=path, init_args=Namespace()))
    trainer_cfg["callbacks"] = callbacks
    return True


def _has_get(item) -> bool:
    return hasattr(item, "get")


def _refuse_another_run(config: Path) -> None:
    """A new fit must not write over the config or checkpoints of a run in its folder."""
    folder = config.parent
    checkpoints = sorted((folder / "checkpoints").glob("*.ckpt"))
    if not config.is_file() and not checkpoints:
        return
    found = config if config.is_file() else checkpoints[0]
    raise ConfigError(
        f"{folder} holds another run ({found}): a new fit would overwrite it; resume it "
        "with --ckpt_path last, or give the new run its own folder (trainer.default_root_dir "
        "or the logger's save_dir / name / version)"
    )
