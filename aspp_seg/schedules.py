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
