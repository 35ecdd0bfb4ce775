"""Inference modes: whole image, sliding window, multi-scale with horizontal flip.

`Inference` turns any ``model(images) -> logits`` callable (B x 3 x h x w ->
B x C x h x w) into full-resolution logits by one of:

- ``whole``: one forward pass over the image;
- ``slide``: windows of `window` pixels every `stride` pixels, run `batch_size` windows
  at a time (memory stays bounded at any image size), logits averaged where windows
  overlap; the last window of a row or column is moved back to end on the border (as
  in mmsegmentation), and an image smaller than the window is one window;
- either of them at several `scales` (the image is resized, the logits resized back
  bilinearly) and optionally on the horizontally flipped image too (the logits flipped
  back), all averaged: DeepLabv3's multi-scale + flip evaluation;
- optionally at another `output_stride` than the net trained at (DeepLabv3's protocol:
  train at 16, evaluate at 8 with the ASPP rates doubled), which `set_output_stride`
  switches the net to and back.

A whole-image pass holds the net's activations for the whole image: a 6000x8000 photo
would need tens of GB and die in the allocator after minutes. One larger than
`max_pixels` (at its largest scale) is refused before the net runs, naming the sliding
window that bounds memory at any size.

The LightningModule takes one `Inference` for validate / test / predict, as a config
section of its own (``model.inference``, with ``class_path`` and ``init_args`` like the
ASPP); `aspp_seg.load_model` builds the same one from a run's config. Plain PyTorch: no
Lightning here, so it serves the module, scripts and notebooks alike.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from aspp_seg import models
from aspp_seg.errors import ConfigError
from aspp_seg.models.backbone import check_output_stride

MODES = ("whole", "slide")

MAX_PIXELS = 2048 * 4096
"""Default `Inference.max_pixels`: four Cityscapes frames (one at scale 2.0). A
whole-image pass of the study's largest net (ResNet-101 at output stride 8, 19 classes)
raised a CPU process's peak memory (ru_maxrss) by 745 bytes per pixel at 512x1024
(ResNet-101 at stride 16: 464; the demo's ResNet-10t: 296), so this allows about 6 GB."""

Model = Callable[[torch.Tensor], torch.Tensor]


def window_starts(size: int, window: int, stride: int) -> list[int]:
    """Start offsets of the windows along one axis; the last one ends on the border."""
    if size <= window:
        return [0]
    count = -(-(size - window) // stride) + 1  # ceil division
    return [min(i * stride, size - window) for i in range(count)]


def slide_logits(
    model: Model,
    images: torch.Tensor,
    *,
    window: Sequence[int],
    stride: Sequence[int],
    batch_size: int = 4,
) -> torch.Tensor:
    """Sliding-window logits, averaged over overlapping windows.

    Args:
        model: B x 3 x h x w -> B x C x h x w logits.
        images: B x 3 x H x W.
        window: (height, width) of a window; clipped to the image.
        stride: (vertical, horizontal) step between windows.
        batch_size: windows per forward pass (over all images of the batch).

    Returns:
        B x C x H x W logits.
    """
    num, _, height, width = images.shape
    win_h, win_w = min(window[0], height), min(window[1], width)
    boxes = [
        (top, left)
        for top in window_starts(height, win_h, stride[0])
        for left in window_starts(width, win_w, stride[1])
    ]
    logits: torch.Tensor | None = None
    count = images.new_zeros(1, 1, height, width, dtype=torch.int32)  # uint8 would wrap
    per_pass = max(1, batch_size // num)
    for first in range(0, len(boxes), per_pass):
        chunk = boxes[first : first + per_pass]
        crops = torch.cat(
            [images[:, :, top : top + win_h, left : left + win_w] for top, left in chunk]
        )
        out = model(crops)
        if logits is None:
            dtype = torch.promote_types(out.dtype, torch.float32)  # sum bf16 windows in fp32
            logits = out.new_zeros(num, out.shape[1], height, width, dtype=dtype)
        for i, (top, left) in enumerate(chunk):
            logits[:, :, top : top + win_h, left : left + win_w] += out[i * num : (i + 1) * num]
            count[:, :, top : top + win_h, left : left + win_w] += 1
    assert logits is not None
    return logits.div_(count)  # in place: at 6000x8000 px and 19 classes, 3.6 GB saved


class Inference:
    """Configured inference: ``Inference(mode="slide", window=(512, 1024))(model, images)``.

    In YAML (the default, ``model.inference: null``, is one whole-image pass at the
    trained output stride)::

        model:
          inference:
            class_path: aspp_seg.evaluation.inference.Inference
            init_args: {mode: slide, window: [512, 1024], scales: [0.5, 1.0, 1.5], flip: true}

    Args:
        mode: ``whole`` or ``slide``.
        window: (height, width) of a sliding window.
        stride: (vertical, horizontal) step of the windows; default: 2/3 of the window.
        scales: image scales whose logits are averaged, e.g. (0.5, 0.75, 1.0, 1.25,
            1.5, 1.75) for DeepLabv3's multi-scale evaluation.
        flip: also run on the horizontally flipped image(s) and average.
        batch_size: windows per forward pass in ``slide`` mode.
        output_stride: the net's output stride while evaluating (8, 16 or 32; the ASPP
            rates scale with it); None keeps the stride it trained at. Applied by
            `set_output_stride`, which the module calls around every evaluation.
        max_pixels: the largest image (height x width, at the largest scale) run as one
            whole-image pass; a larger one raises ConfigError before the net runs,
            naming ``mode: slide``. None: no limit. Not used in ``slide`` mode, whose
            windows bound the memory.
    """

    def __init__(
        self,
        *,
        mode: str = "whole",
        window: Sequence[int] = (512, 1024),
        stride: Sequence[int] | None = None,
        scales: Sequence[float] = (1.0,),
        flip: bool = False,
        batch_size: int = 4,
        output_stride: int | None = None,
        max_pixels: int | None = MAX_PIXELS,
    ) -> None:
        if mode not in MODES:
            raise ConfigError(f"inference mode {mode!r} is not known; allowed: {MODES}")
        if len(window) != 2 or min(window) < 1:
            raise ConfigError(f"window={list(window)} must be two sizes >= 1 (height, width)")
        stride = tuple(stride) if stride is not None else tuple(max(1, 2 * w // 3) for w in window)
        if len(stride) != 2 or min(stride) < 1:
            raise ConfigError(
                f"stride={list(stride)} must be two steps >= 1 (vertical, horizontal)"
            )
        if not scales or min(scales) <= 0:
            raise ConfigError(f"scales={list(scales)} must be one or more positive factors")
        if batch_size < 1:
            raise ConfigError(f"inference batch_size={batch_size} must be >= 1")
        if output_stride is not None:
            check_output_stride(output_stride)
        if max_pixels is not None and max_pixels < 1:
            raise ConfigError(f"max_pixels={max_pixels} must be >= 1 (None: no limit)")
        self.mode = mode
        self.window = tuple(window)
        self.stride = stride
        self.scales = tuple(float(s) for s in scales)
        self.flip = flip
        self.batch_size = batch_size
        self.output_stride = output_stride
        self.max_pixels = max_pixels

    def __repr__(self) -> str:
        return (
            f"Inference(mode={self.mode!r}, window={self.window}, stride={self.stride}, "
            f"scales={self.scales}, flip={self.flip}, batch_size={self.batch_size}, "
            f"output_stride={self.output_stride}, max_pixels={self.max_pixels})"
        )

    def check(self, net: nn.Module) -> None:
        """Raises ConfigError when `net` cannot run at `output_stride` (a net without an
        output stride to change, or ASPP rates that would not scale to integers)."""
        if self.output_stride is not None:
            models.check_eval_output_stride(net, self.output_stride)

    def set_output_stride(self, net: nn.Module, *, evaluating: bool = True) -> None:
        """Switches `net` to `output_stride` for evaluating, or back to the stride it
        trains at (``evaluating=False``); nothing when `output_stride` is None. Weights
        are untouched, so switching back restores the trained net exactly."""
        if self.output_stride is not None:
            stride = self.output_stride if evaluating else net.base_output_stride
            models.set_output_stride(net, stride)

    @property
    def is_plain(self) -> bool:
        """True when this is one whole-image forward pass."""
        return self.mode == "whole" and self.scales == (1.0,) and not self.flip

    def check_size(self, height: int, width: int) -> None:
        """Raises ConfigError when an image of `height` x `width` pixels is too large for
        a whole-image pass (see `max_pixels`); nothing in ``slide`` mode."""
        if self.mode == "slide" or self.max_pixels is None:
            return
        scale = max(self.scales)
        pixels = round(height * scale) * round(width * scale)
        if pixels <= self.max_pixels:
            return
        at = f" at scale {scale:g}" if scale != 1.0 else ""
        raise ConfigError(
            f"an image of {height} x {width} px{at} ({pixels / 1e6:.1f} MP) is too large "
            f"for whole-image inference (max_pixels: {self.max_pixels / 1e6:.1f} MP); run it "
            "in sliding windows with --model.inference.init_args.mode slide (windows of "
            f"{self.window[0]} x {self.window[1]} px: --model.inference.init_args.window H W), "
            "resize the images for the net (--data.init_args.image_size H W; predictions "
            "keep the files' size), or raise --model.inference.init_args.max_pixels"
        )

    def _single(self, model: Model, images: torch.Tensor) -> torch.Tensor:
        if self.mode == "slide":
            return slide_logits(
                model, images, window=self.window, stride=self.stride, batch_size=self.batch_size
            )
        return model(images)

    def __call__(self, model: Model, images: torch.Tensor) -> torch.Tensor:
        """B x 3 x H x W images -> B x C x H x W logits (averaged over scales and flips).

        Raises:
            ConfigError: before the net runs, for images larger than `max_pixels` in
                ``whole`` mode.
        """
        self.check_size(*images.shape[-2:])
        if self.is_plain:
            return model(images)
        size = images.shape[-2:]
        total: torch.Tensor | None = None
        for scale in self.scales:
            scaled = images
            if scale != 1.0:
                new = [max(1, round(s * scale)) for s in size]
                scaled = F.interpolate(
                    images.float(), size=new, mode="bilinear", align_corners=False
                )  # uint8 bilinear rounds on CPU and has no CUDA kernel
            for flipped in (False, True) if self.flip else (False,):
                inp = scaled.flip(-1) if flipped else scaled
                logits = self._single(model, inp)
                if flipped:
                    logits = logits.flip(-1)
                if logits.shape[-2:] != size:
                    logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
                total = logits if total is None else total + logits
        assert total is not None
        return total / (len(self.scales) * (2 if self.flip else 1))
