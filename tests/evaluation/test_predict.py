"""`aspp-seg predict` on files, folders and globs, and the pictures it writes."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml
from helpers import demo_args

from aspp_seg.cli.main import main
from aspp_seg.data.datasets.cityscapes import LABEL_ID_TO_TRAIN_ID
from aspp_seg.data.datasets.cityscapes import PALETTE as CITYSCAPES_PALETTE
from aspp_seg.errors import DataError
from aspp_seg.evaluation.visualize import colorize, overlay
from aspp_seg.training.callbacks.prediction_writer import OUTPUTS, SizeBatchSampler, image_source


def _args(root: Path) -> list[str]:
    return demo_args(root, "--trainer.callbacks", "[]")


def _read(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert image is not None, path
    return image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def test_predict_on_a_folder_writes_four_outputs_per_image(
    tiny_cityscapes, tiny_checkpoint, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    source = tiny_cityscapes / "leftImg8bit" / "val"
    out = tmp_path / "out"
    main(["predict", *_args(tmp_path / "unused"), "--ckpt_path", str(tiny_checkpoint),
          "--data.init_args.predict_source", str(source), "--predict_dir", str(out),
          "--model.inference.init_args.mode", "slide",
          "--model.inference.init_args.window", "[48, 64]",
          "--model.inference.init_args.stride", "[16, 32]",
          "--data.init_args.val_batch_size", "3"])  # fmt: skip
    images = sorted(source.rglob("*_leftImg8bit.png"))
    assert len(images) == 8
    for image_path in images:
        rel = image_path.relative_to(source)
        train_ids = _read(out / "trainIds" / rel)
        label_ids = _read(out / "labelIds" / rel)
        assert train_ids.shape == label_ids.shape == (64, 128)
        assert train_ids.max() < 19
        np.testing.assert_array_equal(LABEL_ID_TO_TRAIN_ID[label_ids], train_ids)
        np.testing.assert_array_equal(
            _read(out / "color" / rel), colorize(train_ids, CITYSCAPES_PALETTE)
        )
        rgb = _read(image_path)
        np.testing.assert_array_equal(
            _read(out / "overlay" / rel), overlay(rgb, train_ids, CITYSCAPES_PALETTE)
        )
    assert {p.name for p in out.iterdir()} == set(OUTPUTS)


def test_sources_file_folder_and_glob(tmp_path):
    for rel in ("a/x_leftImg8bit.png", "a/y.jpg", "b/z.png", "b/notes.txt"):
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix == ".txt":
            path.write_text("not an image")
        else:
            cv2.imwrite(str(path), np.zeros((4, 6, 3), np.uint8))
    names = [name for _, name in image_source(tmp_path)]
    assert names == ["a/x_leftImg8bit.png", "a/y.jpg", "b/z.png"]
    assert [n for _, n in image_source(tmp_path / "a" / "y.jpg")] == ["y.jpg"]
    assert [n for _, n in image_source(f"{tmp_path}/*/*.png")] == ["a/x_leftImg8bit.png", "b/z.png"]
    assert [n for _, n in image_source(f"{tmp_path}/*/x_*.png")] == ["a/x_leftImg8bit.png"]
    assert [n for _, n in image_source(f"{tmp_path}/a/*")] == ["x_leftImg8bit.png", "y.jpg"]
    with pytest.raises(DataError, match="no images"):
        image_source(f"{tmp_path}/*/*.bmp")
    with pytest.raises(DataError, match="neither a file, a folder nor a glob"):
        image_source(tmp_path / "missing")
    with pytest.raises(DataError, match="not an image"):
        image_source(tmp_path / "b" / "notes.txt")


def test_batches_hold_one_image_size():
    sizes = [(4, 6), (8, 8), (4, 6), (4, 6), (8, 8)]
    batches = list(SizeBatchSampler(range(5), 2, sizes=sizes))
    assert len(SizeBatchSampler(range(5), 2, sizes=sizes)) == len(batches) == 3
    assert sorted(i for b in batches for i in b) == list(range(5))
    for batch in batches:
        assert len(batch) <= 2 and len({sizes[i] for i in batch}) == 1


def test_colorize_and_overlay():
    labels = torch.tensor([[0, 1], [255, 18]])
    rgb = colorize(labels, CITYSCAPES_PALETTE)
    assert rgb.shape == (2, 2, 3) and rgb.dtype == np.uint8
    assert tuple(rgb[0, 0]) == CITYSCAPES_PALETTE[0] and tuple(rgb[1, 0]) == (0, 0, 0)
    image = np.full((2, 2, 3), 100, np.uint8)
    blended = overlay(image, labels, CITYSCAPES_PALETTE, alpha=0.5)
    assert tuple(blended[1, 0]) == (100, 100, 100)  # ignored: the image shows through
    assert tuple(blended[0, 0]) == tuple((np.array(CITYSCAPES_PALETTE[0]) + 100 + 1) // 2)


def test_validate_with_sliding_windows_writes_the_run_results(
    tiny_cityscapes, tiny_checkpoint, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    main(["validate", *_args(tiny_cityscapes), "--ckpt_path", str(tiny_checkpoint),
          "--trainer.limit_val_batches", "1", "--model.inference.init_args.mode", "slide",
          "--model.inference.init_args.window", "[64, 64]",
          "--model.inference.init_args.flip", "true"])  # fmt: skip
    run = tiny_checkpoint.parent.parent / "validate" / tiny_checkpoint.stem  # beside the ckpt
    confusion = np.load(run / "val_iou_confusion.npy")
    assert confusion.shape == (19, 19)
    assert 0.5 < confusion.sum() / (8 * 64 * 128) <= 1  # one batch of 8, minus ignored pixels
    assert (run / "val_iou_confusion.png").read_bytes()[:4] == b"\x89PNG"
    assert (run / "val_iou.md").read_text().startswith("| Road |")
    saved = (run / "config.yaml").read_text()
    inference = yaml.safe_load(saved)["model"]["inference"]
    assert inference["class_path"] == "aspp_seg.evaluation.inference.Inference"
    assert inference["init_args"]["mode"] == "slide" and inference["init_args"]["flip"]


def test_predict_on_the_test_split_writes_test_server_files(
    tiny_cityscapes, tiny_checkpoint, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "server"
    main(["predict", *_args(tiny_cityscapes), "--ckpt_path", str(tiny_checkpoint),
          "--predict_dir", str(out)])  # fmt: skip
    images = sorted((tiny_cityscapes / "leftImg8bit" / "val").rglob("*_leftImg8bit.png"))
    for image_path in images:  # the demo's test split is val
        label_ids = _read(out / "labelIds" / image_path.name)
        np.testing.assert_array_equal(
            LABEL_ID_TO_TRAIN_ID[label_ids], _read(out / "trainIds" / image_path.name)
        )
        assert (out / "overlay" / image_path.name).is_file()


def test_the_writer_takes_classes_and_colours_from_the_data(tmp_path):
    from types import SimpleNamespace

    from aspp_seg.data.labels import distinct_palette
    from aspp_seg.training.callbacks.prediction_writer import PredictionWriter, data_classes

    module = SimpleNamespace(class_names=["a", "b", "c"])  # linked from the data
    data = SimpleNamespace(class_names=("x", "y"), palette=((1, 2, 3), (4, 5, 6)))
    trainer = SimpleNamespace(datamodule=data, predict_dataloaders=None)
    assert data_classes(trainer, module) == (["x", "y"], [(1, 2, 3), (4, 5, 6)])
    bare = SimpleNamespace(datamodule=None, predict_dataloaders=None)  # e.g. plain loaders
    names, palette = data_classes(bare, module)
    assert names == ["a", "b", "c"] and palette == list(distinct_palette(3))
    assert len(set(palette)) == 3 and not set(palette) & set(CITYSCAPES_PALETTE[:3])

    writer = PredictionWriter(str(tmp_path))
    pred = {"name": ["p.png"], "pred": torch.tensor([[[0, 1], [2, 1]]], dtype=torch.uint8)}
    writer.write_on_batch_end(bare, module, pred, None, {"name": ["p.png"]}, 0, 0)
    assert not (tmp_path / "labelIds").exists()  # labelIds are Cityscapes' only
    color = _read(tmp_path / "color" / "p.png")
    assert [tuple(color[i, j]) for i, j in ((0, 0), (0, 1), (1, 0))] == palette
