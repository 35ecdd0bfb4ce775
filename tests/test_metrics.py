import math

import numpy as np
import pytest
import torch

from aspp_seg.metrics import confusion_matrix_metric, iou_csv, iou_markdown, scores


def _score(pred, target, num_classes):
    metric = confusion_matrix_metric(num_classes)
    metric.update(torch.tensor(pred), torch.tensor(target))
    return scores(metric.compute())


def test_known_iou_with_ignored_pixels():
    # class 0: TP 2, FP 1, FN 1 -> 2/4; class 1: TP 1, FP 1, FN 1 -> 1/3;
    # the two pixels labelled 255 count nowhere, whatever was predicted there.
    target = [[0, 0, 0, 1, 1, 255, 255]]
    pred = [[0, 0, 1, 1, 0, 1, 0]]
    result = _score(pred, target, num_classes=3)
    assert result["iou"][0] == pytest.approx(2 / 4)
    assert result["iou"][1] == pytest.approx(1 / 3)
    assert math.isnan(result["iou"][2])  # absent from truth and prediction
    assert result["miou"] == pytest.approx((2 / 4 + 1 / 3) / 2)
    assert result["pixel_acc"] == pytest.approx(3 / 5)


def test_class_absent_from_truth_but_predicted_scores_zero():
    result = _score([[2, 0]], [[0, 0]], num_classes=3)
    assert result["iou"][2] == 0.0
    assert result["iou"][0] == pytest.approx(0.5)
    assert result["miou"] == pytest.approx(0.25)


def test_accumulates_over_batches_not_mean_of_batches():
    metric = confusion_matrix_metric(2)
    metric.update(torch.tensor([[0, 0, 0, 0]]), torch.tensor([[0, 0, 0, 0]]))
    metric.update(torch.tensor([[0]]), torch.tensor([[1]]))
    result = scores(metric.compute())
    assert result["iou"][0] == pytest.approx(4 / 5)
    assert result["iou"][1] == 0.0


def test_matches_a_plain_confusion_matrix():
    rng = np.random.default_rng(0)
    target = rng.integers(0, 5, size=(4, 16, 16))
    target[rng.random(target.shape) < 0.1] = 255
    pred = rng.integers(0, 5, size=target.shape)
    result = _score(pred, target, num_classes=5)
    valid = target != 255
    cm = np.bincount(5 * target[valid] + pred[valid], minlength=25).reshape(5, 5)
    iou = np.diag(cm) / (cm.sum(0) + cm.sum(1) - np.diag(cm))
    np.testing.assert_allclose(result["iou"], iou)


def test_tables_have_the_study_columns():
    iou = [0.5] * 19
    md = iou_markdown(iou, 0.5, [f"c{i}" for i in range(19)])
    assert md.splitlines()[0].startswith("| c0 |")
    from aspp_seg.data.labels import CITYSCAPES_CLASSES

    md = iou_markdown(iou, 0.5, CITYSCAPES_CLASSES)
    assert "| Road | Sidewalk |" in md and md.splitlines()[0].endswith("| mIoU |")
    assert iou_csv(iou, 0.5, CITYSCAPES_CLASSES).splitlines()[1].startswith("50.0000,")
