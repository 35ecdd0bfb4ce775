"""Helpers shared by the notebooks: find a checkpoint and load its run (net + data).

The notebooks read two environment variables so that they run headless (the test
suite executes them): ``ASPP_SEG_CKPT`` (a ``last.ckpt``; default: the newest under
``runs/``) and ``ASPP_SEG_IMAGES`` (comma-separated validation indices).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import yaml
from jsonargparse import ArgumentParser
from lightning.pytorch import LightningDataModule
from torch import nn

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

    Reads ``config.yaml`` of the run folder (``<run>/checkpoints/last.ckpt`` ->
    ``<run>/config.yaml``), which ``aspp-seg fit`` writes. A relative data root is taken
    from the repository root when it does not exist from the current folder.
    """
    checkpoint = Path(checkpoint)
    config = yaml.safe_load((checkpoint.parent.parent / "config.yaml").read_text())
    data_cfg = config["data"]
    root = Path(data_cfg.get("init_args", {}).get("root", "."))
    if not root.is_absolute() and not root.exists():
        data_cfg["init_args"]["root"] = str(REPO / root)
    parser = ArgumentParser()
    parser.add_argument("--net", type=nn.Module)
    parser.add_argument("--data", type=LightningDataModule)
    parsed = parser.parse_object({"net": config["model"]["net"], "data": data_cfg})
    built = parser.instantiate_classes(parsed)
    net, data = built.net, built.data
    if getattr(net, "num_classes", data.num_classes) != data.num_classes:
        net.reset_classifier(data.num_classes)
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)["state_dict"]
    net.load_state_dict(
        {k.removeprefix("net."): v for k, v in state.items() if k.startswith("net.")}
    )
    return net.eval(), data
