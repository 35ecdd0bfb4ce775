"""Backbones: any timm model that supports `features_only` and `output_stride`."""

from __future__ import annotations

from collections.abc import Sequence

import timm
import torch
from torch import nn

from aspp_seg.errors import ConfigError

OUTPUT_STRIDES = (8, 16, 32)


class TimmBackbone(nn.Module):
    """A timm feature extractor that returns one feature map per stage.

    `output_stride` is turned into dilation by timm in one place: the stages past the
    requested stride keep their resolution and dilate their convolutions instead
    (OS16: last stage dilated by 2; OS8: last two stages dilated by 2 and 4).

    Args:
        name: timm model name, e.g. ``resnet101`` or ``resnet50d``.
        pretrained: load timm's ImageNet weights (needs network or a filled cache).
        output_stride: ratio of input size to the last feature map: 8, 16 or 32.
        out_indices: which stages to return; default all.
    """

    def __init__(
        self,
        name: str = "resnet101",
        *,
        pretrained: bool = True,
        output_stride: int = 16,
        out_indices: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        if output_stride not in OUTPUT_STRIDES:
            raise ConfigError(
                f"output_stride={output_stride} is not supported; allowed: {OUTPUT_STRIDES}"
            )
        if not timm.is_model(name):
            raise ConfigError(f"backbone {name!r} is not a timm model (see timm.list_models())")
        kwargs = {"out_indices": tuple(out_indices)} if out_indices is not None else {}
        try:
            self.body = timm.create_model(
                name,
                pretrained=pretrained,
                features_only=True,
                output_stride=output_stride,
                **kwargs,
            )
        except (OSError, RuntimeError) as error:
            if not pretrained:
                raise
            raise ConfigError(
                f"could not load pretrained weights for backbone {name!r} "
                f"({type(error).__name__}); with no network set pretrained: false, "
                "or fill timm's cache (HF_HOME) on a machine with network first"
            ) from error
        self.name = name
        self.output_stride = output_stride

    @property
    def feature_info(self) -> list[dict]:
        """Per returned stage: ``num_chs`` (channels) and ``reduction`` (stride)."""
        info = self.body.feature_info
        return [
            {"num_chs": c, "reduction": r}
            for c, r in zip(info.channels(), info.reduction(), strict=True)
        ]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """B x 3 x H x W -> list of B x C_i x H/r_i x W/r_i, shallow to deep."""
        return self.body(x)
