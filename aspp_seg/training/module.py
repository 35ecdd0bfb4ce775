"""The LightningModule: loss, optimisation, metrics and logging around a plain network."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_info
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler, PolynomialLR

from aspp_seg import models
from aspp_seg.data.labels import CITYSCAPES_CLASSES
from aspp_seg.errors import ConfigError
from aspp_seg.evaluation.checkpoints import CHECKPOINT_KEY
from aspp_seg.evaluation.confusion import confusion_matrix_metric
from aspp_seg.evaluation.inference import Inference
from aspp_seg.evaluation.metrics import scores
from aspp_seg.evaluation.reports import iou_markdown
from aspp_seg.training import hardware as scaling
from aspp_seg.training.losses import CrossEntropyLoss
from aspp_seg.training.param_groups import apply_lr_mults, build_param_groups, check_param_groups
from aspp_seg.training.schedules import SchedulerFactory, retarget

INFERENCE_SETTINGS = (
    "inference", "window", "stride", "scales", "flip", "window_batch", "predict_dir",
)  # fmt: skip
"""Module arguments that say how to run inference, not what was trained."""

OptimizerFactory = Callable[[Iterable[nn.Parameter]], Optimizer]


def study_sgd(params: Iterable[nn.Parameter]) -> Optimizer:
    """The study's optimiser: SGD, base LR 0.007, momentum 0.9, weight decay 1e-4."""
    return torch.optim.SGD(params, lr=0.007, momentum=0.9, weight_decay=1e-4)


def poly_schedule(optimizer: Optimizer, max_steps: int) -> LRScheduler:
    """The study's schedule, stepped per iteration: lr = base * (1 - i / max)^0.9."""
    return PolynomialLR(optimizer, total_iters=max_steps, power=0.9)


def labels_at_size(logits: torch.Tensor, batch: dict) -> torch.Tensor:
    """Predicted classes at each label file's own size, as the Cityscapes benchmark
    scores: logits resized (bilinear, as `predict` writes them) before the argmax.

    Args:
        logits: B x C x h x w, at the size the images were evaluated at.
        batch: ``mask`` B x H x W (labels at their files' size, padded with 255 to the
            largest of the batch) and optionally ``label_size`` B x 2 (each label's H, W).

    Returns:
        B x H x W int64 classes; pixels outside a label's own size are 0 (their label
        is 255, so they are not counted).
    """
    masks = batch["mask"]
    sizes = batch.get("label_size")
    if sizes is None:
        sizes = torch.tensor([masks.shape[-2:]] * len(masks))
    sizes = [tuple(int(v) for v in size) for size in sizes.tolist()]
    if all(size == tuple(logits.shape[-2:]) for size in sizes):
        return logits.argmax(1)
    if len(set(sizes)) == 1 and sizes[0] == tuple(masks.shape[-2:]):
        return _resize(logits, sizes[0]).argmax(1)
    preds = torch.zeros(masks.shape, dtype=torch.long, device=logits.device)
    for i, (height, width) in enumerate(sizes):
        preds[i, :height, :width] = _resize(logits[i : i + 1], (height, width)).argmax(1)[0]
    return preds


def _resize(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(logits.shape[-2:]) == size:
        return logits
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)


class SegmentationModule(LightningModule):
    """Trains and evaluates any network that maps B x 3 x H x W to ``{"out": logits}``.

    Args:
        net: the network (e.g. from `aspp_seg.models.deeplabv3`); its classifier is
            resized to `num_classes` if the two differ.
        num_classes: classes of the data set (linked from ``data.num_classes``).
        class_names: names for logs and tables (linked from ``data.class_names``).
        loss: the training loss, called as ``loss(logits, target)`` on every output of
            the net (B x C x H x W logits, B x H x W int64 targets, 255 = ignore); the
            auxiliary output's loss is weighted by `aux_weight`. Default: cross-entropy
            (`aspp_seg.training.losses`: also OHEM, Lovász-softmax and weighted sums).
        optimizer: called with the parameter groups; default: the study's SGD.
        param_groups: per part of the net (its top-level children: ``backbone``,
            ``head``, ``aux_head``), ``lr_mult`` (times the optimizer's LR) and
            ``weight_decay``; e.g. ``{aux_head: {lr_mult: 10}}`` as torchvision's
            reference trains. See `aspp_seg.training.param_groups`.
        norm_bias_weight_decay: False: no weight decay on norm weights and biases
            (timm's ``param_groups_weight_decay``).
        scheduler: called with the optimiser and the total number of training steps;
            stepped every iteration. Default: poly decay with power 0.9.
        aux_weight: weight of the auxiliary head's loss, when the net has one.
        lr_scaling: how the optimizer's LR follows the global batch (per-device batch x
            processes x gradient accumulation): ``none`` keeps it; ``linear`` (SGD,
            Goyal et al. 2017) multiplies it by global / `lr_base_batch_size`;
            ``sqrt`` (Adam-like) by the square root of that.
        lr_base_batch_size: the global batch the configured LR was tuned for (the
            study: 0.007 for 8 crops).
        eval_output_stride: output stride for validate / test / predict (the DeepLabv3
            protocol: train at 16, evaluate at 8 with the ASPP rates doubled); None keeps
            the trained stride. Training always runs at the net's own stride.
        Hardware switches (SyncBatchNorm, channels_last, compile, fused optimizer,
        gradient checkpointing) are not the task's: see `aspp_seg.training.callbacks.FastPaths`.
        inference: how validate / test / predict compute logits: ``whole`` image or
            ``slide`` (sliding window); see `aspp_seg.evaluation.inference.Inference`.
        window: (height, width) of a sliding window.
        stride: (vertical, horizontal) window step; None: 2/3 of the window.
        scales: image scales whose logits are averaged (multi-scale inference).
        flip: also average the logits of the horizontally flipped image.
        window_batch: windows per forward pass in ``slide`` mode (bounds memory).
        predict_dir: where ``aspp-seg predict`` writes its PNGs; None:
            ``<run folder>/predictions``.
    """

    def __init__(
        self,
        net: nn.Module,
        *,
        num_classes: int = 19,
        class_names: Sequence[str] = CITYSCAPES_CLASSES,
        loss: nn.Module | None = None,
        optimizer: OptimizerFactory = study_sgd,
        param_groups: dict[str, dict[str, float]] | None = None,
        norm_bias_weight_decay: bool = True,
        scheduler: SchedulerFactory = poly_schedule,
        aux_weight: float = 0.4,
        lr_scaling: str = "none",
        lr_base_batch_size: int = 8,
        eval_output_stride: int | None = None,
        inference: str = "whole",
        window: tuple[int, int] = (512, 1024),
        stride: tuple[int, int] | None = None,
        scales: Sequence[float] = (1.0,),
        flip: bool = False,
        window_batch: int = 4,
        predict_dir: str | None = None,
    ) -> None:
        super().__init__()
        # How to run inference, and on which hardware, is not a property of the trained
        # weights: left out of the checkpoint's hyperparameters, which LightningCLI would
        # otherwise apply over the command line when given --ckpt_path (so
        # `--model.inference slide` or `--model.eval_output_stride 8` would be lost).
        self.save_hyperparameters(ignore=["net", "loss", *INFERENCE_SETTINGS])
        self.eval_output_stride = eval_output_stride
        self.predict_dir = predict_dir
        if getattr(net, "num_classes", num_classes) != num_classes:
            net.reset_classifier(num_classes)
        if eval_output_stride is not None:
            models.check_eval_output_stride(net, eval_output_stride)
        if lr_scaling not in scaling.LR_RULES:
            raise ConfigError(
                f"model.lr_scaling={lr_scaling!r} is not a rule; allowed: {scaling.LR_RULES}"
            )
        if lr_base_batch_size < 1:
            raise ConfigError(f"model.lr_base_batch_size={lr_base_batch_size} must be >= 1")
        check_param_groups(net, param_groups)
        self.net = net
        self.loss = CrossEntropyLoss() if loss is None else loss
        self.class_names = list(class_names)
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.val_confusion = confusion_matrix_metric(num_classes)
        self.test_confusion = confusion_matrix_metric(num_classes)
        self.last_result: dict | None = None
        self.inference = Inference(
            mode=inference,
            window=window,
            stride=stride,
            scales=scales,
            flip=flip,
            batch_size=window_batch,
        )
        self._schedule_steps: int | None = None  # the total the scheduler was built for
        self._restored_schedule: dict | None = None  # {"steps": m, "step": i} of a checkpoint

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """B x 3 x H x W images -> B x num_classes x H x W logits.

        Images are RGB 0-255, uint8 (as the data modules yield them) or float: the net
        normalises them itself (`aspp_seg.models.preprocess`), so batches stay uint8
        through the loader workers and the host-to-device copy (1 byte per value).
        """
        return self.net(images)["out"]

    def _eval_stride(self, evaluating: bool) -> None:
        """Switches the net to ``eval_output_stride`` for evaluation, and back for training."""
        stride = self.eval_output_stride
        if stride is not None:
            trained = self.net.base_output_stride
            models.set_output_stride(self.net, stride if evaluating else trained)

    def on_validation_model_eval(self) -> None:
        super().on_validation_model_eval()
        self._eval_stride(True)

    def on_validation_model_train(self) -> None:
        self._eval_stride(False)
        super().on_validation_model_train()

    def on_test_model_eval(self) -> None:
        super().on_test_model_eval()
        self._eval_stride(True)

    def on_test_model_train(self) -> None:
        self._eval_stride(False)
        super().on_test_model_train()

    def on_predict_model_eval(self) -> None:
        super().on_predict_model_eval()
        self._eval_stride(True)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        outputs = self.net(batch["image"])
        masks = batch["mask"].long()  # uint8 from the loader; the loss wants int64
        loss = self.loss(outputs["out"], masks)
        if "aux" in outputs:
            aux = self.loss(outputs["aux"], masks)
            self.log("train/aux_loss", aux)
            loss = loss + self.hparams.aux_weight * aux
        # the LR is logged by Lightning's LearningRateMonitor (every config has one)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def _eval_step(self, batch: dict, confusion: nn.Module) -> None:
        logits = self.inference(self, batch["image"])
        confusion.update(labels_at_size(logits, batch), batch["mask"])

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step(batch, self.val_confusion)

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step(batch, self.test_confusion)

    def predict_step(self, batch: dict, batch_idx: int) -> dict:
        """``{"name": [str], "pred": B x H x W uint8}`` at the files' size: ``size`` (image
        files, which share one size per batch) or ``label_size`` (a data set's split,
        where each image has its own; ``pred`` is then a list of H x W tensors)."""
        logits = self.inference(self, batch["image"])
        if "size" in batch:
            logits = _resize(logits, tuple(batch["size"][0].tolist()))
        elif "label_size" in batch:
            preds = labels_at_size(logits, batch).to(torch.uint8)
            sizes = batch["label_size"].tolist()
            cropped = [p[:h, :w] for p, (h, w) in zip(preds, sizes, strict=True)]
            return {"name": batch["name"], "pred": cropped}
        return {"name": batch["name"], "pred": logits.argmax(1).to(torch.uint8)}

    def configure_callbacks(self) -> list:
        """When predicting without a prediction writer, adds one
        (`aspp_seg.training.callbacks.PredictionWriter`)."""
        from lightning.pytorch.callbacks import BasePredictionWriter

        from aspp_seg.training.callbacks.prediction_writer import PredictionWriter

        trainer = self._trainer
        if trainer is None or trainer.state.fn != TrainerFn.PREDICTING:
            return []
        if any(isinstance(cb, BasePredictionWriter) for cb in trainer.callbacks):
            return []
        folder = self.predict_dir
        if folder is None:
            folder = str(Path(trainer.log_dir or ".") / "predictions")
        return [PredictionWriter(folder, class_names=self.class_names)]

    def _eval_epoch_end(self, stage: str, confusion: nn.Module) -> None:
        counts = confusion.compute()
        confusion.reset()
        result = scores(counts)
        result["confusion"] = counts.cpu()  # C x C, for callbacks (confusion plots)
        self.log(f"{stage}/mIoU", result["miou"], prog_bar=True, sync_dist=False)
        self.log(f"{stage}/pixel_acc", result["pixel_acc"], sync_dist=False)
        for name, value in zip(self.class_names, result["iou"], strict=True):
            if value == value:  # classes without pixels have no IoU
                self.log(f"{stage}/IoU/{name}", float(value), sync_dist=False)
        if self.trainer.sanity_checking:
            return
        self.last_result = result  # files: `aspp_seg.training.callbacks.ResultFiles`
        if self.trainer.state.fn != TrainerFn.FITTING:
            self.print_table(stage)

    def print_table(self, stage: str) -> None:
        """Prints the last per-class IoU table (rank zero only)."""
        if self.last_result is None or not self.trainer.is_global_zero:
            return
        table = iou_markdown(self.last_result["iou"], self.last_result["miou"], self.class_names)
        text = f"\n{stage} per-class IoU (%):\n{table}"
        if self.trainer.state.fn == TrainerFn.FITTING:
            # at the end of fit the progress bars are closed, and Lightning's self.print
            # writes through a progress bar only: it would drop the table
            print(text, flush=True)
        else:
            self.print(text)

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end("val", self.val_confusion)

    def on_test_epoch_end(self) -> None:
        self._eval_epoch_end("test", self.test_confusion)

    def on_fit_end(self) -> None:
        self.print_table("val")

    def configure_optimizers(self) -> dict:
        groups = build_param_groups(
            self,
            self.net,
            self.hparams.param_groups,
            norm_bias_weight_decay=self.hparams.norm_bias_weight_decay,
        )
        optimizer = self.optimizer_factory(groups)
        apply_lr_mults(optimizer)
        if self.hparams.lr_scaling != "none":
            self._scale_lr(optimizer)
        total = int(self.trainer.estimated_stepping_batches)
        self._check_run_length(total)
        self._schedule_steps = total
        scheduler = self.scheduler_factory(optimizer, total)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }

    # --- the schedule follows the run's length across resumes ---

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        if self._schedule_steps is not None:
            checkpoint.setdefault(CHECKPOINT_KEY, {})["schedule_steps"] = self._schedule_steps

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        steps = (checkpoint.get(CHECKPOINT_KEY) or {}).get("schedule_steps")
        if steps is None:  # checkpoints of older versions: the scheduler's own total
            states = checkpoint.get("lr_schedulers") or [{}]
            steps = states[0].get("total_iters")
        self._restored_schedule = {
            "steps": None if steps is None else int(steps),
            "step": int(checkpoint.get("global_step", 0)),
        }

    def _check_run_length(self, total: int) -> None:
        """A resumed run may be extended, not cut below the step it already reached."""
        restored = self._restored_schedule
        if restored is not None and total < restored["step"]:
            raise ConfigError(
                f"the checkpoint has trained {restored['step']} steps, more than the "
                f"{total} that trainer.max_epochs={self.trainer.max_epochs} / "
                f"trainer.max_steps={self.trainer.max_steps} give; set a longer run"
            )

    def on_train_start(self) -> None:
        """Rebuilds the restored LR schedule when the run's length changed on resume."""
        restored, total = self._restored_schedule, self._schedule_steps
        if restored is None or restored["steps"] in (None, total):
            return
        for config in self.trainer.lr_scheduler_configs:
            config.scheduler = retarget(config.scheduler, self.scheduler_factory, total)
        rank_zero_info(f"aspp-seg: LR schedule: {restored['steps']} -> {total} steps")

    def global_batch_size(self) -> int:
        """Crops per optimizer step over all processes: per-device batch x processes x
        gradient accumulation.

        Raises:
            ConfigError: when the training data comes without a data module that has a
                ``batch_size``.
        """
        datamodule = getattr(self.trainer, "datamodule", None)
        batch_size = getattr(datamodule, "batch_size", None)
        if not isinstance(batch_size, int):
            raise ConfigError(
                "model.lr_scaling needs the batch size, but the training data has no data "
                "module with a batch_size; set model.lr_scaling: none"
            )
        return batch_size * self.trainer.world_size * self.trainer.accumulate_grad_batches

    def _scale_lr(self, optimizer: Optimizer) -> None:
        """Every param group's LR scaled from `lr_base_batch_size` to the global batch."""
        rule, base = self.hparams.lr_scaling, self.hparams.lr_base_batch_size
        batch = self.global_batch_size()
        for group in optimizer.param_groups:
            group["lr"] = scaling.scaled_lr(
                group["lr"], global_batch_size=batch, base_batch_size=base, rule=rule
            )
        rank_zero_info(
            f"aspp-seg: LR {optimizer.param_groups[0]['lr']:.4g} ({rule} rule: the "
            f"configured LR for {base} crops, scaled to a global batch of {batch})"
        )
