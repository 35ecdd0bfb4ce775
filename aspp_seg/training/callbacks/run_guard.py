"""A run that cannot give a result stops with one line, and leaves nothing broken behind.

`RunGuard` is the first callback of every ``aspp-seg fit``:

- **Divergence.** A non-finite training loss stops the run at once with
  `RunFailed`, naming the step, the value and the newest checkpoint to resume from.
  Every checkpoint is checked before it is written, so no file holds NaN or Inf weights
  and ``last.ckpt`` stays the last finite state.
- **No training.** A fit whose loader gave no batch (more processes than frames, a batch
  larger than the split, ``limit_train_batches: 0``) ends with a `ConfigError`, not with
  Lightning's "No training batches" and exit 0. The data modules refuse most such runs
  before the network is built (`aspp_seg.data.datamodules`); this catches the rest.
- **Ctrl-C.** The step reached is remembered for the CLI's one-line message.

Cost of the divergence check: on the CPU the loss is already in host memory, so reading
it adds no synchronisation (about 10 microseconds a step, `benchmarks/run_guard.py`).
On a GPU the step's finiteness flag is copied to pinned host memory without blocking and
read one step later, when the GPU already works on the next step: the check never
empties the GPU's queue. Under DDP the flags of all processes are summed on the device
(one 4-byte all-reduce a step) so that every process stops at the same step.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import torch
from lightning.pytorch import Callback, LightningModule, Trainer

from aspp_seg.errors import ConfigError, RunFailed, interrupted


@dataclass
class _StepRecord:
    step: int
    epoch: int
    loss: torch.Tensor
    bad: torch.Tensor  # number of processes whose loss is not finite (host memory)
    done: torch.cuda.Event | None = None  # set on a GPU: the copy to `bad` has finished


def _float_tensors(value, prefix: str = "") -> Iterator[tuple[str, torch.Tensor]]:
    """(path, tensor) of every floating-point tensor in a nested checkpoint dict."""
    if isinstance(value, torch.Tensor):
        if value.is_floating_point():
            yield prefix, value
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from _float_tensors(item, f"{prefix}/{key}" if prefix else str(key))
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            yield from _float_tensors(item, f"{prefix}/{i}")


_TRAINED_STATE = ("state_dict", "optimizer_states")
"""The parts of a Lightning checkpoint that training computes (callbacks keep infinite
values on purpose: ModelCheckpoint's ``kth_value`` starts at +-inf)."""


def first_non_finite(checkpoint: Mapping) -> str | None:
    """The path (``state_dict/net.head.weight``) of the first tensor of the checkpoint's
    weights or optimizer state that holds NaN or Inf, or None. One host synchronisation
    for the whole dict."""
    trained = {key: checkpoint[key] for key in _TRAINED_STATE if key in checkpoint}
    tensors = list(_float_tensors(trained))
    if not tensors:
        return None
    finite = torch.stack([torch.isfinite(t).all().to("cpu", non_blocking=True) for _, t in tensors])
    if bool(finite.all()):
        return None
    return tensors[int((~finite).nonzero()[0])][0]


class RunGuard(Callback):
    """Stops a diverging run, keeps non-finite weights out of checkpoints, and remembers
    where an interrupted or failed run stopped (see the module docstring).

    Attributes:
        wrote_checkpoint: whether this run has written a checkpoint (the CLI puts a
            resumed run's folder back as it was when a failed run wrote none).
        interrupted_at: (step, epoch) when the run was stopped with Ctrl-C, else None.
    """

    def __init__(self) -> None:
        self._pending: _StepRecord | None = None
        self._buffers: list[torch.Tensor] = []  # two pinned host scalars, used in turn
        self._saved_step: int | None = None  # step of the newest checkpoint (written or resumed)
        self.wrote_checkpoint = False
        self.interrupted_at: tuple[int, int] | None = None

    # --- divergence ---

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.ckpt_path is not None:
            self._saved_step = trainer.global_step  # the checkpoint the run resumed from

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
        if not isinstance(loss, torch.Tensor):
            return  # a skipped step (training_step returned None)
        loss = loss.detach()
        bad = (~torch.isfinite(loss)).sum().float()
        if trainer.world_size > 1:
            bad = trainer.strategy.reduce(bad, reduce_op="sum")
        record = _StepRecord(trainer.global_step, trainer.current_epoch, loss, bad)
        if bad.device.type != "cuda":
            self._check(trainer, record)  # in host memory: reading it waits for nothing
            return
        previous, self._pending = self._pending, self._copy_to_host(record)
        if previous is not None:
            self._check(trainer, previous)

    def _copy_to_host(self, record: _StepRecord) -> _StepRecord:
        if not self._buffers:
            self._buffers = [torch.zeros((), pin_memory=True) for _ in range(2)]
        host = self._buffers[record.step % 2]  # the other one may still be in flight
        host.copy_(record.bad, non_blocking=True)
        record.bad, record.done = host, torch.cuda.Event()
        record.done.record()
        return record

    def _flush(self, trainer: Trainer) -> None:
        """Checks the step still in flight (before validation, checkpoints, the end)."""
        pending, self._pending = self._pending, None
        if pending is not None:
            self._check(trainer, pending)

    def _check(self, trainer: Trainer, record: _StepRecord) -> None:
        if record.done is not None:
            record.done.synchronize()
        if float(record.bad) == 0:
            return
        value = float(record.loss.float().cpu()) if record.loss.numel() == 1 else "not finite"
        raise RunFailed(
            f"training diverged: the loss is {value} at step {record.step} (epoch "
            f"{record.epoch}); {self._resume_hint(trainer)}; lower the learning rate "
            "(model.optimizer.init_args.lr) or check the data"
        )

    def _resume_hint(self, trainer: Trainer) -> str:
        callback = trainer.checkpoint_callback
        path = getattr(callback, "last_model_path", "") or getattr(callback, "best_model_path", "")
        if not path or self._saved_step is None:
            return "no checkpoint was written"
        return f"the newest checkpoint, {path} (step {self._saved_step}), holds finite weights"

    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.state.fn == "fit":
            self._flush(trainer)  # never score, or checkpoint, weights of a diverged step

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._flush(trainer)

    def on_save_checkpoint(
        self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict
    ) -> None:
        self._flush(trainer)
        bad = first_non_finite(checkpoint)
        if bad is not None:
            raise RunFailed(
                f"training diverged before step {trainer.global_step} (epoch "
                f"{trainer.current_epoch}): {bad} is not finite, so that checkpoint was "
                f"not written; {self._resume_hint(trainer)}; lower the learning rate "
                "(model.optimizer.init_args.lr)"
            )
        self._saved_step = int(checkpoint.get("global_step", trainer.global_step))
        self.wrote_checkpoint = True

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._flush(trainer)

    # --- a fit that trained nothing, Ctrl-C ---

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        loop = trainer.fit_loop
        if trainer.limit_train_batches != 0 and loop.max_batches != 0:
            return
        datamodule = trainer.datamodule
        frames = len(getattr(datamodule, "datasets", {}).get("train", ()))
        batch = getattr(datamodule, "batch_size", "?")
        raise ConfigError(
            f"fit trained nothing: the training loader gave no batch ({frames} training "
            f"frames, data.batch_size={batch}, {trainer.world_size} process(es), "
            f"trainer.limit_train_batches={trainer.limit_train_batches}, incomplete "
            "batches dropped)"
        )

    def on_exception(
        self, trainer: Trainer, pl_module: LightningModule, exception: BaseException
    ) -> None:
        if interrupted(exception):  # also a Ctrl-C that a library re-raised as its own error
            self.interrupted_at = (trainer.global_step, trainer.current_epoch)

    def interruption_message(self, trainer: Trainer) -> str:
        """The one line for Ctrl-C: how far the run got and how to go on."""
        step, epoch = self.interrupted_at or (trainer.global_step, trainer.current_epoch)
        callback = trainer.checkpoint_callback
        path = getattr(callback, "last_model_path", "")
        if path and self._saved_step is not None:
            hint = (
                f"the newest checkpoint is {path} (step {self._saved_step}): run the same "
                "command with --ckpt_path last to resume from it"
            )
        else:
            hint = "no checkpoint was written: the same command starts the run again"
        return f"interrupted at step {step} (epoch {epoch}); {hint}"
