"""LR schedules that follow the run's length, also when a run is resumed at another one.

A schedule such as poly decay depends on the run's total number of optimizer steps m.
A checkpoint restores the scheduler of the run that wrote it, with that run's m; a run
continued for longer (DL-1 -> DL-1*: 40 -> 150 epochs, or a larger ``max_steps``)
would then train on at LR 0 past the old end. `retarget` rebuilds the schedule for the
new total and puts it at the step already reached, so poly continues as
base * (1 - i / m_new)^0.9 from step i.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

SchedulerFactory = Callable[[Optimizer, int], LRScheduler]


def fast_forward(scheduler: LRScheduler, step: int) -> None:
    """Puts a freshly built scheduler at `step`: its closed form where it has one (poly,
    linear, cosine, ...), otherwise by stepping it `step` times."""
    closed_form = getattr(scheduler, "_get_closed_form_lr", None)
    if closed_form is not None:
        scheduler.last_epoch = step
        lrs = closed_form()
    else:
        with warnings.catch_warnings():  # "scheduler.step() before optimizer.step()"
            warnings.simplefilter("ignore", UserWarning)
            for _ in range(step):
                scheduler.step()
        lrs = [group["lr"] for group in scheduler.optimizer.param_groups]
    for group, lr in zip(scheduler.optimizer.param_groups, lrs, strict=True):
        group["lr"] = lr
    scheduler._last_lr = list(lrs)


def retarget(scheduler: LRScheduler, factory: SchedulerFactory, total_steps: int) -> LRScheduler:
    """A scheduler built by `factory` for `total_steps`, at the step `scheduler` reached.

    Args:
        scheduler: the restored scheduler (its ``last_epoch`` is the step reached).
        factory: what built it: called as ``factory(optimizer, total_steps)``.
        total_steps: the run's new total of optimizer steps.
    """
    optimizer = scheduler.optimizer
    step = scheduler.last_epoch
    for group in optimizer.param_groups:
        group["lr"] = group["initial_lr"]  # a new scheduler starts from the base LR
    rebuilt = factory(optimizer, total_steps)
    fast_forward(rebuilt, step)
    return rebuilt


class WarmupPolyLR(LRScheduler):
    """Linear warm-up, then poly decay, per optimizer step (Detectron2's WarmupPolyLR).

    At step i of a run of m steps: lr = base * w(i) * (1 - i / m)^power, floored at
    `min_lr`, where w rises linearly from `warmup_factor` to 1 over the first
    `warmup_steps` steps (or `warmup_ratio` of the run) and is 1 after. With no
    warm-up it is torch's PolynomialLR. Its closed form lets `retarget` put a rebuilt
    schedule at any step, so a resumed run of another length keeps both parts right.

    Args:
        optimizer: the optimizer.
        total_steps: m, the run's optimizer steps (the module passes it).
        power: exponent of the decay (0.9 in DeepLab).
        warmup_steps: steps of linear warm-up.
        warmup_ratio: warm-up as a share of the run, used when `warmup_steps` is 0.
        warmup_factor: LR multiplier at step 0 of the warm-up.
        min_lr: floor of the decayed LR (mmsegmentation: 1e-4).
        last_epoch: the step to start from (-1: a new run).
    """

    def __init__(
        self,
        optimizer: Optimizer,
        total_steps: int,
        *,
        power: float = 0.9,
        warmup_steps: int = 0,
        warmup_ratio: float = 0.0,
        warmup_factor: float = 0.001,
        min_lr: float = 0.0,
        last_epoch: int = -1,
    ) -> None:
        from aspp_seg.errors import ConfigError

        if total_steps < 1:
            raise ConfigError(f"the LR schedule needs at least one step, got {total_steps}")
        if warmup_steps < 0 or not 0.0 <= warmup_ratio < 1.0:
            raise ConfigError(
                f"model.scheduler: warmup_steps={warmup_steps} must be >= 0 and "
                f"warmup_ratio={warmup_ratio} in [0, 1)"
            )
        self.total_steps = int(total_steps)
        self.power = power
        self.warmup_steps = int(warmup_steps) or round(warmup_ratio * total_steps)
        self.warmup_factor = warmup_factor
        self.min_lr = min_lr
        super().__init__(optimizer, last_epoch)

    def _factor(self, step: int) -> float:
        decay = (1.0 - min(step, self.total_steps) / self.total_steps) ** self.power
        if step < self.warmup_steps:
            alpha = step / self.warmup_steps
            decay *= self.warmup_factor * (1.0 - alpha) + alpha
        return decay

    def _get_closed_form_lr(self) -> list[float]:
        factor = self._factor(self.last_epoch)
        return [max(self.min_lr, base * factor) for base in self.base_lrs]

    def get_lr(self) -> list[float]:
        return self._get_closed_form_lr()
