"""SegNet (Badrinarayanan et al. 2017), the study's baseline: a VGG-16-BN encoder and a
mirrored decoder that upsamples with the encoder's max-pooling indices."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from aspp_seg.errors import ConfigError
from aspp_seg.models.layers import NormLayer, fresh_classifier
from aspp_seg.models.preprocess import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    normalize_pixels,
    register_pixel_stats,
)

VGG16 = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))
"""Conv widths of VGG-16's five stages; each stage ends in a 2x2 max pool."""


def _conv(in_channels: int, out_channels: int, norm_layer: NormLayer) -> list[nn.Module]:
    return [
        nn.Conv2d(in_channels, out_channels, 3, padding=1),
        norm_layer(out_channels),
        nn.ReLU(inplace=True),
    ]


class SegNet(nn.Module):
    """Encoder-decoder with pooling indices, returning ``{"out": B x C x H x W}``.

    The encoder is laid out exactly like torchvision's ``vgg16_bn().features`` (same
    module indices), so its ImageNet weights load as they are; its max pools also
    return their indices. Each decoder stage unpools with the indices of the matching
    encoder stage (to that stage's exact input size, so odd sizes work) and applies
    the mirrored convs; a 3x3 conv classifies every pixel. The net normalises its
    input itself (buffers ``pixel_mean`` / ``pixel_std``, not in the state dict).

    Args:
        num_classes: number of output classes.
        stages: conv widths per encoder stage (VGG-16 by default).
        norm_layer: norm after every conv.
        pixel_mean: per-channel mean (0-1 units) that the encoder's weights expect.
        pixel_std: per-channel standard deviation (0-1 units).
    """

    def __init__(
        self,
        num_classes: int,
        *,
        stages: Sequence[Sequence[int]] = VGG16,
        norm_layer: NormLayer = nn.BatchNorm2d,
        pixel_mean: Sequence[float] = IMAGENET_MEAN,
        pixel_std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        super().__init__()
        register_pixel_stats(self, pixel_mean=pixel_mean, pixel_std=pixel_std)
        encoder: list[nn.Module] = []
        in_channels = 3
        for widths in stages:
            for width in widths:
                encoder += _conv(in_channels, width, norm_layer)
                in_channels = width
            encoder.append(nn.MaxPool2d(2, 2, return_indices=True))
        self.encoder = nn.Sequential(*encoder)
        self.unpool = nn.MaxUnpool2d(2, 2)
        # decoder stage i mirrors encoder stage i: its widths reversed, ending in the
        # width that entered the encoder stage; the classifier takes the place of the
        # first stage's last conv (as in SegNet, where conv1_1_D outputs the classes)
        decoder = []
        for index, widths in reversed(list(enumerate(stages))):
            outs = list(reversed(widths))[1:] + ([stages[index - 1][-1]] if index else [])
            layers: list[nn.Module] = []
            in_channels = widths[-1]
            for width in outs:
                layers += _conv(in_channels, width, norm_layer)
                in_channels = width
            decoder.append(nn.Sequential(*layers))
        self.decoder = nn.ModuleList(decoder)
        self.classifier = nn.Conv2d(stages[0][0], num_classes, 3, padding=1)

    @property
    def num_classes(self) -> int:
        return self.classifier.out_channels

    def reset_classifier(self, num_classes: int) -> None:
        """Replaces the classifier with a fresh one for `num_classes`."""
        self.classifier = fresh_classifier(self.classifier, num_classes)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """B x 3 x H x W RGB, 0-255 (uint8 or float) -> ``{"out": B x num_classes x H x W}``."""
        x = normalize_pixels(images, self.pixel_mean, self.pixel_std)
        pooled: list[tuple[torch.Tensor, torch.Size]] = []
        for layer in self.encoder:
            if isinstance(layer, nn.MaxPool2d):
                size = x.shape[-2:]
                x, indices = layer(x)
                pooled.append((indices, size))
            else:
                x = layer(x)
        for stage, (indices, size) in zip(self.decoder, reversed(pooled), strict=True):
            x = stage(self.unpool(x, indices, output_size=size))
        return {"out": self.classifier(x)}


def load_vgg16_bn_imagenet(net: SegNet, load: Callable[[], nn.Module] | None = None) -> None:
    """Loads torchvision's ImageNet VGG-16-BN weights into the SegNet encoder.

    Args:
        net: a SegNet with the default VGG-16 stages.
        load: returns a torchvision VGG-16-BN (default: downloads
            ``VGG16_BN_Weights.IMAGENET1K_V1`` through torchvision, once).
    """
    if load is None:

        def load() -> nn.Module:
            from torchvision.models import VGG16_BN_Weights, vgg16_bn

            return vgg16_bn(weights=VGG16_BN_Weights.IMAGENET1K_V1)

    try:
        vgg = load()
    except (OSError, RuntimeError) as error:
        raise ConfigError(
            f"could not load torchvision's VGG-16-BN ImageNet weights ({type(error).__name__}); "
            "with no network set pretrained: false, or fill torch's hub cache (TORCH_HOME) first"
        ) from error
    net.encoder.load_state_dict(vgg.features.state_dict())
