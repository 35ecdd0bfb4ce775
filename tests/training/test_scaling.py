"""The scale and speed switches of `aspp_seg.training.hardware`, and the callbacks that
apply them to a run (`FastPaths`, `LRScaling`)."""

from __future__ import annotations

import math
from functools import partial
from types import SimpleNamespace

import pytest
import torch
from lightning.pytorch import Callback, Trainer
from torch import nn

from aspp_seg.data import DemoDataModule
from aspp_seg.data.datamodules import per_device_batch_size
from aspp_seg.errors import ConfigError
from aspp_seg.models import ASPP, deeplabv3
from aspp_seg.training import hardware as scaling
from aspp_seg.training.callbacks import FastPaths, LRScaling, ScheduleRetarget
from aspp_seg.training.module import SegmentationModule


def _tiny_net(**kwargs) -> nn.Module:
    return deeplabv3(num_classes=5, backbone="resnet18", pretrained=False,
                     aspp=partial(ASPP, channels=8), **kwargs)  # fmt: skip


def _fit(
    module, root, tmp_path, fast_paths=None, callbacks=(), ckpt_path=None, **trainer_kwargs
) -> Trainer:
    """Trains `module` on `root` (demo layout, batch 4) on CPU without logs or checkpoints,
    with the `FastPaths` callback that `aspp-seg` adds to every run."""
    datamodule = DemoDataModule(str(root), batch_size=4, num_workers=0)
    trainer = Trainer(
        accelerator="cpu", limit_val_batches=0, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, default_root_dir=tmp_path,
        callbacks=[fast_paths or FastPaths(), *callbacks], **trainer_kwargs,
    )  # fmt: skip
    # the module's hyperparameters hold this file's optimizer function: not weights only
    trainer.fit(module, datamodule, ckpt_path=ckpt_path, weights_only=False)
    return trainer


@pytest.mark.parametrize(
    ("requested", "world_size", "device", "expected"),
    [
        (None, 1, "cuda", False),  # one device: plain BatchNorm
        (None, 4, "cuda", True),  # DDP on GPUs: SyncBatchNorm
        (None, 2, "cpu", False),  # gloo on CPU: SyncBatchNorm has no CPU kernel
        (False, 4, "cuda", False),
        (True, 1, "cuda", False),  # nothing to synchronise with
        (True, 8, "cuda", True),
    ],
)
def test_sync_batchnorm_is_chosen_from_the_run(requested, world_size, device, expected):
    assert (
        scaling.use_sync_batchnorm(requested, world_size=world_size, device_type=device) is expected
    )


def test_sync_batchnorm_requested_on_cpu_ddp_is_a_config_error():
    with pytest.raises(ConfigError, match=r"sync_batchnorm=true needs GPUs.*'cpu'"):
        scaling.use_sync_batchnorm(True, world_size=2, device_type="cpu")


def test_convert_sync_batchnorm_replaces_every_batchnorm_and_keeps_weights():
    net = _tiny_net()
    before = scaling.count_norm_layers(net)
    state = {k: v.clone() for k, v in net.state_dict().items()}
    converted = scaling.convert_sync_batchnorm(net)
    after = scaling.count_norm_layers(converted)
    assert set(after) == {"SyncBatchNorm"} and after["SyncBatchNorm"] == sum(before.values())
    assert converted.state_dict().keys() == state.keys()  # checkpoints load both ways
    for key, value in converted.state_dict().items():
        assert torch.equal(value, state[key])
    assert scaling.convert_sync_batchnorm(converted) is converted  # idempotent


def test_fast_paths_are_on_for_cuda_only_unless_set():
    assert scaling.want(None, device_type="cuda") and not scaling.want(None, device_type="cpu")
    assert scaling.want(True, device_type="cpu") and not scaling.want(False, device_type="cuda")
    layouts = scaling.CHANNELS_LAST_DEVICES  # channels_last: automatic on CPU as well
    assert scaling.want(None, device_type="cpu", auto_devices=layouts)
    assert not scaling.want(None, device_type="mps", auto_devices=layouts)
    assert not scaling.want(False, device_type="cpu", auto_devices=layouts)


def test_channels_last_keeps_values():
    x = torch.randn(2, 3, 5, 7)
    y = scaling.to_channels_last(x)
    assert y.is_contiguous(memory_format=torch.channels_last) and torch.equal(x, y)
    mask = torch.zeros(2, 5, 7)
    assert scaling.to_channels_last(mask) is mask


def test_fused_sgd_takes_the_same_step_as_foreach():
    torch.manual_seed(0)
    params = [nn.Parameter(torch.randn(4, 3)), nn.Parameter(torch.randn(3))]
    copies = [nn.Parameter(p.detach().clone()) for p in params]
    plain = torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=1e-4)
    fused = torch.optim.SGD(
        [{"params": copies, "lr": 0.1}], lr=0.5, momentum=0.9, weight_decay=1e-4
    )
    assert scaling.fuse_optimizer(fused) is fused  # in place, its groups kept
    assert fused.param_groups[0]["fused"] and fused.param_groups[0]["lr"] == 0.1
    for _ in range(3):
        for group in (params, copies):
            for p in group:
                p.grad = torch.ones_like(p)
        plain.step()
        fused.step()
    for a, b in zip(params, copies, strict=True):
        torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match="before the first optimizer step"):
        scaling.fuse_optimizer(fused)
    other = scaling.fuse_optimizer(torch.optim.RMSprop([nn.Parameter(torch.zeros(2))]))
    assert not other.param_groups[0].get("fused")  # no fused kernel: unchanged


def test_compile_falls_back_with_a_reason_where_unsupported(caplog):
    assert scaling.compile_support("cuda") is None or "Triton" in scaling.compile_support("cuda")
    net = nn.Linear(2, 2)
    with caplog.at_level("WARNING", logger="aspp_seg.training.hardware"):
        compiled = scaling.compile_net(net, device_type="mps")
    assert not compiled and "running eager because" in caplog.text


def test_grad_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    net = _tiny_net().train()
    x = torch.randn(2, 3, 64, 64)
    reference = _tiny_net().train()
    reference.load_state_dict(net.state_dict())
    assert scaling.enable_grad_checkpointing(net) >= 1
    for model in (net, reference):
        torch.manual_seed(1)  # the same dropout mask in both
        model(x)["out"].square().mean().backward()
    for (name, a), (_, b) in zip(net.named_parameters(), reference.named_parameters(), strict=True):
        torch.testing.assert_close(a.grad, b.grad, msg=name, rtol=1e-4, atol=1e-6)


def test_grad_checkpointing_needs_a_supporting_module():
    with pytest.raises(ConfigError, match="grad_checkpointing=true"):
        scaling.enable_grad_checkpointing(nn.Sequential(nn.Conv2d(3, 3, 1)))


@pytest.mark.parametrize(
    ("global_batch", "world", "accumulate", "per_device"),
    [(8, 1, 1, 8), (8, 4, 1, 2), (8, 2, 2, 2), (16, 8, 2, 1)],
)
def test_per_device_batch_size(global_batch, world, accumulate, per_device):
    assert (
        per_device_batch_size(global_batch, world_size=world, accumulate_grad_batches=accumulate)
        == per_device
    )


def test_global_batch_that_does_not_divide_is_a_config_error():
    with pytest.raises(ConfigError, match=r"global_batch_size=8 .* 3 x 1 = 3"):
        per_device_batch_size(8, world_size=3)


def test_lr_rules():
    assert scaling.scaled_lr(0.007, global_batch_size=16, base_batch_size=8) == 0.014
    sqrt = scaling.scaled_lr(0.007, global_batch_size=32, base_batch_size=8, rule="sqrt")
    assert math.isclose(sqrt, 0.014)
    assert scaling.scaled_lr(0.007, global_batch_size=32, base_batch_size=8, rule="none") == 0.007
    with pytest.raises(ConfigError, match="allowed"):
        scaling.scaled_lr(0.007, global_batch_size=8, base_batch_size=8, rule="cubic")


def test_datamodule_derives_per_device_batch_from_the_global_one(tiny_cityscapes):
    datamodule = DemoDataModule(
        str(tiny_cityscapes), batch_size=99, global_batch_size=8, num_workers=0
    )
    datamodule.trainer = SimpleNamespace(world_size=2, accumulate_grad_batches=2)
    datamodule.setup("fit")
    assert datamodule.batch_size == 2
    datamodule.trainer = SimpleNamespace(world_size=3, accumulate_grad_batches=1)
    with pytest.raises(ConfigError, match=r"data\.global_batch_size=8"):
        datamodule.setup("fit")


def test_module_on_cpu_keeps_plain_batchnorm_and_eager_net_in_channels_last(
    tiny_cityscapes, tmp_path
):
    module = SegmentationModule(_tiny_net(), num_classes=19)
    trainer = _fit(module, tiny_cityscapes, tmp_path, max_steps=1)
    assert "SyncBatchNorm" not in scaling.count_norm_layers(module.net)
    assert trainer.callbacks[0]._channels_last_inputs  # auto: NHWC faster on CPU too
    assert module.net.backbone.body.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    assert not hasattr(module.net, "_compiled_call_impl") or module.net._compiled_call_impl is None
    optimizer = trainer.optimizers[0]
    assert not optimizer.param_groups[0].get("fused")  # auto: fused only on CUDA


def test_module_switches_can_be_forced_on_cpu(tiny_cityscapes, tmp_path):
    module = SegmentationModule(_tiny_net(), num_classes=19)
    optimizer_factory = module.optimizer_factory
    switches = FastPaths(channels_last=True, fused_optimizer=True, grad_checkpointing=True)
    trainer = _fit(module, tiny_cityscapes, tmp_path, fast_paths=switches, max_steps=2)
    weight = module.net.backbone.body.conv1.weight
    assert weight.is_contiguous(memory_format=torch.channels_last)
    # fused through a hook, on the optimizer the module built: the module is untouched
    assert all(group["fused"] for group in trainer.optimizers[0].param_groups)
    assert module.optimizer_factory is optimizer_factory
    assert module.net.backbone.body.grad_checkpointing
    assert torch.isfinite(module(torch.randn(1, 3, 64, 128))).all()


def test_module_takes_uint8_batches_and_the_net_normalises(tiny_cityscapes):
    module = SegmentationModule(_tiny_net(), num_classes=19).eval()
    images = torch.randint(0, 256, (2, 3, 64, 96), dtype=torch.uint8)
    masks = torch.randint(0, 19, (2, 64, 96), dtype=torch.uint8)
    with torch.no_grad():  # uint8 and float RGB 0-255: the same logits
        torch.testing.assert_close(module(images), module(images.float()))
    module.val_confusion.update(torch.zeros_like(masks), masks)  # uint8 labels count too
    assert module.val_confusion.compute().sum() == masks.numel()
    datamodule = DemoDataModule(str(tiny_cityscapes), batch_size=2, num_workers=0)
    datamodule.setup("fit")
    loaded = next(iter(datamodule.train_dataloader()))
    assert loaded["image"].dtype == torch.uint8 and loaded["mask"].dtype == torch.uint8


def _sgd(params):
    return torch.optim.SGD(params, lr=0.01, momentum=0.9)


def _warmup_poly(optimizer, total):
    from aspp_seg.training.schedules import WarmupPolyLR

    return WarmupPolyLR(optimizer, total, warmup_steps=2, warmup_factor=0.5)


class _LRs(Callback):
    """The first param group's LR at every training step."""

    def __init__(self) -> None:
        self.seen: list[float] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.seen.append(trainer.optimizers[0].param_groups[0]["lr"])


@pytest.mark.parametrize(("rule", "factor"), [("linear", 2.0), ("sqrt", math.sqrt(2)), ("none", 1)])
def test_lr_scaling_scales_the_lr_to_the_global_batch(tiny_cityscapes, tmp_path, rule, factor):
    module = SegmentationModule(
        _tiny_net(), num_classes=19, optimizer=_sgd, scheduler=_warmup_poly,
        param_groups={"head": {"lr_mult": 10}},
    )  # fmt: skip
    # global batch 4 x 1 process x 2 accumulated = 8
    lrs = _LRs()
    trainer = _fit(module, tiny_cityscapes, tmp_path, max_steps=2, accumulate_grad_batches=2,
                   callbacks=[LRScaling(rule=rule, base_batch_size=4), lrs])  # fmt: skip
    # the schedule decays from the scaled LR of each group (lr_mult included) ...
    scheduler = trainer.lr_scheduler_configs[0].scheduler
    assert scheduler.base_lrs == pytest.approx([0.01 * factor, 0.1 * factor])
    groups = trainer.optimizers[0].param_groups
    assert [g["initial_lr"] for g in groups] == pytest.approx([0.01 * factor, 0.1 * factor])
    # ... and warms up to it: the first step ran at warmup_factor x the scaled LR
    assert lrs.seen[0] == pytest.approx(0.5 * 0.01 * factor)


def test_lr_scaling_on_resume_keeps_the_checkpoints_lr(tiny_cityscapes, tmp_path):
    """A resumed run restores the LR its first run scaled (and the schedule follows the
    longer run from it): scaled once, never twice."""
    module = SegmentationModule(_tiny_net(), num_classes=19, optimizer=_sgd)
    callbacks = [LRScaling(rule="linear", base_batch_size=2), ScheduleRetarget()]
    first = _fit(module, tiny_cityscapes, tmp_path, callbacks=callbacks, max_steps=2)
    assert first.lr_scheduler_configs[0].scheduler.base_lrs == pytest.approx([0.02])
    first.save_checkpoint(tmp_path / "two.ckpt")

    module = SegmentationModule(_tiny_net(), num_classes=19, optimizer=_sgd)
    lrs = _LRs()
    callbacks = [LRScaling(rule="linear", base_batch_size=2), ScheduleRetarget(), lrs]
    resumed = _fit(module, tiny_cityscapes, tmp_path, callbacks=callbacks, max_steps=4,
                   ckpt_path=tmp_path / "two.ckpt")  # fmt: skip
    assert resumed.lr_scheduler_configs[0].scheduler.base_lrs == pytest.approx([0.02])  # not 0.04
    assert lrs.seen == pytest.approx([0.02 * (1 - step / 4) ** 0.9 for step in (2, 3)])


def test_lr_scaling_settings_are_config_errors():
    with pytest.raises(ConfigError, match=r"lr_scaling\.rule='cubic'.*allowed"):
        LRScaling(rule="cubic")
    with pytest.raises(ConfigError, match=r"lr_scaling\.base_batch_size=0"):
        LRScaling(rule="linear", base_batch_size=0)
