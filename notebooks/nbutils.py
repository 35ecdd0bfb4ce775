"""Helpers shared by the notebooks: find a checkpoint and load its run (net + data).

The notebooks read two environment variables so that they run headless (the test
suite executes them): ``ASPP_SEG_CKPT`` (a ``last.ckpt``; default: the newest under
``runs/``) and ``ASPP_SEG_IMAGES`` (comma-separated validation indices).
"""

from __future__ import annotations

import os
from pathlib import Path

from lightning.pytorch import LightningDataModule
from torch import nn

import aspp_seg
from aspp_seg.cli.config import build_datamodule

REPO = Path(__file__).resolve().parents[1]


def checkpoint_path() -> Path:
    """``$ASPP_SEG_CKPT``, else the newest ``runs/**/checkpoints/last.ckpt`` of the repo."""
    given = os.environ.get("ASPP_SEG_CKPT")
    if given:
        return Path(given)
    found = sorted(REPO.glob("runs/**/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise FileNotFoundError(
            "no checkpoint: run `aspp-seg fit --config configs/demo.yaml` first "
            "or set ASPP_SEG_CKPT to a last.ckpt"
        )
    return found[-1]


def image_indices(default: str = "0,1,2") -> list[int]:
    """``$ASPP_SEG_IMAGES`` as a list of indices into the validation split."""
    return [int(i) for i in os.environ.get("ASPP_SEG_IMAGES", default).split(",") if i.strip()]


def load_run(checkpoint: str | Path) -> tuple[nn.Module, LightningDataModule]:
    """The net of a run, with the checkpoint's weights, in eval mode, and its data module.

    `aspp_seg.load_model` reads the run's ``config.yaml`` as ``aspp-seg fit`` does. A
    relative data root is taken from the repository root when it does not exist from
    the current folder.
    """
    model = aspp_seg.load_model(checkpoint)
    data = model.config.data
    root = Path(getattr(data.init_args, "root", None) or ".")
    if not root.is_absolute() and not root.exists():
        data.init_args.root = str(REPO / root)
    return model.net, build_datamodule(model.config)
