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

from aspp_seg.errors import ConfigError
from aspp_seg.evaluation.boundary import BoundaryScores, summarize
from aspp_seg.evaluation.checkpoints import read_checkpoint
from aspp_seg.evaluation.confusion import confusion_matrix_metric
from aspp_seg.evaluation.inference import Inference
from aspp_seg.evaluation.metrics import scores
from aspp_seg.evaluation.reports import IoURow, iou_markdown, iou_table
from aspp_seg.models.weights import load_net_weights, read_state_dict
from aspp_seg.training.losses import CrossEntropyLoss
from aspp_seg.training.param_groups import apply_lr_mults, build_param_groups, check_param_groups
from aspp_seg.training.schedules import SchedulerFactory

OptimizerFactory = Callable[[Iterable[nn.Parameter]], Optimizer]

INIT_WEIGHTS = "--model.init_weights"
"""The setting that starts a whole net from a file (`load_init_weights`), named in errors."""


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

    The task and nothing else: network, loss, optimizer and schedule, how to infer, and
    metrics. The run around it is callbacks (`aspp_seg.training.callbacks`), which
    ``aspp-seg`` adds to every run and plain Python lists in ``Trainer(callbacks=...)``:
    `ScheduleRetarget` (the LR schedule follows a run extended on resume), `LRScaling`
    (the LR follows the global batch), `FastPaths` (SyncBatchNorm, channels_last,
    compile, fused optimizer, gradient checkpointing) and `PredictionWriter` (the files
    of ``aspp-seg predict``).

    Args:
        net: the network (e.g. from `aspp_seg.models.deeplabv3`); its classifier is
            resized to `num_classes` if the two differ.
        num_classes: classes of the data set (linked from ``data.num_classes``); None:
            as many as `class_names`, else the net's own.
        class_names: names for logs and tables (linked from ``data.class_names``);
            None: the class indices.
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
        inference: how validate / test / predict compute logits
            (`aspp_seg.evaluation.inference.Inference`: whole image or sliding window,
            scales, flip, and the output stride to evaluate at); None: one whole-image
            pass at the trained stride. Training always runs at the net's own stride.
        init_weights: a file to start the whole net from (`load_init_weights`): an
            aspp-seg checkpoint (``.ckpt``), a torchvision DeepLabV3 state dict or our
            net's (``.pth``, ``.safetensors``); classifiers for another class count start
            fresh. Unlike ``--ckpt_path`` (which resumes a run: optimizer, schedule,
            step), a new run starts from these weights.
    """

    def __init__(
        self,
        net: nn.Module,
        *,
        num_classes: int | None = None,
        class_names: Sequence[str] | None = None,
        loss: nn.Module | None = None,
        optimizer: OptimizerFactory = study_sgd,
        param_groups: dict[str, dict[str, float]] | None = None,
        norm_bias_weight_decay: bool = True,
        scheduler: SchedulerFactory = poly_schedule,
        aux_weight: float = 0.4,
        inference: Inference | None = None,
        init_weights: str | None = None,
    ) -> None:
        super().__init__()
        # How to run inference is not a property of the trained weights: left out of the
        # checkpoint's hyperparameters, which LightningCLI would otherwise apply over the
        # command line when given --ckpt_path (so `--model.inference.init_args.mode slide` or
        # `--model.inference.init_args.output_stride 8` would be lost). Nor is the file the
        # weights started from: a checkpoint holds the weights themselves.
        self.save_hyperparameters(ignore=["net", "loss", "inference", "init_weights"])
        num_classes = num_classes if num_classes is not None else _classes_of(net, class_names)
        if class_names is not None and len(class_names) != num_classes:
            raise ConfigError(
                f"model.class_names holds {len(class_names)} names for {num_classes} classes"
            )
        if getattr(net, "num_classes", num_classes) != num_classes:
            net.reset_classifier(num_classes)
        if init_weights is not None:  # read and checked before any data are built
            load_init_weights(net, init_weights)
        self.inference = Inference() if inference is None else inference
        self.inference.check(net)
        check_param_groups(net, param_groups)
        self.net = net
        self.loss = CrossEntropyLoss() if loss is None else loss
        self.class_names = [str(n) for n in class_names or range(num_classes)]
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.val_confusion = confusion_matrix_metric(num_classes)
        self.test_confusion = confusion_matrix_metric(num_classes)
        # Boundary IoU (d = 2% of the diagonal) and the trimap at 2-16 px, from the same
        # predictions: about 8 ms per 360 x 480 image on one CPU thread, a few percent
        # of a validation pass, so always on
        self.val_boundary = BoundaryScores(num_classes)
        self.test_boundary = BoundaryScores(num_classes)
        self.last_result: dict | None = None

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """B x 3 x H x W images -> B x num_classes x H x W logits.

        Images are RGB 0-255, uint8 (as the data modules yield them) or float: the net
        normalises them itself (`aspp_seg.models.preprocess`), so batches stay uint8
        through the loader workers and the host-to-device copy (1 byte per value).
        """
        return self.net(images)["out"]

    def on_validation_model_eval(self) -> None:
        super().on_validation_model_eval()
        self.inference.set_output_stride(self.net, evaluating=True)

    def on_validation_model_train(self) -> None:
        self.inference.set_output_stride(self.net, evaluating=False)
        super().on_validation_model_train()

    def on_test_model_eval(self) -> None:
        super().on_test_model_eval()
        self.inference.set_output_stride(self.net, evaluating=True)

    def on_test_model_train(self) -> None:
        self.inference.set_output_stride(self.net, evaluating=False)
        super().on_test_model_train()

    def on_predict_model_eval(self) -> None:
        super().on_predict_model_eval()
        self.inference.set_output_stride(self.net, evaluating=True)

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

    def _eval_step(
        self, batch: dict, confusion: nn.Module, boundary: BoundaryScores | None = None
    ) -> None:
        logits = self.inference(self, batch["image"])
        preds = labels_at_size(logits, batch)
        confusion.update(preds, batch["mask"])
        if boundary is not None:
            boundary.update(preds, batch["mask"], batch.get("label_size"))

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step(batch, self.val_confusion, self.val_boundary)

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step(batch, self.test_confusion, self.test_boundary)

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

    def _eval_epoch_end(self, stage: str, confusion: nn.Module, boundary: BoundaryScores) -> None:
        counts = confusion.compute()
        confusion.reset()
        result = scores(counts)
        result["confusion"] = counts.cpu()  # C x C, for callbacks (confusion plots)
        result.update(boundary_result(boundary))
        boundary.reset()
        self.log(f"{stage}/mIoU", result["miou"], prog_bar=True, sync_dist=False)
        self.log(f"{stage}/pixel_acc", result["pixel_acc"], sync_dist=False)
        for name, value in zip(self.class_names, result["iou"], strict=True):
            if value == value:  # classes without pixels have no IoU
                self.log(f"{stage}/IoU/{name}", float(value), sync_dist=False)
        self.log(f"{stage}/bIoU", result["boundary"]["miou"], sync_dist=False)
        trimap = result["trimap"]
        for width, value in zip(trimap["widths"], trimap["miou"], strict=True):
            self.log(f"{stage}/trimap_mIoU/{width}px", value, sync_dist=False)
        if self.trainer.sanity_checking:
            return
        self.last_result = result  # files: `aspp_seg.training.callbacks.ResultFiles`
        if self.trainer.state.fn != TrainerFn.FITTING:
            self.print_table(stage)

    def print_table(self, stage: str) -> None:
        """Prints the last per-class IoU table (rank zero only)."""
        if self.last_result is None or not self.trainer.is_global_zero:
            return
        result = self.last_result
        table = iou_markdown(result["iou"], result["miou"], self.class_names)
        text = f"\n{stage} per-class IoU (%):\n{table}"
        if "boundary" in result:
            rows = [IoURow([*result["boundary"]["iou"], result["boundary"]["miou"]])]
            table = iou_table(rows, self.class_names)
            text += f"\n{stage} per-class Boundary IoU (%, d = {result['boundary']['d']}):\n{table}"
        if self.trainer.state.fn == TrainerFn.FITTING:
            # at the end of fit the progress bars are closed, and Lightning's self.print
            # writes through a progress bar only: it would drop the table
            print(text, flush=True)
        else:
            self.print(text)

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end("val", self.val_confusion, self.val_boundary)

    def on_test_epoch_end(self) -> None:
        self._eval_epoch_end("test", self.test_confusion, self.test_boundary)

    def on_fit_end(self) -> None:
        self.print_table("val")

    def configure_optimizers(self) -> dict:
        """The optimizer over the parameter groups, each group's LR times its
        ``lr_mult``, and the schedule over the run's optimizer steps, stepped per step.

        Callbacks act on what this returns once it exists: `LRScaling` scales the LR
        (and rebuilds the schedule on it, with `scheduler_factory`), `ScheduleRetarget`
        rebuilds the schedule when a resumed run has another length, `FastPaths` fuses
        the optimizer's kernels.
        """
        groups = build_param_groups(
            self,
            self.net,
            self.hparams.param_groups,
            norm_bias_weight_decay=self.hparams.norm_bias_weight_decay,
        )
        optimizer = self.optimizer_factory(groups)
        apply_lr_mults(optimizer)
        scheduler = self.scheduler_factory(optimizer, int(self.trainer.estimated_stepping_batches))
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }


def boundary_result(metric: BoundaryScores) -> dict:
    """The boundary entries of an evaluation's result (`aspp_seg.evaluation.boundary.summarize`)
    from the metric's summed counts."""
    counts = metric.compute()
    return summarize(
        counts["boundary"], counts["trimap"], metric.trimap_widths, metric.describe_distance()
    )


def load_init_weights(net: nn.Module, path: str | Path) -> None:
    """Starts `net` from the whole net's weights in `path`, read as data.

    Args:
        net: the network, with the classifier for the classes it will train on.
        path: an aspp-seg checkpoint (``.ckpt``: its ``net.`` tensors, EMA-averaged where
            the run had an EMA), or a state dict (``.pth``, ``.safetensors``) of
            torchvision's DeepLabV3 (`aspp_seg.models.port`) or of our net.

    Raises:
        ConfigError: one line naming the file when it is missing, not a weights file, or
            holds tensors that do not fit `net` (a classifier for another number of
            classes excepted: it starts fresh, which one log line says).
    """
    if Path(path).suffix == ".ckpt":
        state = read_checkpoint(path, setting=INIT_WEIGHTS)["state_dict"]
    else:
        state = read_state_dict(path, setting=INIT_WEIGHTS)
    classes = load_net_weights(net, state, source=f"{INIT_WEIGHTS} {path}")
    if classes is not None:
        rank_zero_info(
            f"aspp-seg: {INIT_WEIGHTS} {path}: the classifier starts fresh for "
            f"{classes[1]} classes (the file has {classes[0]}); every other tensor is the file's"
        )


def _classes_of(net: nn.Module, class_names: Sequence[str] | None) -> int:
    """The number of classes when none is given: the names', else the net's."""
    count = len(class_names) if class_names else getattr(net, "num_classes", None)
    if count is None:
        raise ConfigError(
            f"model.num_classes: {type(net).__name__} does not say its number of classes; "
            "give num_classes (aspp-seg links it from data.num_classes)"
        )
    return int(count)
