"""Fixtures of the robustness suite: a tiny fit config and a finished run to start from."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from harness import Workspace

TINY = {
    "seed_everything": 0,
    "trainer": {
        "accelerator": "cpu",
        "devices": 1,
        "max_epochs": 1,
        "limit_train_batches": 2,
        "limit_val_batches": 2,
        "log_every_n_steps": 1,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "logger": {
            "class_path": "lightning.pytorch.loggers.CSVLogger",
            "init_args": {"save_dir": "runs", "name": "tiny"},
        },
        "callbacks": [
            {
                "class_path": "aspp_seg.training.callbacks.ModelCheckpoint",
                "init_args": {
                    "monitor": "val/mIoU",
                    "mode": "max",
                    "save_last": True,
                    "filename": "best-{epoch:02d}",
                },
            }
        ],
    },
    "model": {
        "net": {
            "class_path": "aspp_seg.models.deeplabv3",
            "init_args": {
                "backbone": "resnet10t",
                "pretrained": False,
                "output_stride": 8,
                "aspp": {
                    "class_path": "aspp_seg.models.ASPP",
                    "init_args": {"rates": [6, 12, 18], "channels": 16},
                },
            },
        },
        "optimizer": {
            "class_path": "torch.optim.SGD",
            "init_args": {"lr": 0.05, "momentum": 0.9, "weight_decay": 1.0e-4},
        },
        "scheduler": {
            "class_path": "torch.optim.lr_scheduler.PolynomialLR",
            "init_args": {"power": 0.9},
        },
    },
    "data": {
        "class_path": "aspp_seg.data.DemoDataModule",
        "init_args": {"root": None, "batch_size": 4, "num_workers": 0},
    },
}


def write_config(work: Path, data: Path) -> Path:
    """``work/tiny.yaml``: `TINY` reading `data`, logging to ``work/runs/tiny``."""
    config = yaml.safe_load(yaml.safe_dump(TINY))
    config["trainer"]["logger"]["init_args"]["save_dir"] = str(work / "runs")
    config["data"]["init_args"]["root"] = str(data)
    path = work / "tiny.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@pytest.fixture(scope="session")
def finished_run(tiny_cityscapes, tmp_path_factory) -> Path:
    """The ``runs`` folder of one finished tiny fit (made once per session)."""
    from aspp_seg.cli.main import main

    template = tmp_path_factory.mktemp("robustness_template")
    main(["fit", "--config", str(write_config(template, tiny_cityscapes))])
    assert (template / "runs" / "tiny" / "version_0" / "checkpoints" / "last.ckpt").is_file()
    return template / "runs"


@pytest.fixture
def ws(tmp_path, tiny_cityscapes, finished_run) -> Workspace:
    """A fresh workspace: the tiny config and a copy of the finished run (see `Workspace`)."""
    work = tmp_path / "work"
    work.mkdir()
    shutil.copytree(finished_run, work / "runs")
    run = work / "runs" / "tiny" / "version_0"
    return Workspace(
        work=work,
        data=Path(tiny_cityscapes),
        config=write_config(work, tiny_cityscapes),
        run=run,
        ckpt=run / "checkpoints" / "last.ckpt",
    )
