"""Builders that wire backbones and heads into whole models, from flat settings.

Each builder's keyword-only signature is the config schema for `model.net` in YAML. The
ASPP is one entry, ``aspp``, whose ``init_args`` are `ASPP`'s own arguments (or those of
a subclass named in its ``class_path``), so an ASPP option is never listed here:

    net:
      class_path: aspp_seg.models.deeplabv3
      init_args:
        backbone: resnet101
        output_stride: 16
        aspp:
          class_path: aspp_seg.models.ASPP
          init_args: {rates: [6, 12, 18], kernel_size: 3, channels: 256}

`num_classes` defaults to Cityscapes' 19; the training module resets the classifier
when the data set has another count.
"""

from __future__ import annotations

from collections.abc import Sequence

from aspp_seg.models.aspp import ASPP, ASPPFactory
from aspp_seg.models.backbone import TimmBackbone
from aspp_seg.models.deeplab import DeepLabV3
from aspp_seg.models.heads import DeepLabHead, DeepLabV3PlusHead, FCNHead
from aspp_seg.models.layers import NormLayer, norm_layer
from aspp_seg.models.port import load_torchvision_deeplabv3, read_torchvision_weights
from aspp_seg.models.segnet import SegNet, load_vgg16_bn_imagenet


def deeplabv3(
    *,
    num_classes: int = 19,
    backbone: str = "resnet101",
    pretrained: bool | str = True,
    output_stride: int = 16,
    multi_grid: Sequence[int] | None = None,
    aspp: ASPPFactory = ASPP,
    head_convs: int = 0,
    aux_head: bool = False,
    norm: str = "batch",
    torchvision_weights: str | None = None,
) -> DeepLabV3:
    """DeepLabV3 with a timm backbone and a fully configurable ASPP head.

    Args:
        num_classes: output classes.
        backbone: timm model name (any with ``features_only`` and ``output_stride``).
        pretrained: the backbone's weights: true: timm's ImageNet weights (network or
            a filled cache); a path: a timm checkpoint of the backbone (``.pth`` or
            ``.safetensors``, see `aspp_seg.models.weights`); false: random. A whole
            net's weights come from the module's ``init_weights``.
        output_stride: 8, 16 or 32.
        multi_grid: unit rates of the last stage's blocks, e.g. [1, 2, 4]; None: off.
        aspp: the ASPP and all its settings (`ASPP` with its defaults: DL-1's rates
            6/12/18, 3x3, 256 channels, 1x1 and image-pooling branches, dropout 0.1);
            in YAML a ``class_path`` / ``init_args`` entry, see `ASPPFactory`.
        head_convs: 3x3 conv-norm-ReLU layers before the classifier (the study: 0,
            torchvision: 1).
        aux_head: add an FCN head on the stage before last (training only; its loss
            weight is the module's ``aux_weight``).
        norm: ``batch`` or ``group``, for backbone and heads alike (SyncBatchNorm is
            applied under DDP by `aspp_seg.training.callbacks.FastPaths`).
        torchvision_weights: port torchvision DeepLabV3 weights: a ``.pth`` state dict
            or a torchvision weights name (see `aspp_seg.models.port`); needs the
            torchvision layout (resnet50/101, OS8, rates 12/24/36, head_convs 1).
    """
    norm_type = norm_layer(norm)
    body = _body(
        backbone,
        pretrained if torchvision_weights is None else False,
        output_stride,
        multi_grid,
        norm_type,
    )
    head = DeepLabHead(
        feature_info=body.feature_info,
        num_classes=num_classes,
        aspp=aspp,
        head_convs=head_convs,
        norm_layer=norm_type,
    )
    net = DeepLabV3(body, head, _aux(body, num_classes, norm_type) if aux_head else None)
    if torchvision_weights is not None:
        load_torchvision_deeplabv3(net, read_torchvision_weights(torchvision_weights))
    return net


def _body(
    backbone: str,
    pretrained: bool | str,
    output_stride: int,
    multi_grid: Sequence[int] | None,
    norm_type: NormLayer,
) -> TimmBackbone:
    """The encoder of both DeepLab builders."""
    return TimmBackbone(
        backbone,
        pretrained=pretrained,
        output_stride=output_stride,
        multi_grid=multi_grid,
        norm_layer=norm_type,
    )


def deeplabv3plus(
    *,
    num_classes: int = 19,
    backbone: str = "resnet101",
    pretrained: bool | str = True,
    output_stride: int = 16,
    multi_grid: Sequence[int] | None = None,
    aspp: ASPPFactory = ASPP,
    low_level_stride: int = 4,
    low_level_channels: int = 48,
    decoder_channels: int = 256,
    aux_head: bool = False,
    norm: str = "batch",
) -> DeepLabV3:
    """DeepLabV3+: the DeepLabV3 encoder plus a decoder that fuses early features.

    Args:
        aspp: as in `deeplabv3`; its ``separable`` (the paper's Xception setting, off
            for ResNets) also makes the decoder's convs depthwise-separable.
        low_level_stride: stride of the backbone stage fused in the decoder (4).
        low_level_channels: width of the projected low-level features (48).
        decoder_channels: width of the decoder's two 3x3 convs (256).
        Other arguments: see `deeplabv3`.
    """
    norm_type = norm_layer(norm)
    body = _body(backbone, pretrained, output_stride, multi_grid, norm_type)
    head = DeepLabV3PlusHead(
        feature_info=body.feature_info,
        num_classes=num_classes,
        aspp=aspp,
        low_level_stride=low_level_stride,
        low_level_channels=low_level_channels,
        decoder_channels=decoder_channels,
        norm_layer=norm_type,
    )
    return DeepLabV3(body, head, _aux(body, num_classes, norm_type) if aux_head else None)


def _aux(body: TimmBackbone, num_classes: int, norm_type: NormLayer) -> FCNHead:
    """The FCN aux head on the stage before last."""
    return FCNHead(feature_info=body.feature_info, num_classes=num_classes, norm_layer=norm_type)


def segnet(*, num_classes: int = 19, pretrained: bool = True, norm: str = "batch") -> SegNet:
    """SegNet with a VGG-16-BN encoder, the study's baseline.

    Args:
        num_classes: output classes.
        pretrained: load torchvision's ImageNet VGG-16-BN weights into the encoder.
        norm: ``batch`` or ``group``; ImageNet weights need ``batch``.
    """
    net = SegNet(num_classes, norm_layer=norm_layer(norm))
    if pretrained:
        load_vgg16_bn_imagenet(net)
    return net


MODELS = {"deeplabv3": deeplabv3, "deeplabv3plus": deeplabv3plus, "segnet": segnet}
"""Registry: architecture name -> builder."""
