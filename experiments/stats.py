"""Whether a variant differs from the reference beyond noise: two intervals and a verdict.

Two sources of noise, each with its own interval for the difference of val mIoU
(variant minus reference, as fractions):

- **Seeds** (`welch_interval`): training the same config again with another seed gives
  another mIoU. Welch's t over the runs' val mIoUs: the difference of the means, its
  standard error sqrt(s_a^2 / n_a + s_b^2 / n_b) and the Student t quantile at the
  Welch-Satterthwaite degrees of freedom. Where one side has a single run, its variance
  is unknown: the other side's sample variance stands for both (a pooled t with
  n - 1 degrees of freedom from the side that has seeds).
- **Val images** (`paired_bootstrap`): the val split is a sample of scenes. The images
  are resampled with replacement, the same resample for every run (paired), each run's
  mIoU is recomputed from its per-image confusion matrices (IoU is a ratio of sums, so
  the counts are summed, not the per-image IoUs averaged), the seed means differenced;
  the interval is the percentile interval of that difference.

`verdict`: ``better`` or ``worse`` when every interval lies on one side of zero,
``not distinguishable`` otherwise. Plain numpy; scipy gives the t quantile.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Interval:
    """A difference (variant minus reference) with its interval.

    Attributes:
        diff: the point estimate (difference of the seed means).
        low, high: the interval's ends.
        test: how the interval was made, in words (``Welch's t, df 3.4``).
    """

    diff: float
    low: float
    high: float
    test: str


def welch_interval(
    reference: Sequence[float], variant: Sequence[float], confidence: float = 0.95
) -> Interval | None:
    """`confidence` interval of mean(variant) - mean(reference) over seeds (Welch's t).

    Args:
        reference, variant: one value per run (seed).
        confidence: the interval's coverage.

    Returns:
        None when neither side has two runs (no seed spread to compare with).
    """
    from scipy.stats import t as student_t

    a, b = np.asarray(reference, dtype=np.float64), np.asarray(variant, dtype=np.float64)
    if len(a) == 0 or len(b) == 0 or (len(a) < 2 and len(b) < 2):
        return None
    diff = float(b.mean() - a.mean())
    if len(a) >= 2 and len(b) >= 2:
        va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
        se = math.sqrt(va + vb)
        df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1)) if se else math.inf
        test = f"Welch's t, df {df:.1f}"
    else:  # one run on one side: the other side's seed variance stands for both
        seeds = a if len(a) >= 2 else b
        se = float(seeds.std(ddof=1)) * math.sqrt(1 / len(a) + 1 / len(b))
        df = len(seeds) - 1
        test = f"t with the {len(seeds)}-seed side's spread for both, df {df}"
    half = float(student_t.ppf(0.5 + confidence / 2, df)) * se if se else 0.0
    return Interval(diff, diff - half, diff + half, test)


def miou(counts: np.ndarray) -> np.ndarray:
    """mIoU of confusion matrices, `aspp_seg.evaluation.metrics.scores`' definition.

    Args:
        counts: ... x C x C (rows: truth, columns: prediction).

    Returns:
        ... : the mean over classes with pixels (ground truth or predicted) of
        TP / (TP + FP + FN); NaN where no class has any.
    """
    counts = np.asarray(counts, dtype=np.float64)
    tp = np.diagonal(counts, axis1=-2, axis2=-1)
    union = counts.sum(-2) + counts.sum(-1) - tp
    present = union > 0
    iou = np.where(present, tp / np.where(present, union, 1), 0.0)
    found = present.sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(found > 0, iou.sum(-1) / found, np.nan)


def paired_bootstrap(
    reference: Sequence[np.ndarray],
    variant: Sequence[np.ndarray],
    *,
    confidence: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
) -> Interval:
    """`confidence` interval of the difference of seed-mean val mIoU over val images.

    Args:
        reference, variant: per run (seed), its N x C x C per-image confusion counts,
            the N images in the same order for every run.
        confidence: the interval's coverage (percentile interval).
        resamples: bootstrap resamples of the N images.
        seed: of the resampling (the interval is reproducible).

    Raises:
        ValueError: the runs were not scored on the same number of images and classes.
    """
    runs = [np.asarray(r) for r in (*reference, *variant)]
    shapes = {r.shape for r in runs}
    if len(shapes) != 1 or len(runs[0].shape) != 3 or not reference or not variant:
        raise ValueError(f"need N x C x C counts of the same images per run, got {shapes}")
    n = runs[0].shape[0]
    flat = [r.reshape(n, -1).astype(np.float64) for r in runs]
    c = runs[0].shape[-1]

    def mean_miou(group: list[np.ndarray], weights: np.ndarray) -> np.ndarray:
        # weights: R x N image multiplicities -> R mIoUs per run, averaged over seeds
        return np.mean([miou((weights @ f).reshape(-1, c, c)) for f in group], axis=0)

    ref, var = flat[: len(reference)], flat[len(reference) :]
    ones = np.ones((1, n))
    diff = float(mean_miou(var, ones)[0] - mean_miou(ref, ones)[0])
    rng = np.random.default_rng(seed)
    weights = rng.multinomial(n, np.full(n, 1 / n), size=resamples).astype(np.float64)
    diffs = mean_miou(var, weights) - mean_miou(ref, weights)
    tail = 100 * (1 - confidence) / 2
    low, high = np.nanpercentile(diffs, [tail, 100 - tail])
    return Interval(diff, float(low), float(high), f"paired bootstrap, {resamples} resamples")


def verdict(intervals: Sequence[Interval | None]) -> str:
    """``better`` / ``worse`` when every interval given lies above / below zero; ``not
    distinguishable`` otherwise, or when the seed interval (the first) is missing."""
    if not intervals or intervals[0] is None:
        return "not distinguishable"
    given = [i for i in intervals if i is not None]
    if all(i.low > 0 for i in given):
        return "better"
    if all(i.high < 0 for i in given):
        return "worse"
    return "not distinguishable"
