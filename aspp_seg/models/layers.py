"""Small building blocks shared by the heads: conv-norm-act, separable conv, norm choice."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from aspp_seg.errors import ConfigError

NormLayer = Callable[[int], nn.Module]


class GroupNorm(nn.GroupNorm):
    """GroupNorm built from the channel count alone, like a BatchNorm layer.

    Uses `num_groups` groups (32, as in Wu and He 2018) or fewer where `num_channels`
    needs it, always with at least two channels per group, so that it also normalises
    the 1 x 1 map of the image-pooling branch at batch size 1.
    """

    def __init__(self, num_channels: int, *, num_groups: int = 32, **factory_kwargs) -> None:
        groups = math.gcd(num_groups, num_channels)
        if groups == num_channels > 1:
            groups //= 2
        # factory_kwargs: device / dtype, which timm passes to every norm layer
        super().__init__(groups, num_channels, **factory_kwargs)


NORMS: dict[str, NormLayer] = {"batch": nn.BatchNorm2d, "group": GroupNorm}
"""Norm layers selectable by name in YAML (`norm: batch | group`). SyncBatchNorm is not
listed: under DDP the `FastPaths` callback of the training layer converts BatchNorm layers
to it."""


def norm_layer(name: str) -> NormLayer:
    """The norm layer type for `name`, one of `NORMS`."""
    if name not in NORMS:
        raise ConfigError(f"norm={name!r} is not supported; allowed: {tuple(NORMS)}")
    return NORMS[name]


class PoolingBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm for the 1x1 image-pooling branch that also trains at batch size 1.

    After global pooling each channel holds one value per image, so plain BatchNorm
    cannot compute batch statistics from a single image and raises. This layer then
    normalises with its running statistics (as in eval mode) and leaves them
    unchanged; with two or more values per channel it is plain BatchNorm, so its
    weights load from any BatchNorm2d.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """B x C x H x W -> B x C x H x W."""
        if self.training and x.shape[0] * x.shape[2] * x.shape[3] == 1:
            return F.batch_norm(
                x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps
            )
        return super().forward(x)


def pooling_norm(norm: NormLayer) -> NormLayer:
    """The norm for an image-pooling branch: BatchNorm becomes `PoolingBatchNorm2d`."""
    return PoolingBatchNorm2d if norm is nn.BatchNorm2d else norm


def same_padding(kernel_size: int, dilation: int, *, setting: str = "kernel_size") -> int:
    """Padding that keeps the spatial size at stride 1: (K - 1) * D / 2.

    Args:
        kernel_size: K.
        dilation: D (the atrous rate).
        setting: the config name reported in the error.

    Raises:
        ConfigError: when (K - 1) * D is odd (an even kernel with an odd dilation),
            because no symmetric padding then keeps the size.
    """
    total = (kernel_size - 1) * dilation
    if total % 2:
        raise ConfigError(
            f"{setting}={kernel_size} with rate {dilation} needs padding {total}/2, "
            "which is not an integer; with an even kernel_size use even rates"
        )
    return total // 2


def set_dilation(conv: nn.Conv2d, dilation: int) -> None:
    """Changes a stride-1 conv's dilation in place and keeps its output size."""
    conv.dilation = (dilation, dilation)
    pad = same_padding(conv.kernel_size[0], dilation)
    conv.padding = (pad, pad)


class ConvNormAct(nn.Sequential):
    """Conv2d (no bias) -> norm -> activation; padding keeps the size.

    Layers: ``0`` conv, ``1`` norm, ``2`` activation.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        kernel_size: int = 1,
        dilation: int = 1,
        norm_layer: NormLayer = nn.BatchNorm2d,
        act_layer: type[nn.Module] = nn.ReLU,
    ) -> None:
        super().__init__(
            nn.Conv2d(
                in_channels,
                out_channels,
                kernel_size,
                padding=same_padding(kernel_size, dilation),
                dilation=dilation,
                bias=False,
            ),
            norm_layer(out_channels),
            act_layer(),
        )

    @property
    def spatial_conv(self) -> nn.Conv2d:
        """The conv whose dilation is the branch's atrous rate."""
        return self[0]


class SeparableConvNormAct(nn.Sequential):
    """Depthwise-separable conv (DeepLabv3+): depthwise K x K (dilated) -> norm -> act ->
    pointwise 1x1 -> norm -> act.

    Layers: ``0`` depthwise conv, ``1`` norm, ``2`` act, ``3`` pointwise conv, ``4``
    norm, ``5`` act.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        kernel_size: int = 3,
        dilation: int = 1,
        norm_layer: NormLayer = nn.BatchNorm2d,
        act_layer: type[nn.Module] = nn.ReLU,
    ) -> None:
        super().__init__(
            nn.Conv2d(
                in_channels,
                in_channels,
                kernel_size,
                padding=same_padding(kernel_size, dilation),
                dilation=dilation,
                groups=in_channels,
                bias=False,
            ),
            norm_layer(in_channels),
            act_layer(),
            nn.Conv2d(in_channels, out_channels, 1, bias=False),
            norm_layer(out_channels),
            act_layer(),
        )

    @property
    def spatial_conv(self) -> nn.Conv2d:
        """The depthwise conv, whose dilation is the branch's atrous rate."""
        return self[0]


def conv_block(
    in_channels: int,
    out_channels: int,
    *,
    kernel_size: int,
    dilation: int = 1,
    separable: bool = False,
    norm_layer: NormLayer = nn.BatchNorm2d,
    act_layer: type[nn.Module] = nn.ReLU,
) -> nn.Sequential:
    """A `SeparableConvNormAct` when `separable` and K > 1, else a `ConvNormAct`.

    Every norm in the block is `norm_layer` and every activation `act_layer`.
    """
    block = SeparableConvNormAct if separable and kernel_size > 1 else ConvNormAct
    return block(
        in_channels,
        out_channels,
        kernel_size=kernel_size,
        dilation=dilation,
        norm_layer=norm_layer,
        act_layer=act_layer,
    )


def fresh_classifier(old: nn.Conv2d, num_classes: int) -> nn.Conv2d:
    """A newly initialised conv shaped like `old` but with `num_classes` outputs."""
    return nn.Conv2d(
        old.in_channels,
        num_classes,
        old.kernel_size,
        padding=old.padding,
        bias=old.bias is not None,
    ).to(old.weight.device)
