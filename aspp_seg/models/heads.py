"""Segmentation heads that turn backbone features into class logits.

Every head reads its input widths from the backbone's ``feature_info``, builds its ASPP
from an `ASPPFactory` (the config's ``aspp`` entry, passed on as one object), and ends
in a conv called ``classifier``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from aspp_seg.errors import ConfigError
from aspp_seg.models.aspp import ASPP, ASPPFactory
from aspp_seg.models.layers import ConvNormAct, NormLayer, conv_block


class DeepLabHead(nn.Module):
    """ASPP over the deepest feature map, optional 3x3 convs, then a 1x1 classifier.

    The study's head is ASPP (with its 1x1 projection) and the classifier
    (``head_convs=0``); torchvision's adds one 3x3 conv-norm-act (``head_convs=1``).

    Args:
        feature_info: the backbone's per-stage ``num_chs`` / ``reduction``; the head
            reads the last stage.
        num_classes: number of output classes.
        aspp: builds the ASPP from the last stage's channel count, `norm_layer` and
            `act_layer`; every other ASPP setting is bound in it (see `ASPPFactory`).
        head_convs: 3x3 conv-norm-act layers between the ASPP projection and the
            classifier, as wide as the ASPP output.
        norm_layer: norm after every conv, in the ASPP too.
        act_layer: activation after every norm, in the ASPP too.
    """

    def __init__(
        self,
        *,
        feature_info: Sequence[dict],
        num_classes: int,
        aspp: ASPPFactory = ASPP,
        head_convs: int = 0,
        norm_layer: NormLayer = nn.BatchNorm2d,
        act_layer: type[nn.Module] = nn.ReLU,
    ) -> None:
        super().__init__()
        if head_convs < 0:
            raise ConfigError(f"head_convs={head_convs} must be >= 0")
        self.aspp = aspp(feature_info[-1]["num_chs"], norm_layer=norm_layer, act_layer=act_layer)
        channels = self.aspp.out_channels
        self.refine = nn.Sequential(
            *(
                ConvNormAct(
                    channels, channels, kernel_size=3, norm_layer=norm_layer, act_layer=act_layer
                )
                for _ in range(head_convs)
            )
        )
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        """Backbone features (deepest last: B x C x h x w) -> B x num_classes x h x w."""
        return self.classifier(self.refine(self.aspp(features[-1])))


class FCNHead(nn.Module):
    """Auxiliary head (as torchvision's / mmseg's): 3x3 conv-norm-act, dropout, 1x1
    classifier, on one backbone stage (the stage before last by default).

    Args:
        feature_info: the backbone's per-stage ``num_chs`` / ``reduction``.
        num_classes: number of output classes.
        in_index: which stage to read (negative counts from the deepest).
        channels: width of the 3x3 conv; None: a quarter of the input channels.
        dropout: dropout before the classifier.
        norm_layer: norm after the 3x3 conv.
        act_layer: activation after the norm.
    """

    def __init__(
        self,
        *,
        feature_info: Sequence[dict],
        num_classes: int,
        in_index: int = -2,
        channels: int | None = None,
        dropout: float = 0.1,
        norm_layer: NormLayer = nn.BatchNorm2d,
        act_layer: type[nn.Module] = nn.ReLU,
    ) -> None:
        super().__init__()
        if not -len(feature_info) <= in_index < len(feature_info):
            raise ConfigError(
                f"aux in_index={in_index} is out of range for {len(feature_info)} stages; "
                f"allowed: {-len(feature_info)} to {len(feature_info) - 1}"
            )
        in_channels = feature_info[in_index]["num_chs"]
        channels = channels or in_channels // 4
        self.in_index = in_index
        self.conv = ConvNormAct(
            in_channels, channels, kernel_size=3, norm_layer=norm_layer, act_layer=act_layer
        )
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        """Backbone features -> B x num_classes x h x w at stage `in_index`'s size."""
        return self.classifier(self.dropout(self.conv(features[self.in_index])))


class DeepLabV3PlusHead(nn.Module):
    """DeepLabv3+ (Chen et al. 2018): ASPP over the deepest features, upsampled and fused
    with projected low-level features from an early stage, refined, classified.

    The decoder's two 3x3 convs are depthwise-separable when the ASPP's are
    (``separable`` of the ASPP: the paper's Xception setting), so one setting switches
    both.

    Args:
        feature_info: the backbone's per-stage ``num_chs`` / ``reduction``.
        num_classes: number of output classes.
        aspp: builds the ASPP over the deepest stage (see `DeepLabHead`).
        low_level_stride: reduction of the stage that gives the low-level features
            (4: ``layer1`` of a ResNet, as in the paper).
        low_level_channels: width the low-level features are projected to (48).
        decoder_channels: width of the two 3x3 refinement convs (256).
        norm_layer: norm after every conv, in the ASPP too.
        act_layer: activation after every norm, in the ASPP too.
    """

    def __init__(
        self,
        *,
        feature_info: Sequence[dict],
        num_classes: int,
        aspp: ASPPFactory = ASPP,
        low_level_stride: int = 4,
        low_level_channels: int = 48,
        decoder_channels: int = 256,
        norm_layer: NormLayer = nn.BatchNorm2d,
        act_layer: type[nn.Module] = nn.ReLU,
    ) -> None:
        super().__init__()
        strides = [info["reduction"] for info in feature_info]
        if low_level_stride not in strides[:-1]:
            raise ConfigError(
                f"low_level_stride={low_level_stride} is not a stage of the backbone; "
                f"allowed: {sorted(set(strides[:-1]))}"
            )
        self.low_level_index = strides.index(low_level_stride)
        self.aspp = aspp(feature_info[-1]["num_chs"], norm_layer=norm_layer, act_layer=act_layer)
        self.low_level = ConvNormAct(
            feature_info[self.low_level_index]["num_chs"],
            low_level_channels,
            norm_layer=norm_layer,
            act_layer=act_layer,
        )
        fuse = {
            "kernel_size": 3,
            "separable": self.aspp.separable,
            "norm_layer": norm_layer,
            "act_layer": act_layer,
        }
        self.fuse = nn.Sequential(
            conv_block(self.aspp.out_channels + low_level_channels, decoder_channels, **fuse),
            conv_block(decoder_channels, decoder_channels, **fuse),
        )
        self.classifier = nn.Conv2d(decoder_channels, num_classes, 1)

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        """Backbone features -> B x num_classes x h x w at the low-level stage's size."""
        low = self.low_level(features[self.low_level_index])
        deep = F.interpolate(
            self.aspp(features[-1]), size=low.shape[-2:], mode="bilinear", align_corners=False
        )
        return self.classifier(self.fuse(torch.cat([deep, low], dim=1)))
