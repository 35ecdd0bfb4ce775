"""Atrous Spatial Pyramid Pooling (DeepLabv3, Chen et al. 2017), configurable throughout."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn

from aspp_seg.errors import ConfigError
from aspp_seg.models.layers import (
    ConvNormAct,
    NormLayer,
    conv_block,
    pooling_norm,
    same_padding,
    set_dilation,
)


class ImagePooling(nn.Module):
    """Global average pool -> 1x1 conv -> norm -> act, broadcast back to H x W.

    With BatchNorm the norm is `PoolingBatchNorm2d`, which also trains at batch size 1.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        norm_layer: NormLayer = nn.BatchNorm2d,
        act_layer: type[nn.Module] = nn.ReLU,
    ) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.conv = ConvNormAct(
            in_channels, out_channels, norm_layer=pooling_norm(norm_layer), act_layer=act_layer
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """B x C x H x W -> B x C_out x H x W (constant over H x W)."""
        # A 1x1 map broadcast back: nearest and bilinear give the same values.
        return F.interpolate(self.conv(self.pool(x)), size=x.shape[-2:], mode="nearest")


class ASPP(nn.Module):
    """Parallel atrous branches over one feature map, concatenated and projected.

    Branches, in order: an optional 1x1 conv, one `kernel_size` conv per rate in
    `rates` (any number, also none), an optional image-pooling branch. The projection
    is a 1x1 conv over ``channels * num_branches`` inputs, then dropout.

    Args:
        in_channels: channels of the input feature map.
        rates: dilation of each atrous branch, e.g. (6, 12, 18) for DL-1.
        kernel_size: kernel of the atrous branches (the study's DL-3 uses 4); padding
            is (K - 1) * rate / 2, so an even kernel needs even rates.
        channels: output channels of every branch and of the projection.
        pointwise_branch: include the 1x1 branch.
        image_pooling: include the global-average-pooling branch.
        separable: depthwise-separable atrous convs (DeepLabv3+) instead of full ones.
        dropout: dropout after the projection.
        norm_layer: norm after every conv (built from the channel count).
        act_layer: activation after every norm.

    In a network, the head builds its ASPP (see `ASPPFactory`): the head gives
    `in_channels` (from the backbone), `norm_layer` and `act_layer` (the network's
    one norm and activation); every other argument, also one a subclass adds, comes
    from the config's ``aspp`` entry.
    """

    def __init__(
        self,
        in_channels: int,
        *,
        rates: Sequence[int] = (6, 12, 18),
        kernel_size: int = 3,
        channels: int = 256,
        pointwise_branch: bool = True,
        image_pooling: bool = True,
        separable: bool = False,
        dropout: float = 0.1,
        norm_layer: NormLayer = nn.BatchNorm2d,
        act_layer: type[nn.Module] = nn.ReLU,
    ) -> None:
        super().__init__()
        if kernel_size < 1:
            raise ConfigError(f"kernel_size={kernel_size} must be >= 1")
        if any(r < 1 for r in rates):
            raise ConfigError(f"rates={list(rates)} must all be >= 1")
        if channels < 1:
            raise ConfigError(f"channels={channels} must be >= 1")
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"dropout={dropout} must be in [0, 1)")
        branches: list[nn.Module] = []
        if pointwise_branch:
            branches.append(
                ConvNormAct(in_channels, channels, norm_layer=norm_layer, act_layer=act_layer)
            )
        self.atrous_start = len(branches)
        for rate in rates:
            branches.append(
                conv_block(
                    in_channels,
                    channels,
                    kernel_size=kernel_size,
                    dilation=rate,
                    separable=separable,
                    norm_layer=norm_layer,
                    act_layer=act_layer,
                )
            )
        if image_pooling:
            branches.append(
                ImagePooling(in_channels, channels, norm_layer=norm_layer, act_layer=act_layer)
            )
        if not branches:
            raise ConfigError(
                "ASPP has no branch: give rates or set pointwise_branch / image_pooling true"
            )
        self.branches = nn.ModuleList(branches)
        self.project = nn.Sequential(
            ConvNormAct(
                channels * len(branches), channels, norm_layer=norm_layer, act_layer=act_layer
            ),
            nn.Dropout(dropout),
        )
        self.rates = tuple(rates)
        self.kernel_size = kernel_size
        self.separable = separable
        self.out_channels = channels

    @property
    def atrous_branches(self) -> list[nn.Module]:
        """The branches built from `rates`, in the order of the rates."""
        return list(self.branches[self.atrous_start : self.atrous_start + len(self.rates)])

    def set_rates(self, rates: Sequence[int]) -> None:
        """Changes the atrous rates in place (same weights), keeping the output size.

        Used to evaluate at another output stride than the one trained at.
        """
        rates = tuple(int(r) for r in rates)
        if len(rates) != len(self.rates):
            raise ConfigError(f"ASPP has {len(self.rates)} atrous branches, got rates={rates}")
        for rate in rates:
            same_padding(self.kernel_size, rate)  # validate all before changing any
        for branch, rate in zip(self.atrous_branches, rates, strict=True):
            set_dilation(branch.spatial_conv, rate)
        self.rates = rates

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """B x C_in x H x W -> B x channels x H x W."""
        return self.project(torch.cat([branch(x) for branch in self.branches], dim=1))


class ASPPFactory(Protocol):
    """What a head calls to build its ASPP: `ASPP` itself, a subclass, or a partial of
    either (``functools.partial(ASPP, rates=(3, 6, 9))``).

    In YAML it is a ``class_path`` / ``init_args`` entry whose init_args hold every ASPP
    setting except the three the head passes, so a new ASPP constructor argument
    reaches the config without being listed in heads or builders:

        aspp:
          class_path: aspp_seg.models.ASPP
          init_args: {rates: [6, 12, 18], kernel_size: 3, channels: 256}
    """

    def __call__(
        self, in_channels: int, /, *, norm_layer: NormLayer, act_layer: type[nn.Module]
    ) -> ASPP: ...
