"""`LoggedStepAlignment`: the logs of a resumed run continue at the checkpoint's step.

``aspp-seg fit`` adds it to every run, first among the callbacks; in plain Python list it
first in ``Trainer(callbacks=[LoggedStepAlignment(), ...])``.
"""

from __future__ import annotations

from lightning.pytorch import Callback


class LoggedStepAlignment(Callback):
    """Logs of a resumed run continue at the step the checkpoint reached.

    Lightning counts the step that loggers see (``_batches_that_stepped``) apart from
    the optimizer's ``global_step`` and adjusts it on restart by a guess about where the
    checkpoint was written; a run that stopped at ``max_steps`` on an epoch boundary and
    is extended then logs every later step one index too high (no row for the first
    resumed step). With one optimizer the two counters are the same number, so at the
    first training batch the logged one is set from the other. The CLI puts this
    callback first, so it runs before LearningRateMonitor logs that batch.
    """

    def __init__(self) -> None:
        self._checked = False

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self._checked:
            return
        self._checked = True
        loop = trainer.fit_loop.epoch_loop
        if pl_module.automatic_optimization and loop._batches_that_stepped != trainer.global_step:
            loop._batches_that_stepped = trainer.global_step
