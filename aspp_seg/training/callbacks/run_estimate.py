"""`RunEstimate`: one line saying how long the rest of a fit will take, once it is measured.

After a few warm-up steps (compilation, allocator and data-loader start-up) the callback
times the optimizer steps by the wall clock between training-batch ends, and prints (one
line)

    aspp-seg: about 45 min to go: 4,380 steps at 0.61 s (steps 5-20, 32-true) + 9 validations,
    not timed yet

and, once the first validation of the fit has run, the same with its time counted:

    aspp-seg: about 47 min to go: 4,364 steps at 0.61 s (steps 5-36, 32-true) + 9 validations
    at 14 s

The steps left come from ``trainer.estimated_stepping_batches`` (``max_steps`` or
``max_epochs``, whichever ends the run first, gradient accumulation and the batches of
one process counted) less the step reached, so a resumed run counts from its checkpoint's
step; the validations left follow ``val_check_interval`` / ``check_val_every_n_epoch``
(`validations_left`). A validation is timed from its start to the next training batch, so
the checkpoint it writes counts with it, and its time is left out of the step time. The
precision named is the trainer's (`aspp_seg.training.precision`: float32 on a CPU without
native bf16, which trains about 1.6x slower per step than one with it); ``max_time``,
when it ends the run first, is said too.

Cheap on every device: one ``time.perf_counter()`` per optimizer step and two per
validation, no synchronisation (on a GPU the wall time between batch ends over many steps
is the step time, as Lightning queues no more than a few steps ahead). Printed once by
rank zero (``rank_zero_info``); a run of fewer than `WARMUP` + `MIN_MEASURED` steps gets
no line.

``aspp-seg fit`` adds it to every run; in plain Python list it in
``Trainer(callbacks=[RunEstimate()])``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.accelerators import CPUAccelerator
from lightning.pytorch.callbacks import Timer
from lightning.pytorch.utilities import rank_zero_info

from aspp_seg.training.precision import native_bf16

WARMUP = 5
"""Optimizer steps of this process left untimed: the first ones compile, allocate and
start the data loader's workers."""
MIN_MEASURED = 5
"""Steps timed at least before a line is printed."""
MAX_MEASURED = 15
"""Steps after which the line is printed at the latest (steps 5-20 of a fresh run)..."""
MAX_SECONDS = 30.0
"""... or seconds of timed steps, whichever comes first (slow steps)."""


def validations_left(
    *,
    done: int,
    end: int,
    batches_per_epoch: int,
    val_check_batch: int,
    every_n_epochs: int | None,
) -> int:
    """The validations Lightning runs after training batch `done` up to batch `end`.

    Positions count training batches over the whole run (epoch x `batches_per_epoch` +
    batch in the epoch, 1-based): a validation at position p runs after batch p.

    Args:
        done: batches whose validation, if any, has run.
        end: the batch the run ends after.
        batches_per_epoch: ``trainer.num_training_batches``.
        val_check_batch: ``trainer.val_check_batch``: validate every that many batches,
            of the epoch (`every_n_epochs` set) or of the run (None).
        every_n_epochs: ``trainer.check_val_every_n_epoch``: only epochs e with
            (e + 1) % n == 0 validate.
    """
    if end <= done:
        return 0
    if every_n_epochs is None:
        return end // val_check_batch - done // val_check_batch
    count = 0
    per_epoch = batches_per_epoch // val_check_batch
    for epoch in range(done // batches_per_epoch, math.ceil(end / batches_per_epoch)):
        if (epoch + 1) % every_n_epochs:
            continue
        start = epoch * batches_per_epoch
        count += sum(done < start + k * val_check_batch <= end for k in range(1, per_epoch + 1))
    return count


def run_batches(*, steps: int, batches_per_epoch: int, accumulate: int) -> int:
    """The training batches a run of `steps` optimizer steps ends after (Lightning steps at
    every `accumulate`-th batch and at the last batch of an epoch)."""
    steps_per_epoch = math.ceil(batches_per_epoch / accumulate)
    epochs, rest = divmod(steps, steps_per_epoch)
    return epochs * batches_per_epoch + min(rest * accumulate, batches_per_epoch)


def duration(seconds: float) -> str:
    """``40 s``, ``47 min``, ``3.2 h``."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def step_time(seconds: float) -> str:
    """``45 ms``, ``0.61 s``, ``14 s``."""
    if seconds < 0.1:
        return f"{seconds * 1000:.0f} ms"
    return f"{seconds:.2f} s" if seconds < 10 else f"{seconds:.0f} s"


def estimate_line(
    *,
    steps: int,
    step_s: float,
    measured: tuple[int, int],
    precision: str,
    validations: int | None,
    validation_s: float | None,
    time_left: float | None = None,
) -> str:
    """The line `RunEstimate` prints.

    Args:
        steps: optimizer steps left.
        step_s: measured seconds per step.
        measured: the first and last global step of the measurement.
        precision: the trainer's, with why when it matters (``32-true, no native bf16``).
        validations: validations left (None: unknown, e.g. a data set without length).
        validation_s: the measured seconds of one validation (None: none has run yet).
        time_left: seconds until ``max_time`` ends the run (None: no max_time).
    """
    total = steps * step_s
    first, last = measured
    text = f"{steps:,} steps at {step_time(step_s)} (steps {first}-{last}, {precision})"
    if validations:
        text += f" + {validations:,} validation{'s' * (validations > 1)}"
    if validations and validation_s is not None:
        total += validations * validation_s
        text += f" at {step_time(validation_s)}"
    elif validations:
        text += ", not timed yet"
    line = f"aspp-seg: about {duration(total)} to go: {text}"
    if time_left is not None and time_left < total:
        line += f"; trainer.max_time ends it in about {duration(max(time_left, 0.0))}"
    return line


class RunEstimate(Callback):
    """Prints, on rank zero, how long the rest of the fit will take: once the step time is
    measured and again when the first validation has been timed.

    Args:
        clock: seconds as a float, for tests; ``time.perf_counter`` by default.
    """

    def __init__(self, *, clock: Callable[[], float] = time.perf_counter) -> None:
        super().__init__()
        self._clock = clock
        self._reset(0)

    def _reset(self, step: int) -> None:
        self._first = step  # the global step this process started at (a resume's)
        self._mark: float | None = None  # the clock at the last timed step
        self._marked_step = step
        self._start_step: int | None = None  # the first step of the measurement
        self._seconds = 0.0  # timed since _start_step, validations left out
        self._validation_from: float | None = None
        self._validation_s: float | None = None
        self._said: set[str] = set()  # "steps", "validation"

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._reset(trainer.global_step)

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        step = trainer.global_step
        if step == self._marked_step:
            return  # accumulating gradients: no optimizer step at this batch
        if step - self._first < WARMUP:
            self._marked_step = step
            return
        now = self._clock()
        if self._start_step is None:
            self._start_step = step
        else:
            self._seconds += now - self._mark
        self._mark, self._marked_step = now, step
        if "steps" not in self._said and self._measured(trainer):
            self._say(trainer, batch_idx)

    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.sanity_checking:
            self._validation_from = self._clock()

    def on_train_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self._validation_from is None:
            return
        # the validation, its checkpoint and the next epoch's first batch: not step time
        now = self._clock()
        spent, self._validation_from = now - self._validation_from, None
        if self._mark is not None:
            self._mark += spent
        if self._validation_s is None:
            self._validation_s = spent
            if "steps" in self._said and "validation" not in self._said:
                self._say(trainer, batch_idx)

    def _measured(self, trainer: Trainer) -> bool:
        """Whether enough steps are timed: `MAX_MEASURED` steps or `MAX_SECONDS`, or half
        of the run, after `MIN_MEASURED` steps at least."""
        count = self._marked_step - self._start_step
        if count < MIN_MEASURED:
            return False
        total = trainer.estimated_stepping_batches
        half = 2 * (self._marked_step - self._first) >= total - self._first
        return count >= MAX_MEASURED or self._seconds >= MAX_SECONDS or half

    def _say(self, trainer: Trainer, batch_idx: int) -> None:
        total = trainer.estimated_stepping_batches
        steps = total - trainer.global_step
        if math.isinf(total) or steps <= 0:  # no end (max_time, a signal), or at it
            self._said.update(("steps", "validation"))
            return
        step_s = self._seconds / (self._marked_step - self._start_step)
        validations = self._validations_left(trainer, int(total), batch_idx, steps * step_s)
        self._said.add("steps")
        if validations == 0 or self._validation_s is not None:
            self._said.add("validation")
        rank_zero_info(
            estimate_line(
                steps=int(steps),
                step_s=step_s,
                measured=(self._start_step, self._marked_step),
                precision=_precision(trainer),
                validations=validations,
                validation_s=self._validation_s,
                time_left=_time_left(trainer),
            )
        )

    @staticmethod
    def _validations_left(trainer: Trainer, total: int, batch_idx: int, train_s: float):
        """Validations still to come in this fit (None: unknown); the one after the
        current batch (`batch_idx`) counts."""
        if not trainer.enable_validation:
            return 0
        interval = getattr(trainer, "_val_check_time_interval", None)
        if interval:  # val_check_interval as a time: one every so many seconds
            return int(train_s // interval)
        batches = trainer.num_training_batches
        if math.isinf(batches) or not trainer.val_check_batch:
            return None
        batches = int(batches)
        return validations_left(
            done=trainer.current_epoch * batches + batch_idx,
            end=run_batches(
                steps=total, batches_per_epoch=batches, accumulate=trainer.accumulate_grad_batches
            ),
            batches_per_epoch=batches,
            val_check_batch=int(trainer.val_check_batch),
            every_n_epochs=trainer.check_val_every_n_epoch,
        )


def _precision(trainer: Trainer) -> str:
    """The trainer's precision; on a CPU training float32 without native bf16, says so."""
    precision = str(trainer.precision)
    cpu = isinstance(trainer.accelerator, CPUAccelerator)
    if cpu and precision == "32-true" and not native_bf16():
        precision += ", no native bf16"
    return precision


def _time_left(trainer: Trainer) -> float | None:
    for callback in trainer.callbacks:
        if isinstance(callback, Timer):
            return callback.time_remaining()
    return None
