"""Palette (P-mode) PNG masks, as PASCAL VOC and many labelling tools write them, are
read as the class indices they hold: by the folder data set, ``check-data``, training
and ``evaluate``, with the same results as the same masks saved as grey PNGs. Colour
(RGB) masks are refused with one line naming the file."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from PIL import Image

from aspp_seg.cli.main import main
from aspp_seg.data import FolderDataModule
from aspp_seg.data.io import read_label
from aspp_seg.data.labels import distinct_palette
from aspp_seg.errors import DataError

REPO = Path(__file__).resolve().parents[2]
FOLDER_CONFIG = str(REPO / "configs" / "folder_example.yaml")
NAMES = ["background", "road", "car"]
# PASCAL VOC's colours: index i is drawn in a colour whose channels are not i, so a
# reader that expands the palette cannot pass by accident
VOC_PALETTE = [v for colour in distinct_palette(256) for v in colour]


def _save_palette(path: Path, indices: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    height, width = indices.shape
    image = Image.frombytes("P", (width, height), indices.tobytes())
    image.putpalette(VOC_PALETTE)
    image.save(path)


def _save_grey(path: Path, indices: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(indices).save(path)  # mode "L"


def _masks(seed: int, count: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    masks = []
    for _ in range(count):
        mask = rng.integers(0, 3, size=(24, 40)).astype(np.uint8)
        mask[:2] = 255  # VOC's boundary value: ignored
        masks.append(mask)
    return masks


def _folder_set(root: Path, save) -> Path:
    """A folder data set (train 4, val 2 images) with the same masks, saved by `save`."""
    rng = np.random.default_rng(0)
    for split, masks in (("train", _masks(1, 4)), ("val", _masks(2, 2))):
        for i, mask in enumerate(masks):
            (root / split / "images").mkdir(parents=True, exist_ok=True)
            image = (rng.random((24, 40, 3)) * 255).astype(np.uint8)
            Image.fromarray(image).save(root / split / "images" / f"f{i}.jpg")
            save(root / split / "masks" / f"f{i}.png", mask)
    (root / "classes.yaml").write_text(yaml.safe_dump({"names": NAMES}))
    return root


def _last_error_line(capfd, argv: list[str]) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capfd.readouterr().err
    assert "Traceback" not in err
    return err.strip().splitlines()[-1]


def test_a_palette_png_is_read_as_its_indices(tmp_path):
    mask = _masks(0, 1)[0]
    _save_palette(tmp_path / "p.png", mask)
    _save_grey(tmp_path / "l.png", mask)
    assert Image.open(tmp_path / "p.png").mode == "P"
    assert cv2.imread(str(tmp_path / "p.png"), cv2.IMREAD_UNCHANGED).ndim == 3  # the old way
    for name in ("p.png", "l.png"):
        label = read_label(tmp_path / name)
        assert label.dtype == np.uint8 and label.flags.writeable
        np.testing.assert_array_equal(label, mask)


def test_colour_masks_and_broken_palette_files_are_refused_by_name(tmp_path):
    colour = np.asarray(VOC_PALETTE, np.uint8).reshape(256, 3)[_masks(0, 1)[0]]
    Image.fromarray(colour).save(tmp_path / "rgb.png")
    with pytest.raises(DataError, match=r"rgb\.png has 3 channels .*one class index per pixel"):
        read_label(tmp_path / "rgb.png")
    _save_palette(tmp_path / "p.png", _masks(0, 1)[0])
    data = (tmp_path / "p.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"cannot read label map .*cut\.png"):
        read_label(tmp_path / "cut.png")
    with pytest.raises(DataError, match=r"cannot read label map .*missing\.png"):
        read_label(tmp_path / "missing.png")


def test_folder_data_set_reads_palette_masks_as_grey_ones(tmp_path):
    palette_dm = FolderDataModule(str(_folder_set(tmp_path / "p", _save_palette)), num_workers=0)
    grey_dm = FolderDataModule(str(_folder_set(tmp_path / "l", _save_grey)), num_workers=0)
    for dm in (palette_dm, grey_dm):
        dm.setup("validate")
    for i in range(2):
        palette_mask = palette_dm.datasets["val"][i]["mask"].numpy()
        np.testing.assert_array_equal(palette_mask, grey_dm.datasets["val"][i]["mask"].numpy())
        assert set(np.unique(palette_mask)) == {0, 1, 2, 255}


def test_palette_masks_pass_check_data_and_train(tmp_path, monkeypatch, capsys):
    root = _folder_set(tmp_path / "voc", _save_palette)
    monkeypatch.chdir(tmp_path)
    main(["check-data", "--config", FOLDER_CONFIG, "--data.init_args.root", str(root),
          "--splits", "[train, val]", "--workers", "1"])  # fmt: skip
    assert "no problems: 6 image/label pairs decoded and checked" in capsys.readouterr().out
    main(["fit", "--config", FOLDER_CONFIG, "--data.init_args.root", str(root),
          "--data.init_args.crop_size", "[32, 32]", "--data.init_args.batch_size", "2",
          "--data.init_args.num_workers", "0",
          "--model.net.init_args.backbone", "resnet10t",
          "--model.net.init_args.aspp.init_args.channels", "16",
          "--trainer.accelerator", "cpu", "--trainer.max_steps", "1",
          "--trainer.callbacks", "[]", "--trainer.logger", "false",
          "--trainer.enable_progress_bar", "false",
          "--trainer.default_root_dir", str(tmp_path / "run")])  # fmt: skip
    assert sorted((tmp_path / "run").rglob("*.ckpt"))


def test_colour_masks_are_refused_by_check_data_and_fit(tmp_path, monkeypatch, capfd):
    root = _folder_set(tmp_path / "rgb", _save_grey)
    culprit = root / "train" / "masks" / "f1.png"
    _save_palette(culprit, _masks(1, 4)[1])
    Image.open(culprit).convert("RGB").save(culprit)  # what a viewer shows: VOC's colours
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(["check-data", "--config", FOLDER_CONFIG, "--data.init_args.root", str(root),
              "--splits", "[train, val]", "--workers", "1"])  # fmt: skip
    assert exit_info.value.code == 1
    assert f"{culprit} has 3 channels" in capfd.readouterr().out
    line = _last_error_line(capfd, [
        "fit", "--config", FOLDER_CONFIG, "--data.init_args.root", str(root),
        "--data.init_args.crop_size", "[32, 32]", "--data.init_args.batch_size", "4",
        "--data.init_args.num_workers", "0",
        "--model.net.init_args.backbone", "resnet10t",
        "--model.net.init_args.aspp.init_args.channels", "16",
        "--trainer.accelerator", "cpu", "--trainer.max_steps", "1",
        "--trainer.callbacks", "[]", "--trainer.logger", "false",
        "--trainer.enable_progress_bar", "false",
        "--trainer.default_root_dir", str(tmp_path / "run"),
    ])  # fmt: skip
    assert line.startswith("aspp-seg: error: ")
    assert f"{culprit} has 3 channels" in line


def _evaluate(capfd, gt: Path, pred: Path, out: Path) -> dict:
    main(["evaluate", "--gt", str(gt), "--pred", str(pred), "--format", "camvid",
          "--workers", "1", "--json", str(out)])  # fmt: skip
    capfd.readouterr()
    return json.loads(out.read_text())


def test_evaluate_scores_palette_files_as_grey_ones(tmp_path, capfd):
    rng = np.random.default_rng(3)
    for i in range(3):
        gt = rng.integers(0, 12, size=(16, 24)).astype(np.uint8)  # CamVid 0..10, 11 void
        pred = np.where(rng.random(gt.shape) < 0.7, gt, rng.integers(0, 11, gt.shape))
        pred = pred.astype(np.uint8)
        for save, kind in ((_save_palette, "p"), (_save_grey, "l")):
            save(tmp_path / kind / "gt" / f"f{i}.png", gt)
            save(tmp_path / kind / "pred" / f"f{i}.png", pred)
    by_palette = _evaluate(
        capfd, tmp_path / "p" / "gt", tmp_path / "p" / "pred", tmp_path / "p.json"
    )
    by_grey = _evaluate(capfd, tmp_path / "l" / "gt", tmp_path / "l" / "pred", tmp_path / "l.json")
    assert by_palette["pairs"] == by_grey["pairs"] == 3
    assert 0.3 < by_grey["miou"] < 1
    for key in ("miou", "pixel_acc", "iou"):
        assert by_palette[key] == by_grey[key], key

    culprit = tmp_path / "p" / "pred" / "f1.png"
    Image.open(culprit).convert("RGB").save(culprit)
    line = _last_error_line(capfd, ["evaluate", "--gt", str(tmp_path / "p" / "gt"),
                                    "--pred", str(tmp_path / "p" / "pred"), "--format", "camvid",
                                    "--workers", "1"])  # fmt: skip
    assert line.startswith(f"aspp-seg: error: label map {culprit} has 3 channels")
