"""`FastPaths`: the hardware switches of `aspp_seg.training.hardware` as a callback.

How a step runs on the hardware at hand (SyncBatchNorm, channels_last, torch.compile,
fused optimizer kernels, gradient checkpointing) is not part of the task, so it lives
here and not in the LightningModule. ``aspp-seg`` adds it to every run; its settings
are the top-level ``fast_paths:`` section of a config (``--fast_paths.compile true``).
In plain Python: ``Trainer(callbacks=[FastPaths()])``.
"""

from __future__ import annotations

import weakref

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_info

from aspp_seg.training import hardware as scaling


class FastPaths(Callback):
    """Applies the speed and scale switches once the devices are known.

    Every switch takes None for automatic (on where it is safe and known to help; see
    `aspp_seg.training.hardware`), True to insist, False to switch it off.

    Args:
        sync_batchnorm: SyncBatchNorm across processes; auto: on under multi-process
            training on GPUs, plain BatchNorm on one device and on CPU.
        channels_last: NHWC memory format for the net and its input images; auto: on
            CUDA and CPU (faster on both).
        compile: ``torch.compile`` the net in place; auto: on CUDA when Triton is
            installed, otherwise eager with a one-line reason.
        fused_optimizer: run the optimizer's fused kernels (torch's SGD, Adam, AdamW);
            auto: on CUDA. Set on its param groups once it exists, before the first
            step; a resumed run keeps the setting its checkpoint restores.
        grad_checkpointing: recompute backbone activations in the backward pass (less
            memory, about a third more compute); for full-resolution OS8 training.
    """

    def __init__(
        self,
        *,
        sync_batchnorm: bool | None = None,
        channels_last: bool | None = None,
        compile: bool | None = None,
        fused_optimizer: bool | None = None,
        grad_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        self.sync_batchnorm = sync_batchnorm
        self.channels_last = channels_last
        self.compile = compile
        self.fused_optimizer = fused_optimizer
        self.grad_checkpointing = grad_checkpointing
        self._channels_last_inputs = False
        self._applied_to: weakref.WeakSet[LightningModule] = weakref.WeakSet()

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if any(module is pl_module for module in self._applied_to):
            return  # fit, then test with the same module: once
        self._applied_to.add(pl_module)
        device_type = trainer.strategy.root_device.type
        world_size = trainer.world_size
        net = pl_module.net
        if scaling.use_sync_batchnorm(
            self.sync_batchnorm, world_size=world_size, device_type=device_type
        ):
            net = pl_module.net = scaling.convert_sync_batchnorm(net)
            rank_zero_info(f"aspp-seg: SyncBatchNorm across {world_size} processes")
        elif world_size > 1:
            rank_zero_info(
                f"aspp-seg: plain BatchNorm per process ({world_size} processes on "
                f"{device_type}; SyncBatchNorm runs on GPUs only)"
            )
        if self.grad_checkpointing:
            scaling.enable_grad_checkpointing(net)
        auto = scaling.AUTO_DEVICES
        if scaling.want(
            self.channels_last, device_type=device_type, auto_devices=auto["channels_last"]
        ):
            pl_module.net = net.to(memory_format=torch.channels_last)
            self._channels_last_inputs = True
        if scaling.want(self.compile, device_type=device_type, auto_devices=auto["compile"]):
            scaling.compile_net(pl_module.net, device_type=device_type)

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # the optimizers exist (on the device) and have not stepped; a checkpoint's
        # optimizer state, with its own `fused`, is restored after this hook
        device_type = trainer.strategy.root_device.type
        if scaling.want(
            self.fused_optimizer,
            device_type=device_type,
            auto_devices=scaling.AUTO_DEVICES["fused_optimizer"],
        ):
            for optimizer in trainer.optimizers:
                scaling.fuse_optimizer(optimizer)

    # Batches arrive on the device as uint8 NCHW; NHWC before the net widens them keeps
    # the layout change at 1 byte per value.
    def _to_channels_last(self, batch) -> None:
        if self._channels_last_inputs and isinstance(batch, dict) and "image" in batch:
            batch["image"] = scaling.to_channels_last(batch["image"])

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._to_channels_last(batch)

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        self._to_channels_last(batch)

    def on_test_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        self._to_channels_last(batch)

    def on_predict_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        self._to_channels_last(batch)
