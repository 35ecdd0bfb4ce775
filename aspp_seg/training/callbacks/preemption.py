"""SIGTERM and SIGUSR1 end a run at the next step, with ``last.ckpt`` written for that step.

SIGTERM is what SLURM sends at preemption and what ``kill`` and ``timeout`` send; SIGUSR1
is what ``#SBATCH --signal=SIGUSR1@90`` sends before a time limit. Lightning 2.6 already
stops its loops at the next step boundary on SIGTERM (its handler sets
``trainer.received_sigterm``; the loop raises `SIGTERMException`, a `SystemExit` whose
status is 0) but writes nothing and leaves SIGUSR1 at its default action (the process
dies). `Preemption`:

- records which signal came, and makes SIGUSR1 stop the run as SIGTERM does, except where
  Lightning's own SLURM auto-requeue handles SIGUSR1 (`SLURMEnvironment` with
  ``auto_requeue``: it writes ``hpc_ckpt_<n>.ckpt`` and requeues the job) or where the
  process already had a handler for it;
- when the loop stops (`on_exception`), writes ``last.ckpt`` for the step reached through
  every `ModelCheckpoint` that keeps one (the file ``--ckpt_path last`` resumes). Not on
  several processes (DDP): Lightning's end-of-step check is per process, so they may stop
  one step apart, and a checkpoint's collectives would then wait for each other forever;
  the line names the newest ``last.ckpt`` instead;
- says in one line where the run stopped and how to go on (the CLI raises `Terminated`,
  exit status 128 + the signal's number: 143 for SIGTERM, 138 for SIGUSR1).

It has no hook in the training step: the check there is Lightning's own read of
``trainer.received_sigterm``. Lightning's predict loop lacks that check; it gets the
same one here (one attribute read a batch).
"""

from __future__ import annotations

import signal
from types import FrameType

from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException

from aspp_seg.errors import Terminated

SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


def lightning_requeues(trainer: Trainer, signum: int) -> bool:
    """Whether Lightning's SLURM auto-requeue handles `signum` in this run (as its
    ``_SignalConnector.register_signal_handlers`` decides)."""
    environment = trainer._accelerator_connector.cluster_environment
    return (
        isinstance(environment, SLURMEnvironment)
        and environment.auto_requeue
        and environment.requeue_signal == signum
    )


class Preemption(Callback):
    """Stops the run at the next step on SIGTERM or SIGUSR1, keeps ``last.ckpt`` for that
    step, and words the line the CLI says (see the module docstring).

    Attributes:
        received: the first of `SIGNALS` that came during the run, else None.
    """

    def __init__(self) -> None:
        self.received: signal.Signals | None = None
        self.saved: tuple[str, int] | None = None  # (last.ckpt, its step) written on the stop
        self._trainer: Trainer | None = None
        self._previous: dict[int, object] = {}

    # --- handlers, for the run only ---

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        # before Lightning registers its own (just before the loop): it keeps ours
        # beside its SIGTERM handler, and installs its SLURM SIGUSR1 handler only
        # where none is set, so ours stays off that signal then
        self._trainer, self.received, self.saved = trainer, None, None
        for signum in SIGNALS:
            current = signal.getsignal(signum)
            if signum == signal.SIGUSR1 and (
                lightning_requeues(trainer, signum) or current not in (signal.SIG_DFL, None)
            ):
                continue
            try:
                signal.signal(signum, self._handle)
            except ValueError:  # not the main thread: Lightning skips its handlers too
                return
            self._previous[signum] = current

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self.restore()

    def restore(self) -> None:
        """Puts back the handlers the process had before the run. Lightning calls no
        ``teardown`` hook when a run stops on an exception: its caller calls this then."""
        for signum, handler in self._previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        self._previous = {}
        self._trainer = None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.received is None:
            self.received = signal.Signals(signum)
        self._stop_at_next_step()
        previous = self._previous.get(signum)
        if callable(previous):  # e.g. a job runner's own handler
            previous(signum, frame)

    def _stop_at_next_step(self) -> None:
        # the flag Lightning's SIGTERM handler sets and its loops read at each step
        # boundary (SIGUSR1 has no Lightning handler outside SLURM's auto-requeue)
        if self._trainer is not None:
            self._trainer._signal_connector.received_sigterm = True

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.received is not None:  # came before Lightning set its flag up (it resets it)
            self._stop_at_next_step()

    on_validation_start = on_test_start = on_predict_start = on_train_start

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, *_) -> None:
        # Lightning's predict loop does not stop on the flag (its fit, validate and test
        # loops do): the same rule here, the last batch finishes the command
        if trainer.received_sigterm and not trainer.predict_loop.batch_progress.is_last_batch:
            raise SIGTERMException

    # --- the stop ---

    def on_exception(
        self, trainer: Trainer, pl_module: LightningModule, exception: BaseException
    ) -> None:
        if not isinstance(exception, SIGTERMException):
            return
        if self.received is None:
            self.received = signal.SIGTERM  # Lightning's handler alone saw it
        if trainer.state.fn != "fit" or trainer.sanity_checking or trainer.fast_dev_run:
            return
        if trainer.world_size > 1:
            # the processes may stop at different steps (Lightning's end-of-step check is
            # per process): a checkpoint's collectives would then wait for each other
            # forever. The newest checkpoint stays the one to resume from.
            return
        for callback in trainer.checkpoint_callbacks:
            if not isinstance(callback, ModelCheckpoint) or not callback.save_last:
                continue
            current = (  # last.ckpt was the file written at this very step
                callback._last_global_step_saved == trainer.global_step
                and callback.last_model_path
                and callback._last_checkpoint_saved == callback.last_model_path
            )
            if not current:
                callback._save_last_checkpoint(trainer, callback._monitor_candidates(trainer))
            if self.saved is None:
                self.saved = (callback.last_model_path, trainer.global_step)

    def error(self, trainer: Trainer) -> Terminated:
        """The one-line error for the signal that stopped the run."""
        signum = self.received or signal.SIGTERM
        name = signum.name
        if trainer.state.fn != "fit":
            return Terminated(
                f"terminated during {trainer.state.fn.value} ({name}); nothing was written: run "
                "the same command again",
                signum,
            )
        step = trainer.global_step
        if self.saved is not None:
            path, saved = self.saved
            hint = f"{path} holds step {saved}; run the same command with --ckpt_path last"
        else:
            why = ("a run on several processes writes none on a signal" if trainer.world_size > 1
                   else "no ModelCheckpoint keeps one (save_last)")  # fmt: skip
            hint = f"no last.ckpt for this step ({why}); {_newest(trainer)}"
        return Terminated(f"terminated at step {step} ({name}); {hint}", signum)


def _newest(trainer: Trainer) -> str:
    """Where a stopped run can go on from: its newest ``last.ckpt``, if any."""
    for callback in trainer.checkpoint_callbacks:
        if isinstance(callback, ModelCheckpoint) and callback.last_model_path:
            step = callback._last_global_step_saved  # 0: none written since a resume
            at = f" (step {step})" if step else ""
            return (f"the newest is {callback.last_model_path}{at}: run the same command "
                    "with --ckpt_path last to resume from it")  # fmt: skip
    return "none was written: the same command starts the run again"
