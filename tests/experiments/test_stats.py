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


def test_one_run_gets_no_seed_interval():
    """SegNet once against DL-1 over three seeds: SegNet's seed variance is unknown, and
    DL-1's (another architecture's) does not stand for it: no interval, no verdict."""
    assert stats.welch_interval([0.40, 0.42, 0.44], [0.50]) is None
    assert stats.welch_interval([0.50], [0.40, 0.42, 0.44]) is None
    assert stats.welch_interval([0.4], [0.5]) is None
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


def test_holm_on_a_hand_worked_example():
    """m = 4 p-values. Sorted: 0.005 (#3), 0.01 (#0), 0.03 (#2), 0.04 (#1); times
    4, 3, 2, 1: 0.02, 0.03, 0.06, 0.04; running maximum: 0.02, 0.03, 0.06, 0.06.

    At alpha 0.05 Holm rejects #3 and #0 and stops at #2 (0.03 > 0.05 / 2), so #1 is
    not rejected either, although its own p (0.04) is below 0.05 / 1."""
    p = [0.01, 0.04, 0.03, 0.005]
    assert stats.holm(p) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert list(stats.holm(p) < 0.05) == [True, False, False, True]
    # the interval of each comparison is read at 1 - 0.05 / (m - rank + 1)
    assert stats.holm_levels(p) == pytest.approx([1 - 0.05 / 3, 0.95, 0.975, 1 - 0.05 / 4])
    assert stats.holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1
    assert stats.holm([0.02]) == pytest.approx([0.02])  # one comparison: unchanged
    adjusted = stats.holm([0.01, float("nan"), 0.02])  # NaN: left out of m
    assert adjusted[[0, 2]] == pytest.approx([0.02, 0.02]) and math.isnan(adjusted[1])


def test_holm_against_its_definition_on_random_p_values():
    """Step-down by hand: walk the sorted p-values, adjusted = max over the steps so far
    of (m - step) * p, capped at 1."""
    rng = np.random.default_rng(7)
    for _ in range(20):
        p = rng.uniform(0, 0.2, size=rng.integers(1, 8))
        order = np.argsort(p)
        expected, running = np.empty_like(p), 0.0
        for step, i in enumerate(order):
            running = max(running, min(1.0, (len(p) - step) * p[i]))
            expected[i] = running
        assert stats.holm(p) == pytest.approx(expected)


def _runs(per_image_values, shape=(3,)) -> list[np.ndarray]:
    """Runs whose per-image counts hold one value (then ones): a linear score
    (`_mean_value`) makes a run's score the mean of its images' values."""
    runs = []
    for values in per_image_values:
        counts = np.ones((len(values), *shape))
        counts[:, 0] = values
        runs.append(counts)
    return runs


def _mean_value(totals: np.ndarray) -> np.ndarray:
    # totals[..., 1] is the number of images drawn: the mean of the per-image values
    return totals[..., 0] / totals[..., 1]


def test_hierarchical_bootstrap_of_identical_variants_is_centred_on_zero():
    rng = np.random.default_rng(0)
    images = rng.uniform(0.3, 0.7, size=40)
    seeds = [images + 0.05 * k for k in (-1, 0, 1)]  # three seeds, spread 0.05
    interval = stats.hierarchical_bootstrap(_runs(seeds), _runs(seeds), score=_mean_value)
    assert interval.diff == 0.0
    assert interval.low < 0 < interval.high
    assert interval.low == pytest.approx(-interval.high, abs=0.01)  # about symmetric
    assert interval.p > 0.5 and stats.verdict([interval]) == "not distinguishable"


def test_hierarchical_bootstrap_of_a_constant_shift_is_the_shift():
    """Every image of every variant run scores 0.1 more than the same image of every
    reference run; with no seed spread every resample's difference is 0.1."""
    rng = np.random.default_rng(1)
    images = rng.uniform(0.3, 0.7, size=25)
    ref, var = _runs([images] * 3), _runs([images + 0.1] * 3)
    interval = stats.hierarchical_bootstrap(ref, var, score=_mean_value)
    assert (interval.diff, interval.low, interval.high) == pytest.approx((0.1, 0.1, 0.1))
    assert interval.p == 0.0 and stats.verdict([interval]) == "better"
    # with mIoU of confusion counts: identical images, one extra true positive in each
    image = np.array([[8, 2], [2, 8]])  # IoU 8/12 per class
    better = np.array([[9, 1], [1, 9]])  # 9/11
    ref = [np.stack([image] * 10)] * 2
    var = [np.stack([better] * 10)] * 2
    interval = stats.hierarchical_bootstrap(ref, var)
    assert (interval.diff, interval.low, interval.high) == pytest.approx((9 / 11 - 2 / 3,) * 3)


def test_hierarchical_bootstrap_without_seed_spread_is_the_image_bootstrap():
    rng = np.random.default_rng(3)
    hard = rng.integers(1, 20, size=(30, 3, 3))
    better = hard.copy()
    better[:, [0, 1, 2], [0, 1, 2]] += rng.integers(0, 20, size=(30, 3))
    both = stats.hierarchical_bootstrap([hard] * 3, [better] * 2, seed=5)
    images = stats.paired_bootstrap([hard] * 3, [better] * 2, seed=5)
    assert (both.diff, both.low, both.high, both.p) == pytest.approx(
        (images.diff, images.low, images.high, images.p)
    )
    assert both.low > 0


def test_hierarchical_bootstrap_of_seeds_alone_has_a_known_interval():
    """Every image alike (no image noise); reference seeds all score 0, the variant's
    score 0, 0 and 0.3. Stretched by f = `seed_stretch(3)` about their mean 0.1, they
    are 0.1 - 0.1 f (twice) and 0.1 + 0.2 f; a resample's variant mean is then
    0.1 + f (m - 0.1), where m, the mean of three draws of 0, 0 and 0.3, is 0 (8/27),
    0.1 (12/27), 0.2 (6/27) or 0.3 (1/27 = 3.7% > 2.5%). So the 95% percentile
    interval is [0.1 - 0.1 f, 0.1 + 0.2 f] around the difference 0.1."""
    flat = np.zeros(12)
    ref = _runs([flat] * 3)
    var = _runs([flat, flat, flat + 0.3])
    interval = stats.hierarchical_bootstrap(ref, var, score=_mean_value, resamples=4000)
    f = stats.seed_stretch(3)
    assert (interval.diff, interval.low, interval.high) == pytest.approx(
        (0.1, 0.1 - 0.1 * f, 0.1 + 0.2 * f)
    )
    # P(diff <= 0) = 8/27: p = 16/27, give or take the 4000 draws (sd of p: 0.014)
    assert interval.p == pytest.approx(2 * 8 / 27, abs=0.05)
    # one run per side: no seed noise, and the interval says so
    single = stats.hierarchical_bootstrap(ref[:1], var[2:], score=_mean_value)
    assert (single.low, single.high) == pytest.approx((0.3, 0.3))
    assert "one run adds no seed noise" in single.test


def test_seed_stretch_makes_the_seed_part_a_t_interval():
    """sqrt(n / (n - 1)) x t(n - 1) / z: 2.69 at n = 3 and 95 % (t = 4.303, z = 1.960),
    nearing 1 with many seeds; a single run is not stretched. The variance of the mean of
    n draws from n stretched values is then the sample variance over n, times (t / z)^2."""
    assert stats.seed_stretch(3) == pytest.approx(math.sqrt(1.5) * 4.302653 / 1.959964)
    assert stats.seed_stretch(1) == 1.0
    assert 1 < stats.seed_stretch(200) < 1.01
    values = np.array([0.0, 0.1, 0.5])
    f = stats.seed_stretch(3)
    stretched = values.mean() + f * (values - values.mean())
    draws_var = stretched.var() / 3  # variance of the mean of 3 draws with replacement
    t_over_z = scipy_stats.t.ppf(0.975, 2) / scipy_stats.norm.ppf(0.975)
    assert draws_var == pytest.approx(values.var(ddof=1) / 3 * t_over_z**2)


def test_hierarchical_bootstrap_is_deterministic_and_checks_its_runs():
    rng = np.random.default_rng(4)
    runs = [rng.integers(0, 30, size=(15, 4, 4)) for _ in range(4)]
    first = stats.hierarchical_bootstrap(runs[:2], runs[2:], seed=9)
    assert stats.hierarchical_bootstrap(runs[:2], runs[2:], seed=9) == first
    assert stats.hierarchical_bootstrap(runs[:2], runs[2:], seed=10) != first
    with pytest.raises(ValueError, match="same images"):
        stats.hierarchical_bootstrap(runs[:2], [runs[2][:10]])
    with pytest.raises(ValueError, match="same images"):
        stats.hierarchical_bootstrap([], runs)


def test_boundary_miou_is_the_evaluation_metric_and_serves_the_bootstrap():
    from aspp_seg.evaluation.boundary import boundary_iou

    rng = np.random.default_rng(5)
    union = rng.integers(1, 50, size=(6, 4))
    counts = np.stack([rng.integers(0, union + 1), union], axis=-1)  # 6 x C x 2
    counts[2, 1] = 0  # a class without a band in truth or prediction: no score
    got = stats.boundary_miou(counts)
    assert got == pytest.approx([boundary_iou(c)["miou"] for c in counts])
    assert math.isnan(stats.boundary_class_iou(counts)[2, 1])
    assert stats.boundary_class_iou(counts)[0] == pytest.approx(counts[0, :, 0] / counts[0, :, 1])
    assert np.isnan(stats.boundary_miou(np.zeros((3, 2))))
    # per-image boundary counts (N x C x 2) through the bootstrap: summed, then scored
    images = rng.integers(1, 9, size=(20, 3, 2))
    images[..., 1] += images[..., 0]  # union >= intersection
    same = stats.hierarchical_bootstrap([images], [images], score=stats.boundary_miou)
    assert (same.diff, same.low, same.high) == (0.0, 0.0, 0.0)
    assert stats.class_iou(np.array([[3, 1], [2, 4]])) == pytest.approx([3 / 6, 4 / 7])
