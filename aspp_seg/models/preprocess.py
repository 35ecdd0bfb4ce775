"""Input normalisation that the networks own: RGB 0-255 in, ImageNet statistics inside.

As segment-anything keeps ``pixel_mean`` / ``pixel_std`` on the model, a loaded or
exported network takes images as files and data loaders give them, and nobody outside
it needs ImageNet's numbers. The statistics live here, not in ``aspp_seg.data``, so that
``aspp_seg.models`` stays plain PyTorch (``aspp_seg.data`` imports Lightning).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
"""ImageNet RGB mean in 0-1 units (what timm's and torchvision's weights were trained with)."""
IMAGENET_STD = (0.229, 0.224, 0.225)
"""ImageNet RGB standard deviation in 0-1 units."""


def register_pixel_stats(
    module: nn.Module,
    *,
    pixel_mean: Sequence[float] = IMAGENET_MEAN,
    pixel_std: Sequence[float] = IMAGENET_STD,
) -> None:
    """Gives `module` the buffers ``pixel_mean`` and ``pixel_std`` (1 x 3 x 1 x 1, 0-255 units).

    The buffers are not persistent: they follow the module's device, dtype and memory
    format, but stay out of its state dict, so checkpoints are unchanged by them.

    Args:
        module: the network that normalises its input.
        pixel_mean: per-channel mean in 0-1 units.
        pixel_std: per-channel standard deviation in 0-1 units.

    Raises:
        ValueError: when mean and std do not have one positive value per channel each.
    """
    if len(pixel_mean) != len(pixel_std) or any(s <= 0 for s in pixel_std):
        raise ValueError(
            f"pixel_mean={list(pixel_mean)} and pixel_std={list(pixel_std)} need one value "
            "per channel each, std > 0"
        )
    # float32 products as in albumentations' Normalize (mean * max_pixel_value)
    mean = torch.tensor(pixel_mean, dtype=torch.float32).view(1, -1, 1, 1) * 255
    std = torch.tensor(pixel_std, dtype=torch.float32).view(1, -1, 1, 1) * 255
    module.register_buffer("pixel_mean", mean, persistent=False)
    module.register_buffer("pixel_std", std, persistent=False)


def normalize_pixels(
    images: torch.Tensor, pixel_mean: torch.Tensor, pixel_std: torch.Tensor
) -> torch.Tensor:
    """RGB images, 0-255 (uint8 or float) -> (images - mean) / std in the stats' dtype.

    Keeps the images' memory format: a channels_last batch stays channels_last (no
    contiguous NCHW copy).

    Args:
        images: B x 3 x H x W, values 0-255.
        pixel_mean: 1 x 3 x 1 x 1 in 0-255 units (see `register_pixel_stats`).
        pixel_std: 1 x 3 x 1 x 1 in 0-255 units.

    Returns:
        B x 3 x H x W normalised images.

    Raises:
        ValueError: for images that are not B x C x H x W with the stats' C channels.
    """
    # a traced shape is a tensor; the check is for eager callers, a trace fixes C anyway
    if not torch.jit.is_tracing() and (images.dim() != 4 or images.shape[1] != pixel_mean.shape[1]):
        raise ValueError(
            f"images must be B x {pixel_mean.shape[1]} x H x W RGB (0-255), got shape "
            f"{tuple(images.shape)}"
        )
    return (images.to(pixel_mean.dtype) - pixel_mean) / pixel_std
