"""The comparison statistics on hand-made numbers with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from aspp_seg.evaluation.metrics import scores
from experiments import stats


def test_welch_interval_is_welchs_t_test():
    reference, variant = [0.40, 0.42, 0.44], [0.50, 0.54, 0.58]
    interval = stats.welch_interval(reference, variant)
    # by hand: s^2 = 0.0004 and 0.0016 over 3 runs each; Welch-Satterthwaite df =
    # (4e-4/3 + 16e-4/3)^2 / ((4e-4/3)^2 / 2 + (16e-4/3)^2 / 2) = 50 / 17
    assert interval.diff == pytest.approx(0.12)
    assert interval.test == f"Welch's t, df {50 / 17:.1f}"
    se = math.sqrt(0.0004 / 3 + 0.0016 / 3)
    half = scipy_stats.t.ppf(0.975, 50 / 17) * se
    assert (interval.low, interval.high) == pytest.approx((0.12 - half, 0.12 + half))
    # the same interval as scipy's own Welch test
    expected = scipy_stats.ttest_ind(variant, reference, equal_var=False).confidence_interval(0.95)
    assert (interval.low, interval.high) == pytest.approx((expected.low, expected.high))
    assert interval.low > 0 and stats.verdict([interval]) == "better"


def test_one_run_against_seeds_uses_the_seeds_spread():
    """SegNet once against DL-1 over three seeds: t with 2 df (4.302653, a table value)."""
    interval = stats.welch_interval([0.40, 0.42, 0.44], [0.50])
    half = 4.302653 * 0.02 * math.sqrt(1 / 3 + 1)
    assert interval.diff == pytest.approx(0.08)
    assert (interval.low, interval.high) == pytest.approx((0.08 - half, 0.08 + half), abs=1e-6)
    assert "df 2" in interval.test
    assert stats.verdict([interval]) == "not distinguishable"  # the interval holds 0
    assert stats.verdict([stats.welch_interval([0.40, 0.42, 0.44], [0.10])]) == "worse"
    assert stats.welch_interval([0.4], [0.5]) is None  # no seed spread on either side
    assert stats.verdict([None]) == "not distinguishable"


def test_miou_is_the_evaluation_metric():
    rng = np.random.default_rng(0)
    counts = rng.integers(0, 50, size=(4, 5, 5))
    counts[1, 2, :] = 0  # a class without ground truth...
    counts[1, :, 2] = 0  # ...and never predicted: left out of the mean
    assert np.isnan(scores(counts[1])["iou"][2])
    got = stats.miou(counts)
    assert got.shape == (4,)
    assert got == pytest.approx([scores(c)["miou"] for c in counts])
    assert np.isnan(stats.miou(np.zeros((3, 3))))


def _image(matrix) -> np.ndarray:
    return np.array(matrix, dtype=np.int64)


def test_paired_bootstrap_on_two_images_has_a_known_interval():
    """Two val images: a resample is image 1 twice (p 1/4), image 2 twice (1/4) or both
    (1/2), and a doubled image scores as itself, so the 2.5% and 97.5% percentiles are
    the differences on each image alone."""
    perfect = _image([[10, 0], [0, 10]])
    half_wrong = _image([[10, 0], [5, 5]])  # IoU 10/15 and 5/10: mIoU 7/12
    reference = [np.stack([perfect, perfect])]
    variant = [np.stack([perfect, half_wrong])]
    interval = stats.paired_bootstrap(reference, variant, resamples=4000, seed=1)
    # both images: [[20, 0], [5, 15]] -> IoU 20/25 and 15/20: mIoU 0.775
    assert interval.diff == pytest.approx(0.775 - 1)
    assert (interval.low, interval.high) == pytest.approx((7 / 12 - 1, 0.0))
    assert stats.verdict([stats.Interval(-0.2, -0.3, -0.1, "seeds"), interval]) == (
        "not distinguishable"  # the image interval reaches zero
    )


def test_paired_bootstrap_pairs_the_images_and_averages_the_seeds():
    rng = np.random.default_rng(3)
    hard = rng.integers(1, 20, size=(30, 3, 3))  # 30 images of widely varying difficulty
    same = stats.paired_bootstrap([hard], [hard.copy()])
    assert (same.diff, same.low, same.high) == (0.0, 0.0, 0.0)  # paired: no image noise
    better = hard.copy()
    better[:, [0, 1, 2], [0, 1, 2]] += 40  # more true positives on every image
    up = stats.paired_bootstrap([hard, hard], [better, better])
    one = stats.paired_bootstrap([hard], [better])
    assert up.low > 0 and (up.diff, up.low, up.high) == pytest.approx((one.diff, one.low, one.high))
    assert up.diff == pytest.approx(stats.miou(better.sum(0)) - stats.miou(hard.sum(0)))
    assert stats.verdict([stats.Interval(0.1, 0.05, 0.15, "seeds"), up]) == "better"
    with pytest.raises(ValueError, match="same images"):
        stats.paired_bootstrap([hard], [hard[:10]])
