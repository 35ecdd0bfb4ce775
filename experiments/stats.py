"""Whether a variant differs from the reference beyond noise: two intervals and a verdict.

Two sources of noise, each with its own interval for the difference of val mIoU
(variant minus reference, as fractions):

- **Seeds** (`welch_interval`): training the same config again with another seed gives
  another mIoU. Welch's t over the runs' val mIoUs: the difference of the means, its
  standard error sqrt(s_a^2 / n_a + s_b^2 / n_b) and the Student t quantile at the
  Welch-Satterthwaite degrees of freedom. Where a side has a single run, its variance
  is unknown and there is no interval (no other method's variance is borrowed).
- **Val images** (`paired_bootstrap`): the val split is a sample of scenes. The images
  are resampled with replacement, the same resample for every run (paired), each run's
  mIoU is recomputed from its per-image confusion matrices (IoU is a ratio of sums, so
  the counts are summed, not the per-image IoUs averaged), the seed means differenced;
  the interval is the percentile interval of that difference.

One interval over both sources together (`hierarchical_bootstrap`): each resample
draws the val images (paired, as above) and, within each side, its seeds with
replacement; its percentile interval and two-sided p-value are the basis of a verdict.
The same bootstraps serve Boundary IoU and the trimap IoU: `score` turns summed
per-image counts into the compared value (`miou` of confusion counts, `boundary_miou` of
Boundary IoU counts, `class_iou` / `boundary_class_iou` for one class).

With several comparisons (every pair of variants), `holm` adjusts their p-values
(Holm's step-down: the family-wise error rate stays at alpha), and `holm_levels` gives
the confidence level at which each comparison's interval is read under it.

`verdict`: ``better`` or ``worse`` when every interval lies on one side of zero,
``not distinguishable`` otherwise. Plain numpy; scipy gives the t quantile.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Interval:
    """A difference (variant minus reference) with its interval.

    Attributes:
        diff: the point estimate (difference of the seed means).
        low, high: the interval's ends.
        test: how the interval was made, in words (``Welch's t, df 3.4``).
        p: two-sided p-value of "no difference", where the method gives one (NaN
            otherwise): for the bootstraps, twice the smaller share of resampled
            differences on either side of zero, at most 1.
    """

    diff: float
    low: float
    high: float
    test: str
    p: float = math.nan


def welch_interval(
    reference: Sequence[float], variant: Sequence[float], confidence: float = 0.95
) -> Interval | None:
    """`confidence` interval of mean(variant) - mean(reference) over seeds (Welch's t).

    Args:
        reference, variant: one value per run (seed).
        confidence: the interval's coverage.

    Returns:
        None when a side has fewer than two runs: its seed variance is unknown, and
        another method's (another architecture's) does not stand for it.
    """
    from scipy.stats import t as student_t

    a, b = np.asarray(reference, dtype=np.float64), np.asarray(variant, dtype=np.float64)
    if len(a) < 2 or len(b) < 2:
        return None
    diff = float(b.mean() - a.mean())
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    se = math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1)) if se else math.inf
    test = f"Welch's t, df {df:.1f}"
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


def class_iou(counts: np.ndarray) -> np.ndarray:
    """Per-class IoU of confusion matrices, ... x C x C -> ... x C (NaN: no pixels)."""
    counts = np.asarray(counts, dtype=np.float64)
    tp = np.diagonal(counts, axis1=-2, axis2=-1)
    union = counts.sum(-2) + counts.sum(-1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, tp / union, np.nan)


def boundary_class_iou(counts: np.ndarray) -> np.ndarray:
    """Per-class Boundary IoU of (summed) `aspp_seg.evaluation.boundary.boundary_counts`,
    ... x C x 2 (intersection, union) -> ... x C (NaN where the union is empty)."""
    counts = np.asarray(counts, dtype=np.float64)
    inter, union = counts[..., 0], counts[..., 1]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / union, np.nan)


def boundary_miou(counts: np.ndarray) -> np.ndarray:
    """Mean Boundary IoU over the classes with a band, ... x C x 2 -> ... (NaN if none):
    `aspp_seg.evaluation.boundary.boundary_iou`'s mean, for `hierarchical_bootstrap`."""
    iou = boundary_class_iou(counts)
    found = (~np.isnan(iou)).sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(found > 0, np.nansum(iou, axis=-1) / found, np.nan)


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
    test = f"paired bootstrap, {resamples} resamples"
    return Interval(diff, float(low), float(high), test, bootstrap_p(diffs))


def _same_images(reference: Sequence, variant: Sequence) -> list[np.ndarray]:
    runs = [np.asarray(r) for r in (*reference, *variant)]
    shapes = {r.shape for r in runs}
    if not reference or not variant or len(shapes) != 1 or runs[0].ndim < 2:
        raise ValueError(f"need N x ... counts of the same images for every run, got {shapes}")
    return runs


def bootstrap_p(diffs: np.ndarray) -> float:
    """Two-sided p-value of a zero difference from resampled differences: twice the
    smaller share on either side of zero (ties count on both), at most 1."""
    diffs = np.asarray(diffs, dtype=np.float64)
    diffs = diffs[~np.isnan(diffs)]
    if len(diffs) == 0:
        return math.nan
    return float(min(1.0, 2 * min(np.mean(diffs <= 0), np.mean(diffs >= 0))))


def hierarchical_bootstrap(
    reference: Sequence[np.ndarray],
    variant: Sequence[np.ndarray],
    *,
    confidence: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
    score: Callable[[np.ndarray], np.ndarray] = miou,
) -> Interval:
    """One `confidence` interval of the difference of seed-mean scores (variant minus
    reference) over both noise sources: seeds and val images.

    Each resample draws N val images with replacement (the same draw for every run of
    both sides: paired), scores every run on them (`score` of its summed counts: IoU is
    a ratio of sums), then draws each side's runs with replacement (n_ref of the n_ref
    reference runs, n_var of the variant's) and differences the two means; the interval
    is the percentile interval of those differences, ``p`` their `bootstrap_p`. The
    image draw comes first from the generator, as in `paired_bootstrap`, so where every
    run of a side is the same the two give the same interval.

    A side with one run has no seed noise in its resamples (nothing to draw from): the
    interval then covers that side's image noise only, and ``test`` says so.

    Few seeds: drawing n runs from n keeps (n - 1) / n of their variance (2/3 at n = 3),
    and a percentile interval reads normal quantiles where the seed mean of n runs has
    Student's t with n - 1 degrees of freedom (4.30 against 1.96 at n = 3, 95 %). So,
    within each image resample, every run's distance from its side's mean is stretched
    by ``sqrt(n / (n - 1)) * t(n - 1) / z`` before the seeds are drawn (`seed_stretch`;
    2.69 at n = 3, 95 %): the seed part of the interval is then as wide as a t interval
    of the seed mean, the image part unchanged. A side whose runs do not differ adds no
    width.

    Args:
        reference, variant: per run (seed), its per-image counts, N x ... with the N
            images in the same order for every run (N x C x C confusion counts, N x C x 2
            Boundary IoU counts, or one width of the trimap counts).
        confidence: the interval's coverage.
        resamples: bootstrap resamples.
        seed: of the resampling (the interval is reproducible).
        score: R x ... summed counts -> R values (`miou`, `boundary_miou`, or e.g.
            ``lambda c: class_iou(c)[..., pole]``).

    Raises:
        ValueError: the runs were not scored on the same images (shapes differ).
    """
    runs = _same_images(reference, variant)
    n, shape = runs[0].shape[0], runs[0].shape[1:]
    rng = np.random.default_rng(seed)
    weights = rng.multinomial(n, np.full(n, 1 / n), size=resamples).astype(np.float64)
    flat = [r.reshape(n, -1).astype(np.float64) for r in runs]
    # runs x R: every run scored on every image resample, and on all images once
    scored = np.stack([score((weights @ f).reshape(resamples, *shape)) for f in flat])
    whole = np.array([score(f.sum(0).reshape(1, *shape))[0] for f in flat])
    k = len(reference)
    diff = float(whole[k:].mean() - whole[:k].mean())
    rows = np.arange(resamples)[:, None]

    def side_means(side: np.ndarray) -> np.ndarray:  # runs x R -> R resampled seed means
        centre = side.mean(0)
        stretched = centre + seed_stretch(len(side), confidence) * (side - centre)
        return stretched[rng.integers(len(side), size=(resamples, len(side))), rows].mean(1)

    ref, var = side_means(scored[:k]), side_means(scored[k:])
    diffs = var - ref
    tail = 100 * (1 - confidence) / 2
    low, high = np.nanpercentile(diffs, [tail, 100 - tail])
    test = (f"hierarchical bootstrap (seeds {k} vs {len(variant)}, {n} images), "
            f"{resamples} resamples")  # fmt: skip
    if min(k, len(variant)) < 2:
        test += "; a side with one run adds no seed noise"
    return Interval(diff, float(low), float(high), test, bootstrap_p(diffs))


def seed_stretch(n: int, confidence: float = 0.95) -> float:
    """The factor by which `hierarchical_bootstrap` stretches n runs' distances from their
    mean: ``sqrt(n / (n - 1))`` (the variance that drawing n from n loses) times
    ``t(n - 1) / z`` at the interval's two-sided `confidence` (Student's against the
    normal quantile); 1 for a single run (there is no spread to stretch)."""
    if n < 2:
        return 1.0
    from scipy import stats

    q = 1 - (1 - confidence) / 2
    return math.sqrt(n / (n - 1)) * float(stats.t.ppf(q, n - 1) / stats.norm.ppf(q))


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values (Holm 1979), in the order given.

    Sorted ascending, the i-th of m p-values (i = 1..m) is multiplied by m - i + 1; the
    adjusted values are the running maximum of those, capped at 1. Rejecting where the
    adjusted p-value is below alpha keeps the family-wise error rate at alpha. (What
    statsmodels' ``multipletests(method="holm")`` returns.)

    Args:
        pvalues: the m comparisons' p-values (NaN: left out, and NaN in the result).
    """
    p = np.asarray(pvalues, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    given = np.flatnonzero(~np.isnan(p))
    m = len(given)
    if m == 0:
        return out
    order = given[np.argsort(p[given], kind="stable")]
    scaled = (m - np.arange(m)) * p[order]
    out[order] = np.minimum(1.0, np.maximum.accumulate(scaled))
    return out


def holm_levels(pvalues: Sequence[float], alpha: float = 0.05) -> np.ndarray:
    """The confidence level at which Holm's procedure reads each comparison's interval:
    the comparison with the i-th smallest of m p-values at 1 - alpha / (m - i + 1) (the
    smallest at Bonferroni's 1 - alpha / m, the largest at 1 - alpha). Step-down: a
    comparison counts as a difference only if its interval at that level excludes zero
    and so do those of every comparison with a smaller p-value (`holm` < alpha says both
    at once).
    """
    p = np.asarray(pvalues, dtype=np.float64)
    m = len(p)
    levels = np.empty(m)
    levels[np.argsort(p, kind="stable")] = 1 - alpha / (m - np.arange(m))
    return levels


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
