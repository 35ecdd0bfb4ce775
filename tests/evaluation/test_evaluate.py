"""`aspp-seg evaluate`: parity with cityscapesscripts, file matching, format checks."""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from aspp_seg.cli.main import main
from aspp_seg.data.datasets import find_format, known_formats
from aspp_seg.data.datasets.cityscapes import CLASSES as CITYSCAPES_CLASSES
from aspp_seg.data.datasets.cityscapes import LABEL_ID_TO_TRAIN_ID
from aspp_seg.errors import DataError
from aspp_seg.evaluation.folder import evaluate_folders
from benchmarks.evaluate_speed import _official, _write, make_cityscapes_pairs


# the synthetic full-size scenes and the official evaluator's call live with the speed
# benchmark (tests may import benchmarks/, not the other way round)
@pytest.fixture(scope="module")
def full_size_set(tmp_path_factory):
    """20 pairs of 1024 x 2048 Cityscapes label maps (the acceptance criterion's size)."""
    return make_cityscapes_pairs(tmp_path_factory.mktemp("cs_eval"), 20)


def test_matches_cityscapesscripts_on_full_size_maps(full_size_set):
    gt_dir, pred_dir = full_size_set
    ours = evaluate_folders(gt_dir, pred_dir, format="cityscapes")
    reference = _official(gt_dir, pred_dir)
    assert ours["pairs"] == 20
    for name, iou in zip(CITYSCAPES_CLASSES, ours["iou"], strict=True):
        expected = reference["classScores"][name]
        if math.isnan(expected):
            assert math.isnan(iou), name
        else:
            assert iou == pytest.approx(expected, abs=1e-4), name
    assert math.isnan(ours["iou"][CITYSCAPES_CLASSES.index("train")])
    assert ours["iou"][CITYSCAPES_CLASSES.index("motorcycle")] == 0.0
    assert ours["miou"] == pytest.approx(reference["averageScoreClasses"], abs=1e-4)
    assert 0.3 < ours["miou"] < 0.95  # a non-trivial case


def test_trainid_format_gives_the_same_scores(full_size_set, tmp_path):
    gt_dir, pred_dir = full_size_set
    pairs = sorted(gt_dir.rglob("*_gtFine_labelIds.png"))[:3]
    for gt in pairs:
        stem = gt.name.replace("_gtFine_labelIds.png", "")
        pred = next(pred_dir.rglob(f"{stem}_*.png"))
        _write(
            tmp_path / "gt" / f"{stem}_gtFine_labelTrainIds.png",
            LABEL_ID_TO_TRAIN_ID[cv2.imread(str(gt), -1)],
        )
        _write(
            tmp_path / "pred" / f"{stem}_leftImg8bit.png",
            LABEL_ID_TO_TRAIN_ID[cv2.imread(str(pred), -1)],
        )
        _write(tmp_path / "cs_gt" / gt.name, cv2.imread(str(gt), -1))
        _write(tmp_path / "cs_pred" / pred.name, cv2.imread(str(pred), -1))
    by_train = evaluate_folders(tmp_path / "gt", tmp_path / "pred", format="trainid")
    by_label = evaluate_folders(tmp_path / "cs_gt", tmp_path / "cs_pred", format="cityscapes")
    np.testing.assert_allclose(by_train["iou"], by_label["iou"], equal_nan=True)


def _small_pair(folder: Path, name: str, gt: np.ndarray, pred: np.ndarray) -> None:
    _write(folder / "gt" / name, gt)
    _write(folder / "pred" / name, pred)


def test_camvid_void_is_ignored_and_known_iou(tmp_path):
    gt = np.array([[0, 0, 1, 11]], dtype=np.uint8)
    pred = np.array([[0, 1, 1, 5]], dtype=np.uint8)
    _small_pair(tmp_path, "a.png", gt, pred)
    result = evaluate_folders(tmp_path / "gt", tmp_path / "pred", format="camvid")
    assert result["iou"][0] == pytest.approx(1 / 2)
    assert result["iou"][1] == pytest.approx(1 / 2)
    assert math.isnan(result["iou"][5])  # predicted only on a void pixel: not counted
    assert result["pixel_acc"] == pytest.approx(2 / 3)


def test_missing_prediction_is_named(tmp_path):
    one = np.zeros((2, 2), np.uint8)
    _small_pair(tmp_path, "a.png", one, one)
    _write(tmp_path / "gt" / "b.png", one)
    _write(tmp_path / "pred" / "c.png", one)
    with pytest.raises(DataError, match=r"1 of 2 ground-truth files have no prediction.*b\.png"):
        evaluate_folders(tmp_path / "gt", tmp_path / "pred", format="camvid")


def test_extra_predictions_are_reported(tmp_path, capsys):
    one = np.zeros((2, 2), np.uint8)
    _small_pair(tmp_path, "a.png", one, one)
    _write(tmp_path / "pred" / "extra.png", one)
    main(["evaluate", "--gt", str(tmp_path / "gt"), "--pred", str(tmp_path / "pred"),
          "--format", "camvid", "--out", str(tmp_path / "out"),
          "--json", str(tmp_path / "s.json")])  # fmt: skip
    captured = capsys.readouterr()
    assert "1 predictions have no ground truth" in captured.err and "extra.png" in captured.err
    assert "| sky |" in captured.out
    assert json.loads((tmp_path / "s.json").read_text())["miou"] == 1.0
    written = {p.name for p in (tmp_path / "out").iterdir()}
    assert written == {
        "evaluate.md",
        "evaluate.csv",
        "evaluate_confusion.npy",
        "evaluate_confusion.png",
    }
    assert np.load(tmp_path / "out" / "evaluate_confusion.npy").shape == (11, 12)


def test_trainids_given_as_cityscapes_labelids_are_detected(tmp_path):
    gt = np.array([[7, 8, 0]], dtype=np.uint8)  # road, sidewalk, unlabeled (labelIds)
    pred = np.array([[0, 1, 255]], dtype=np.uint8)  # trainIds
    _write(tmp_path / "gt" / "aachen_000000_000019_gtFine_labelIds.png", gt)
    _write(tmp_path / "pred" / "aachen_000000_000019_leftImg8bit.png", pred)
    with pytest.raises(DataError, match=r"holds values 255.*--format trainid"):
        evaluate_folders(tmp_path / "gt", tmp_path / "pred", format="cityscapes")


def test_size_mismatch_is_named(tmp_path):
    _small_pair(tmp_path, "a.png", np.zeros((2, 2), np.uint8), np.zeros((2, 3), np.uint8))
    with pytest.raises(DataError, match=r"a\.png is 3x2 but its ground truth"):
        evaluate_folders(tmp_path / "gt", tmp_path / "pred", format="camvid")


def test_every_format_has_consistent_tables():
    for fmt in known_formats().values():
        assert fmt.truth.lut.shape == fmt.prediction.lut.shape == (256,)
        valid = np.flatnonzero(fmt.truth.valid)
        assert set(fmt.truth.lut[valid]) <= set(range(len(fmt.class_names))) | {255}


def test_formats_decode_with_the_data_modules_encodings(tmp_path):
    """Scores and training read label files through the same `LabelEncoding` objects,
    defined once in the data set's file."""
    from aspp_seg.data import CamVidDataModule, CityscapesDataModule
    from aspp_seg.data.datasets import camvid, cityscapes

    assert find_format("cityscapes").truth is cityscapes.ENCODINGS["labelIds"]
    assert find_format("trainid").truth is cityscapes.ENCODINGS["labelTrainIds"]
    assert find_format("camvid").truth is CamVidDataModule.encoding is camvid.ENCODING
    assert find_format("cityscapes").class_names == tuple(CityscapesDataModule.class_names)
    assert find_format("camvid").class_names == tuple(CamVidDataModule.class_names)
    assert [f.name for f in find_format("cityscapes").alternatives] == ["trainid"]


def test_an_unknown_format_is_one_line_naming_the_known_ones(tmp_path, capsys):
    _small_pair(tmp_path, "a.png", np.zeros((2, 2), np.uint8), np.zeros((2, 2), np.uint8))
    with pytest.raises(SystemExit) as exit_info:
        main(["evaluate", "--gt", str(tmp_path / "gt"), "--pred", str(tmp_path / "pred"),
              "--format", "camvd"])  # fmt: skip
    assert exit_info.value.code == 2
    line = capsys.readouterr().err.strip()
    assert line.startswith("aspp-seg: error: --format 'camvd' is not known; allowed: ")
    assert all(f" {name}," in line for name in ("cityscapes", "trainid", "camvid"))


def test_a_class_yaml_is_the_format_of_a_folder_data_set(tmp_path):
    """``--format classes.yaml`` scores masks with the folder data set's class table."""
    (tmp_path / "classes.yaml").write_text("names: [ground, wall, sky]\nignore_index: 9\n")
    gt = np.array([[0, 1, 2, 9]], dtype=np.uint8)  # 9: ignored
    pred = np.array([[0, 2, 2, 255]], dtype=np.uint8)  # 255: a void prediction
    _small_pair(tmp_path, "x.png", gt, pred)
    result = evaluate_folders(
        tmp_path / "gt", tmp_path / "pred", format=str(tmp_path / "classes.yaml")
    )
    assert result["class_names"] == ("ground", "wall", "sky")
    assert result["iou"] == pytest.approx([1.0, 0.0, 0.5])
    _write(tmp_path / "gt" / "x.png", np.array([[0, 1, 2, 7]], dtype=np.uint8))
    with pytest.raises(DataError, match=r"gt/x\.png holds values 7, not valid for --format"):
        evaluate_folders(tmp_path / "gt", tmp_path / "pred", format=str(tmp_path / "classes.yaml"))
