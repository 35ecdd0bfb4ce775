"""`EMA`: an exponential moving average of the weights with a decay that ramps in."""

from __future__ import annotations

import math

import torch
from lightning.pytorch import LightningModule, Trainer, callbacks
from lightning.pytorch.utilities import rank_zero_info

from aspp_seg.errors import ConfigError


class EMA(callbacks.WeightAveraging):
    """An exponential moving average of the weights (and BN statistics), used for every
    evaluation: Lightning's `WeightAveraging` with a decay that ramps in, plus what it
    lacks here.

    The first optimizer step copies the weights; each later one, with t updates so far
    (AveragedModel's ``n_averaged``), folds them in as ema = d_t * ema + (1 - d_t) * weights:

        d_t = min(max_decay, 1 - (1 + t / warmup_gamma) ** -warmup_power)
        max_decay = decay, or else max(0, 1 - 1 / (horizon * total_steps))

    (timm's `ModelEmaV3` warm-up; ``warmup=False``: d_t = max_decay from the first
    step). ``total_steps`` is the run's optimizer steps
    (``trainer.estimated_stepping_batches``). A constant decay from the first step keeps
    the random initialisation in the average for ~1 / (1 - decay) steps; the ramp lets
    the early average follow the weights (with the default power, d_t reaches 0.99 after
    ~460 steps, 0.999 after ~10,000) and `horizon` sizes the memory by the run's length
    rather than for one schedule.

    Validation during ``fit`` runs on the averaged weights, and so do what reads them
    after it (`SegmentationLogger`'s overlays, `ModelCheckpoint`'s choice of the best). A
    checkpoint's ``state_dict`` holds the averaged weights, so
    ``aspp-seg validate / test / predict / export --ckpt_path ...`` and
    `aspp_seg.load_model` get them with or without this callback in their config; the
    live weights (``current_model_state``) and the averaging state (``averaging_state``:
    the update count t) let ``fit --ckpt_path last`` continue both, the ramp where it
    stopped. A resumed run computes ``max_decay`` from its own length, so a run extended
    with a larger ``max_epochs`` / ``max_steps`` continues with the decay of the longer
    run (one line says which decay a `horizon` gave).

    What this subclass changes in `WeightAveraging`:

    - the average lives on the training device (``trainer.strategy.root_device``):
      Lightning's ``setup`` runs before the module is moved, so its default would keep
      it on the CPU and copy every weight there after every GPU step;
    - the averaged weights stay in place until training continues (not only until the
      end of the validation epoch), so callbacks of ``on_validation_end`` see them;
    - a checkpoint written when training ends keeps the live weights as
      ``current_model_state`` (Lightning's would hold the average twice there, and a
      run extended from it would continue from the average);
    - nothing goes into the checkpoint's ``callbacks`` section (the step of the last
      update is the checkpoint's ``global_step``), so evaluating a checkpoint without
      this callback does not ask for it, and evaluating with it is silent too;
    - integer buffers (BatchNorm's ``num_batches_tracked``) take the live value: they
      count batches and have no average.

    Args:
        decay: the most weight the average keeps at a step (0.999: about the last 1000
            steps); None: from `horizon`.
        horizon: when `decay` is None, the fraction of the run's optimizer steps the
            average remembers: max_decay = 1 - 1 / (horizon * total_steps), at least 0
            (0.05 of a 1,472-step run: 74 steps, 0.9864).
        warmup: ramp the decay in with the update count; False: max_decay from the start.
        warmup_gamma: steps scale of the ramp (timm's ``warmup_gamma``).
        warmup_power: exponent of the ramp; timm suggests 3/4 for runs of up to ~100k
            steps and 2/3 for runs of a million.
        device: where to keep the average; None: the training device.

    Raises:
        ConfigError: for a setting outside its range, and when fit starts with a
            `horizon` but no finite run length (``max_epochs`` or ``max_steps``).
    """

    def __init__(
        self,
        *,
        decay: float | None = None,
        horizon: float = 0.05,
        warmup: bool = True,
        warmup_gamma: float = 1.0,
        warmup_power: float = 0.75,
        device: str | None = None,
    ) -> None:
        if decay is not None and not 0.0 <= decay <= 1.0:
            raise ConfigError(f"EMA decay={decay} must lie in [0, 1] (or be null: use horizon)")
        if not 0.0 < horizon <= 1.0:
            raise ConfigError(
                f"EMA horizon={horizon} must lie in (0, 1]: a fraction of the run's steps"
            )
        if warmup_gamma <= 0.0 or warmup_power <= 0.0:
            raise ConfigError(
                f"EMA warmup_gamma={warmup_gamma} and warmup_power={warmup_power} must be > 0"
            )
        super().__init__(device=device, use_buffers=True, multi_avg_fn=self._update_average)
        self.decay = decay
        self.horizon = horizon
        self.warmup = warmup
        self.warmup_gamma = warmup_gamma
        self.warmup_power = warmup_power
        self.max_decay: float | None = decay  # from `horizon` once fit knows the run length
        self._swapped = False  # the module holds the average, the average the live weights
        self._live_state: dict | None = None  # live weights once fit has ended

    def decay_at(self, updates: int) -> float:
        """The decay d of the update that follows `updates` earlier ones (0: a copy).

        Raises:
            RuntimeError: with a `horizon` before fit has started (no run length yet).
        """
        if self.max_decay is None:
            raise RuntimeError("EMA: the decay from `horizon` is known once fit starts")
        if not self.warmup:
            return self.max_decay
        ramp = 1.0 - (1.0 + updates / self.warmup_gamma) ** -self.warmup_power
        return min(self.max_decay, ramp)

    @torch.no_grad()
    def _update_average(
        self, averaged: list[torch.Tensor], current: list[torch.Tensor], updates: torch.Tensor
    ) -> None:
        # AveragedModel's `multi_avg_fn`, once per device and dtype group, with its update
        # count `n_averaged`; reading it costs no extra sync (AveragedModel reads it too)
        if averaged[0].is_floating_point() or averaged[0].is_complex():
            torch._foreach_lerp_(averaged, current, 1.0 - self.decay_at(int(updates)))
        else:
            torch._foreach_copy_(averaged, current)

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage == "fit":
            self._swapped, self._live_state = False, None
            if self._device is None:
                self._device = trainer.strategy.root_device
        super().setup(trainer, pl_module, stage)

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.decay is not None:
            return
        # the length of this run, also when it resumes a shorter one that it extends
        total = float(trainer.estimated_stepping_batches)
        if not math.isfinite(total):
            raise ConfigError(
                f"EMA horizon={self.horizon} needs a run of known length: set "
                "trainer.max_epochs or trainer.max_steps, or give the EMA a decay"
            )
        self.max_decay = max(0.0, 1.0 - 1.0 / (self.horizon * total))
        rank_zero_info(
            f"aspp-seg: EMA decay up to {self.max_decay:.5g} "
            f"(horizon {self.horizon} of {int(total)} steps)"
        )

    def on_validation_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._average_model is not None and trainer.state.fn == "fit" and not self._swapped:
            self._swap_models(pl_module)
            self._swapped = True

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        pass  # kept until training continues (see `_use_live`)

    def _use_live(self, pl_module: LightningModule) -> None:
        if self._swapped:
            self._swap_models(pl_module)
            self._swapped = False

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._use_live(pl_module)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._use_live(pl_module)
        super().on_train_epoch_end(trainer, pl_module)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._use_live(pl_module)
        self._live_state = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}
        super().on_train_end(trainer, pl_module)  # the module keeps the average from here

    def state_dict(self) -> dict:
        # Lightning keeps a callback's non-empty state under the checkpoint's "callbacks"
        # and, when a later run lacks that callback, prints "Please add the following
        # callbacks: ['EMA']" although the state_dict already holds the average. The one
        # entry WeightAveraging keeps there is restored from global_step instead.
        return {}

    def on_load_checkpoint(
        self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict
    ) -> None:
        if self._average_model is None:
            return  # validate / test / predict: the state_dict already holds the average
        super().on_load_checkpoint(trainer, pl_module, checkpoint)
        # the average was last updated after the step the checkpoint was written at (it
        # updates after every optimizer step, before ModelCheckpoint saves); without this,
        # a resumed run with gradient accumulation would fold that step's weights twice
        self._latest_update_step = int(checkpoint.get("global_step", 0))

    def on_save_checkpoint(
        self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict
    ) -> None:
        if self._average_model is None or not self._swapped:
            super().on_save_checkpoint(trainer, pl_module, checkpoint)
            if self._average_model is not None and self._live_state is not None:
                checkpoint["current_model_state"] = self._live_state
            return
        # saved after a validation: the module holds the average, the average the live ones
        state = self._average_model.state_dict()
        checkpoint["current_model_state"] = {
            k[len("module.") :]: v for k, v in state.items() if k.startswith("module.")
        }
        checkpoint["averaging_state"] = {
            k: v for k, v in state.items() if not k.startswith("module.")
        }
