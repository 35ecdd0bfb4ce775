"""Writes the per-class IoU tables of every validation and test into the run folder."""

from __future__ import annotations

from pathlib import Path

from lightning.pytorch import Callback, LightningModule, Trainer

from aspp_seg.evaluation.reports import save_boundary_results, save_results


class ResultFiles(Callback):
    """Writes the last evaluation's tables into the run folder, after every validation and
    test: ``<stage>_iou.md`` / ``.csv`` (per-class IoU), ``<stage>_iou_confusion.npy`` and
    ``.png`` (`aspp_seg.evaluation.reports.save_results`), and the boundary metrics:
    ``<stage>_boundary_iou.md`` / ``.csv``, ``<stage>_trimap_iou.md`` / ``.csv`` and their
    counts (`aspp_seg.evaluation.reports.save_boundary_results`). ``aspp-seg`` adds it to
    every run."""

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
        save_boundary_results(Path(log_dir), stage, result, names)
