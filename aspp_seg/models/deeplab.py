"""DeepLabV3 / DeepLabV3+: a backbone and heads, composed; output-stride switching."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from aspp_seg.errors import ConfigError
from aspp_seg.models.backbone import check_output_stride
from aspp_seg.models.layers import fresh_classifier, same_padding
from aspp_seg.models.preprocess import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    normalize_pixels,
    register_pixel_stats,
)

EVAL_STRIDE_SETTING = "model.inference.init_args.output_stride"
"""The config setting that switches a net's stride for evaluation (named in errors)."""


class DeepLabV3(nn.Module):
    """RGB images -> backbone features -> head logits, upsampled bilinearly to the input size.

    The same class composes DeepLabV3 (`DeepLabHead`) and DeepLabV3+
    (`DeepLabV3PlusHead`): the variant is the head it is given. The net normalises its
    input itself (buffers ``pixel_mean`` / ``pixel_std``, not in the state dict), so it
    takes images as files and data loaders give them.

    Args:
        backbone: returns a list of feature maps, shallow to deep; has
            ``output_stride`` and ``set_output_stride``.
        head: maps that list to B x num_classes x h x w logits; has ``aspp`` and
            ``classifier``.
        aux_head: optional head on the same features, used only in training.
        pixel_mean: per-channel mean (0-1 units) that the backbone's weights expect.
        pixel_std: per-channel standard deviation (0-1 units).

    Returns from forward: ``{"out": B x num_classes x H x W}``, plus ``"aux"`` in
    training mode when an auxiliary head is set.
    """

    def __init__(
        self,
        backbone: nn.Module,
        head: nn.Module,
        aux_head: nn.Module | None = None,
        *,
        pixel_mean: Sequence[float] = IMAGENET_MEAN,
        pixel_std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        super().__init__()
        register_pixel_stats(self, pixel_mean=pixel_mean, pixel_std=pixel_std)
        self.backbone = backbone
        self.head = head
        self.aux_head = aux_head
        # the stride the rates were chosen for: rates scale by trained / current stride
        self.base_output_stride = backbone.output_stride
        aspp = getattr(head, "aspp", None)
        self.base_rates = tuple(aspp.rates) if aspp is not None else ()

    @property
    def num_classes(self) -> int:
        return self.head.classifier.out_channels

    @property
    def output_stride(self) -> int:
        return self.backbone.output_stride

    def reset_classifier(self, num_classes: int) -> None:
        """Replaces the last conv of each head with a fresh one for `num_classes`."""
        for head in (self.head, self.aux_head):
            if head is not None:
                head.classifier = fresh_classifier(head.classifier, num_classes)

    def rates_at(self, output_stride: int) -> list[int]:
        """The ASPP rates at `output_stride`: the built rates scaled by built / new stride.

        Raises:
            ConfigError: for a stride outside 8 / 16 / 32, or when a scaled rate is
                not an integer (or not even, for an even kernel).
        """
        check_output_stride(output_stride)
        if not hasattr(self.head, "aspp"):
            raise ConfigError(f"{type(self.head).__name__} has no ASPP whose rates could scale")
        scaled = [r * self.base_output_stride / output_stride for r in self.base_rates]
        if any(r != int(r) for r in scaled):
            raise ConfigError(
                f"evaluation output stride ({EVAL_STRIDE_SETTING})={output_stride} would "
                "scale rates "
                f"{list(self.base_rates)} (built at output stride "
                f"{self.base_output_stride}) to {scaled}, which are not all integers"
            )
        rates = [int(r) for r in scaled]
        for rate in rates:
            same_padding(
                self.head.aspp.kernel_size,
                rate,
                setting="model.inference.init_args.output_stride with kernel_size",
            )
        return rates

    def set_output_stride(self, output_stride: int) -> None:
        """Switches the backbone to `output_stride` and scales the ASPP rates with it.

        The DeepLabv3 protocol: a model trained at OS16 with rates (6, 12, 18) is
        evaluated at OS8 with rates (12, 24, 36); weights are unchanged, so switching
        back restores the trained model exactly. Raises as `rates_at`.
        """
        self.head.aspp.set_rates(self.rates_at(output_stride))
        self.backbone.set_output_stride(output_stride)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """B x 3 x H x W RGB, 0-255 (uint8 or float) -> ``{"out": B x num_classes x H x W}``,
        plus ``"aux"`` (same shape) in training with an aux head."""
        size = images.shape[-2:]
        features = self.backbone(normalize_pixels(images, self.pixel_mean, self.pixel_std))
        outputs = {"out": self.head(features)}
        if self.aux_head is not None and self.training:
            outputs["aux"] = self.aux_head(features)
        return {
            key: F.interpolate(value, size=size, mode="bilinear", align_corners=False)
            for key, value in outputs.items()
        }


def set_output_stride(net: nn.Module, output_stride: int) -> None:
    """Switches `net` to `output_stride` in place (backbone strides and dilations, ASPP
    rates and paddings); see `DeepLabV3.set_output_stride`.

    Raises:
        ConfigError: when `net` has no output stride to change (e.g. SegNet).
    """
    if not hasattr(net, "set_output_stride"):
        raise ConfigError(
            f"an evaluation output stride ({EVAL_STRIDE_SETTING}) needs a DeepLab network; "
            f"{type(net).__name__} has no output stride to change"
        )
    net.set_output_stride(output_stride)


def check_eval_output_stride(net: nn.Module, output_stride: int) -> None:
    """Raises ConfigError unless `net` can be switched to `output_stride`."""
    if not hasattr(net, "rates_at"):
        raise ConfigError(
            f"an evaluation output stride ({EVAL_STRIDE_SETTING}) needs a DeepLab network; "
            f"{type(net).__name__} has no output stride to change (set it to null)"
        )
    net.rates_at(output_stride)
