"""Backbones: any timm model that supports `features_only` and `output_stride`."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import timm
import torch
from torch import nn

from aspp_seg.errors import ConfigError
from aspp_seg.models.layers import NormLayer, set_dilation
from aspp_seg.models.weights import check_backbone_weights, read_state_dict

OUTPUT_STRIDES = (8, 16, 32)


def _has_tensors(module: nn.Module) -> bool:
    return any(True for _ in module.parameters(recurse=False)) or any(
        True for _ in module.buffers(recurse=False)
    )


class TimmBackbone(nn.Module):
    """A timm feature extractor that returns one feature map per stage.

    `output_stride` is turned into dilation by timm in one place: the stages past the
    requested stride keep their resolution and dilate their convolutions instead
    (OS16: last stage dilated by 2; OS8: last two stages dilated by 2 and 4).
    `set_output_stride` switches a built backbone to another stride in place.

    Args:
        name: timm model name, e.g. ``resnet101`` or ``resnet50d``.
        pretrained: True: timm's ImageNet weights (needs network or a filled cache);
            a path: a timm checkpoint of this backbone, ``.pth`` (read with
            ``weights_only=True``) or ``.safetensors``, its classifier optional
            (`aspp_seg.models.weights`); False: random weights.
        output_stride: ratio of input size to the last feature map: 8, 16 or 32.
        multi_grid: unit rates of the blocks of the last stage (DeepLabv3's
            multi-grid, e.g. (1, 2, 4)); each block's dilation becomes the stage's
            rate times its unit rate. One per block of the last stage; None keeps timm's.
        norm_layer: norm layer type passed to timm (BatchNorm2d by default).
        out_indices: which stages to return; default all.
    """

    def __init__(
        self,
        name: str = "resnet101",
        *,
        pretrained: bool | str | Path = True,
        output_stride: int = 16,
        multi_grid: Sequence[int] | None = None,
        norm_layer: NormLayer = nn.BatchNorm2d,
        out_indices: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        check_output_stride(output_stride)
        if not timm.is_model(name):
            raise ConfigError(f"backbone {name!r} is not a timm model (see timm.list_models())")
        self._create_kwargs: dict = {}
        if out_indices is not None:
            self._create_kwargs["out_indices"] = tuple(out_indices)
        if norm_layer is not nn.BatchNorm2d:
            self._create_kwargs["norm_layer"] = norm_layer
        weights: dict = {}
        try:
            if not isinstance(pretrained, bool):  # a file: checked before the net is built
                state = read_state_dict(pretrained, setting="pretrained")
                check_backbone_weights(state, name, path=pretrained, **self._create_kwargs)
                weights = {"pretrained_cfg_overlay": {"state_dict": state}}  # timm loads it
            self.body = timm.create_model(
                name,
                pretrained=bool(pretrained),
                features_only=True,
                output_stride=output_stride,
                **self._create_kwargs,
                **weights,
            )
        except TypeError as error:
            raise ConfigError(
                f"backbone {name!r} does not accept these settings ({error}); "
                "norm other than batch needs a timm model with a norm_layer argument"
            ) from error
        except (OSError, RuntimeError) as error:
            if pretrained is False or weights:
                raise
            raise ConfigError(
                f"could not load pretrained weights for backbone {name!r} "
                f"({type(error).__name__}); with no network set pretrained: false, "
                "or fill timm's cache (HF_HOME) on a machine with network first"
            ) from error
        self.name = name
        self.output_stride = output_stride
        self._reductions = list(self.body.feature_info.reduction())
        self.multi_grid = tuple(multi_grid) if multi_grid else None
        self._geometries: dict[int, tuple[dict, dict, list]] = {}
        if self.multi_grid is not None:
            if any(r < 1 for r in self.multi_grid):
                raise ConfigError(f"multi_grid={list(self.multi_grid)} must all be >= 1")
            self._apply_multi_grid()

    @property
    def feature_info(self) -> list[dict]:
        """Per returned stage: ``num_chs`` (channels) and ``reduction`` (stride)."""
        channels = self.body.feature_info.channels()
        return [
            {"num_chs": c, "reduction": r} for c, r in zip(channels, self._reductions, strict=True)
        ]

    def last_stage(self) -> nn.Module:
        """The module that yields the deepest returned feature map (e.g. ``layer4``)."""
        name = self.body.feature_info.module_name()[-1]
        return getattr(self.body, name.replace(".", "_"))

    def _apply_multi_grid(self) -> None:
        blocks = list(self.last_stage().children())
        if len(blocks) != len(self.multi_grid):
            raise ConfigError(
                f"multi_grid={list(self.multi_grid)} needs one unit rate per block of the "
                f"last stage of {self.name}, which has {len(blocks)} blocks"
            )
        convs = [
            [m for m in block.modules() if isinstance(m, nn.Conv2d) and m.kernel_size[0] > 1]
            for block in blocks
        ]
        stage_rate = max((c.dilation[0] for block in convs for c in block), default=1)
        for block, unit in zip(convs, self.multi_grid, strict=True):
            for conv in block:
                set_dilation(conv, stage_rate * unit)

    def _geometry(self, output_stride: int) -> tuple[dict, dict, list]:
        """Conv settings and parameter-free layers of this model built at `output_stride`.

        Built once per stride on the meta device (no memory, no weights), so any timm
        model that implements `output_stride` can be switched without special cases.
        """
        if output_stride not in self._geometries:
            with torch.device("meta"):
                template = timm.create_model(
                    self.name,
                    pretrained=False,
                    features_only=True,
                    output_stride=output_stride,
                    **self._create_kwargs,
                )
            convs, layers = {}, {}
            for name, module in template.named_modules():
                if isinstance(module, nn.Conv2d):
                    convs[name] = (module.stride, module.padding, module.dilation)
                elif name and not _has_tensors(module) and not list(module.children()):
                    layers[name] = module
            reductions = list(template.feature_info.reduction())
            self._geometries[output_stride] = (convs, layers, reductions)
        return self._geometries[output_stride]

    def set_output_stride(self, output_stride: int) -> None:
        """Switches strides and dilations in place to `output_stride`; weights unchanged.

        Multi-grid unit rates are re-applied at the new stage rate.
        """
        check_output_stride(output_stride)
        if output_stride == self.output_stride:
            return
        convs, layers, self._reductions = self._geometry(output_stride)
        modules = dict(self.body.named_modules())
        for name, (stride, padding, dilation) in convs.items():
            conv = modules[name]
            conv.stride, conv.padding, conv.dilation = stride, padding, dilation
        for name, layer in layers.items():
            parent, _, child = name.rpartition(".")
            target = modules[parent] if parent else self.body
            if type(getattr(target, child)) is not type(layer) or repr(layer) != repr(
                getattr(target, child)
            ):
                setattr(target, child, layer)
        self.output_stride = output_stride
        if self.multi_grid is not None:
            self._apply_multi_grid()

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """B x 3 x H x W -> list of B x C_i x H/r_i x W/r_i, shallow to deep."""
        return self.body(x)


def check_output_stride(output_stride: int) -> None:
    """Raises ConfigError unless `output_stride` is one of `OUTPUT_STRIDES`."""
    if output_stride not in OUTPUT_STRIDES:
        raise ConfigError(
            f"output_stride={output_stride} is not supported; allowed: {OUTPUT_STRIDES}"
        )
