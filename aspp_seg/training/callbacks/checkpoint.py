"""`ModelCheckpoint` whose ``last.ckpt`` is always the newest state."""

from __future__ import annotations

from lightning.pytorch import LightningModule, Trainer, callbacks


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
