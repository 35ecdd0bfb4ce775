"""`ScheduleRetarget`: the LR schedule follows the run's length, also across resumes.

A schedule such as poly decay is built for the run's total of optimizer steps m. A
checkpoint restores the scheduler of the run that wrote it, with that run's m; a run
continued for longer (DL-1 -> DL-1*: 40 -> 150 epochs, or a larger ``max_steps``) would
then train on at LR 0 past the old end. This callback records m in every checkpoint
and, when a resumed run has another length, rebuilds the restored schedule for the new
total at the step already reached (`aspp_seg.training.schedules.retarget`, with the
module's ``scheduler_factory``); one line says so. A run cut below the step its
checkpoint reached is refused before training.

``aspp-seg fit`` adds it to every run; in plain Python list it in
``Trainer(callbacks=[ScheduleRetarget()])``.
"""

from __future__ import annotations

from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_info

from aspp_seg.errors import ConfigError
from aspp_seg.evaluation.checkpoints import CHECKPOINT_KEY
from aspp_seg.training.schedules import retarget


class ScheduleRetarget(Callback):
    """Rebuilds a resumed run's LR schedule for the run's own length."""

    def __init__(self) -> None:
        super().__init__()
        self._steps: int | None = None  # the total this run's schedule is built for
        self._restored: tuple[int, int | None] | None = None  # a checkpoint's step, total

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage == "fit":  # before Lightning restores a checkpoint
            self._restored = None

    def on_save_checkpoint(
        self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        # under aspp-seg's own key, where aspp-seg 0.2 kept it too (not as this callback's
        # state: Lightning would then ask for the callback in every validate / predict)
        if self._steps is not None:
            checkpoint.setdefault(CHECKPOINT_KEY, {})["schedule_steps"] = self._steps

    def on_load_checkpoint(
        self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        steps = (checkpoint.get(CHECKPOINT_KEY) or {}).get("schedule_steps")
        if steps is None:  # a checkpoint without it: the scheduler's own total (poly's)
            steps = ((checkpoint.get("lr_schedulers") or [{}])[0]).get("total_iters")
        step = int(checkpoint.get("global_step", 0))
        self._restored = (step, None if steps is None else int(steps))

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Records the run's total; a resumed run may be extended, not cut below the step
        it already reached (checked before Lightning restores the training state)."""
        self._steps = total = int(trainer.estimated_stepping_batches)
        if self._restored is not None and total < self._restored[0]:
            raise ConfigError(
                f"the checkpoint has trained {self._restored[0]} steps, more than the "
                f"{total} that trainer.max_epochs={trainer.max_epochs} / "
                f"trainer.max_steps={trainer.max_steps} give; set a longer run"
            )

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Rebuilds the restored schedule when the run's length changed on resume."""
        old, total = self._restored[1] if self._restored else None, self._steps
        if old is None or total is None or old == total:
            return
        factory = getattr(pl_module, "scheduler_factory", None)
        if factory is None:
            raise ConfigError(
                f"the checkpoint's LR schedule is for {old} steps and this run has {total}; "
                f"rebuilding it needs a scheduler_factory, which {type(pl_module).__name__} "
                "lacks: resume with the checkpoint's run length"
            )
        for config in trainer.lr_scheduler_configs:
            config.scheduler = retarget(config.scheduler, factory, total)
        rank_zero_info(f"aspp-seg: LR schedule: {old} -> {total} steps")
