"""Builders that wire backbones and heads into whole models, from flat settings.

Each builder's keyword-only signature is the config schema for `model.net` in YAML:

    net:
      class_path: aspp_seg.models.deeplabv3
      init_args: {backbone: resnet101, output_stride: 16, rates: [6, 12, 18]}
"""

from __future__ import annotations

from collections.abc import Sequence

from aspp_seg.models.backbone import TimmBackbone
from aspp_seg.models.deeplab import DeepLabV3
from aspp_seg.models.heads import DeepLabHead


def deeplabv3(
    *,
    num_classes: int = 19,
    backbone: str = "resnet101",
    pretrained: bool = True,
    output_stride: int = 16,
    rates: Sequence[int] = (6, 12, 18),
    kernel_size: int = 3,
    channels: int = 256,
    pointwise_branch: bool = True,
    image_pooling: bool = True,
    dropout: float = 0.1,
) -> DeepLabV3:
    """DeepLabV3 with a timm backbone and the study's ASPP head.

    Args:
        num_classes: output classes (linked from ``data.num_classes`` by the CLI).
        backbone: timm model name.
        pretrained: load timm's ImageNet weights.
        output_stride: 8, 16 or 32.
        rates: dilations of the atrous branches, any number of them.
        kernel_size: kernel of the atrous branches.
        channels: width of every ASPP branch and of the projection.
        pointwise_branch: include ASPP's 1x1 branch.
        image_pooling: include ASPP's image-pooling branch.
        dropout: dropout after the ASPP projection.
    """
    body = TimmBackbone(backbone, pretrained=pretrained, output_stride=output_stride)
    head = DeepLabHead(
        body.feature_info,
        num_classes,
        rates=rates,
        kernel_size=kernel_size,
        channels=channels,
        pointwise_branch=pointwise_branch,
        image_pooling=image_pooling,
        dropout=dropout,
    )
    return DeepLabV3(body, head)


MODELS = {"deeplabv3": deeplabv3}
"""Registry: architecture name -> builder."""
