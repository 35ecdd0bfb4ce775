"""With ``data.image_size`` below the label files' size, validation still scores every
label pixel at the file's own size (logits resized to it, as the Cityscapes benchmark,
cityscapesscripts and mmsegmentation do), and agrees with ``aspp-seg evaluate`` run on
the full-size predictions that ``aspp-seg predict`` writes."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
from helpers import demo_args
from PIL import Image

from aspp_seg.cli.main import main
from aspp_seg.data.datasets.cityscapes import to_train_ids

HALF = "[32, 64]"  # the tiny frames are 64 x 128


def _args(root: Path) -> list[str]:
    return demo_args(root, "--data.init_args.image_size", HALF)


def test_validation_at_half_size_scores_full_size_labels(tiny_cityscapes, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    main(["fit", *_args(tiny_cityscapes), "--trainer.max_epochs", "2"])
    run = tmp_path / "runs" / "demo" / "version_0"
    checkpoint = run / "checkpoints" / "last.ckpt"

    main(["validate", *_args(tiny_cityscapes), "--ckpt_path", str(checkpoint)])
    validated = run / "validate" / "last"  # beside the checkpoint
    confusion = np.load(validated / "val_iou_confusion.npy")
    labels = sorted((tiny_cityscapes / "gtFine" / "val").rglob("*_gtFine_labelIds.png"))
    labelled = sum(int((to_train_ids(np.asarray(Image.open(p))) != 255).sum()) for p in labels)
    assert confusion.sum() == labelled  # every pixel at 64 x 128, none at 32 x 64
    with (validated / "val_iou.csv").open() as f:
        val_miou = float(next(csv.DictReader(f))["mIoU"])

    predictions = tmp_path / "predictions"
    main(["predict", *_args(tiny_cityscapes), "--ckpt_path", str(checkpoint),
          "--predict_dir", str(predictions),
          "--trainer.default_root_dir", str(tmp_path / "predict_run")])  # fmt: skip
    written = sorted((predictions / "labelIds").rglob("*.png"))
    assert len(written) == len(labels)
    assert Image.open(written[0]).size == (128, 64)  # written at the input file's size

    scores = tmp_path / "scores.json"
    main(["evaluate", "--gt", str(tiny_cityscapes / "gtFine" / "val"),
          "--pred", str(predictions / "labelIds"), "--format", "cityscapes",
          "--json", str(scores)])  # fmt: skip
    evaluated = json.loads(scores.read_text())
    assert abs(100 * evaluated["miou"] - val_miou) < 1e-3, (evaluated["miou"], val_miou)
