"""Albumentations presets, chosen by name in YAML (``data.augment``).

- ``none``: the study's protocol: no augmentation beyond an optional resize and a
  random crop of `crop_size` (the label padded with 255 where the image is smaller).
- ``deeplabv3``: the DeepLabv3 recipe: random scale (0.5-2.0), random crop padded
  with 255 in the label, horizontal flip, photometric distortion, and optionally a
  class-balanced crop (re-drawn while one class covers more than `cat_max_ratio`).

Scale and crop are one step (`RandomScaleCrop`): the crop window is drawn in the
original image and only that window is resized, so a 2x zoom of a 1024x2048 frame
resizes a 256x512 window to 512x1024 instead of the whole frame to 2048x4096. Evaluation
never crops.

Pipelines end in uint8: images leave the data loader as 3 x H x W uint8 RGB and the
network normalises them on its device (its ``pixel_mean`` / ``pixel_std`` buffers,
`aspp_seg.models.preprocess`), as mmsegmentation's data preprocessor does. A float32 crop would be
4x the bytes through worker processes, pinned memory and the host-to-device copy.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import albumentations as A
import cv2
import numpy as np
import torch
from albumentations.pytorch import ToTensorV2

from aspp_seg.data.labels import IGNORE_INDEX
from aspp_seg.errors import ConfigError
from aspp_seg.models.preprocess import IMAGENET_MEAN, IMAGENET_STD

PRESETS = ("none", "deeplabv3")


def normalize_images(images: torch.Tensor) -> torch.Tensor:
    """uint8 RGB images (... x 3 x H x W, 0-255) -> float32 with ImageNet mean and std.

    Runs on the images' device and keeps their memory format (channels_last stays
    channels_last). The same arithmetic as albumentations' ``Normalize`` on uint8.

    Raises:
        TypeError: for images that are not uint8 (already normalised, or scaled 0-1).
    """
    if images.dtype != torch.uint8:
        raise TypeError(f"normalize_images needs uint8 images (0-255), got {images.dtype}")
    mean, std = _imagenet_stats(images.device)
    return images.float().sub_(mean).div_(std)


@functools.cache
def _imagenet_stats(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """3 x 1 x 1 mean and std in 0-255 units on `device`, made once per device: building
    them each step would be two blocking host-to-GPU copies in the training loop."""
    mean = torch.tensor(IMAGENET_MEAN, device=device).view(3, 1, 1) * 255
    std = torch.tensor(IMAGENET_STD, device=device).view(3, 1, 1) * 255
    return mean, std


class RandomScaleCrop(A.DualTransform):
    """Random scale then random crop, computed as one resize of the crop window.

    Equivalent to resizing the whole image by a factor s drawn from `scale_range`,
    padding it to at least `size` (image with 0, label with `fill_mask`) and cutting a
    random `size` window; with `cat_max_ratio` < 1 the window is drawn again (up to
    `max_tries` times) while one class covers more than that share of its labelled
    pixels (mmsegmentation's class-balanced crop).

    Args:
        size: (height, width) of the output.
        scale_range: (min, max) of the scale factor s; (1, 1) crops without scaling.
        cat_max_ratio: largest share of one class in a crop; 1.0 turns the check off.
        max_tries: window draws before the last one is kept.
        fill_mask: label value of padded pixels.
        p: probability of applying (keep 1: the output size is the point).
    """

    def __init__(
        self,
        size: Sequence[int],
        *,
        scale_range: Sequence[float] = (0.5, 2.0),
        cat_max_ratio: float = 1.0,
        max_tries: int = 10,
        fill_mask: int = IGNORE_INDEX,
        p: float = 1.0,
    ) -> None:
        super().__init__(p=p)
        if len(size) != 2 or min(size) < 1:
            raise ConfigError(f"data.crop_size={list(size)} must be [height, width] >= 1")
        if len(scale_range) != 2 or not 0 < scale_range[0] <= scale_range[1]:
            raise ConfigError(
                f"data.scale_range={list(scale_range)} must be [min, max] with 0 < min <= max"
            )
        if not 0 < cat_max_ratio <= 1:
            raise ConfigError(f"data.cat_max_ratio={cat_max_ratio} must be in (0, 1]")
        self.size = (int(size[0]), int(size[1]))
        self.scale_range = (float(scale_range[0]), float(scale_range[1]))
        self.cat_max_ratio = float(cat_max_ratio)
        self.max_tries = max_tries
        self.fill_mask = fill_mask

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("size", "scale_range", "cat_max_ratio", "max_tries", "fill_mask")

    def _window(self, height: int, width: int, scale: float) -> tuple[float, float, int, int]:
        """A random crop window in scaled coordinates: (y0, x0, scaled H, scaled W)."""
        sh, sw = round(height * scale), round(width * scale)
        ch, cw = self.size
        # Images smaller than the crop are padded on the bottom/right, as PadIfNeeded
        # with position top_left + RandomCrop would do; larger ones get a random offset.
        y0 = self.py_random.randint(0, sh - ch) if sh > ch else 0
        x0 = self.py_random.randint(0, sw - cw) if sw > cw else 0
        return y0, x0, sh, sw

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict:
        height, width = params["shape"][:2]
        scale = self.py_random.uniform(*self.scale_range)
        window = self._window(height, width, scale)
        mask = data.get("mask")
        if self.cat_max_ratio < 1.0 and mask is not None:
            for _ in range(self.max_tries - 1):
                crop = _crop(mask, window, self.size, scale, cv2.INTER_NEAREST, self.fill_mask)
                counts = np.bincount(crop.ravel(), minlength=256)[:IGNORE_INDEX]
                counts = counts[counts > 0]
                if len(counts) > 1 and counts.max() / counts.sum() < self.cat_max_ratio:
                    break
                window = self._window(height, width, scale)
        return {"window": window, "scale": scale}

    def apply(self, img: np.ndarray, window: tuple, scale: float, **params: Any) -> np.ndarray:
        return _crop(img, window, self.size, scale, cv2.INTER_LINEAR, 0)

    def apply_to_mask(
        self, mask: np.ndarray, window: tuple, scale: float, **params: Any
    ) -> np.ndarray:
        return _crop(mask, window, self.size, scale, cv2.INTER_NEAREST, self.fill_mask)


def _crop(
    array: np.ndarray,
    window: tuple[float, float, int, int],
    size: tuple[int, int],
    scale: float,
    interpolation: int,
    fill: int,
) -> np.ndarray:
    """Cuts `size` at `window` out of `array` scaled by `scale`, resizing only the window.

    Args:
        array: H x W (x C) uint8.
        window: (y0, x0, scaled H, scaled W) from `RandomScaleCrop._window`.

    Returns:
        size[0] x size[1] (x C), padded with `fill` beyond the scaled image.
    """
    y0, x0, sh, sw = window
    ch, cw = size
    h, w = array.shape[:2]
    out_h, out_w = min(ch, sh - y0), min(cw, sw - x0)  # the part inside the scaled image
    if (sh, sw) == (h, w):  # no scaling (the study's protocol): a slice, no warp
        out = np.full((ch, cw, *array.shape[2:]), fill, dtype=array.dtype)
        out[:out_h, :out_w] = array[int(y0) : int(y0) + out_h, int(x0) : int(x0) + out_w]
        return out
    # Source rows/columns that map to [y0, y0 + out_h) x [x0, x0 + out_w) after scaling,
    # with a one-pixel margin for interpolation; the affine map keeps the exact geometry
    # of a whole-image resize (pixel centres: src = (dst + 0.5) * h / sh - 0.5).
    fy, fx = h / sh, w / sw
    top = max(0, int(np.floor((y0 + 0.5) * fy - 0.5)) - 1)
    left = max(0, int(np.floor((x0 + 0.5) * fx - 0.5)) - 1)
    bottom = min(h, int(np.ceil((y0 + out_h - 0.5) * fy - 0.5)) + 2)
    right = min(w, int(np.ceil((x0 + out_w - 0.5) * fx - 0.5)) + 2)
    src = array[top:bottom, left:right]
    matrix = np.array(
        [
            [1 / fx, 0, ((left + 0.5) / fx - 0.5) - x0],
            [0, 1 / fy, ((top + 0.5) / fy - 0.5) - y0],
        ],
        dtype=np.float64,
    )
    if interpolation == cv2.INTER_NEAREST:
        # Nearest: dst pixel takes the source pixel floor(dst_centre * f) like cv2.resize.
        ys = np.minimum(((np.arange(out_h) + y0 + 0.5) * fy).astype(np.int64), h - 1) - top
        xs = np.minimum(((np.arange(out_w) + x0 + 0.5) * fx).astype(np.int64), w - 1) - left
        part = src[ys[:, None], xs[None, :]]
    else:
        part = cv2.warpAffine(
            src, matrix, (out_w, out_h), flags=interpolation, borderMode=cv2.BORDER_REPLICATE
        )
    if part.shape[:2] == (ch, cw):
        return part
    out = np.full((ch, cw, *array.shape[2:]), fill, dtype=array.dtype)
    out[:out_h, :out_w] = part
    return out


def photometric() -> list[A.BasicTransform]:
    """mmsegmentation-style photometric distortion, each part with probability 0.5:
    brightness +-32 (of 255) and contrast x0.5-1.5; hue +-18 degrees (9 in OpenCV's
    0-180 hue units) and saturation +-40 (of 255, additive where mmsegmentation scales
    by 0.5-1.5)."""
    return [
        A.RandomBrightnessContrast(brightness_limit=32 / 255, contrast_limit=0.5, p=0.5),
        A.HueSaturationValue(hue_shift_limit=9, sat_shift_limit=40, val_shift_limit=0, p=0.5),
    ]


def _resize(image_size: Sequence[int] | None) -> list[A.BasicTransform]:
    if image_size is None:
        return []
    return [A.Resize(*image_size, interpolation=cv2.INTER_LINEAR)]


def _finish(normalize: bool) -> list[A.BasicTransform]:
    steps = [A.Normalize(mean=IMAGENET_MEAN, std=IMAGENET_STD)] if normalize else []
    return [*steps, ToTensorV2()]


def train_transform(
    preset: str = "none",
    *,
    crop_size: Sequence[int] | None = None,
    image_size: Sequence[int] | None = None,
    scale_range: Sequence[float] = (0.5, 2.0),
    cat_max_ratio: float = 1.0,
    flip: bool = True,
    color: bool = True,
    normalize: bool = False,
) -> A.Compose:
    """Training pipeline of a preset (see the module docstring).

    Args:
        preset: one of `PRESETS`.
        crop_size: (height, width) of the random crop; None trains on whole images
            (``deeplabv3`` needs a crop).
        image_size: (height, width) to resize to first; None keeps the file's size.
        scale_range: ``deeplabv3``: range of the random scale.
        cat_max_ratio: ``deeplabv3``: class-balanced crop threshold; 1.0 = off.
        flip: ``deeplabv3``: random horizontal flip.
        color: ``deeplabv3``: photometric distortion.
        normalize: ImageNet mean/std normalisation in the pipeline (float32 out); off
            by default: images stay uint8 and the network normalises them on its device.
    """
    if preset not in PRESETS:
        raise ConfigError(f"data.augment={preset!r} is not a preset; allowed: {PRESETS}")
    steps = _resize(image_size)
    if preset == "none":
        if crop_size is not None:
            steps.append(RandomScaleCrop(crop_size, scale_range=(1.0, 1.0)))
    else:
        if crop_size is None:
            raise ConfigError("data.augment='deeplabv3' needs data.crop_size, e.g. [512, 1024]")
        steps.append(
            RandomScaleCrop(crop_size, scale_range=scale_range, cat_max_ratio=cat_max_ratio)
        )
        if flip:
            steps.append(A.HorizontalFlip(p=0.5))
        if color:
            steps.extend(photometric())
    return A.Compose(steps + _finish(normalize))


def eval_transform(
    *, image_size: Sequence[int] | None = None, normalize: bool = False
) -> A.Compose:
    """Evaluation pipeline: optional resize (and normalisation, see `train_transform`);
    labels are never cropped."""
    return A.Compose(_resize(image_size) + _finish(normalize))
