"""Three training steps of `SegmentationModule` under a Lightning `Trainer` equal three
steps of torchvision's reference recipe (references/segmentation/train.py:
``train_one_epoch`` with its ``criterion``, param groups, SGD and LambdaLR poly
schedule) on torchvision's own ``deeplabv3_resnet50``, ported into ours.

What had to be matched by configuration, not by tolerance:

- dropout (ASPP projection 0.5, aux head 0.1, on both sides): left on, with the same
  masks on both sides. The two nets run their dropout layers in the same order on
  tensors of the same shapes (head, then aux head), so seeding the global RNG to the
  same value before each forward gives both the same masks;
- the input: torchvision's net gets our net's own normalisation of the same uint8
  batch (`normalize_pixels` with our buffers), bit for bit what ours computes inside;
- the run length m: the reference's ``iters_per_epoch * epochs``; here 3 steps, which
  Lightning's ``estimated_stepping_batches`` gives the module's scheduler;
- float64 on both sides (``Trainer(precision="64-true")``, ``theirs.double()``). In
  float32 the two agree to 1e-7 in step 0's loss and step 1's, then part by 1e-3 in
  step 2's, as does the reference loop run on our net: a random-init ResNet-50 with
  training-mode BN on a batch of two 9 x 9 feature maps is ill-conditioned (channels
  with near-zero batch variance amplify rounding differences of the summation order by
  1e5 within a step). That is float32 rounding, not a recipe difference; in float64 the
  same amplification stays far below the 1e-5 asked.

BN momentum (0.1) and eps (1e-5) are the same on both sides already; torch's default
weight decay covers every parameter in both (our ``norm_bias_weight_decay`` true).
"""

from __future__ import annotations

from functools import partial

import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch import Callback, Trainer
from torch import nn
from torch.utils.data import DataLoader, Dataset

from aspp_seg.models import ASPP, deeplabv3
from aspp_seg.models.port import load_torchvision_deeplabv3, torchvision_to_ours
from aspp_seg.models.preprocess import normalize_pixels
from aspp_seg.training.losses import CrossEntropyLoss
from aspp_seg.training.module import SegmentationModule
from aspp_seg.training.schedules import WarmupPolyLR

NUM_CLASSES = 5
STEPS = 3
LR = 0.01


def _seed_for(step: int) -> int:
    return 1000 + step  # the dropout masks of step `step`, on both sides


class _Repeat(Dataset):
    """One ready-made batch, `STEPS` times (the loader does not collate: batch_size=None)."""

    def __init__(self, batch: dict) -> None:
        self.batch = batch

    def __len__(self) -> int:
        return STEPS

    def __getitem__(self, index: int) -> dict:
        return {key: value.clone() for key, value in self.batch.items()}


class _Record(Callback):
    """Seeds the RNG before each step's forward and records each step's loss."""

    def __init__(self) -> None:
        self.losses: list[torch.Tensor] = []
        self.lrs: list[list[float]] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        torch.manual_seed(_seed_for(trainer.global_step))
        self.lrs.append([group["lr"] for group in trainer.optimizers[0].param_groups])

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.losses.append(outputs["loss"].detach().clone())


def _batch() -> dict:
    generator = torch.Generator().manual_seed(0)
    image = torch.randint(0, 256, (2, 3, 65, 65), dtype=torch.uint8, generator=generator)
    mask = torch.randint(0, NUM_CLASSES, (2, 65, 65), dtype=torch.uint8, generator=generator)
    mask[:, :5] = 255  # some ignored pixels, as the reference's targets have
    return {"image": image, "mask": mask}


def _reference_criterion(inputs: dict, target: torch.Tensor) -> torch.Tensor:
    """torchvision's references/segmentation/train.py ``criterion``."""
    losses = {}
    for name, x in inputs.items():
        losses[name] = nn.functional.cross_entropy(x, target, ignore_index=255)
    if len(losses) == 1:
        return losses["out"]
    return losses["out"] + 0.5 * losses["aux"]


def _reference_train(model: nn.Module, image: torch.Tensor, target: torch.Tensor) -> tuple:
    """The reference's optimizer, schedule and ``train_one_epoch`` loop, one epoch of
    `STEPS` iterations over the same batch."""
    params_to_optimize = [
        {"params": [p for p in model.backbone.parameters() if p.requires_grad]},
        {"params": [p for p in model.classifier.parameters() if p.requires_grad]},
    ]
    params = [p for p in model.aux_classifier.parameters() if p.requires_grad]
    params_to_optimize.append({"params": params, "lr": LR * 10})
    optimizer = torch.optim.SGD(params_to_optimize, lr=LR, momentum=0.9, weight_decay=1e-4)
    iters = STEPS  # iters_per_epoch * (epochs - lr_warmup_epochs) = 3 * 1
    lr_scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda x: (1 - x / iters) ** 0.9)
    model.train()
    losses, lrs = [], []
    for step in range(STEPS):
        torch.manual_seed(_seed_for(step))
        lrs.append([group["lr"] for group in optimizer.param_groups])
        output = model(image)
        loss = _reference_criterion(output, target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        lr_scheduler.step()
        losses.append(loss.detach().clone())
    return losses, lrs


def _nets() -> tuple[nn.Module, nn.Module]:
    from torchvision.models.segmentation import deeplabv3_resnet50

    torch.manual_seed(0)
    theirs = deeplabv3_resnet50(
        weights=None, weights_backbone=None, aux_loss=True, num_classes=NUM_CLASSES
    )
    ours = deeplabv3(
        num_classes=NUM_CLASSES,
        backbone="resnet50",
        pretrained=False,
        output_stride=8,
        aspp=partial(ASPP, rates=[12, 24, 36], dropout=0.5),
        head_convs=1,
        aux_head=True,
    )
    load_torchvision_deeplabv3(ours, theirs.state_dict())
    return ours, theirs


def test_three_steps_equal_torchvisions_reference_recipe(tmp_path):
    ours, theirs = _nets()
    dropouts = [m.p for m in ours.modules() if isinstance(m, nn.Dropout)]
    assert dropouts == [m.p for m in theirs.modules() if isinstance(m, nn.Dropout)] == [0.5, 0.1]
    batch = _batch()
    theirs.double()  # ours: by the Trainer's precision
    start = torchvision_to_ours({k: v.clone() for k, v in theirs.state_dict().items()})

    module = SegmentationModule(
        ours,
        num_classes=NUM_CLASSES,
        class_names=[str(i) for i in range(NUM_CLASSES)],
        loss=CrossEntropyLoss(),
        optimizer=lambda groups: torch.optim.SGD(groups, lr=LR, momentum=0.9, weight_decay=1e-4),
        param_groups={"aux_head": {"lr_mult": 10}},
        scheduler=partial(WarmupPolyLR, power=0.9),
        aux_weight=0.5,
    )
    record = _Record()
    trainer = Trainer(
        accelerator="cpu",
        precision="64-true",
        max_steps=STEPS,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=tmp_path,
        callbacks=[record],
    )
    trainer.fit(module, train_dataloaders=DataLoader(_Repeat(batch), batch_size=None))
    assert trainer.global_step == STEPS

    image = normalize_pixels(batch["image"], ours.pixel_mean, ours.pixel_std)
    reference_losses, reference_lrs = _reference_train(theirs, image, batch["mask"].long())

    # ours: [default (backbone + head), aux_head]; the reference: [backbone, classifier, aux]
    ours_lrs = [lr for default, aux in record.lrs for lr in (default, default, aux)]
    assert ours_lrs == pytest.approx([lr for step in reference_lrs for lr in step], rel=1e-12)
    torch.testing.assert_close(
        torch.stack(record.losses), torch.stack(reference_losses), rtol=1e-5, atol=1e-7
    )
    assert len(set(round(float(v), 4) for v in reference_losses)) == STEPS  # it learned
    trained = module.net.state_dict()
    expected = torchvision_to_ours(theirs.state_dict())
    assert set(trained) == set(expected)
    moved = [k for k in expected if not torch.equal(expected[k], start[k])]
    assert any("running_mean" in k for k in moved) and any(".weight" in k for k in moved)
    for key, value in expected.items():  # weights, BN running stats and batch counts
        torch.testing.assert_close(trained[key], value, rtol=1e-5, atol=1e-6, msg=key)


def test_reference_criterion_is_our_loss_with_weight_half():
    """The pieces on their own: our CrossEntropyLoss is torchvision's criterion's term."""
    logits = torch.randn(2, NUM_CLASSES, 7, 9)
    target = torch.randint(0, NUM_CLASSES, (2, 7, 9))
    target[0, 0] = 255
    ours = CrossEntropyLoss()(logits, target)
    torch.testing.assert_close(ours, F.cross_entropy(logits, target, ignore_index=255))
