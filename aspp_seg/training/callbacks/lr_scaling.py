"""`LRScaling`: the optimizer's LR follows the global batch.

A configured LR belongs to the global batch it was tuned for (the study: 0.007 for 8
crops). Training on more processes, or accumulating gradients, makes the global batch
(per-device batch x processes x accumulation) larger; the LR can follow it by a rule
(`aspp_seg.training.hardware.scaled_lr`). ``aspp-seg`` adds this callback to every run,
set under the config's top-level ``lr_scaling:`` section (``--lr_scaling.rule linear``;
off by default). In plain Python: ``Trainer(callbacks=[LRScaling(rule="linear")])``.

When: at ``on_fit_start``, once the optimizer and its scheduler exist. The schedule is
rebuilt on the scaled LR (with the module's ``scheduler_factory``), since a scheduler
takes its base LRs (``initial_lr``) when it is built and would otherwise decay from the
unscaled one. A resumed run (``fit --ckpt_path``) is left alone: Lightning restores the
optimizer and scheduler after ``on_fit_start``, with the LR the checkpoint's run scaled,
so the LR is never scaled twice.
"""

from __future__ import annotations

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_info

from aspp_seg.errors import ConfigError
from aspp_seg.training import hardware
from aspp_seg.training.schedules import retarget


def global_batch_size(trainer: Trainer) -> int:
    """Crops per optimizer step over all processes: per-device batch x processes x
    gradient accumulation.

    Raises:
        ConfigError: when the training data comes without a data module that has a
            ``batch_size``.
    """
    batch_size = getattr(getattr(trainer, "datamodule", None), "batch_size", None)
    if not isinstance(batch_size, int):
        raise ConfigError(
            "lr_scaling needs the batch size, but the training data has no data module "
            "with a batch_size; set lr_scaling.rule: none"
        )
    return batch_size * trainer.world_size * trainer.accumulate_grad_batches


class LRScaling(Callback):
    """Scales every param group's LR from `base_batch_size` to the run's global batch.

    Args:
        rule: ``none`` keeps the configured LR; ``linear`` (SGD, Goyal et al. 2017)
            multiplies it by global batch / `base_batch_size`; ``sqrt`` (Adam-like) by
            the square root of that.
        base_batch_size: the global batch the configured LR was tuned for.
    """

    def __init__(self, *, rule: str = "none", base_batch_size: int = 8) -> None:
        super().__init__()
        if rule not in hardware.LR_RULES:
            raise ConfigError(
                f"lr_scaling.rule={rule!r} is not a rule; allowed: {hardware.LR_RULES}"
            )
        if base_batch_size < 1:
            raise ConfigError(f"lr_scaling.base_batch_size={base_batch_size} must be >= 1")
        self.rule = rule
        self.base_batch_size = base_batch_size

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.rule == "none":
            return
        batch = global_batch_size(trainer)
        if trainer.ckpt_path is not None:
            rank_zero_info(f"aspp-seg: LR as the checkpoint's run scaled it ({self.rule} rule)")
            return
        factor = hardware.scaled_lr(
            1.0, global_batch_size=batch, base_batch_size=self.base_batch_size, rule=self.rule
        )
        for optimizer in trainer.optimizers:
            for group in optimizer.param_groups:
                group["lr"] *= factor
                if "initial_lr" in group:  # set by its scheduler: the LR it decays from
                    group["initial_lr"] *= factor
        factory = getattr(pl_module, "scheduler_factory", None)
        total = int(trainer.estimated_stepping_batches)
        for config in trainer.lr_scheduler_configs:
            if factory is None:
                raise ConfigError(
                    f"lr_scaling.rule={self.rule!r} rebuilds the LR schedule on the scaled "
                    f"LR, but {type(pl_module).__name__} has no scheduler_factory; set "
                    "lr_scaling.rule: none"
                )
            config.scheduler = retarget(config.scheduler, factory, total)
        first = trainer.optimizers[0].param_groups[0] if trainer.optimizers else {}
        lr = first.get("initial_lr", first.get("lr", float("nan")))
        rank_zero_info(
            f"aspp-seg: LR {lr:.4g} ({self.rule} rule: the configured LR for "
            f"{self.base_batch_size} crops, scaled to a global batch of {batch})"
        )
