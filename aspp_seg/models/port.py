"""torchvision's DeepLabV3 as our reference: its weights ported into ours, and the one
builder of torchvision's network that tests and benchmarks compare ours with.

Our model built the same way (ResNet-50/101, output stride 8, ASPP rates 12/24/36 and
dropout 0.5, ``head_convs=1``, ``aux_head=True``) has exactly torchvision's tensors under
other names; this module renames them. Users start from torchvision's published weights
with ``torchvision_weights:`` in the builder (see `aspp_seg.models.deeplabv3`).

torchvision's network takes ImageNet-normalised images; ours takes RGB 0-255 and
normalises inside, so a comparison feeds each its own input.
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import nn

from aspp_seg.errors import ConfigError

TORCHVISION_SETTINGS = (
    "backbone resnet50 or resnet101, output_stride 8, aspp rates [12, 24, 36], kernel_size 3, "
    "channels 256, pointwise_branch true, image_pooling true, separable false, head_convs 1, "
    "norm batch"
)
"""What our builder must be given to hold torchvision's DeepLabV3 tensors."""

TORCHVISION_BACKBONES = ("resnet50", "resnet101")
"""Backbones of torchvision's DeepLabV3."""
_DILATE = {8: [False, True, True], 16: [False, False, True], 32: [False, False, False]}


def torchvision_deeplabv3(
    *,
    num_classes: int = 21,
    backbone: str = "resnet101",
    output_stride: int = 8,
    rates: Sequence[int] = (12, 24, 36),
    head_convs: int = 1,
    aux_head: bool = False,
) -> nn.Module:
    """torchvision's DeepLabV3 from torchvision's own parts, random weights.

    The defaults give exactly ``deeplabv3_resnet101(weights=None, weights_backbone=None,
    aux_loss=False)``; ``output_stride=16, rates=(6, 12, 18), head_convs=0`` gives
    DL-1's head (ASPP, then the classifier) on torchvision's code, for like-with-like
    timing. Its state dict has torchvision's keys, so `load_torchvision_deeplabv3`
    ports it into ours.

    Args:
        num_classes: output classes.
        backbone: ``resnet50`` or ``resnet101`` (torchvision's).
        output_stride: 8, 16 or 32 (``replace_stride_with_dilation`` of the ResNet).
        rates: torchvision's ASPP rates (its 1x1, atrous and pooling branches, 256
            channels, dropout 0.5).
        head_convs: 1: torchvision's 3x3 conv-BN-ReLU after the ASPP; 0: none.
        aux_head: torchvision's FCN aux head on ``layer3``.

    Returns:
        A module mapping B x 3 x H x W ImageNet-normalised images to
        ``{"out": B x num_classes x H x W[, "aux": same]}``.
    """
    from torchvision.models import resnet50, resnet101
    from torchvision.models._utils import IntermediateLayerGetter
    from torchvision.models.segmentation.deeplabv3 import ASPP, DeepLabHead, DeepLabV3
    from torchvision.models.segmentation.fcn import FCNHead

    resnets = {"resnet50": resnet50, "resnet101": resnet101}
    if backbone not in resnets:
        raise ConfigError(f"torchvision backbone={backbone!r}; allowed: {TORCHVISION_BACKBONES}")
    if output_stride not in _DILATE:
        raise ConfigError(f"output_stride={output_stride}; allowed: {tuple(_DILATE)}")
    if head_convs not in (0, 1):
        raise ConfigError(f"torchvision head_convs={head_convs}; allowed: (0, 1)")
    body = resnets[backbone](weights=None, replace_stride_with_dilation=_DILATE[output_stride])
    layers = {"layer4": "out"} | ({"layer3": "aux"} if aux_head else {})
    body = IntermediateLayerGetter(body, return_layers=layers)
    if head_convs:  # ASPP, 3x3 conv-BN-ReLU, classifier
        head = DeepLabHead(2048, num_classes, atrous_rates=list(rates))
    else:  # the same ASPP and classifier without the 3x3 conv
        head = nn.Sequential(ASPP(2048, list(rates)), nn.Conv2d(256, num_classes, 1))
    aux = FCNHead(1024, num_classes) if aux_head else None
    return DeepLabV3(body, head, aux)


_RENAMES = (
    (r"^backbone\.", "backbone.body."),
    (r"^classifier\.0\.project\.0\.", "head.aspp.project.0.0."),
    (r"^classifier\.0\.project\.1\.", "head.aspp.project.0.1."),
    (r"^classifier\.1\.", "head.refine.0.0."),
    (r"^classifier\.2\.", "head.refine.0.1."),
    (r"^classifier\.4\.", "head.classifier."),
    (r"^aux_classifier\.0\.", "aux_head.conv.0."),
    (r"^aux_classifier\.1\.", "aux_head.conv.1."),
    (r"^aux_classifier\.4\.", "aux_head.classifier."),
)
_ASPP_BRANCH = re.compile(r"^classifier\.0\.convs\.(\d+)\.(\d+)\.(.*)$")


def torchvision_to_ours(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Renames a torchvision DeepLabV3 state dict's keys to ours.

    torchvision's ASPP holds ``convs.{i}`` = [conv, bn, relu] for the 1x1 and atrous
    branches and, last, [pool, conv, bn, relu] for image pooling; ours holds
    ``branches.{i}`` = ConvNormAct, and ``ImagePooling.conv`` for the last one.
    """
    branches = [int(m.group(1)) for k in state_dict if (m := _ASPP_BRANCH.match(k))]
    pooling = max(branches, default=-1)
    renamed = {}
    for key, value in state_dict.items():
        new = key
        if match := _ASPP_BRANCH.match(key):
            index, layer, rest = int(match.group(1)), int(match.group(2)), match.group(3)
            if index == pooling:
                new = f"head.aspp.branches.{index}.conv.{layer - 1}.{rest}"
            else:
                new = f"head.aspp.branches.{index}.{layer}.{rest}"
        else:
            for pattern, replacement in _RENAMES:
                new, count = re.subn(pattern, replacement, key)
                if count:
                    break
        renamed[new] = value
    return renamed


def read_torchvision_weights(source: str) -> dict[str, torch.Tensor]:
    """A torchvision DeepLabV3 state dict from a file or a torchvision weights name.

    Args:
        source: a ``.pth`` file holding the state dict (or a torchvision reference
            checkpoint with it under ``"model"``), or a torchvision weights name such
            as ``DeepLabV3_ResNet101_Weights.COCO_WITH_VOC_LABELS_V1`` (downloaded by
            torchvision once, needs network).
    """
    path = Path(source).expanduser()
    if path.is_file():
        try:  # weights only: a weights file is data, never code
            loaded = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError:
            wanted = torch.serialization.get_unsafe_globals_in_checkpoint(path)
            raise ConfigError(
                f"torchvision_weights={source!r} is refused: it asks to load "
                f"{', '.join(wanted) or 'an unsupported object'}, which is code, not data"
            ) from None
        if isinstance(loaded, Mapping) and isinstance(loaded.get("model"), Mapping):
            loaded = loaded["model"]
        return dict(loaded)
    if "Weights." not in source:
        raise ConfigError(
            f"torchvision_weights={source!r} is neither a file nor a torchvision weights "
            "name like DeepLabV3_ResNet101_Weights.COCO_WITH_VOC_LABELS_V1"
        )
    from torchvision.models import get_weight

    try:
        weights = get_weight(source)
    except (KeyError, ValueError) as error:
        message = f"torchvision_weights={source!r} is not a torchvision weights name"
        raise ConfigError(message) from error
    try:
        return weights.get_state_dict(progress=True)
    except (OSError, RuntimeError) as error:
        raise ConfigError(
            f"could not download torchvision_weights={source!r} ({type(error).__name__}); "
            "download it on a machine with network and give the .pth file instead"
        ) from error


def load_torchvision_deeplabv3(net: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> None:
    """Loads torchvision DeepLabV3 weights into `net` in place.

    Classifiers whose class count differs from `net`'s are skipped (they keep their
    fresh initialisation); an aux head on one side only is left out.

    Raises:
        ConfigError: when `net` is not built like torchvision's model
            (see `TORCHVISION_SETTINGS`).
    """
    ours = net.state_dict()
    renamed = torchvision_to_ours(state_dict)
    skipped = {
        key
        for key, value in renamed.items()
        if key.startswith(("head.classifier.", "aux_head.classifier."))
        and key in ours
        and ours[key].shape != value.shape
    }
    if not any(k.startswith("aux_head.") for k in ours):
        skipped |= {k for k in renamed if k.startswith("aux_head.")}  # built without aux
    renamed = {k: v for k, v in renamed.items() if k not in skipped}
    unexpected = sorted(k for k in renamed if k not in ours)
    mismatched = sorted(k for k in renamed if k in ours and ours[k].shape != renamed[k].shape)
    optional = ("aux_head.",) if not any(k.startswith("aux_head.") for k in renamed) else ()
    missing = sorted(
        k for k in ours if k not in renamed and k not in skipped and not k.startswith(optional)
    )
    if unexpected or mismatched or missing:
        first = (unexpected or mismatched or missing)[0]
        raise ConfigError(
            f"torchvision_weights do not fit this model (e.g. {first!r}: "
            f"{len(unexpected)} unexpected, {len(mismatched)} mismatched, {len(missing)} "
            f"missing tensors); build it with {TORCHVISION_SETTINGS}"
        )
    net.load_state_dict(renamed, strict=False)
