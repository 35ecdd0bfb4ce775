"""Per-image counts of a test pass, for the bootstraps over val images
(`experiments.stats.paired_bootstrap`, `experiments.stats.hierarchical_bootstrap`).

`PerImageCounts` is a Lightning callback for ``trainer.test``: it puts recording copies
of the module's test metrics in place (the confusion matrix and the boundary metrics,
`aspp_seg.evaluation.boundary.BoundaryScores`), so that the pass scores exactly as
always (the same predictions at each label's size, the same counts summed) and each
image's counts are kept too, with its name: C x C confusion, C x 2 Boundary IoU
(intersection, union) and W x C x C trimap confusion.
"""

from __future__ import annotations

import numpy as np
import torch
from lightning.pytorch import Callback, LightningModule, Trainer

from aspp_seg.evaluation.boundary import BoundaryScores
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


class _RecordingBoundary(BoundaryScores):
    """`BoundaryScores` (with `metric`'s settings) that also appends each batch's
    per-image counts (B x C x 2 and B x W x C x C, CPU) to `into`."""

    def __init__(self, metric: BoundaryScores, into: list) -> None:
        super().__init__(
            metric.num_classes, distance=metric.distance, trimap_widths=metric.trimap_widths
        )
        self.into = into

    def add(self, boundary: torch.Tensor, trimap: torch.Tensor) -> None:
        super().add(boundary, trimap)
        self.into.append((boundary.cpu(), trimap.cpu()))


class PerImageCounts(Callback):
    """Records each test image's counts and name (the last test pass only).

    After ``trainer.test``: `counts()` is N x C x C int64 (rows: truth, columns:
    prediction; summed over N it is the pass's confusion matrix), `boundary()` N x C x 2
    (Boundary IoU's intersection and union), `trimap()` N x W x C x C (the confusion
    within each of `trimap_widths` px of a truth boundary), and `names` the N image
    names, in the loader's order (one device: the order of the split).
    """

    def __init__(self) -> None:
        self._counts: list[torch.Tensor] = []
        self._boundary: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.names: list[str] = []
        self.trimap_widths: tuple[int, ...] = ()

    def on_test_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._counts, self._boundary, self.names = [], [], []
        metric = pl_module.test_confusion
        pl_module.test_confusion = _Recording(metric.num_classes, self._counts).to(metric.device)
        boundary = pl_module.test_boundary
        self.trimap_widths = boundary.trimap_widths
        pl_module.test_boundary = _RecordingBoundary(boundary, self._boundary).to(boundary.device)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        self.names += [str(name) for name in batch["name"]]

    def counts(self) -> np.ndarray:
        if not self._counts:
            return np.zeros((0, 0, 0), dtype=np.int64)
        return torch.stack(self._counts).numpy().astype(np.int64)

    def boundary(self) -> np.ndarray:
        """N x C x 2 int64: each image's Boundary IoU intersection and union."""
        if not self._boundary:
            return np.zeros((0, 0, 2), dtype=np.int64)
        return torch.cat([b for b, _ in self._boundary]).numpy().astype(np.int64)

    def trimap(self) -> np.ndarray:
        """N x W x C x C int64: each image's confusion within each trimap band."""
        if not self._boundary:
            return np.zeros((0, len(self.trimap_widths), 0, 0), dtype=np.int64)
        return torch.cat([t for _, t in self._boundary]).numpy().astype(np.int64)
