"""CamVid (SegNet tutorial layout) on the real files: the `camvid_root` fixture finds them
(set ASPP_SEG_CAMVID to point elsewhere) or skips."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from aspp_seg.cli.main import main
from aspp_seg.data import CamVidDataModule
from aspp_seg.data.datasets.camvid import CLASSES as CAMVID_CLASSES
from aspp_seg.data.labels import IGNORE_INDEX

REPO = Path(__file__).resolve().parents[2]


def test_camvid_splits_classes_and_void(camvid_root):
    dm = CamVidDataModule(str(camvid_root), num_workers=0)
    dm.setup("fit")
    assert (len(dm.datasets["train"]), len(dm.datasets["val"])) == (367, 101)
    assert dm.num_classes == 11 and dm.class_names == CAMVID_CLASSES
    item = dm.datasets["val"][0]
    assert item["image"].shape == (3, 360, 480) and item["mask"].shape == (360, 480)
    values = set(np.unique(item["mask"].numpy()).tolist())
    assert values <= set(range(11)) | {IGNORE_INDEX}
    assert IGNORE_INDEX in values  # void (11 in the file) is ignored


def test_fit_a_few_steps_on_real_camvid(camvid_root, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    main([
        "fit", "--config", str(REPO / "configs" / "camvid.yaml"),
        "--data.init_args.root", str(camvid_root),
        "--data.init_args.batch_size", "2",
        "--data.init_args.val_batch_size", "2",
        "--data.init_args.num_workers", "0",
        "--data.init_args.crop_size", "[128, 160]",
        "--model.net.init_args.aspp.init_args.channels", "16",
        "--trainer.accelerator", "cpu",
        "--trainer.max_epochs", "1",
        "--trainer.limit_train_batches", "3",
        "--trainer.log_every_n_steps", "1",
        "--trainer.limit_val_batches", "2",
        "--trainer.num_sanity_val_steps", "0",
        "--trainer.enable_progress_bar", "false",
    ])  # fmt: skip
    run = tmp_path / "runs" / "camvid" / "version_0"
    with (run / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    losses = [float(r["train/loss"]) for r in rows if r.get("train/loss")]
    mious = [float(r["val/mIoU"]) for r in rows if r.get("val/mIoU")]
    assert losses and all(np.isfinite(losses))
    assert len(mious) == 1 and 0.0 <= mious[0] <= 1.0
    header = (run / "val_iou.csv").read_text().splitlines()[0]
    assert header.startswith("sky,building,pole,road")
