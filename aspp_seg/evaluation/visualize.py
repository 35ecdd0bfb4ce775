"""Pictures of label maps: palette colouring, overlays and confusion-matrix plots.

Works on numpy arrays or tensors; colours come from the palette the caller gives: the
data set's (``datamodule.palette``, ``model.palette`` of a loaded model, or a data set
file's ``PALETTE``, e.g. `aspp_seg.data.datasets.cityscapes.PALETTE`). Pixels whose
label has no palette entry (255 = ignore, or any out-of-range value) are drawn black.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from aspp_seg.models.preprocess import IMAGENET_MEAN, IMAGENET_STD

Palette = Sequence[Sequence[int]]


def _numpy(array: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(array, torch.Tensor):
        return array.detach().cpu().numpy()
    return np.asarray(array)


def denormalize(image: torch.Tensor) -> np.ndarray:
    """3 x H x W image tensor -> H x W x 3 uint8 RGB.

    Takes uint8 RGB (what the data sets yield) as it is, and undoes the ImageNet
    normalisation of a float tensor.
    """
    if image.dtype == torch.uint8:
        return image.detach().cpu().permute(1, 2, 0).numpy()
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    rgb = (image.detach().cpu().float() * std + mean).clamp(0, 1) * 255
    return (rgb + 0.5).byte().permute(1, 2, 0).numpy()


def palette_lut(palette: Palette) -> np.ndarray:
    """uint8[256, 3] lookup: label -> RGB; labels beyond the palette are black."""
    if len(palette) > 256:
        raise ValueError(f"a palette has at most 256 colours, got {len(palette)}")
    lut = np.zeros((256, 3), dtype=np.uint8)
    lut[: len(palette)] = np.asarray(palette, dtype=np.uint8).reshape(-1, 3)
    return lut


def colorize(labels: np.ndarray | torch.Tensor, palette: Palette) -> np.ndarray:
    """Colours a label map.

    Args:
        labels: H x W (or B x H x W) integer labels, 255 = ignore.
        palette: RGB colour per label (the data set's).

    Returns:
        H x W x 3 (or B x H x W x 3) uint8 RGB.
    """
    labels = _numpy(labels)
    lut = palette_lut(palette)
    index = np.where((labels >= 0) & (labels < 256), labels, 255).astype(np.uint8)
    return lut[index]


def overlay(
    image: np.ndarray | torch.Tensor,
    labels: np.ndarray | torch.Tensor,
    palette: Palette,
    *,
    alpha: float = 0.5,
) -> np.ndarray:
    """Blends the coloured labels over an image; ignored pixels keep the image.

    Args:
        image: H x W x 3 uint8 RGB (a 3 x H x W tensor is accepted too).
        labels: H x W integer labels, 255 = ignore.
        palette: RGB colour per label.
        alpha: weight of the label colours.

    Returns:
        H x W x 3 uint8 RGB.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha={alpha} must lie in [0, 1]")
    image = _numpy(image)
    if image.ndim == 3 and image.shape[0] == 3 and image.shape[-1] != 3:
        image = image.transpose(1, 2, 0)
    labels = _numpy(labels)
    if image.shape[:2] != labels.shape:
        raise ValueError(f"image is {image.shape[:2]} but labels are {labels.shape}")
    colours = colorize(labels, palette).astype(np.float32)
    blended = (1 - alpha) * image.astype(np.float32) + alpha * colours
    known = (labels >= 0) & (labels < len(palette))
    out = np.where(known[..., None], blended, image.astype(np.float32))
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def normalize_confusion(confusion: np.ndarray | torch.Tensor) -> np.ndarray:
    """Row-normalised C x C' matrix: the share of each true class given to each prediction.

    Rows without ground-truth pixels are all zero.
    """
    cm = _numpy(confusion).astype(np.float64)
    rows = cm.sum(1, keepdims=True)
    return np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)


def plot_confusion(
    confusion: np.ndarray | torch.Tensor,
    class_names: Sequence[str],
    path: str | Path,
    *,
    title: str = "",
) -> Path:
    """Writes the row-normalised confusion matrix as a PNG heat map.

    Args:
        confusion: C x C counts (rows = truth, columns = prediction); a C x (C + 1)
            matrix is shown with its last column labelled ``void`` (predictions of no
            evaluated class).
        class_names: the C class names.
        path: the PNG to write.
        title: optional plot title.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib import pyplot as plt

    norm = normalize_confusion(confusion)
    rows, cols = norm.shape
    x_names = list(class_names) + ["void"] * (cols - rows)
    size = max(4.0, 0.45 * cols + 2)
    fig, ax = plt.subplots(figsize=(size, size * rows / cols + 0.6), dpi=100)
    ax.imshow(norm, cmap="Blues", vmin=0.0, vmax=1.0)
    ax.set_xticks(range(cols), x_names, rotation=90, fontsize=7)
    ax.set_yticks(range(rows), list(class_names), fontsize=7)
    ax.set_xlabel("prediction")
    ax.set_ylabel("ground truth")
    if title:
        ax.set_title(title)
    if cols <= 40:
        for i in range(rows):
            for j in range(cols):
                if norm[i, j] >= 0.005:
                    colour = "white" if norm[i, j] > 0.5 else "black"
                    ax.text(j, i, f"{100 * norm[i, j]:.0f}", ha="center", va="center",
                            fontsize=5, color=colour)  # fmt: skip
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
