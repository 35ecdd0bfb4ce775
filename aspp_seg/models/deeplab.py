"""DeepLabV3: a backbone and a head, composed."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class DeepLabV3(nn.Module):
    """Backbone features -> head logits, upsampled bilinearly to the input size.

    Args:
        backbone: returns a list of feature maps, shallow to deep.
        head: maps that list to B x num_classes x h x w logits.
        aux_head: optional head on the same features, used only in training.

    Returns from forward: ``{"out": B x num_classes x H x W}``, plus ``"aux"`` in
    training mode when an auxiliary head is set.
    """

    def __init__(
        self, backbone: nn.Module, head: nn.Module, aux_head: nn.Module | None = None
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.aux_head = aux_head

    @property
    def num_classes(self) -> int:
        return self.head.classifier.out_channels

    def reset_classifier(self, num_classes: int) -> None:
        """Replaces the last 1x1 conv of each head with a fresh one for `num_classes`."""
        for head in (self.head, self.aux_head):
            if head is not None:
                old = head.classifier
                head.classifier = nn.Conv2d(old.in_channels, num_classes, old.kernel_size)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        size = x.shape[-2:]
        features = self.backbone(x)
        outputs = {"out": self.head(features)}
        if self.aux_head is not None and self.training:
            outputs["aux"] = self.aux_head(features)
        return {
            key: F.interpolate(value, size=size, mode="bilinear", align_corners=False)
            for key, value in outputs.items()
        }
