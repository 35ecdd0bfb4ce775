"""Segmentation heads that turn backbone features into class logits."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from aspp_seg.models.aspp import ASPP


class DeepLabHead(nn.Module):
    """ASPP over the deepest feature map, then a 1x1 classifier (the study's head).

    Args:
        feature_info: the backbone's per-stage ``num_chs`` / ``reduction``; the head
            reads the last stage.
        num_classes: number of output classes.
        rates, kernel_size, channels, pointwise_branch, image_pooling, dropout: see `ASPP`.
    """

    def __init__(
        self,
        feature_info: Sequence[dict],
        num_classes: int,
        *,
        rates: Sequence[int] = (6, 12, 18),
        kernel_size: int = 3,
        channels: int = 256,
        pointwise_branch: bool = True,
        image_pooling: bool = True,
        dropout: float = 0.1,
        norm_layer: type[nn.Module] = nn.BatchNorm2d,
    ) -> None:
        super().__init__()
        self.aspp = ASPP(
            feature_info[-1]["num_chs"],
            rates=rates,
            kernel_size=kernel_size,
            channels=channels,
            pointwise_branch=pointwise_branch,
            image_pooling=image_pooling,
            dropout=dropout,
            norm_layer=norm_layer,
        )
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        """Backbone features (deepest last: B x C x h x w) -> B x num_classes x h x w."""
        return self.classifier(self.aspp(features[-1]))
