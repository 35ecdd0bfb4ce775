import math

import numpy as np
import pytest
import torch

from aspp_seg.evaluation.confusion import confusion_matrix_metric
from aspp_seg.evaluation.metrics import scores
from aspp_seg.evaluation.reports import iou_csv, iou_markdown


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
    from aspp_seg.data.datasets.cityscapes import CLASSES as CITYSCAPES_CLASSES

    md = iou_markdown(iou, 0.5, CITYSCAPES_CLASSES)
    assert "| Road | Sidewalk |" in md and md.splitlines()[0].endswith("| mIoU |")
    assert iou_csv(iou, 0.5, CITYSCAPES_CLASSES).splitlines()[1].startswith("50.0000,")


def test_bincount_path_equals_torchmetrics():
    from torchmetrics.classification import MulticlassConfusionMatrix

    torch.manual_seed(0)
    target = torch.randint(0, 19, (2, 33, 47))
    target[:, :5] = 255
    pred = torch.randint(0, 19, target.shape)
    ours = confusion_matrix_metric(19)
    ours.update(pred, target)
    reference = MulticlassConfusionMatrix(19, ignore_index=255, validate_args=False)
    reference.update(pred, target)
    assert torch.equal(ours.compute(), reference.compute().long())


def test_void_column_counts_as_false_negative_only():
    # class 0: TP 1, FN 1 (predicted void) -> 1/2; class 1: TP 1, no FP from void -> 1
    confusion = np.array([[1, 0, 1], [0, 1, 0]])
    result = scores(confusion)
    np.testing.assert_allclose(result["iou"], [0.5, 1.0])
    assert result["pixel_acc"] == pytest.approx(2 / 3)


def test_raw_histogram_reduces_with_lookup_tables():
    from aspp_seg.evaluation.metrics import pair_histogram, reduce_histogram

    gt = np.array([[7, 7, 8, 0]], dtype=np.uint8)  # labelIds road, road, sidewalk, unlabeled
    pred = np.array([[7, 0, 8, 8]], dtype=np.uint8)
    from aspp_seg.data.datasets.cityscapes import LABEL_ID_TO_TRAIN_ID as LUT

    cm = reduce_histogram(pair_histogram(gt, pred), LUT, LUT, 19)
    assert cm.shape == (19, 20)
    assert cm[0, 0] == 1 and cm[0, 19] == 1 and cm[1, 1] == 1 and cm.sum() == 3


def test_save_results_writes_tables_matrix_and_plot(tmp_path):
    from aspp_seg.evaluation.reports import save_results

    confusion = np.array([[3, 1], [0, 2]])
    paths = save_results(tmp_path, "val", scores(confusion), confusion, ["a", "b"])
    assert sorted(p.name for p in paths) == sorted(
        ["val.md", "val.csv", "val_confusion.npy", "val_confusion.png"]
    )
    np.testing.assert_array_equal(np.load(tmp_path / "val_confusion.npy"), confusion)
    assert (tmp_path / "val_confusion.png").read_bytes()[:4] == b"\x89PNG"


def test_pair_histogram_equals_a_plain_bincount():
    from aspp_seg.evaluation.metrics import pair_histogram

    rng = np.random.default_rng(1)
    gt = rng.integers(0, 256, size=(37, 91), dtype=np.uint8)
    pred = rng.integers(0, 256, size=gt.shape, dtype=np.uint8)
    expected = np.zeros((256, 256), dtype=np.int64)
    np.add.at(expected, (gt.ravel(), pred.ravel()), 1)
    np.testing.assert_array_equal(pair_histogram(gt, pred), expected)


def test_metric_is_a_torchmetrics_jaccard_index_with_summed_counts():
    from torchmetrics.classification import MulticlassJaccardIndex

    metric = confusion_matrix_metric(3)
    assert isinstance(metric, MulticlassJaccardIndex)
    assert metric.ignore_index == 255 and not metric.validate_args
    metric.update(torch.tensor([[0, 1, 2, 2]]), torch.tensor([[0, 1, 1, 255]]))
    # what DDP does: every process's confmat gathered, then reduced with a sum
    metric.sync(dist_sync_fn=lambda x, group=None: [x, 2 * x], distributed_available=lambda: True)
    expected = torch.tensor([[1, 0, 0], [0, 1, 1], [0, 0, 0]])
    assert torch.equal(metric.confmat, 3 * expected)


def test_scores_equal_torchmetrics_reductions():
    from torchmetrics.classification import MulticlassJaccardIndex

    torch.manual_seed(1)
    target = torch.randint(0, 6, (3, 20, 30))
    target[target == 5] = 4  # class 5 absent from truth ...
    target[:, :3] = 255
    pred = torch.randint(0, 5, target.shape)  # ... and from predictions: NaN, not 0
    metric = confusion_matrix_metric(6)
    metric.update(pred, target)
    result = scores(metric.compute())
    np.testing.assert_allclose(result["iou"], metric.jaccard().numpy(), rtol=1e-6)
    assert math.isnan(result["iou"][5])
    macro = MulticlassJaccardIndex(6, average="macro", ignore_index=255)
    macro.update(pred, target)
    assert result["miou"] == pytest.approx(macro.compute().item(), rel=1e-6)


def test_validate_args_checks_label_ranges():
    metric = confusion_matrix_metric(3)
    metric.update(torch.tensor([[7]]), torch.tensor([[0]]))  # hot path: no check
    from aspp_seg.evaluation.confusion import ConfusionMatrix

    checked = ConfusionMatrix(3, validate_args=True)
    with pytest.raises(ValueError, match="predictions"):
        checked.update(torch.tensor([[3]]), torch.tensor([[0]]))
    with pytest.raises(ValueError, match="targets"):
        checked.update(torch.tensor([[0]]), torch.tensor([[4]]))
    checked.update(torch.tensor([[0, 2]]), torch.tensor([[255, 2]]))
    assert checked.compute()[2, 2] == 1
    with pytest.raises(ValueError, match="num_classes"):
        ConfusionMatrix(256)


def test_iou_table_wide_rows_with_labels_and_signed_differences():
    from aspp_seg.evaluation.reports import IoURow, iou_table

    rows = [
        IoURow([0.5, float("nan"), 0.25], labels=["DL-1", "this run"]),
        IoURow([0.6, 0.7, None], labels=["", "study"]),
        IoURow([-0.1, None, 0.05], labels=["", "difference"], signed=True),
    ]
    table = iou_table(rows, ["a", "b"], label_columns=["Method", "Source"])
    assert table.splitlines() == [
        "| Method | Source | a | b | mIoU |",
        "|---|---|---|---|---|",
        "| DL-1 | this run | 50.00 | - | 25.00 |",
        "|  | study | 60.00 | 70.00 | - |",
        "|  | difference | -10.00 | - | +5.00 |",
    ]
    with pytest.raises(ValueError, match="2 values for 3 columns"):
        iou_table([IoURow([0.5, 0.5])], ["a", "b"])


def test_iou_table_vertical():
    from aspp_seg.evaluation.reports import IoURow, iou_table

    table = iou_table([IoURow([0.5, float("nan"), 0.5])], ["a", "b"], vertical=True)
    assert table.splitlines() == [
        "| class | IoU (%) |",
        "|---|---|",
        "| a | 50.00 |",
        "| b | - |",
        "| mIoU | 50.00 |",
    ]
    assert iou_markdown([0.5, float("nan")], 0.5, ["a", "b"]) == (
        "| a | b | mIoU |\n|---|---|---|\n| 50.00 | - | 50.00 |\n"
    )
