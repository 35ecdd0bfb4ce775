"""Boundary metrics of semantic segmentation: Boundary IoU and the trimap IoU.

Both look only at pixels near label boundaries, where the interior of large regions
(road, sky) cannot hide a blurred edge; the paper's hypothesis is that large atrous
rates blur the boundaries of thin objects (poles, signs, lights).

**Boundary IoU** (Cheng et al., "Boundary IoU: Improving object-centric image
segmentation evaluation", CVPR 2021), per class and accumulated over a split like the
IoU: for class c, G = truth == c and P = prediction == c; G_d is the set of pixels of G
within distance d of G's contour (the inner band), P_d the same for P, and

    BIoU_c = sum over images |G_d & P_d| / sum over images |G_d | P_d|.

Distance is the chessboard distance, as in the authors' `mask_to_boundary`
(boundary-iou-api): there the band is ``mask - erode(mask)`` with a 3 x 3 kernel applied
d times, i.e. an erosion by a (2d + 1) x (2d + 1) square, of the mask padded by one
zero pixel, so that the image border is a contour too. Here: a pixel of G is in G_d when
a (2d + 1) x (2d + 1) window around it holds a pixel of another label or of the one-pixel
ring outside the image (the same set). The default d is 2% of the image diagonal,
rounded, at least 1 (Cheng's ``dilation_ratio=0.02``): 12 px at 360 x 480, 6 px at
176 x 240, 46 px at 1024 x 2048; a fixed width in pixels can be given instead.

**Trimap IoU** (the DeepLab papers' "trimap" experiment, mIoU against band width): the
confusion matrix counted only on pixels within chessboard distance w of a ground-truth
label boundary, i.e. whose (2w + 1) x (2w + 1) window holds another truth label (so the
band reaches w px to each side of a boundary; the image border is no boundary). Its
IoU and mIoU follow from `aspp_seg.evaluation.metrics.scores` as for the whole image.

Ignored truth (255) is treated like the outside of the image: its pixels count
nowhere (as in the confusion matrix), and a region that meets them has a contour there,
in the truth (G = truth == c ends there) and in the prediction alike (where the truth
is ignored, the prediction is replaced by "no class" before its bands are drawn). So a
prediction right on every counted pixel scores 1, and what is predicted on ignored
pixels changes nothing. A prediction >= C (``void`` in label files) is in no class's P.
For the trimap, an ignored region's edge is a truth boundary like any other.

Every function gives per-image counts (so a bootstrap over images can resample them)
that sum to the split's counts; `BoundaryScores` is the torchmetrics metric that
validation and test accumulate. All classes at once: a band is drawn on the label map
itself (the window's max and min label differ), with two separable window maxima, not once
per class.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torchmetrics import Metric

from aspp_seg.evaluation.metrics import scores

BOUNDARY_RATIO = 0.02
"""Cheng et al.'s band: 2% of the image diagonal."""

TRIMAP_WIDTHS = (2, 4, 8, 16)
"""Band widths (px to each side of a truth boundary) of the trimap IoU."""


def boundary_distance(height: int, width: int, ratio: float = BOUNDARY_RATIO) -> int:
    """Cheng et al.'s d: `ratio` times the image diagonal, rounded, at least 1 px."""
    return max(1, round(ratio * math.hypot(height, width)))


def label_band(labels: torch.Tensor, radius: int, *, image_border: bool) -> torch.Tensor:
    """Pixels within chessboard distance `radius` of a pixel with another label.

    Args:
        labels: B x H x W integer labels (any values in [0, 255]).
        radius: the distance d >= 1: the window is (2d + 1) x (2d + 1).
        image_border: the ring of pixels just outside the image counts as another label
            (Boundary IoU: the image border is a contour); else the outside is ignored.

    Returns:
        B x H x W bool.
    """
    if radius < 1:
        raise ValueError(f"a band radius must be at least 1 px, got {radius}")
    x = labels.to(torch.int16)
    if image_border:
        x = F.pad(x, (1, 1, 1, 1), value=-1)  # -1: no label's value
    # the window's max and min label differ (the min as minus the max of -x)
    band = _window_max(x, radius) > -_window_max(-x, radius)
    return band[..., 1:-1, 1:-1] if image_border else band


_NEUTRAL = torch.iinfo(torch.int16).min  # below every label and every negated label


def _window_max(x: torch.Tensor, radius: int) -> torch.Tensor:
    """The max over each pixel's (2r + 1) x (2r + 1) window of B x H x W int16 `x`,
    the outside taking no part: separable, each axis by doubling (as a sparse table
    does): the max over 1, 2, 4, ... neighbours, then two overlapping spans cover 2r + 1. About
    log2(2r + 1) elementwise maxima per axis, not 2r + 1 reads of each pixel:
    `F.max_pool2d` with a 25-wide window took 30x longer on one CPU thread."""
    k = 2 * radius + 1
    x = F.pad(x, (radius, radius, radius, radius), value=_NEUTRAL)
    for dim in (-1, -2):
        size = x.shape[dim] - 2 * radius
        span = 1
        while 2 * span <= k:  # x[i] = max of the span at i
            rest = x.shape[dim] - span
            x = torch.maximum(x.narrow(dim, 0, rest), x.narrow(dim, span, rest))
            span *= 2
        x = torch.maximum(x.narrow(dim, 0, size), x.narrow(dim, k - span, size))
    return x


def _batch(pred: torch.Tensor, truth: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if pred.shape != truth.shape or truth.dim() not in (2, 3):
        raise ValueError(
            f"need H x W or B x H x W predictions and truth of one shape, got "
            f"{tuple(pred.shape)} and {tuple(truth.shape)}"
        )
    if truth.dim() == 2:
        return pred[None], truth[None]
    return pred, truth


def _per_image_bincount(index: torch.Tensor, keep: torch.Tensor, bins: int) -> torch.Tensor:
    """B x bins counts of `index` (B x H x W, each in [0, bins)) where `keep` holds."""
    b = index.shape[0]
    offset = torch.arange(b, device=index.device, dtype=index.dtype).view(b, 1, 1) * bins
    flat = torch.where(keep, index + offset, b * bins)  # dropped pixels: one extra bin
    return torch.bincount(flat.flatten(), minlength=b * bins + 1)[: b * bins].view(b, bins)


def boundary_counts(
    pred: torch.Tensor,
    truth: torch.Tensor,
    num_classes: int,
    distance: int | None = None,
) -> torch.Tensor:
    """Per-image Boundary IoU counts: intersection |G_d & P_d| and union |G_d | P_d|.

    Args:
        pred: B x H x W (or H x W) predicted classes; values >= C are in no class.
        truth: the ground truth, same shape, in [0, C) or 255 (ignored).
        num_classes: C.
        distance: d in px; None: `boundary_distance` of the maps' H x W (2% of the
            diagonal).

    Returns:
        B x C x 2 int64 (C x 2 for H x W input): ``[..., 0]`` intersection, ``[..., 1]``
        union; summed over images they are the split's counts (`boundary_iou`).
    """
    single = truth.dim() == 2
    pred, truth = _batch(pred, truth)
    c = num_classes
    d = boundary_distance(*truth.shape[-2:]) if distance is None else int(distance)
    truth = truth.to(torch.int32)
    valid = truth < c  # ignored truth counts nowhere
    # a prediction >= C, or on ignored truth (which is a contour for G too): "no class"
    pred = torch.where(valid, pred.to(torch.int32).clamp(0, c), c)
    truth_band = label_band(truth, d, image_border=True) & valid
    pred_band = label_band(pred, d, image_border=True) & valid
    both = truth_band & pred_band & (truth == pred)
    bins = c + 1  # class C: predicted "no class", dropped below
    g = _per_image_bincount(truth.clamp(max=c), truth_band, bins)
    p = _per_image_bincount(pred, pred_band, bins)
    inter = _per_image_bincount(truth.clamp(max=c), both, bins)
    counts = torch.stack([inter, g + p - inter], dim=-1)[:, :c]
    return counts[0] if single else counts


def trimap_confusion(
    pred: torch.Tensor,
    truth: torch.Tensor,
    num_classes: int,
    width: int,
    *,
    void_column: bool = False,
) -> torch.Tensor:
    """Per-image confusion matrices counted only within `width` px of a truth boundary.

    Args:
        pred: B x H x W (or H x W) predicted classes in [0, C) (or any value >= C for
            ``void`` when `void_column`).
        truth: the ground truth, same shape, in [0, C) or 255 (ignored).
        num_classes: C.
        width: w: pixels whose (2w + 1) x (2w + 1) window holds another truth label.
        void_column: add a last column counting predictions >= C (as
            `aspp_seg.evaluation.metrics.reduce_histogram`); without it such
            predictions must not occur.

    Returns:
        B x C x C int64 (rows: truth, columns: prediction), or B x C x (C + 1) with
        `void_column`; C x C for H x W input. `scores` of the sum is the trimap IoU.
    """
    single = truth.dim() == 2
    pred, truth = _batch(pred, truth)
    c = num_classes
    cols = c + 1 if void_column else c
    truth = truth.to(torch.int32)
    keep = label_band(truth, int(width), image_border=False) & (truth < c)
    index = truth.clamp(max=c - 1) * cols + pred.to(torch.int32).clamp(0, cols - 1)
    counts = _per_image_bincount(index, keep, c * cols).view(-1, c, cols)
    return counts[0] if single else counts


def boundary_iou(counts: torch.Tensor | np.ndarray) -> dict:
    """Boundary IoU per class and its mean, from (summed) `boundary_counts`.

    Args:
        counts: C x 2 (intersection, union).

    Returns:
        ``{"iou": float64[C] (NaN where the union is empty: no band of the class in
        truth or prediction), "miou": float (mean over the others; NaN if none)}``.
    """
    counts = counts.cpu().numpy() if hasattr(counts, "cpu") else counts
    counts = np.asarray(counts, dtype=np.float64)
    if counts.ndim != 2 or counts.shape[1] != 2:
        raise ValueError(f"boundary counts must be C x 2, got {counts.shape}")
    inter, union = counts[:, 0], counts[:, 1]
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, inter / np.maximum(union, 1), np.nan)
    miou = float(np.nanmean(iou)) if not np.isnan(iou).all() else float("nan")
    return {"iou": iou, "miou": miou}


def describe_distance(sizes: set[tuple[int, int]], distance: int | None = None) -> str:
    """Boundary IoU's d in words for images of these H x W `sizes`, e.g. ``12 px (2% of
    the 360 x 480 diagonal)``; `distance`: a fixed d in px."""
    if distance is not None:
        return f"{distance} px"
    if len(sizes) == 1:
        ((h, w),) = sizes
        return f"{boundary_distance(h, w)} px (2% of the {h} x {w} diagonal)"
    return "2% of each image's diagonal"


def summarize(
    boundary: torch.Tensor | np.ndarray,
    trimap: torch.Tensor | np.ndarray,
    widths: Sequence[int],
    d: str,
) -> dict:
    """An evaluation's boundary entries from its summed counts (validate, test and
    ``aspp-seg evaluate`` alike; `aspp_seg.evaluation.reports.save_boundary_results`
    writes them).

    Args:
        boundary: C x 2 `boundary_counts` summed over the images.
        trimap: W x C x C (or W x C x (C + 1), void predictions last) `trimap_confusion`
            summed over the images, one matrix per width.
        widths: the W trimap widths.
        d: Boundary IoU's band in words (`BoundaryScores.describe_distance`).

    Returns:
        ``{"boundary": {"counts": C x 2, "iou": float64[C], "miou": float, "d": d},
        "trimap": {"widths": [W ints], "confusion": W x C x C, "iou": float64 W x C,
        "miou": [W floats]}}``.
    """
    boundary = boundary.cpu() if hasattr(boundary, "cpu") else np.asarray(boundary)
    trimap = trimap.cpu() if hasattr(trimap, "cpu") else np.asarray(trimap)
    per_width = [scores(matrix) for matrix in trimap]
    return {
        "boundary": {"counts": boundary, **boundary_iou(boundary), "d": d},
        "trimap": {"widths": [int(w) for w in widths], "confusion": trimap,
                   "iou": np.stack([s["iou"] for s in per_width]),
                   "miou": [s["miou"] for s in per_width]},
    }  # fmt: skip


def label_file_counts(
    pred: np.ndarray,
    truth: np.ndarray,
    num_classes: int,
    *,
    trimap_widths: Sequence[int] = TRIMAP_WIDTHS,
) -> tuple[np.ndarray, np.ndarray]:
    """One pair of label files' counts, for ``aspp-seg evaluate``.

    Args:
        pred: H x W classes after the prediction encoding (>= C: void, in no class).
        truth: H x W classes after the truth encoding (>= C: ignored).
        num_classes: C.
        trimap_widths: the trimap bands.

    Returns:
        C x 2 Boundary IoU counts (d = 2% of this image's diagonal) and
        W x C x (C + 1) trimap confusion (the last column: void predictions).
    """
    c = num_classes
    truth_t = torch.from_numpy(np.where(truth < c, truth, 255).astype(np.uint8))
    pred_t = torch.from_numpy(np.minimum(pred, c).astype(np.uint8))
    boundary = boundary_counts(pred_t, truth_t, c)
    trimap = [trimap_confusion(pred_t, truth_t, c, w, void_column=True) for w in trimap_widths]
    return boundary.numpy(), torch.stack(trimap).numpy()


class BoundaryScores(Metric):
    """Boundary IoU and trimap confusion counts of a split, summed over images and
    processes (torchmetrics states, like `aspp_seg.evaluation.confusion.ConfusionMatrix`).

    States: ``boundary`` C x 2 int64 (`boundary_counts`) and ``trimap`` W x C x C int64
    (`trimap_confusion` at each of `trimap_widths`).

    Args:
        num_classes: C.
        distance: Boundary IoU's d in px; None: 2% of each label map's diagonal.
        trimap_widths: the trimap bands, px to each side of a truth boundary.
        kwargs: torchmetrics `Metric` options.
    """

    full_state_update = False

    def __init__(
        self,
        num_classes: int,
        *,
        distance: int | None = None,
        trimap_widths: Sequence[int] = TRIMAP_WIDTHS,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if distance is not None and distance < 1:
            raise ValueError(
                f"distance={distance} must be at least 1 px (or None: 2% of the diagonal)"
            )
        if any(w < 1 for w in trimap_widths):
            raise ValueError(f"trimap_widths={list(trimap_widths)} must be at least 1 px each")
        self.num_classes = num_classes
        self.distance = distance
        self.trimap_widths = tuple(int(w) for w in trimap_widths)
        c, w = num_classes, len(self.trimap_widths)
        self.add_state("boundary", torch.zeros(c, 2, dtype=torch.int64), dist_reduce_fx="sum")
        self.add_state("trimap", torch.zeros(w, c, c, dtype=torch.int64), dist_reduce_fx="sum")
        self.sizes: set[tuple[int, int]] = set()  # H x W of the images scored (this process)

    def per_image(
        self, preds: torch.Tensor, target: torch.Tensor, sizes: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Each image's counts: B x C x 2 (boundary) and B x W x C x C (trimap).

        Args:
            preds: B x H x W predictions in [0, C).
            target: B x H x W truth (255: ignored).
            sizes: B x 2 each label's own H, W when the batch is padded to its largest
                (``label_size``); each image is then scored at its own size (its border
                is a contour, its d its own diagonal's).
        """
        full = tuple(target.shape[-2:])
        if sizes is not None and any(tuple(s) != full for s in sizes.tolist()):
            parts = [
                self.per_image(p[None, :h, :w], t[None, :h, :w])
                for p, t, (h, w) in zip(preds, target, sizes.tolist(), strict=True)
            ]
            return torch.cat([b for b, _ in parts]), torch.cat([t for _, t in parts])
        c = self.num_classes
        self.sizes.add(full)
        boundary = boundary_counts(preds, target, c, self.distance)
        trimap = [trimap_confusion(preds, target, c, w) for w in self.trimap_widths]
        return boundary, torch.stack(trimap, dim=1)

    def update(
        self, preds: torch.Tensor, target: torch.Tensor, sizes: torch.Tensor | None = None
    ) -> None:
        """Adds a batch (`per_image`'s arguments)."""
        self.add(*self.per_image(preds, target, sizes))

    def add(self, boundary: torch.Tensor, trimap: torch.Tensor) -> None:
        """Adds per-image counts: B x C x 2 and B x W x C x C."""
        self.boundary += boundary.sum(0)
        self.trimap += trimap.sum(0)

    def compute(self) -> dict[str, torch.Tensor]:
        """``{"boundary": C x 2, "trimap": W x C x C}``, the summed int64 counts."""
        return {"boundary": self.boundary.clone(), "trimap": self.trimap.clone()}

    def reset(self) -> None:
        super().reset()
        self.sizes = set()

    def describe_distance(self) -> str:
        """Boundary IoU's d in words (`describe_distance`)."""
        return describe_distance(self.sizes, self.distance)
