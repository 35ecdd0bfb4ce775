"""The demo run with the W&B logger, offline: the run folder must hold the metrics, the
resolved config, the per-class IoU table, the confusion matrix and the overlay images
with their masks. Read back from disk, with no network and no W&B account."""

from __future__ import annotations

import csv
import json
import os
import struct
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from helpers import demo_args
from PIL import Image

from aspp_seg.data.datasets.cityscapes import CLASSES as CITYSCAPES_CLASSES
from aspp_seg.data.datasets.cityscapes import PALETTE as CITYSCAPES_PALETTE
from aspp_seg.data.datasets.cityscapes import to_train_ids
from aspp_seg.data.labels import IGNORE_INDEX
from aspp_seg.evaluation.metrics import scores

REPO = Path(__file__).resolve().parents[2]
NUM_IMAGES = 4  # demo.yaml's SegmentationLogger: 4 images, every 4th and the last epoch


def read_wandb_records(path: Path) -> list:
    """Every record of a ``run-<id>.wandb`` transaction log.

    The file is a LevelDB-style log (a 7-byte ``:W&B`` header, then 32 KiB blocks of
    chunks with a 7-byte header: CRC32, length, type) of ``wandb_internal_pb2.Record``
    protobufs. wandb >= 0.19 reads it only in its Go core, so this is the reader.
    """
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B", "not a W&B transaction log"
    block, pos, records, pending = 32768, 7, [], b""
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # the rest of a block too short for a header is padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if length == 0 and kind == 0:
            pos += left
            continue
        chunk = data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        pending = chunk if kind in (1, 2) else pending + chunk  # FULL/FIRST start anew
        if kind in (1, 4):  # FULL or LAST: a whole record
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def _history(records: list) -> list[dict]:
    rows = []
    for record in records:
        if record.WhichOneof("record_type") == "history":
            row = {}
            for item in record.history.item:
                key = item.key or "/".join(item.nested_key)
                row[key] = json.loads(item.value_json)
            rows.append(row)
    return rows


def _config(records: list) -> dict:
    config = {}
    for record in records:
        if record.WhichOneof("record_type") == "config":
            for item in record.config.update:
                config[item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
    return config


def test_demo_run_writes_an_offline_wandb_run(tiny_cityscapes, tmp_path):
    command = [
        sys.executable, "-m", "aspp_seg.cli", "fit",
        *demo_args(tiny_cityscapes, "--trainer.max_epochs", "2", "--trainer.log_every_n_steps",
                   "1", configs=[REPO / "configs" / "logger" / "wandb.yaml"]),
    ]  # fmt: skip
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true",
           "WANDB_API_KEY": "", "OMP_NUM_THREADS": "1",
           # keep W&B's caches and settings out of the home folder
           "WANDB_CACHE_DIR": str(tmp_path / "wandb_cache"),
           "WANDB_DATA_DIR": str(tmp_path / "wandb_data"),
           "WANDB_CONFIG_DIR": str(tmp_path / "wandb_config")}  # fmt: skip
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]

    runs = list((tmp_path / "runs" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    run = runs[0]
    records = read_wandb_records(next(run.glob("run-*.wandb")))

    # metrics: train loss and LR per step, val metrics per epoch
    history = _history(records)
    steps = [r["train/loss"] for r in history if "train/loss" in r]
    assert len(steps) == 8 and all(np.isfinite(steps))  # 16 frames / batch 4 x 2 epochs
    assert any("lr-SGD" in r for r in history)  # LearningRateMonitor
    val = [r for r in history if "val/mIoU" in r]
    assert len(val) == 2 and any("val/IoU/road" in r for r in val)

    # the same final mIoU as the local CSV table
    with (tmp_path / "runs" / "aspp-seg" / "version_0" / "val_iou.csv").open() as f:
        csv_miou = float(next(csv.DictReader(f))["mIoU"])
    assert abs(100 * val[-1]["val/mIoU"] - csv_miou) < 1e-3

    # the resolved config
    config = _config(records)
    assert config["cli"]["model"]["net"]["init_args"]["aspp"]["init_args"]["channels"] == 16

    # per-class IoU table (logged at the last epoch)
    tables = sorted((run / "files" / "media" / "table" / "val").glob("IoU_table_*.table.json"))
    assert len(tables) == 1
    table = json.loads(tables[-1].read_text())
    assert table["columns"] == ["class", "IoU (%)"]
    rows = dict(table["data"])
    assert abs(rows["mIoU"] - csv_miou) < 0.01 and "Road" in rows

    # confusion matrix: 19 x 19 cells that count every labelled validation pixel
    confusion = sorted(
        (run / "files" / "media" / "table" / "val").glob("confusion_matrix_table_*.table.json")
    )
    cells = json.loads(confusion[-1].read_text())["data"]
    assert len(cells) == 19 * 19
    labelled = sum(
        int((to_train_ids(np.asarray(Image.open(p))) != IGNORE_INDEX).sum())
        for p in (tiny_cityscapes / "gtFine" / "val").glob("*/*_gtFine_labelIds.png")
    )
    assert sum(c[2] for c in cells) == labelled

    # overlays: the images, and a prediction and a ground-truth mask for each
    # (nested values come flattened: "val/overlays/count", ...)
    overlay_rows = [r for r in history if "val/overlays/count" in r]
    assert len(overlay_rows) == 1
    last = overlay_rows[-1]
    assert last["val/overlays/_type"] == "images/separated"
    assert last["val/overlays/count"] == NUM_IMAGES
    assert all(set(m) == {"prediction", "ground_truth"} for m in last["val/overlays/all_masks"])
    assert len(last["val/overlays/all_masks"]) == NUM_IMAGES
    for name in last["val/overlays/filenames"]:
        assert (run / "files" / name).is_file()
    # the ground-truth mask is the label map of the captioned image, in trainIds
    caption = last["val/overlays/captions"][0]
    label = next((tiny_cityscapes / "gtFine" / "val").glob(
        "*/" + caption.replace("_leftImg8bit.png", "_gtFine_labelIds.png")
    ))  # fmt: skip
    mask_file = run / "files" / last["val/overlays/all_masks"][0]["ground_truth"]["path"]
    mask = np.asarray(Image.open(mask_file))
    assert np.array_equal(mask, to_train_ids(np.asarray(Image.open(label))))
    images = list((run / "files" / "media" / "images" / "val").glob("overlays_*.png"))
    masks = list((run / "files" / "media" / "images" / "mask" / "val").glob("*.mask.png"))
    assert len(images) == NUM_IMAGES and len(masks) == 2 * NUM_IMAGES
    image = np.asarray(Image.open(images[0]))
    assert image.shape == (64, 128, 3)


class _TinyNet(torch.nn.Module):
    """Predicts class 0 (road) everywhere except class 10 (sky) in the top rows."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros(images.shape[0], 19, *images.shape[-2:])
        logits[:, 0] = 1.0
        logits[:, 10, : images.shape[-2] // 4] = 2.0
        return logits


def _fake_trainer(tmp_path: Path, loggers: list, dataset: list) -> SimpleNamespace:
    return SimpleNamespace(
        sanity_checking=False, current_epoch=1, max_epochs=2, global_step=10, is_global_zero=True,
        state=SimpleNamespace(fn="fit"), loggers=loggers, log_dir=str(tmp_path),
        datamodule=SimpleNamespace(palette=CITYSCAPES_PALETTE, datasets={"val": dataset}),
        val_dataloaders=None,
    )  # fmt: skip


def _dataset() -> list[dict]:
    mask = torch.zeros(8, 16, dtype=torch.long)
    mask[:2] = 10
    mask[-1] = IGNORE_INDEX
    return [{"image": torch.zeros(3, 8, 16), "mask": mask, "name": f"f{i}.png"} for i in range(5)]


def _module() -> _TinyNet:
    net = _TinyNet()
    confusion = torch.zeros(19, 19, dtype=torch.long)
    confusion[0, 0], confusion[10, 10] = 90, 30
    net.last_result = {**scores(confusion), "confusion": confusion}
    net.class_names = list(CITYSCAPES_CLASSES)
    net.device = torch.device("cpu")
    return net


def test_segmentation_logger_writes_files_without_an_image_logger(tmp_path):
    from aspp_seg.training.callbacks.segmentation_logger import SegmentationLogger, fixed_indices

    assert fixed_indices(5, 3) == [0, 2, 4] and fixed_indices(2, 4) == [0, 1]
    callback = SegmentationLogger(every_n_epochs=1, num_images=3)
    callback.on_validation_end(_fake_trainer(tmp_path, [], _dataset()), _module())
    panels = sorted((tmp_path / "media" / "epoch_001").glob("f*.png"))
    assert [p.name for p in panels] == ["f0.png", "f2.png", "f4.png"]
    panel = np.asarray(Image.open(panels[0]))
    assert panel.shape == (8, 3 * 16, 3)  # image | truth | prediction
    with (tmp_path / "confusion_val.csv").open() as f:
        rows = list(csv.reader(f))
    assert rows[1][1] == "90" and rows[11][11] == "30"


def test_segmentation_logger_to_tensorboard(tmp_path):
    from lightning.pytorch.loggers import TensorBoardLogger

    from aspp_seg.training.callbacks import SegmentationLogger

    class Recorder:
        def __init__(self):
            self.calls = []

        def add_image(self, tag, image, step, dataformats):
            self.calls.append(("image", tag, np.asarray(image).shape, step))

        def add_text(self, tag, text, step):
            self.calls.append(("text", tag, text, step))

    class FakeTensorBoard(TensorBoardLogger):  # no tensorboard package needed
        def __init__(self):
            self.recorder = Recorder()

        @property
        def experiment(self):
            return self.recorder

        @property
        def log_dir(self):
            return str(tmp_path)

    logger = FakeTensorBoard()
    callback = SegmentationLogger(every_n_epochs=2, num_images=2)
    callback.on_validation_end(_fake_trainer(tmp_path, [logger], _dataset()), _module())
    kinds = [(c[0], c[1]) for c in logger.recorder.calls]
    assert ("text", "val/IoU_table") in kinds and ("image", "val/confusion") in kinds
    overlays = [c for c in logger.recorder.calls if c[1].startswith("val/overlay/")]
    assert [c[2] for c in overlays] == [(8, 48, 3), (8, 48, 3)]
    table = next(c[2] for c in logger.recorder.calls if c[1] == "val/IoU_table")
    assert "| Road | 100.00 |" in table and "| mIoU | 100.00 |" in table
    assert not list(tmp_path.glob("media/*"))  # an image logger got them: no files


def test_image_loggers_get_the_segmentation_logger():
    from jsonargparse import Namespace

    from aspp_seg.cli.lightning_cli import add_segmentation_logger

    def trainer(*kinds, callbacks=()):
        loggers = [Namespace(class_path=f"lightning.pytorch.loggers.{k}", init_args=Namespace())
                   for k in kinds]  # fmt: skip
        return Namespace(logger=loggers, callbacks=list(callbacks))

    cfg = trainer("CSVLogger", "WandbLogger")
    assert add_segmentation_logger(cfg)
    assert cfg.callbacks[-1].class_path == "aspp_seg.training.callbacks.SegmentationLogger"
    assert not add_segmentation_logger(cfg)  # not twice
    assert not add_segmentation_logger(trainer("CSVLogger"))  # files only: left to configs
    assert add_segmentation_logger(trainer("TensorBoardLogger"))


def test_segmentation_logger_logs_the_last_epoch_of_a_step_budget(tmp_path):
    from aspp_seg.training.callbacks import SegmentationLogger

    trainer = _fake_trainer(tmp_path, [], _dataset())
    trainer.max_epochs, trainer.max_steps, trainer.current_epoch = -1, 20, 2
    callback = SegmentationLogger(every_n_epochs=5, num_images=1)
    callback.on_validation_end(trainer, _module())  # epoch 3 of an open-ended run: skipped
    assert not (tmp_path / "media").exists()
    trainer.global_step = 20  # the last step of SegNet-style `max_steps` training
    callback.on_validation_end(trainer, _module())
    assert list((tmp_path / "media" / "epoch_002").glob("*.png"))
