"""Per-image confusion counts of a test pass, for the paired bootstrap over val images
(`experiments.stats.paired_bootstrap`).

`PerImageCounts` is a Lightning callback for ``trainer.test``: it puts a recording copy
of the module's test confusion metric in place, so that the pass scores exactly as
always (the same predictions at each label's size, the same counts summed) and each
image's C x C counts are kept too, with its name.
"""

from __future__ import annotations

import numpy as np
import torch
from lightning.pytorch import Callback, LightningModule, Trainer

from aspp_seg.evaluation.confusion import ConfusionMatrix, confusion_matrix


class _Recording(ConfusionMatrix):
    """`ConfusionMatrix` that also appends each image's counts (C x C, CPU) to `into`."""

    def __init__(self, num_classes: int, into: list[torch.Tensor]) -> None:
        super().__init__(num_classes)
        self.into = into

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        super().update(preds, target)
        for pred, truth in zip(preds, target, strict=True):
            self.into.append(confusion_matrix(pred[None], truth[None], self.num_classes).cpu())


class PerImageCounts(Callback):
    """Records each test image's confusion counts and name (the last test pass only).

    After ``trainer.test``: `counts()` is N x C x C int64 (rows: truth, columns:
    prediction; summed over N it is the pass's confusion matrix) and `names` the N image
    names, in the loader's order (one device: the order of the split).
    """

    def __init__(self) -> None:
        self._counts: list[torch.Tensor] = []
        self.names: list[str] = []

    def on_test_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._counts, self.names = [], []
        metric = pl_module.test_confusion
        pl_module.test_confusion = _Recording(metric.num_classes, self._counts).to(metric.device)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        self.names += [str(name) for name in batch["name"]]

    def counts(self) -> np.ndarray:
        if not self._counts:
            return np.zeros((0, 0, 0), dtype=np.int64)
        return torch.stack(self._counts).numpy().astype(np.int64)
