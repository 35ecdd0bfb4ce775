"""Atrous Spatial Pyramid Pooling (DeepLabv3, Chen et al. 2017)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from aspp_seg.errors import ConfigError


def atrous_padding(kernel_size: int, dilation: int) -> int:
    """Padding that keeps the spatial size: (K - 1) * D / 2.

    Raises:
        ConfigError: when (K - 1) * D is odd (an even kernel with an odd dilation),
            because no symmetric padding then keeps the size.
    """
    total = (kernel_size - 1) * dilation
    if total % 2:
        raise ConfigError(
            f"kernel_size={kernel_size} with rate {dilation} needs padding {total}/2, "
            "which is not an integer; with an even kernel_size use even rates"
        )
    return total // 2


class ConvNormAct(nn.Sequential):
    """Conv2d (no bias) -> norm -> activation."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        kernel_size: int = 1,
        dilation: int = 1,
        norm_layer: type[nn.Module] = nn.BatchNorm2d,
        act_layer: type[nn.Module] = nn.ReLU,
    ) -> None:
        super().__init__(
            nn.Conv2d(
                in_channels,
                out_channels,
                kernel_size,
                padding=atrous_padding(kernel_size, dilation),
                dilation=dilation,
                bias=False,
            ),
            norm_layer(out_channels),
            act_layer(),
        )


class ImagePooling(nn.Module):
    """Global average pool -> 1x1 conv -> norm -> act, broadcast back to H x W."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        norm_layer: type[nn.Module] = nn.BatchNorm2d,
        act_layer: type[nn.Module] = nn.ReLU,
    ) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.conv = ConvNormAct(
            in_channels, out_channels, norm_layer=norm_layer, act_layer=act_layer
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """B x C x H x W -> B x C_out x H x W (constant over H x W)."""
        return F.interpolate(self.conv(self.pool(x)), size=x.shape[-2:], mode="nearest")


class ASPP(nn.Module):
    """Parallel atrous branches over one feature map, concatenated and projected.

    Branches, in order: an optional 1x1 conv, one `kernel_size` conv per rate in
    `rates`, an optional image-pooling branch. The projection is a 1x1 conv over
    ``channels * num_branches`` inputs, so any number of rates works.

    Args:
        in_channels: channels of the input feature map.
        rates: dilation of each atrous branch, e.g. (6, 12, 18) for DL-1.
        kernel_size: kernel of the atrous branches (the study's DL-3 uses 4).
        channels: output channels of every branch and of the projection.
        pointwise_branch: include the 1x1 branch.
        image_pooling: include the global-average-pooling branch.
        dropout: dropout after the projection.
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
        dropout: float = 0.1,
        norm_layer: type[nn.Module] = nn.BatchNorm2d,
        act_layer: type[nn.Module] = nn.ReLU,
    ) -> None:
        super().__init__()
        if kernel_size < 1:
            raise ConfigError(f"kernel_size={kernel_size} must be >= 1")
        if any(r < 1 for r in rates):
            raise ConfigError(f"rates={list(rates)} must all be >= 1")
        layer = {"norm_layer": norm_layer, "act_layer": act_layer}
        branches: list[nn.Module] = []
        if pointwise_branch:
            branches.append(ConvNormAct(in_channels, channels, **layer))
        for rate in rates:
            branches.append(
                ConvNormAct(in_channels, channels, kernel_size=kernel_size, dilation=rate, **layer)
            )
        if image_pooling:
            branches.append(ImagePooling(in_channels, channels, **layer))
        if not branches:
            raise ConfigError("ASPP needs at least one branch: give rates or enable a branch")
        self.branches = nn.ModuleList(branches)
        self.project = nn.Sequential(
            ConvNormAct(channels * len(branches), channels, **layer), nn.Dropout(dropout)
        )
        self.rates = tuple(rates)
        self.kernel_size = kernel_size
        self.out_channels = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """B x C_in x H x W -> B x channels x H x W."""
        return self.project(torch.cat([branch(x) for branch in self.branches], dim=1))
