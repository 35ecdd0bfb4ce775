"""Boundary IoU and the trimap IoU on hand-made masks with known answers, and against
the authors' own `mask_to_boundary` (boundary-iou-api, cv2 erosion)."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from helpers import demo_args

from aspp_seg.evaluation.boundary import (
    BoundaryScores,
    boundary_counts,
    boundary_distance,
    boundary_iou,
    label_band,
    label_file_counts,
    summarize,
    trimap_confusion,
)
from aspp_seg.evaluation.metrics import scores


def _square(size=40, top=10, left=10, side=20, label=1) -> torch.Tensor:
    labels = torch.zeros(size, size, dtype=torch.int64)
    labels[top : top + side, left : left + side] = label
    return labels


def _biou(pred, truth, num_classes=2, distance=2) -> np.ndarray:
    return boundary_iou(boundary_counts(pred, truth, num_classes, distance))["iou"]


def test_a_perfect_prediction_scores_one_and_a_disjoint_one_zero():
    truth = _square()
    assert _biou(truth, truth) == pytest.approx([1.0, 1.0])
    # the prediction has no pixel of class 1 where the truth has one, and vice versa
    assert _biou(1 - truth, truth) == pytest.approx([0.0, 0.0])


def test_a_square_shifted_by_one_pixel():
    """A 20 x 20 square (rows and columns 10-29 of a 40 x 40 image), predicted one
    pixel to the right (columns 11-30), d = 2.

    Square (class 1): G_d is the 2-px inner ring, 20^2 - 16^2 = 144 px; P_d likewise.
    Their overlap: rows 10, 11, 28, 29 share columns 11-29 (4 x 19 = 76); rows 12-27 have
    G_d at columns {10, 11, 28, 29} and P_d at {11, 12, 29, 30}: 2 each (32). 108 / (144 +
    144 - 108 = 180) = 0.6, against a mask IoU of 380 / 420.

    Background (class 0): the image border is a contour, so G_d is the border's 2-px ring
    (40^2 - 36^2 = 304 px), the same in P_d, plus the 2-px ring outside the square
    (24^2 - 20^2 = 176 px each). Those outer rings overlap in rows 8, 9, 30, 31 on
    columns 9-31 (4 x 23 = 92) and in rows 10-29 at columns 9 and 31 (40): 304 + 132 =
    436 of 480 + 480 - 436 = 524.
    """
    truth, pred = _square(), _square(left=11)
    counts = boundary_counts(pred, truth, 2, distance=2)
    assert counts.tolist() == [[436, 524], [108, 180]]
    assert _biou(pred, truth) == pytest.approx([436 / 524, 0.6])
    assert scores(_confusion(pred, truth, 2))["iou"][1] == pytest.approx(380 / 420)


def _confusion(pred, truth, c) -> np.ndarray:
    keep = truth < c
    return np.bincount((truth[keep] * c + pred[keep]).numpy(), minlength=c * c).reshape(c, c)


def test_on_a_one_pixel_pole_boundary_iou_is_the_mask_iou():
    """Every pixel of a 1-px-wide pole lies on its contour: G_d = G and P_d = P for any d.
    Truth: rows 5-34 of column 20 (30 px); prediction: rows 10-34 (25 px): 25 / 30."""
    truth = torch.zeros(40, 40, dtype=torch.int64)
    truth[5:35, 20] = 1
    pred = torch.zeros_like(truth)
    pred[10:35, 20] = 1
    for d in (1, 3, 12):
        assert boundary_counts(pred, truth, 2, d)[1].tolist() == [25, 30]
    assert scores(_confusion(pred, truth, 2))["iou"][1] == pytest.approx(25 / 30)


def test_a_band_wider_than_the_object_covers_all_of_it():
    """A 4 x 4 square predicted one pixel to the right, d = 5 > the square's half-width:
    G_d = G, P_d = P: the mask IoU, 12 / 20."""
    truth, pred = _square(side=4), _square(side=4, left=11)
    assert boundary_counts(pred, truth, 2, 5)[1].tolist() == [12, 20]


def test_ignored_pixels_count_nowhere():
    """10 x 10 truth of class 0, its right half (columns 5-9) ignored; the prediction is
    class 0 on the left half and class 1 on the right. d = 1.

    Class 0: G is the left half, whose contour is the image border and the void at
    column 5 (ignored pixels are like the outside of the image, for G and P alike):
    G_d = 50 - 8 x 3 (rows 1-8, columns 1-3) = 26 px, and P_d the same: 1.0.
    Class 1: no truth; its prediction lies only on ignored pixels: no union, no score.
    """
    truth = torch.zeros(10, 10, dtype=torch.int64)
    truth[:, 5:] = 255
    pred = torch.zeros_like(truth)
    pred[:, 5:] = 1
    assert boundary_counts(pred, truth, 2, 1).tolist() == [[26, 26], [0, 0]]
    iou = boundary_iou(boundary_counts(pred, truth, 2, 1))
    assert iou["iou"][0] == 1.0 and math.isnan(iou["iou"][1]) and iou["miou"] == 1.0
    # whatever is predicted on ignored pixels, nothing changes
    other = pred.clone()
    other[:, 5:] = 0
    assert torch.equal(boundary_counts(other, truth, 2, 1), boundary_counts(pred, truth, 2, 1))
    # a prediction of no evaluated class (void in a label file, >= C) is in no class
    void = pred.clone()
    void[0, 0] = 7
    # class 0's P loses (0, 0), which leaves P_d, and (1, 1), now beside P's contour,
    # joins it: 25 in both bands, 26 + 26 - 25 in either
    assert boundary_counts(void, truth, 2, 1)[0].tolist() == [25, 27]


def test_the_default_distance_is_two_percent_of_the_diagonal():
    assert boundary_distance(360, 480) == 12  # diagonal 600
    assert boundary_distance(176, 240) == 6  # 297.6 -> 5.95
    assert boundary_distance(1024, 2048) == 46  # 2289.7 -> 45.8
    assert boundary_distance(10, 10) == 1  # 0.28, at least 1 px
    truth, pred = _square(size=360, top=100, left=100, side=150), _square(360, 100, 104, 150)
    assert torch.equal(boundary_counts(pred, truth, 2), boundary_counts(pred, truth, 2, 10))


def _mask_to_boundary(mask: np.ndarray, dilation: int) -> np.ndarray:
    """boundary-iou-api's `mask_to_boundary` (Cheng et al.), with d given directly."""
    h, w = mask.shape
    padded = cv2.copyMakeBorder(mask, 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
    eroded = cv2.erode(padded, np.ones((3, 3), dtype=np.uint8), iterations=dilation)
    return mask - eroded[1 : h + 1, 1 : w + 1]


@pytest.mark.parametrize("distance", [1, 2, 5, 13])
@pytest.mark.parametrize("ignored", [0.0, 0.03])
def test_every_class_at_once_equals_the_authors_per_mask_code(distance, ignored):
    """Per class, Cheng et al.'s masks: G = truth == k, P = prediction == k on the
    counted pixels (where the truth is ignored, the prediction is no class)."""
    rng = np.random.default_rng(distance)
    c = 5

    def blocks(h, w):
        return cv2.resize(rng.integers(0, c, (h, w)).astype(np.uint8), (70, 50),
                          interpolation=cv2.INTER_NEAREST)  # fmt: skip

    truth, pred = blocks(6, 8), blocks(7, 9)
    truth[rng.random(truth.shape) < ignored] = 255
    got = boundary_counts(torch.from_numpy(pred), torch.from_numpy(truth), c, distance)
    valid = truth != 255
    for k in range(c):
        g = _mask_to_boundary((truth == k).astype(np.uint8), distance).astype(bool) & valid
        p = _mask_to_boundary(((pred == k) & valid).astype(np.uint8), distance).astype(bool)
        assert got[k].tolist() == [(g & p).sum(), (g | p).sum()]


def test_label_band_is_the_chessboard_distance_to_another_label():
    labels = torch.zeros(1, 9, 9, dtype=torch.int64)
    labels[0, 4, 4] = 3
    band = label_band(labels, 2, image_border=False)[0]
    assert band.sum() == 25 and band[2:7, 2:7].all()  # the 5 x 5 window of the odd pixel
    border = label_band(torch.zeros(1, 9, 9, dtype=torch.int64), 2, image_border=True)[0]
    assert border.sum() == 81 - 25 and not border[2:7, 2:7].any()  # 2 px from the border


def test_trimap_counts_a_band_around_truth_boundaries():
    """10 x 10 truth: class 0 in columns 0-4, class 1 in 5-9; prediction: the boundary
    one column to the right (class 0 in columns 0-5). Width 2: the band is columns 3-6
    (their 5-wide windows reach the other label; the image border is no boundary).

    In the band: columns 3, 4 are 0 -> 0 (20), column 5 is 1 -> 0 (10), column 6 is
    1 -> 1 (10): IoU 20 / 30 and 10 / 20, against 50 / 60 and 40 / 50 on the image.
    """
    truth = torch.zeros(10, 10, dtype=torch.int64)
    truth[:, 5:] = 1
    pred = torch.zeros_like(truth)
    pred[:, 6:] = 1
    assert trimap_confusion(pred, truth, 2, 2).tolist() == [[20, 0], [10, 10]]
    assert scores(trimap_confusion(pred, truth, 2, 2))["iou"] == pytest.approx([2 / 3, 0.5])
    assert trimap_confusion(pred, truth, 2, 20).tolist() == [[50, 0], [10, 40]]  # all
    # Ignored truth (row 0) counts nowhere but is a label when bands are drawn, so at
    # width 1 the band is row 1 (beside the void) and columns 4-5 of rows 2-9. A void
    # prediction (9, at row 1, column 3) gets its own column when asked. Row 1: truth 0
    # at columns 0-4 -> 0 (4) and void (1); truth 1 at columns 5-9 -> 0 (column 5) and 1
    # (4). Rows 2-9: column 4 is 0 -> 0 (8), column 5 is 1 -> 0 (8).
    truth[0, :] = 255
    pred[1, 3] = 9
    assert trimap_confusion(pred, truth, 2, 1, void_column=True).tolist() == [
        [12, 0, 1],
        [9, 4, 0],
    ]


def test_per_image_counts_sum_to_the_split_and_padded_images_score_at_their_size():
    rng = torch.Generator().manual_seed(0)
    truth = torch.randint(0, 3, (3, 6, 8), generator=rng).repeat_interleave(4, 1)
    truth = truth.repeat_interleave(4, 2)  # 3 images of 24 x 32, blocks of 4 x 4
    pred = torch.roll(truth, 1, dims=-1)
    batch = boundary_counts(pred, truth, 3)
    assert batch.shape == (3, 3, 2)
    for i in range(3):
        assert torch.equal(batch[i], boundary_counts(pred[i], truth[i], 3))
    metric = BoundaryScores(3, trimap_widths=(1, 3))
    metric.update(pred, truth)
    metric.update(pred[:1], truth[:1])
    out = metric.compute()
    assert torch.equal(out["boundary"], batch.sum(0) + batch[0])
    assert out["trimap"].shape == (2, 3, 3)
    assert torch.equal(out["trimap"][1], trimap_confusion(pred, truth, 3, 3).sum(0) +
                       trimap_confusion(pred[0], truth[0], 3, 3))  # fmt: skip
    # image 1 is 16 x 20 inside a batch padded to 24 x 32 with 255 (truth) and 0 (pred)
    padded_truth, padded_pred = truth.clone(), pred.clone()
    padded_truth[1, 16:], padded_truth[1, :, 20:] = 255, 255
    padded_pred[1, 16:], padded_pred[1, :, 20:] = 0, 0
    sizes = torch.tensor([[24, 32], [16, 20], [24, 32]])
    boundary, trimap = metric.per_image(padded_pred, padded_truth, sizes)
    alone = boundary_counts(pred[1, :16, :20], truth[1, :16, :20], 3)
    assert torch.equal(boundary[1], alone) and torch.equal(boundary[0], batch[0])
    assert trimap.shape == (3, 2, 3, 3)


def test_a_test_pass_logs_writes_and_records_the_boundary_metrics(
    tiny_cityscapes, tiny_checkpoint, tmp_path, monkeypatch
):
    """Validate and test compute the boundary metrics from the same predictions as the
    IoU: logged (``test/bIoU``, trimap mIoU per width), written beside the IoU tables,
    and recorded per image by the study runner's `PerImageCounts` (sums = the split)."""
    from aspp_seg.cli.lightning_cli import lightning_cli
    from aspp_seg.training.callbacks import ResultFiles
    from experiments.per_image import PerImageCounts

    monkeypatch.chdir(tmp_path)
    cli = lightning_cli(
        demo_args(tiny_cityscapes, "--trainer.callbacks", "[]", "--trainer.logger", "false",
                  "--trainer.default_root_dir", str(tmp_path)),
        run=False,
    )  # fmt: skip
    counts = PerImageCounts()
    cli.trainer.callbacks += [counts, ResultFiles()]  # aspp-seg's commands add ResultFiles
    cli.datamodule.test_split = "val"
    cli.trainer.test(cli.model, datamodule=cli.datamodule, ckpt_path=str(tiny_checkpoint),
                     verbose=False)  # fmt: skip
    result = cli.model.last_result
    assert result["boundary"]["d"] == "3 px (2% of the 64 x 128 diagonal)"  # 143.1 px
    assert counts.boundary().shape == (8, 19, 2)  # 8 val images, 19 classes
    assert (counts.boundary().sum(0) == result["boundary"]["counts"].numpy()).all()
    assert counts.trimap().shape == (8, 4, 19, 19) and counts.trimap_widths == (2, 4, 8, 16)
    assert (counts.trimap().sum(0) == result["trimap"]["confusion"].numpy()).all()
    assert (counts.counts().sum(0) == result["confusion"].numpy()).all()
    logged = cli.trainer.callback_metrics
    assert float(logged["test/bIoU"]) == pytest.approx(result["boundary"]["miou"])
    assert float(logged["test/trimap_mIoU/4px"]) == pytest.approx(result["trimap"]["miou"][1])
    folder = Path(cli.trainer.log_dir)
    header = (folder / "test_boundary_iou.csv").read_text().splitlines()[0]
    assert header == (folder / "test_iou.csv").read_text().splitlines()[0]  # same columns
    trimap = (folder / "test_trimap_iou.csv").read_text().splitlines()
    assert trimap[0].startswith("band (px),Road,") and [r.split(",")[0] for r in trimap[1:]] == [
        "2", "4", "8", "16"]  # fmt: skip
    saved = np.load(folder / "test_trimap_confusion.npy")
    assert (saved == result["trimap"]["confusion"].numpy()).all()
    assert np.load(folder / "test_boundary_counts.npy").shape == (19, 2)


def test_label_files_count_as_the_metric_with_void_predictions_apart():
    """``aspp-seg evaluate``'s counts: truth values >= C are ignored, predictions >= C
    are void (in no class's P; the trimap's last column)."""
    truth, pred = _square(), _square(left=11)
    truth[0, :] = 11  # CamVid's void: ignored
    pred[39, :5] = 11  # a void prediction
    boundary, trimap = label_file_counts(pred.numpy().astype(np.uint8),
                                         truth.numpy().astype(np.uint8), 2)  # fmt: skip
    masked = torch.where(truth < 2, truth, 255)
    assert (boundary == boundary_counts(pred, masked, 2).numpy()).all()  # d = 1 at 40 x 40
    # the void predictions (row 39) lie 10 px from the square's lower edge (row 29): in
    # the 16 px band only
    assert trimap.shape == (4, 2, 3) and trimap[:, :, 2].sum(1).tolist() == [0, 0, 0, 5]
    wide = trimap_confusion(pred, masked, 2, 16, void_column=True).numpy()
    assert (trimap[3] == wide).all()
    summary = summarize(boundary, trimap, (2, 4, 8, 16), "1 px")
    assert summary["boundary"]["iou"] == pytest.approx(boundary_iou(boundary)["iou"])
    assert summary["trimap"]["iou"][3] == pytest.approx(scores(wide)["iou"])


def test_validate_and_evaluate_count_the_same_boundaries(
    tiny_cityscapes, tiny_checkpoint, tmp_path, monkeypatch
):
    """``aspp-seg validate`` and ``aspp-seg evaluate --boundary`` on the label files that
    ``aspp-seg predict`` writes give the same Boundary IoU and trimap counts."""
    import json
    import shutil

    from aspp_seg.cli.main import main

    monkeypatch.chdir(tmp_path)
    checkpoint = tmp_path / "run" / "checkpoints" / "last.ckpt"
    checkpoint.parent.mkdir(parents=True)
    shutil.copy(tiny_checkpoint, checkpoint)
    args = demo_args(tiny_cityscapes, "--trainer.callbacks", "[]", "--ckpt_path", str(checkpoint))
    main(["validate", *args])
    validated = tmp_path / "run" / "validate" / "last"
    predictions = tmp_path / "predictions"
    main(["predict", *args, "--predict_dir", str(predictions),
          "--trainer.default_root_dir", str(tmp_path / "predict_run")])  # fmt: skip
    out = tmp_path / "scores"
    main(["evaluate", "--gt", str(tiny_cityscapes / "gtFine" / "val"),
          "--pred", str(predictions / "labelIds"), "--format", "cityscapes", "--boundary",
          "--out", str(out), "--json", str(tmp_path / "scores.json")])  # fmt: skip
    boundary = np.load(validated / "val_boundary_counts.npy")
    assert boundary[:, 1].sum() > 0
    assert (np.load(out / "evaluate_boundary_counts.npy") == boundary).all()
    trimap = np.load(out / "evaluate_trimap_confusion.npy")  # W x C x (C + 1): void last
    assert trimap[..., -1].sum() == 0
    assert (trimap[..., :-1] == np.load(validated / "val_trimap_confusion.npy")).all()
    summary = json.loads((tmp_path / "scores.json").read_text())
    assert summary["boundary_miou"] == pytest.approx(boundary_iou(boundary)["miou"])
    assert list(summary["trimap_miou"]) == ["2", "4", "8", "16"]
